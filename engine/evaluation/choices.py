"""The values evaluation options choose from: test-time augmentation modes and the images to score.

Kept free of torch so that the CLI offers them as argparse choices, and refuses others,
before any model code loads; ``tta`` and ``evaluate`` validate against the same tuples.
"""

TTA_MODES = ("none", "flip", "multicrop")
SPLITS = ("val", "test", "train", "all")

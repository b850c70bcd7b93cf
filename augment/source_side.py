"""How large a source image must stay for the train and eval transforms: the ``min_side`` of a reduced decode.

Decoding a 12-megapixel photo at full size to feed a 224-pixel model wastes most of the
work; these functions say how far it may be shrunk before the transform loses detail.
"""

from __future__ import annotations

import math

from augment.controls import resolve_controls
from engine.core.config import AugmentConfig
from engine.data.settings import DataSettings


def eval_source_side(settings: DataSettings) -> int:
    """The shorter side a source needs for timm's eval transform (resize, then centre crop).

    timm resizes the shorter side to ``input / crop_pct`` (``floor``; both sides for a
    non-square input) and crops the input from the middle, so a source whose shorter side
    is at least ``ceil(max(height, width) / crop_pct)`` is only ever reduced, never enlarged.
    """
    height, width = settings.input_size[1:]
    crop_pct = settings.crop_pct if settings.crop_pct > 0 else 1.0
    return max(1, math.ceil(max(height, width) / crop_pct))


def train_source_side(augment: AugmentConfig, settings: DataSettings) -> int:
    """The shorter side a source needs for the training transform of ``augment``.

    The random resized crop keeps between ``crop_scale[0]`` and all of the image's area, in
    aspect ratios (width / height) within ``crop_ratio``. Its smallest crop, on a square
    source of side ``S`` (the worst case: a longer image has more area for the same shorter
    side), is ``S * sqrt(scale_min * ratio_min)`` wide and ``S * sqrt(scale_min / ratio_max)``
    high; both must stay at least the input size, so that even the strongest zoom only
    reduces. Hence ``S >= max(height, width) / sqrt(scale_min * min(ratio_min, 1 / ratio_max))``.
    Without a random crop (``crop_scale`` None, or a preset that changes nothing) the
    training transform starts with the eval geometry and needs what it needs. Rotation,
    flips and the rest act on the crop and need nothing more.

    Raises:
        ConfigError: an invalid preset or combination of controls (as ``resolve_controls``).
    """
    controls = resolve_controls(augment)
    if not controls.changes_images or controls.crop_scale is None:
        return eval_source_side(settings)
    height, width = settings.input_size[1:]
    scale_min = max(controls.crop_scale[0], 1e-4)
    ratio_min, ratio_max = controls.crop_ratio
    narrowest = min(ratio_min, 1.0 / ratio_max, 1.0)
    return max(1, math.ceil(max(height, width) / math.sqrt(scale_min * narrowest)))

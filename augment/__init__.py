"""Training augmentation (albumentations), the eval transform (timm), mixup/cutmix and previews.

Importing this package turns off albumentations' network update check, which would
otherwise reach for the internet on import.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import engine  # noqa: E402,F401,I001  (makes torchvision, and so timm, importable first)
from augment.transforms import (  # noqa: E402  (the variable above must be set first)
    AugmentControls,
    ImageTransform,
    TrainTransform,
    create_eval_transform,
    create_train_transform,
    describe_train_transform,
    get_preset,
    list_presets,
    resolve_controls,
)
from augment.mixing import create_mixup, mix_batch, soft_target_cross_entropy  # noqa: E402
from augment.preview import preview, preview_dataset  # noqa: E402

__all__ = [
    "AugmentControls",
    "ImageTransform",
    "TrainTransform",
    "create_eval_transform",
    "create_mixup",
    "create_train_transform",
    "describe_train_transform",
    "get_preset",
    "list_presets",
    "mix_batch",
    "preview",
    "preview_dataset",
    "resolve_controls",
    "soft_target_cross_entropy",
]

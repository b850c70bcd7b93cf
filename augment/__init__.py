"""Image transforms for training and evaluation (albumentations for training, timm for eval).

Importing this package turns off albumentations' network update check, which would
otherwise reach for the internet on import.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import engine  # noqa: E402,F401,I001  (makes torchvision, and so timm, importable first)
from augment.transforms import (  # noqa: E402  (the variable above must be set first)
    ImageTransform,
    create_eval_transform,
    create_train_transform,
    describe_train_transform,
)

__all__ = ["ImageTransform", "create_eval_transform", "create_train_transform", "describe_train_transform"]

"""Training augmentation (albumentations), the eval transform (timm), mixup/cutmix and previews.

The names below load their module on first use (PEP 562), so ``import augment`` and the
plain-data ``augment.controls`` (presets and their controls) cost no torch, timm or
albumentations: the GUI's forms use them in a process that has not loaded those.
Importing this package turns off albumentations' network update check, which would
otherwise reach for the internet on import.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import engine  # noqa: E402,F401,I001  (makes torchvision, and so timm, importable first)

if TYPE_CHECKING:
    from augment.controls import AugmentControls, get_preset, list_presets, resolve_controls
    from augment.mixing import create_mixup, mix_batch, soft_target_cross_entropy
    from augment.preview import preview_dataset
    from augment.source_side import eval_source_side, train_source_side
    from augment.transforms import (
        ImageTransform,
        TrainTransform,
        create_eval_transform,
        create_train_transform,
        describe_train_transform,
    )

# Each public name and the module that defines it. ``augment.preview`` is the module (a submodule's name
# wins over a lazy attribute once it is imported), so its ``preview`` function is imported from there.
_HOMES = {
    "AugmentControls": "augment.controls",
    "get_preset": "augment.controls",
    "list_presets": "augment.controls",
    "resolve_controls": "augment.controls",
    "ImageTransform": "augment.transforms",
    "TrainTransform": "augment.transforms",
    "create_eval_transform": "augment.transforms",
    "create_train_transform": "augment.transforms",
    "describe_train_transform": "augment.transforms",
    "create_mixup": "augment.mixing",
    "mix_batch": "augment.mixing",
    "soft_target_cross_entropy": "augment.mixing",
    "preview_dataset": "augment.preview",
    "eval_source_side": "augment.source_side",
    "train_source_side": "augment.source_side",
}

__all__ = [
    "AugmentControls", "ImageTransform", "TrainTransform", "create_eval_transform", "create_mixup",
    "create_train_transform", "describe_train_transform", "eval_source_side", "get_preset", "list_presets",
    "mix_batch", "preview_dataset", "resolve_controls", "soft_target_cross_entropy", "train_source_side",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'augment' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])

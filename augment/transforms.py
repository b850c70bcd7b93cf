"""Build the training transform from an augmentation preset and the eval transform from timm.

Both take a Pillow RGB image and return a ``(3, H, W)`` float32 tensor normalised
with the backbone's own mean and std, so cached features and live batches match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from timm.data import create_transform

from engine.backbones import DataSettings
from engine.config import AugmentConfig
from engine.errors import ConfigError

_CV2_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


class ImageTransform(Protocol):
    """Turns an RGB Pillow image into a normalised ``(3, H, W)`` float32 tensor."""

    def __call__(self, image: Image.Image) -> torch.Tensor: ...


class _Albumentations:
    """Adapts an albumentations pipeline (numpy in, dict out) to ``ImageTransform``."""

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(image=np.asarray(image))["image"]


def create_eval_transform(settings: DataSettings) -> ImageTransform:
    """timm's own eval pipeline for the backbone: resize, centre crop, normalise."""
    return create_transform(
        input_size=settings.input_size,
        is_training=False,
        interpolation=settings.interpolation,
        mean=settings.mean,
        std=settings.std,
        crop_pct=settings.crop_pct,
        crop_mode=settings.crop_mode,
    )


def create_train_transform(augment: AugmentConfig, settings: DataSettings) -> ImageTransform:
    """The training pipeline for ``augment.preset``; ``none`` is the eval pipeline.

    Raises:
        ConfigError: an unknown preset (named by field).
    """
    if augment.preset == "none":
        return create_eval_transform(settings)
    builder = _PRESETS.get(augment.preset)
    if builder is None:
        raise ConfigError(f"augment.preset: must be one of {', '.join(['none', *_PRESETS])}, got {augment.preset!r}")
    height, width = settings.input_size[1:]
    interpolation = _CV2_INTERPOLATION.get(settings.interpolation, cv2.INTER_LINEAR)
    steps = builder(height, width, interpolation)
    normalise = [A.Normalize(mean=settings.mean, std=settings.std, max_pixel_value=255.0), ToTensorV2()]
    return _Albumentations(A.Compose([*steps, *normalise]))


def describe_train_transform(augment: AugmentConfig, settings: DataSettings) -> str:
    """A stable text naming the training transform, for cache keys and logs."""
    return f"preset={augment.preset};{settings.to_dict()}"


def _light(height: int, width: int, interpolation: int) -> list[A.BasicTransform]:
    return [
        A.RandomResizedCrop(size=(height, width), scale=(0.35, 1.0), interpolation=interpolation),
        A.HorizontalFlip(p=0.5),
    ]


_PRESETS: dict[str, Callable[[int, int, int], list[A.BasicTransform]]] = {"light": _light}

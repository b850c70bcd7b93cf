"""Build the training transform from augmentation controls (``augment.controls``), and the eval transform from timm.

Both take a Pillow RGB image and return a ``(3, H, W)`` float32 tensor normalised
with the backbone's own mean and std, so cached features and live batches match.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any, Protocol

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image
from timm.data import create_transform
from torch.utils.data import get_worker_info

from augment.controls import resolve_controls
from augment.policies import Transform, create_random_policy
from engine.core.config import AugmentConfig
from engine.core.errors import ConfigError
from engine.data.settings import DataSettings

# Bump when the pipeline built from the same controls changes, so that cached
# features of augmented views are recomputed rather than reused.
_PIPELINE_VERSION = 1

_CV2_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "box": cv2.INTER_AREA,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


class ImageTransform(Protocol):
    """Turns an RGB Pillow image into a normalised ``(3, H, W)`` float32 tensor."""

    def __call__(self, image: Image.Image) -> torch.Tensor: ...


class TrainTransform:
    """A random training transform: optional eval-style geometry, then an albumentations pipeline.

    Each DataLoader worker reseeds it from the worker's own seed on its first image:
    forked workers start with copies of one random state and would otherwise draw the
    same augmentations (and two feature views of an image would come out equal).
    A loader with a seeded generator therefore gives reproducible augmentations.

    Args:
        pipeline: albumentations steps on a uint8 RGB array, ending in a tensor.
        geometry: resize and centre crop applied to the Pillow image first, returning a
            uint8 ``(3, H, W)`` tensor; None when the pipeline crops by itself.
        seed: seed of the augmentations in this process; None draws one from the OS.
    """

    def __init__(
        self,
        pipeline: A.Compose,
        geometry: Callable[[Image.Image], torch.Tensor] | None = None,
        seed: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.geometry = geometry
        self._worker_seed: int | None = None
        if seed is not None:
            self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random draws from ``seed``: the same seed gives the same sequence of outputs."""
        # One generator shared by every step: Compose(seed=...) gives each step its own
        # generator with the same seed, so that, e.g., both flips would always fire together.
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Augment one RGB image into a normalised ``(3, H, W)`` float32 tensor."""
        return self._run(image)["image"]

    def explain(self, image: Image.Image) -> tuple[torch.Tensor, tuple[str, ...]]:
        """Like calling the transform, also returning the class names of the operations that ran, in order."""
        self.pipeline.save_applied_params = True
        try:
            result = self._run(image)
        finally:
            self.pipeline.save_applied_params = False
        return result["image"], tuple(name for name, _ in result["applied_transforms"])

    def _run(self, image: Image.Image) -> dict[str, Any]:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self.reseed(worker.seed)
        if self.geometry is None:
            pixels = np.asarray(image)
        else:
            pixels = np.ascontiguousarray(self.geometry(image).permute(1, 2, 0).numpy())
        return self.pipeline(image=pixels)


def create_eval_transform(settings: DataSettings) -> ImageTransform:
    """timm's own eval pipeline for the backbone: resize, centre crop, normalise."""
    return _timm_eval(settings, normalize=True)


def create_train_transform(
    augment: AugmentConfig, settings: DataSettings, *, seed: int | None = None
) -> ImageTransform:
    """The training pipeline of ``augment``'s effective controls; with every control off, the eval pipeline.

    Order: random resized crop (or eval resize and centre crop when ``crop_scale`` is
    None), flips, rotation, colour jitter, random policy, blur, noise, cutout, normalise.

    Args:
        augment: the preset and its overrides.
        settings: the backbone's input size, interpolation, mean and std.
        seed: seed of the random draws in this process (DataLoader workers reseed
            from their own seeds); None draws one from the OS.

    Raises:
        ConfigError: an invalid preset or combination of controls (see ``resolve_controls``),
            or an interpolation OpenCV lacks; the message names the field.
    """
    controls = resolve_controls(augment)
    if not controls.changes_images:
        return create_eval_transform(settings)
    height, width = settings.input_size[1:]
    interpolation = _CV2_INTERPOLATION.get(settings.interpolation)
    if interpolation is None:
        raise ConfigError(f"data_settings.interpolation: must be one of {', '.join(_CV2_INTERPOLATION)} for"
                          f" augmentation, got {settings.interpolation!r}")
    red, green, blue = settings.mean
    fill = (round(255 * red), round(255 * green), round(255 * blue))
    steps: list[Transform] = []
    geometry = None
    if controls.crop_scale is None:
        geometry = _timm_eval(settings, normalize=False)
    else:
        # area_for_downscale: INTER_AREA when shrinking, so large photos do not alias.
        steps.append(A.RandomResizedCrop(size=(height, width), scale=controls.crop_scale, ratio=controls.crop_ratio,
                                         interpolation=interpolation, area_for_downscale="image", p=1.0))
    if controls.horizontal_flip > 0:
        steps.append(A.HorizontalFlip(p=controls.horizontal_flip))
    if controls.vertical_flip > 0:
        steps.append(A.VerticalFlip(p=controls.vertical_flip))
    if controls.rotation_degrees > 0:
        # Reflected borders keep the uncovered corners looking like image, not like black wedges.
        steps.append(A.Rotate(limit=controls.rotation_degrees, interpolation=interpolation,
                              border_mode=cv2.BORDER_REFLECT_101, p=1.0))
    if controls.color_jitter > 0:
        strength = controls.color_jitter
        steps.append(A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=strength / 4,
                                   p=1.0))
    if controls.random_policy != "none":
        steps.append(create_random_policy(controls.random_policy, controls.random_policy_ops,
                                          controls.random_policy_magnitude, fill=fill))
    if controls.blur > 0:
        steps.append(A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 2.0), p=controls.blur))
    if controls.noise > 0:
        steps.append(A.GaussNoise(std_range=(0.02, 0.1), p=controls.noise))
    if controls.cutout > 0:
        steps.append(A.CoarseDropout(num_holes_range=controls.cutout_holes, hole_height_range=controls.cutout_size,
                                     hole_width_range=controls.cutout_size, fill=fill, p=controls.cutout))
    steps += [A.Normalize(mean=settings.mean, std=settings.std, max_pixel_value=255.0, p=1.0), ToTensorV2(p=1.0)]
    return TrainTransform(A.Compose(steps, p=1.0), geometry=geometry, seed=seed)


def describe_train_transform(augment: AugmentConfig, settings: DataSettings) -> str:
    """A stable text naming the training transform, for cache keys and logs.

    It changes whenever an effective control, the data settings or the pipeline's
    version changes, and only then: a set value equal to the preset's gives the same text.

    Raises:
        ConfigError: as ``resolve_controls``.
    """
    controls = resolve_controls(augment)
    data = json.dumps(settings.to_dict(), sort_keys=True)
    if not controls.changes_images:
        return f"eval;{data}"
    return f"augment-v{_PIPELINE_VERSION};{json.dumps(controls.to_dict(), sort_keys=True)};{data}"


def _timm_eval(settings: DataSettings, *, normalize: bool) -> Any:
    """timm's eval transform; without ``normalize`` it ends in a uint8 ``(3, H, W)`` tensor."""
    return create_transform(
        input_size=settings.input_size,
        is_training=False,
        interpolation=settings.interpolation,
        mean=settings.mean,
        std=settings.std,
        crop_pct=settings.crop_pct,
        crop_mode=settings.crop_mode,
        normalize=normalize,
    )

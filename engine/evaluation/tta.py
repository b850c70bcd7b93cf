"""Test-time augmentation: average a model's softmax over several views of each image.

``flip`` adds the left-right mirror of the input; ``multicrop`` takes the four corner
crops and the centre crop of the image resized exactly as timm evaluates it, so every
view shows objects at the scale the model knows. Ensembles get TTA per member
(``Ensemble(..., tta=mode)``), which gives the same average as TTA over the ensemble.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from timm.data.transforms import CenterCropOrPad
from torch import nn
from torchvision import transforms

from augment import create_eval_transform, eval_source_side
from engine.core.device import DevicePlan
from engine.core.errors import CheckpointError, ConfigError
from engine.data.settings import DataSettings
from engine.evaluation.choices import TTA_MODES
from engine.evaluation.predict import batched_probabilities, stack_transformed
from engine.evaluation.predictions import ProbabilityResult, TopKPredictions
from engine.models.checkpoint_metadata import read_checkpoint_metadata

# Views per image of each mode; multicrop follows torchvision's FiveCrop order:
# top-left, top-right, bottom-left, bottom-right, centre.
VIEWS = {"none": 1, "flip": 2, "multicrop": 5}


class ImageModel(Protocol):
    """What TTA needs of a model: an ``engine.evaluation.predict.Predictor`` has all of it."""

    classes: list[str]
    model: nn.Module
    plan: DevicePlan
    checkpoint_path: Path

    # Read-only, so that a narrower callable (a Predictor's ImageTransform) fits.
    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]: ...

    def predict_proba(
        self, paths: Sequence[Path], *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
    ) -> ProbabilityResult: ...

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def check_tta_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``TTA_MODES``.

    Raises:
        ConfigError: any other value.
    """
    if mode not in TTA_MODES:
        raise ConfigError(f"tta: must be one of {', '.join(TTA_MODES)}, got {mode!r}")
    return mode


class TestTimeAugmentation(TopKPredictions):
    """A model that predicts the mean softmax over augmented views of each image.

    It offers the ``classes``, ``predict_proba`` and ``predict`` of the model it wraps,
    so evaluation, prediction and ensembles use it like any checkpoint.

    Args:
        model: a ``Predictor`` (or anything with ``classes``, ``model``, ``plan``,
            ``transform`` and ``checkpoint_path``).
        mode: ``none`` (the model as it is), ``flip`` (the eval input and its left-right
            mirror) or ``multicrop`` (five crops, see ``create_multicrop_transform``).

    Raises:
        ConfigError: an unknown mode.
        CheckpointError: multicrop on a checkpoint whose metadata lacks data settings.
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(self, model: ImageModel, mode: str) -> None:
        self.wrapped = model
        self.mode = check_tta_mode(mode)
        self.classes: list[str] = list(model.classes)
        self.checkpoint_path = model.checkpoint_path
        self.transform = (
            create_multicrop_transform(_data_settings_of(model)) if mode == "multicrop" else model.transform
        )

    @property
    def views(self) -> int:
        """Views averaged per image."""
        return VIEWS[self.mode]

    def predict_proba(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> ProbabilityResult:
        """Mean softmax over the views of every file that decodes.

        Args:
            paths: image files.
            batch_size: images per forward pass (each brings ``views`` inputs).
            progress: called with (files done, files) after each batch.

        Returns:
            ``probabilities`` ``(len(kept), C)`` float32 rows that sum to 1, ``kept`` and
            ``failures`` as ``Predictor.predict_proba`` gives them.
        """
        if self.mode == "none":
            return self.wrapped.predict_proba(paths, batch_size=batch_size, progress=progress)
        return batched_probabilities(paths, self.transform, self._mean_softmax, len(self.classes),
                                     batch_size=batch_size, progress=progress,
                                     min_side=eval_source_side(_data_settings_of(self.wrapped)))

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Mean softmax over the views of decoded images (video frames)."""
        if self.mode == "none":
            return self.wrapped.predict_images(images)
        return self._mean_softmax(stack_transformed(images, self.transform)).cpu().numpy()

    def _mean_softmax(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` float32 mean of the views' softmax rows."""
        if self.mode == "flip":
            # (2B, 3, H, W): the batch, then its mirror; width is the last dimension.
            views = torch.cat([images, images.flip(-1)])
            batch = images.shape[0]
        else:
            batch, count = images.shape[:2]
            views = images.reshape(batch * count, *images.shape[2:])
        plan = self.wrapped.plan
        with torch.inference_mode():
            logits = self.wrapped.model(plan.to_device(views)).float()
        # A calibrated predictor divides its logits by a saved temperature: so must its views.
        temperature = float(getattr(self.wrapped, "temperature", 1.0))
        if temperature != 1.0:
            logits = logits / temperature
        # Average probabilities, not logits: a confident view must not outvote the rest.
        probabilities = logits.softmax(dim=1)
        if self.mode == "flip":
            return probabilities.reshape(2, batch, -1).mean(dim=0)
        return probabilities.reshape(batch, -1, probabilities.shape[1]).mean(dim=1)


def create_multicrop_transform(settings: DataSettings) -> Callable[[Image.Image], torch.Tensor]:
    """Five views of an image at the model's evaluation scale, as a ``(5, 3, H, W)`` float32 tensor.

    timm evaluates a model on the centre crop (``input_size``) of the image resized to
    ``input_size / crop_pct`` (shorter side, or both sides for ``crop_mode`` squash).
    Multicrop keeps that resize and takes the four corner crops beside the centre one,
    so the views cover what the centre crop cuts off while objects keep the size the
    model was trained and evaluated at; the centre view is exactly the eval input.
    With ``crop_pct`` 1 a square image has no margin, and all five views coincide.

    Raises:
        ConfigError: timm's eval pipeline for these settings has no centre-crop step
            to replace (a timm version this code does not know).
    """
    evaluation = create_eval_transform(settings)
    steps = list(getattr(evaluation, "transforms", []))
    crop_at = next((index for index, step in enumerate(steps)
                    if isinstance(step, (transforms.CenterCrop, CenterCropOrPad))), None)
    if crop_at is None:
        raise ConfigError(f"tta: multicrop cannot find the centre crop in timm's eval pipeline {evaluation!r}")
    height, width = settings.input_size[1:]
    fill = [round(255 * value) for value in settings.mean]
    return _FiveCrop(transforms.Compose(steps[:crop_at]), (height, width), fill,
                     transforms.Compose(steps[crop_at + 1:]))


class _FiveCrop:
    """Resize as timm does, pad up to the input size if needed, take five crops, finish each view."""

    def __init__(self, resize: Any, size: tuple[int, int], fill: list[int], finish: Any) -> None:
        self.resize = resize
        self.size = size
        self.fill = fill
        self.finish = finish

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = self.resize(image)
        width, height = resized.size
        # crop_mode border resizes the longest side, so a side may fall short of the input.
        pad_width, pad_height = max(0, self.size[1] - width), max(0, self.size[0] - height)
        if pad_width or pad_height:
            resized = F.pad(resized, [pad_width // 2, pad_height // 2, pad_width - pad_width // 2,
                                      pad_height - pad_height // 2], fill=tuple(self.fill))
        return torch.stack([self.finish(view) for view in F.five_crop(resized, list(self.size))])

    def __repr__(self) -> str:
        return f"FiveCrop(resize={self.resize!r}, size={self.size}, finish={self.finish!r})"


def _data_settings_of(model: ImageModel) -> DataSettings:
    settings = getattr(model, "data_settings", None)
    if isinstance(settings, DataSettings):
        return settings
    metadata = read_checkpoint_metadata(model.checkpoint_path)
    try:
        return DataSettings.from_dict(metadata["data_settings"])
    except (KeyError, ConfigError) as error:
        raise CheckpointError(f"{model.checkpoint_path}: metadata lacks usable data_settings ({error})") from error

"""Predict labels of image files with a trained checkpoint (safetensors + JSON only).

The checkpoint's metadata names the backbone, the classes and the data settings,
so a prediction uses exactly the preprocessing the model was trained with. What a
prediction is (and its CSV) is ``engine.evaluation.predictions``, which needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from augment import create_eval_transform, eval_source_side
from engine.core.device import plan_device
from engine.core.errors import CheckpointError
from engine.data.loader_sizing import size_loader
from engine.data.loading import ImageDataset, collate_with_failures
from engine.data.settings import DataSettings
from engine.evaluation.calibration import temperature_from_metadata
from engine.evaluation.predictions import (
    Prediction,
    ProbabilityResult,
    TopKPredictions,
    collect_image_paths,
    write_predictions_csv,
)
from engine.models.backbones import create_model
from engine.models.checkpoint import load_checkpoint
from engine.models.heads import rebuild_head

__all__ = [
    "Predictor", "batched_probabilities", "stack_transformed",
    # Re-exported because the GUI, the CLI and the exporter import them from here.
    "Prediction", "ProbabilityResult", "TopKPredictions", "collect_image_paths", "write_predictions_csv",
]


class Predictor(TopKPredictions):
    """A trained model ready to predict, loaded from a checkpoint.

    Args:
        checkpoint: a ``.safetensors`` checkpoint, its ``.json``, or a run folder (uses ``best``).
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    def __init__(self, checkpoint: str | Path, *, device: str = "auto") -> None:
        loaded_checkpoint = load_checkpoint(checkpoint)
        metadata = loaded_checkpoint.metadata
        try:
            self.classes: list[str] = list(metadata["classes"])
            backbone = metadata["backbone"]
            settings = DataSettings.from_dict(metadata["data_settings"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{loaded_checkpoint.path}: metadata lacks {error}") from error
        self.checkpoint_path = loaded_checkpoint.path
        self.plan = plan_device(device, amp=False)
        loaded = create_model(backbone, num_classes=len(self.classes), weights="none")
        rebuild_head(loaded.model, metadata.get("head"), loaded.num_features, len(self.classes))
        model = loaded.model
        try:
            model.load_state_dict(loaded_checkpoint.model_state)
        except RuntimeError as error:
            raise CheckpointError(f"{loaded_checkpoint.path}: weights do not fit {backbone} ({error})") from error
        self.model = self.plan.prepare_model(model).eval()
        self.data_settings = settings
        self.transform = create_eval_transform(settings)
        # Temperature scaling fitted on validation (engine.evaluation.calibration): 1.0 when none was saved.
        self.temperature = temperature_from_metadata(metadata, loaded_checkpoint.path)

    def predict_proba(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> ProbabilityResult:
        """Class probabilities of every file that decodes.

        Returns:
            ``probabilities`` ``(N, C)`` float32 softmax rows for the files in ``kept``
            (indices into ``paths``, in order), and ``failures``: ``{index: reason}``.
        """
        return batched_probabilities(paths, self.transform, self._batch_probabilities, len(self.classes),
                                     batch_size=batch_size, progress=progress,
                                     min_side=eval_source_side(self.data_settings))

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, C)`` float32 probabilities of decoded images (video frames), through the eval transform."""
        return self._batch_probabilities(stack_transformed(images, self.transform)).cpu().numpy()

    def _batch_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` softmax rows of a batch, after the saved temperature."""
        with torch.inference_mode():
            logits = self.model(self.plan.to_device(images)).float()
        return (logits / self.temperature).softmax(dim=1)


def stack_transformed(images: Sequence[Image.Image], transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """A batch of decoded images through ``transform`` (each converted to RGB first, as files are)."""
    return torch.stack([transform(image.convert("RGB")) for image in images])


def batched_probabilities(
    paths: Sequence[Path],
    transform: Callable[[object], torch.Tensor],
    batch_probabilities: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    min_side: int | None = None,
    num_workers: int | str = 0,
) -> ProbabilityResult:
    """Decode, transform and batch image files, and collect ``batch_probabilities`` of each batch.

    Files that cannot be read become failures instead of rows; ``progress`` gets
    (files done, files) after each batch. ``min_side`` is the shorter side the transform
    needs of a source (``augment.eval_source_side``): photos are decoded only that large.
    ``num_workers`` is as ``data.num_workers`` (``engine.data.loader_sizing``); it defaults to
    decoding in this process, as the GUI predicts on a thread and must not fork.
    """
    dataset = ImageDataset(list(paths), list(range(len(paths))), transform, min_side)
    arguments = size_loader(num_workers, dataset, batch_size=batch_size, cuda=False).loader_arguments()
    arguments["persistent_workers"] = False  # one pass: workers kept after it would only hold memory
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_with_failures, **arguments)
    rows: list[np.ndarray] = []
    kept: list[int] = []
    failures: dict[int, str] = {}
    for images, indices, failed in loader:
        failures.update(failed)
        if len(indices):
            rows.append(batch_probabilities(images).float().cpu().numpy())
            kept.extend(indices.tolist())
        if progress is not None:
            progress(len(kept) + len(failures), len(paths))
    probabilities = np.concatenate(rows) if rows else np.zeros((0, num_classes), dtype=np.float32)
    return ProbabilityResult(probabilities, kept, failures)

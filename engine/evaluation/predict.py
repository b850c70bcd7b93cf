"""Predict labels of image files with a trained checkpoint (safetensors + JSON only).

The checkpoint's metadata names the backbone, the classes and the data settings,
so a prediction uses exactly the preprocessing the model was trained with.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from augment import create_eval_transform
from engine.core.atomic import atomic_write_text
from engine.core.device import plan_device
from engine.core.errors import CheckpointError, DatasetError
from engine.data.images import IMAGE_SUFFIXES
from engine.data.loading import ImageDataset, collate_with_failures
from engine.evaluation.calibration import temperature_from_metadata
from engine.models.backbones import create_model
from engine.data.settings import DataSettings
from engine.models.checkpoint import load_checkpoint
from engine.models.heads import rebuild_head


@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one image, or the reason it could not be read.

    Attributes:
        path: the image file.
        labels: best first.
        probabilities: softmax probability of each label, in [0, 1].
        error: why the image could not be predicted, or "".
    """

    path: Path
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    error: str = ""


class TopKPredictions(ABC):
    """Top-k predictions from ``predict_proba``: shared by single models, TTA and ensembles.

    A subclass provides ``classes`` and ``predict_proba(paths, batch_size=, progress=)``.
    """

    classes: list[str]

    @abstractmethod
    def predict_proba(
        self, paths: Sequence[Path], *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
    ) -> ProbabilityResult:
        """``(N, C)`` probabilities of the readable files, with which were kept and why others failed."""

    def predict(
        self,
        paths: Sequence[Path],
        *,
        top_k: int = 3,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Prediction]:
        """Predict every file; unreadable files get a Prediction with ``error`` set, in input order."""
        result = self.predict_proba(paths, batch_size=batch_size, progress=progress)
        return predictions_from_probabilities(paths, result, self.classes, top_k=top_k)


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
                                     batch_size=batch_size, progress=progress)

    def _batch_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` softmax rows of a batch, after the saved temperature."""
        with torch.inference_mode():
            logits = self.model(self.plan.to_device(images)).float()
        return (logits / self.temperature).softmax(dim=1)


@dataclass(frozen=True)
class ProbabilityResult:
    """Softmax rows of the files that decoded.

    Attributes:
        probabilities: ``(len(kept), C)`` float32, rows sum to 1.
        kept: indices (into the input paths) of the rows, in order.
        failures: ``{index: reason}`` of files that could not be read.
    """

    probabilities: np.ndarray
    kept: list[int]
    failures: dict[int, str]


def batched_probabilities(
    paths: Sequence[Path],
    transform: Callable[[object], torch.Tensor],
    batch_probabilities: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> ProbabilityResult:
    """Decode, transform and batch image files, and collect ``batch_probabilities`` of each batch.

    Files that cannot be read become failures instead of rows; ``progress`` gets
    (files done, files) after each batch.
    """
    dataset = ImageDataset(list(paths), list(range(len(paths))), transform)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_with_failures)
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


def predictions_from_probabilities(
    paths: Sequence[Path], result: ProbabilityResult, classes: Sequence[str], *, top_k: int = 3
) -> list[Prediction]:
    """Top-k labels per file, in input order (any model or ensemble that gives probabilities)."""
    k = max(1, min(top_k, len(classes)))
    predictions: dict[int, Prediction] = {
        index: Prediction(Path(paths[index]), error=reason) for index, reason in result.failures.items()
    }
    for row, index in enumerate(result.kept):
        order = np.argsort(-result.probabilities[row])[:k]
        predictions[index] = Prediction(
            Path(paths[index]),
            labels=tuple(classes[i] for i in order),
            probabilities=tuple(float(result.probabilities[row, i]) for i in order),
        )
    return [predictions[index] for index in range(len(paths))]


def collect_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, image suffixes only) into a sorted list of files.

    Raises:
        DatasetError: an input does not exist, or no image was found.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            found.append(path)
        else:
            raise DatasetError(f"{path}: no such file or folder")
    if not found:
        raise DatasetError(f"no images found in {', '.join(str(item) for item in inputs)}")
    return found


def write_predictions_csv(predictions: Sequence[Prediction], path: str | Path) -> Path:
    """Write ``path,label_1,probability_1,...,error`` rows atomically."""
    k = max((len(p.labels) for p in predictions), default=1)
    header = ["path"] + [f"{name}_{rank}" for rank in range(1, k + 1) for name in ("label", "probability")] + ["error"]
    lines: list[list[str]] = [header]
    for prediction in predictions:
        row = [str(prediction.path)]
        for rank in range(k):
            if rank < len(prediction.labels):
                row += [prediction.labels[rank], f"{prediction.probabilities[rank]:.6f}"]
            else:
                row += ["", ""]
        lines.append([*row, prediction.error])
    return atomic_write_text(path, _csv_text(lines))


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()

"""What a prediction is, independent of the model that made it: top-k labels, probability rows, CSV output.

Plain data and numpy only (no torch), so the GUI can show and save predictions without
loading a model. ``engine.evaluation.predict`` computes them with a checkpoint.
"""

from __future__ import annotations

import csv
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.core.atomic import atomic_write_text
from engine.core.errors import DatasetError
from engine.data.images import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from PIL import Image


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


class ProbabilityModel(Protocol):
    """What evaluation, prediction and the GUI need of a model or an ensemble."""

    classes: list[str]

    def predict_proba(
        self, paths: Sequence[Path], *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
    ) -> ProbabilityResult: ...

    def predict(self, paths: Sequence[Path], *, top_k: int = 3) -> list[Prediction]: ...

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


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

    @abstractmethod
    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, C)`` float32 probabilities of decoded RGB images (video frames), with the model's preprocessing."""

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

"""An evaluation's scores, computed from probabilities and true classes: accuracy, per-class scores, confusion,
calibration and the top losses.

No model is run here: ``evaluate_probabilities`` is the numpy core every evaluation goes
through, and ``Evaluation`` is what the report (``engine.evaluation.report``) shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.evaluation.calibration import (
    NUM_BINS,
    PROBABILITY_FLOOR,
    ReliabilityBin,
    TemperatureFit,
    apply_temperature,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

SCHEMA_VERSION = 1
TOP_LOSSES = 16


@dataclass(frozen=True)
class ClassMetrics:
    """Scores of one class; a score is None where it is undefined (0 / 0).

    Attributes:
        name: the class.
        precision: of the images predicted as this class, the share that are; None if none were.
        recall: of the images of this class, the share predicted as it; None without any.
        f1: ``2 TP / (2 TP + FP + FN)``; None when the class is neither present nor predicted.
        support: images of this class evaluated.
        predicted: images predicted as this class.
    """

    name: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TopLoss:
    """A confidently wrong image.

    Attributes:
        path: the image file.
        true_label: its class.
        predicted_label: the model's top-1 class.
        probability: the probability given to ``predicted_label``.
        true_probability: the probability given to ``true_label``.
        loss: ``-log(true_probability)`` in nats.
    """

    path: Path
    true_label: str
    predicted_label: str
    probability: float
    true_probability: float
    loss: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**dataclasses.asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class Unreadable:
    """An image that could not be decoded, so it was not evaluated."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"path": str(self.path), "reason": self.reason}


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A model's scores on a set of labelled images.

    Attributes:
        name: what was evaluated (``model``, ``ensemble``, a member's name).
        classes: the model's classes; a class index is a position here.
        paths: the evaluated images, one per row.
        targets: ``(N,)`` int64 true class indices.
        probabilities: ``(N, C)`` float32 softmax rows (after ``temperature``, if set).
        top1: share of images whose most probable class is right.
        top5: share whose true class is among the 5 most probable; None with fewer than 5 classes.
        log_loss: mean ``-log p(true class)`` in nats.
        per_class: scores of every class, in ``classes`` order.
        confusion: ``(C, C)`` int64 counts, rows the true class, columns the predicted one.
        ece: expected calibration error over ``reliability`` bins, in [0, 1].
        mce: maximum calibration error (largest gap of a non-empty bin), in [0, 1].
        reliability: equal-width confidence bins.
        top_losses: the most confidently wrong images, highest loss first.
        unreadable: images that could not be decoded.
        temperature: the temperature applied to the model's probabilities, or None.
        temperature_fit: how that temperature was fitted on validation, when it was.
        members: the evaluations of an ensemble's members (or of models compared beside it).
        source: where the model and images came from (model, data, split...), for the report.
        notes: facts a reader of the report should know (a temperature not saved...).
    """

    name: str
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    targets: np.ndarray
    probabilities: np.ndarray
    top1: float
    top5: float | None
    log_loss: float
    per_class: tuple[ClassMetrics, ...]
    confusion: np.ndarray
    ece: float
    mce: float
    reliability: tuple[ReliabilityBin, ...]
    top_losses: tuple[TopLoss, ...]
    unreadable: tuple[Unreadable, ...] = ()
    temperature: float | None = None
    temperature_fit: TemperatureFit | None = None
    members: dict[str, Evaluation] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Images evaluated (unreadable ones not counted)."""
        return len(self.paths)

    @property
    def predictions(self) -> np.ndarray:
        """``(N,)`` int64 index of the most probable class of every image."""
        return self.probabilities.argmax(axis=1)

    @property
    def macro_precision(self) -> float | None:
        """Mean precision over the classes present in the images (undefined ones count 0)."""
        return self._macro("precision")

    @property
    def macro_recall(self) -> float | None:
        """Mean recall over the classes present in the images (balanced accuracy)."""
        return self._macro("recall")

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the classes present in the images."""
        return self._macro("f1")

    @property
    def mean_confidence(self) -> float:
        """Mean top-1 probability; above ``top1`` means over-confident, below under-confident."""
        return float(self.probabilities.max(axis=1).mean()) if self.count else 0.0

    def summary(self) -> dict[str, Any]:
        """The headline numbers, JSON-ready."""
        return {
            "images": self.count, "unreadable": len(self.unreadable), "top1": self.top1, "top5": self.top5,
            "log_loss": self.log_loss, "ece": self.ece, "mce": self.mce, "mean_confidence": self.mean_confidence,
            "macro_precision": self.macro_precision, "macro_recall": self.macro_recall, "macro_f1": self.macro_f1,
            "temperature": self.temperature,
        }

    def to_dict(self, *, images: bool = True) -> dict[str, Any]:
        """Everything the report shows, JSON-ready.

        Args:
            images: include one row per evaluated image (path, true and predicted class,
                confidence), from which a GUI can fill the gallery of a confusion cell.
        """
        payload: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "source": dict(self.source),
            "classes": list(self.classes),
            "summary": self.summary(),
            "per_class": [item.to_dict() for item in self.per_class],
            "confusion": self.confusion.tolist(),
            "reliability": {"num_bins": len(self.reliability), "bins": [item.to_dict() for item in self.reliability]},
            "top_losses": [item.to_dict() for item in self.top_losses],
            "unreadable": [item.to_dict() for item in self.unreadable],
            "temperature_fit": self.temperature_fit.to_dict() if self.temperature_fit else None,
            "notes": list(self.notes),
            "members": {name: member.to_dict(images=False) for name, member in self.members.items()},
        }
        if images:
            predicted = self.predictions
            rows = np.arange(self.count)
            payload["images"] = [
                {"path": str(path), "true": self.classes[target], "predicted": self.classes[guess],
                 "confidence": float(confidence), "true_probability": float(true)}
                for path, target, guess, confidence, true in zip(
                    self.paths, self.targets.tolist(), predicted.tolist(),
                    self.probabilities[rows, predicted], self.probabilities[rows, self.targets], strict=True)
            ]
        return payload

    def _macro(self, name: str) -> float | None:
        present = [item for item in self.per_class if item.support > 0]
        if not present:
            return None
        return float(np.mean([getattr(item, name) or 0.0 for item in present]))


def evaluate_probabilities(
    probabilities: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    paths: Sequence[str | Path],
    *,
    unreadable: Sequence[Unreadable] = (),
    top_losses: int = TOP_LOSSES,
    name: str = "model",
) -> Evaluation:
    """Every metric of an evaluation, from probabilities and true classes.

    Args:
        probabilities: ``(N, C)`` softmax rows, one per image.
        targets: ``(N,)`` true class indices into ``classes``.
        classes: the ``C`` class names.
        paths: the ``N`` image files (for the top losses and the report).
        unreadable: images that could not be decoded, listed in the report.
        top_losses: how many confidently wrong images to keep.
        name: what was evaluated.

    Raises:
        ValueError: shapes that do not match, targets out of range, probabilities that are
            not finite rows summing to 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    classes = tuple(classes)
    image_paths = tuple(Path(path) for path in paths)
    count, num_classes = probabilities.shape if probabilities.ndim == 2 else (-1, -1)
    if num_classes != len(classes) or count != len(targets) or count != len(image_paths):
        raise ValueError(
            f"evaluate_probabilities: expected (N, {len(classes)}) probabilities for {len(targets)} targets and "
            f"{len(image_paths)} paths, got shape {probabilities.shape}"
        )
    if count and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"evaluate_probabilities: targets must be in [0, {num_classes}), "
                         f"got {targets.min()}..{targets.max()}")
    if not np.isfinite(probabilities).all() or (count and np.abs(probabilities.sum(axis=1) - 1).max() > 1e-3):
        raise ValueError("evaluate_probabilities: every row must be finite probabilities that sum to 1")

    predicted = probabilities.argmax(axis=1) if count else np.zeros(0, dtype=np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (targets, predicted), 1)
    if num_classes >= 5 and count:
        # A stable sort keeps ties in class order, the same tie-break argmax uses.
        best_five = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
        top5: float | None = float((best_five == targets[:, None]).any(axis=1).mean())
    else:
        top5 = None
    bins = reliability_bins(probabilities, targets, num_bins=NUM_BINS)
    return Evaluation(
        name=name,
        classes=classes,
        paths=image_paths,
        targets=targets,
        probabilities=probabilities,
        top1=float((predicted == targets).mean()) if count else 0.0,
        top5=top5,
        log_loss=negative_log_likelihood(probabilities, targets),
        per_class=_per_class(confusion, classes),
        confusion=confusion,
        ece=expected_calibration_error(bins),
        mce=maximum_calibration_error(bins),
        reliability=bins,
        top_losses=_top_losses(probabilities, targets, predicted, classes, image_paths, top_losses),
        unreadable=tuple(unreadable),
    )


def rescaled(evaluation: Evaluation, temperature: float, *, top_losses: int = TOP_LOSSES) -> Evaluation:
    """The same evaluation with the model's logits divided by ``temperature`` (members untouched).

    Top-1, the confusion matrix and per-class scores do not change (the argmax does not);
    log-loss, calibration and the order of the top losses do.
    """
    scaled = evaluate_probabilities(
        apply_temperature(evaluation.probabilities, temperature), evaluation.targets, evaluation.classes,
        evaluation.paths, unreadable=evaluation.unreadable, top_losses=top_losses, name=evaluation.name,
    )
    return dataclasses.replace(scaled, temperature=temperature * (evaluation.temperature or 1.0),
                               members=evaluation.members, source=evaluation.source, notes=evaluation.notes)


def _per_class(confusion: np.ndarray, classes: tuple[str, ...]) -> tuple[ClassMetrics, ...]:
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    rows = []
    for index, name in enumerate(classes):
        hits, present, guessed = int(true_positive[index]), int(support[index]), int(predicted[index])
        errors = (present - hits) + (guessed - hits)
        rows.append(ClassMetrics(
            name=name,
            precision=hits / guessed if guessed else None,
            recall=hits / present if present else None,
            f1=2 * hits / (2 * hits + errors) if hits or errors else None,
            support=present,
            predicted=guessed,
        ))
    return tuple(rows)


def _top_losses(
    probabilities: np.ndarray, targets: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...],
    paths: tuple[Path, ...], limit: int,
) -> tuple[TopLoss, ...]:
    rows = np.arange(len(targets))
    true = probabilities[rows, targets].astype(np.float64)
    losses = -np.log(np.maximum(true, PROBABILITY_FLOOR))
    wrong = np.flatnonzero(predicted != targets)
    # Only misclassified images: a right answer given without conviction is not a failure to show.
    order = wrong[np.argsort(-losses[wrong], kind="stable")][:limit]
    return tuple(
        TopLoss(path=paths[row], true_label=classes[targets[row]], predicted_label=classes[predicted[row]],
                probability=float(probabilities[row, predicted[row]]), true_probability=float(true[row]),
                loss=float(losses[row]))
        for row in order
    )

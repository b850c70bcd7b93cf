"""Measure a model or an ensemble on labelled images: accuracy, per-class scores, confusion, calibration, top losses.

``evaluate_probabilities`` is the pure core (probabilities and targets in, an
``Evaluation`` out); ``evaluate`` runs any probability model (a ``Predictor``, an
ensemble) first; ``evaluate_command`` is the CLI's work, from a checkpoint or manifest
and a dataset folder to a report folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.core.config import DataConfig, RunConfig
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.data.prepare import PreparedDataset, prepare_dataset
from engine.evaluation.calibration import (
    NUM_BINS,
    PROBABILITY_FLOOR,
    ReliabilityBin,
    TemperatureFit,
    apply_temperature,
    calibrate,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    save_temperature,
)
from engine.evaluation.predict import Predictor, ProbabilityResult
from engine.evaluation.report import write_report
from engine.models.checkpoint import read_checkpoint_metadata, resolve_checkpoint_path

if TYPE_CHECKING:
    # For annotations only: evaluating a single checkpoint never imports the ensemble module.
    from engine.evaluation.ensemble import ProbabilityModel

SCHEMA_VERSION = 1
SPLITS = ("val", "test", "train", "all")
TOP_LOSSES = 16

Progress = Callable[[int, int], None]


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
    paths = tuple(Path(path) for path in paths)
    count, num_classes = probabilities.shape if probabilities.ndim == 2 else (-1, -1)
    if num_classes != len(classes) or count != len(targets) or count != len(paths):
        raise ValueError(
            f"evaluate_probabilities: expected (N, {len(classes)}) probabilities for {len(targets)} targets and "
            f"{len(paths)} paths, got shape {probabilities.shape}"
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
        paths=paths,
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
        top_losses=_top_losses(probabilities, targets, predicted, classes, paths, top_losses),
        unreadable=tuple(unreadable),
    )


def evaluate(
    model: ProbabilityModel,
    paths: Sequence[str | Path],
    labels: Sequence[str] | Sequence[int],
    *,
    classes: Sequence[str] | None = None,
    members: Mapping[str, ProbabilityModel] | None = None,
    temperature: float | None = None,
    top_losses: int = TOP_LOSSES,
    progress: Progress | None = None,
) -> Evaluation:
    """Predict labelled images with a model and score the predictions.

    An ensemble (a model with ``member_probabilities(paths)``) has each member scored
    beside it from the same pass over the images; ``members`` adds other models to compare.

    Args:
        model: anything with ``classes`` and ``predict_proba(paths)``.
        paths: image files.
        labels: the true class of each file, by name, or by index into ``classes``.
        classes: names for integer labels (default: the model's classes).
        members: more models to score on the same images, by name; same classes as ``model``.
        temperature: divide the model's logits by this (``apply_temperature``) before scoring.
        top_losses: how many confidently wrong images to keep.
        progress: ``progress(done, total)`` while the model predicts.

    Raises:
        DatasetError: no image could be read, a label is not one of the model's classes, or
            ``labels`` and ``paths`` differ in length.
        CheckpointError: a member's classes differ from the model's.
    """
    paths = [Path(path) for path in paths]
    model_classes = tuple(model.classes)
    targets = _target_indices(labels, paths, tuple(classes) if classes is not None else model_classes, model_classes)
    result, member_results = _predict(model, paths, members or {}, progress)
    name = "ensemble" if callable(getattr(model, "member_probabilities", None)) else "model"
    evaluation = _evaluation_of(result, targets, model_classes, paths, top_losses, name)
    if temperature is not None:
        evaluation = rescaled(evaluation, temperature, top_losses=top_losses)
    scored_members = {
        member_name: _evaluation_of(member_result, targets, model_classes, paths, top_losses, member_name)
        for member_name, member_result in member_results.items()
    }
    return dataclasses.replace(evaluation, members=scored_members)


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


def evaluate_command(
    model_path: str | Path,
    data_path: str | Path,
    *,
    split: str = "val",
    out_dir: str | Path | None = None,
    fit_temperature: bool = False,
    top_losses: int = TOP_LOSSES,
    tta: str = "none",
    device: str = "auto",
    progress: Progress | None = None,
) -> Path:
    """Evaluate a checkpoint or an ensemble on a dataset and write the report folder.

    The dataset is split with the model's own split settings (``data.val_fraction``,
    ``data.test_fraction``, ``data.split_seed`` of the config it was trained with; an
    ensemble's first member's), so on the training data ``val`` means exactly the images
    it was validated on.

    Args:
        model_path: a ``.safetensors`` checkpoint, its ``.json``, a run folder (its best), or
            an ensemble manifest (``.json`` with ``members``).
        data_path: a dataset folder or CSV.
        split: ``val``, ``test``, ``train`` or ``all`` (every usable image).
        out_dir: the report folder (default: ``RUN_DIR/evaluation/<split>-<stamp>`` beside the
            checkpoint's run, or ``evaluation/<manifest>-<split>-<stamp>`` beside a manifest).
        fit_temperature: fit a temperature on the validation split; when it does not worsen the
            validation ECE and is not at a bound of its range, apply it in the report and (for a
            single checkpoint evaluated without TTA) save it in the checkpoint; the report says
            what was done.
        top_losses: how many confidently wrong images to show.
        tta: test-time augmentation, ``none``, ``flip`` or ``multicrop``.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: ``progress(done, total)`` while the model predicts.

    Returns:
        The report folder (its ``index.html`` opens in a browser).

    Raises:
        ConfigError: an unknown split or TTA mode, or ``top_losses`` below 0.
        DatasetError: the split is empty, or the images cannot be used.
        CheckpointError: the model cannot be loaded.
    """
    if split not in SPLITS:
        raise ConfigError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if top_losses < 0:
        raise ConfigError(f"top_losses: must be >= 0, got {top_losses}")
    loaded = _load_model(Path(model_path), device, tta)
    model = loaded.model
    data = loaded.data_config
    dataset = prepare_dataset(data_path, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                              seed=data.split_seed)
    paths, labels = _split_images(dataset, split, data)
    notes = list(loaded.notes)

    def scored(images: list[Path], names: list[str]) -> Evaluation:
        evaluation = evaluate(model, images, names, top_losses=top_losses, progress=progress)
        # A saved temperature is part of the model's outputs already: record it, never apply it twice.
        applied = loaded.applied_temperature
        return evaluation if applied == 1.0 else dataclasses.replace(evaluation, temperature=applied)

    if fit_temperature:
        validation = scored(*_split_images(dataset, "val", data))
        fit = calibrate(validation.probabilities, validation.targets)
        evaluation = validation if split == "val" else scored(paths, labels)
        if fit.worth_applying:
            evaluation = rescaled(evaluation, fit.temperature, top_losses=top_losses)
        evaluation = dataclasses.replace(evaluation, temperature_fit=fit)
        notes.append(_adopt_temperature(loaded, fit))
    else:
        evaluation = scored(paths, labels)
    source = {"model": str(loaded.file), "data": str(dataset.root), "split": split, "tta": tta,
              "evaluated": datetime.now().isoformat(timespec="seconds")}
    evaluation = dataclasses.replace(evaluation, source=source, notes=(*evaluation.notes, *notes))
    folder = Path(out_dir) if out_dir is not None else _default_out_dir(loaded.file, split)
    write_report(evaluation, folder, title=f"{_model_label(loaded.file)} on {dataset.root.name} ({split})")
    return folder


@dataclass(frozen=True)
class _LoadedModel:
    """A model to evaluate with what ``evaluate_command`` needs to know about it.

    Attributes:
        model: a ``Predictor``, a TTA wrapper or an ``Ensemble``.
        file: the checkpoint or manifest.
        data_config: the split settings it was trained with.
        checkpoint: where a fitted temperature is saved, or None where it cannot be.
        applied_temperature: the temperature the model already divides its logits by.
        notes: facts for the report.
    """

    model: ProbabilityModel
    file: Path
    data_config: DataConfig
    checkpoint: Path | None
    applied_temperature: float
    notes: tuple[str, ...] = ()


def _load_model(path: Path, device: str, tta: str) -> _LoadedModel:
    if _is_manifest(path):
        # Imported here: evaluating a single checkpoint needs nothing of ensembles.
        from engine.evaluation.ensemble import Ensemble

        ensemble = Ensemble(path, device=device, tta=tta)
        members = ensemble.manifest.members
        configs = [_data_config(read_checkpoint_metadata(member.path), member.path) for member in members]
        notes = []
        settings = [(config.val_fraction, config.test_fraction, config.split_seed) for config in configs]
        if len(set(settings)) > 1:
            odd = [member.name for member, setting in zip(members, settings, strict=True) if setting != settings[0]]
            notes.append(f"The members were not all split alike: the splits here follow {members[0].name} "
                         f"(data.val_fraction, data.test_fraction, data.split_seed = {settings[0]}); "
                         f"{', '.join(odd)} may have trained on some of these images.")
        return _LoadedModel(ensemble, path, configs[0], None, 1.0, tuple(notes))
    checkpoint = resolve_checkpoint_path(path)
    predictor = Predictor(checkpoint, device=device)
    data_config = _data_config(read_checkpoint_metadata(checkpoint), checkpoint)
    # Predictor.temperature exists once engine/evaluation/predict.py applies the saved temperature.
    applied = float(getattr(predictor, "temperature", 1.0))
    notes = (f"The model divides its logits by its saved temperature {applied:.4g}; the scores include it.",) \
        if applied != 1.0 else ()
    if tta == "none":
        return _LoadedModel(predictor, checkpoint, data_config, checkpoint, applied, notes)
    from engine.evaluation.tta import TestTimeAugmentation

    return _LoadedModel(TestTimeAugmentation(predictor, tta), checkpoint, data_config, None, applied, notes)


def _adopt_temperature(loaded: _LoadedModel, fit: TemperatureFit) -> str:
    """Save a fitted temperature with the model where that is possible and sound; say what happened."""
    described = (f"Temperature {fit.temperature:.4g} fitted on {fit.count} validation images "
                 f"(log-loss {fit.nll_before:.4f} → {fit.nll_after:.4f}, ECE {fit.ece_before:.4f} → "
                 f"{fit.ece_after:.4f})")
    if fit.at_bound:
        why = ("with none misclassified, the loss keeps falling as the model sharpens" if fit.temperature < 1
               else "the outputs say next to nothing about the true class")
        return (f"{described} lies at the end of its allowed range: the validation images cannot pin it down "
                f"({why}). It was neither applied nor saved; validate on more images.")
    if abs(fit.temperature - 1.0) < 0.01:
        return f"{described}: the model is as calibrated as one temperature can make it; nothing was changed."
    if not fit.worth_applying:
        return (f"{described}: it would make the validation ECE worse, so it was neither applied nor saved; "
                f"the model is kept as it is.")
    if loaded.checkpoint is None:
        where = "an ensemble manifest" if loaded.file.suffix == ".json" else "a checkpoint evaluated with TTA"
        return f"{described}; applied here but not saved: {where} has no place for it."
    # Fitted on outputs already divided by the saved temperature: the factors multiply.
    total = fit.temperature * loaded.applied_temperature
    saved = save_temperature(loaded.checkpoint, total)
    return f"{described}; saved as temperature {total:.4g} in {saved}."


def _is_manifest(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from error
    return isinstance(content, dict) and "members" in content


def _data_config(metadata: Mapping[str, Any], source: Path) -> DataConfig:
    try:
        return RunConfig.from_dict(metadata["config"]).data
    except KeyError:
        # A checkpoint from outside a run has no config: the defaults split like a default run.
        return DataConfig()
    except ConfigError as error:
        raise CheckpointError(f"{source}: the config in its metadata is invalid ({error})") from error


def _split_images(dataset: PreparedDataset, split: str, data_config: DataConfig) -> tuple[list[Path], list[str]]:
    if split == "all":
        records = sorted((record for part in dataset.splits.values() for record in part), key=lambda r: str(r.path))
    else:
        records = list(dataset.splits[split])
    if not records:
        setting = {"val": f"data.val_fraction = {data_config.val_fraction}",
                   "test": f"data.test_fraction = {data_config.test_fraction}"}.get(split, "")
        hint = f" (the model was trained with {setting}, and the folder has no {split}/ folder)" if setting else ""
        raise DatasetError(f"{dataset.root}: the {split} split holds no images{hint}")
    return [record.path for record in records], [record.label for record in records]


def _model_label(model_file: Path) -> str:
    """``RUN/best`` for a run's checkpoint, else the file's stem."""
    if model_file.parent.name == "checkpoints":
        return f"{model_file.parent.parent.name}/{model_file.stem}"
    return model_file.stem


def _default_out_dir(model_file: Path, split: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if model_file.suffix == ".json":
        base = model_file.parent / "evaluation" / f"{model_file.stem}-{split}-{stamp}"
    else:
        run_dir = model_file.parent.parent if model_file.parent.name == "checkpoints" else model_file.parent
        base = run_dir / "evaluation" / f"{split}-{stamp}"
    candidate, counter = base, 1
    while candidate.exists():
        counter += 1
        candidate = base.with_name(f"{base.name}-{counter}")
    return candidate


def _target_indices(
    labels: Sequence[str] | Sequence[int], paths: Sequence[Path], label_classes: tuple[str, ...],
    model_classes: tuple[str, ...],
) -> np.ndarray:
    if len(labels) != len(paths):
        raise DatasetError(f"evaluate: {len(paths)} images but {len(labels)} labels")
    names = [label_classes[label] if isinstance(label, (int, np.integer)) else str(label) for label in labels]
    index = {name: position for position, name in enumerate(model_classes)}
    unknown = sorted({name for name in names if name not in index})
    if unknown:
        raise DatasetError(
            f"the images have classes the model does not know: {', '.join(unknown)} "
            f"(the model's classes: {', '.join(model_classes)})"
        )
    return np.array([index[name] for name in names], dtype=np.int64)


def _predict(
    model: ProbabilityModel, paths: list[Path], members: Mapping[str, ProbabilityModel], progress: Progress | None
) -> tuple[ProbabilityResult, dict[str, ProbabilityResult]]:
    options = {"progress": progress} if progress is not None else {}
    result = model.predict_proba(paths, **options)
    results: dict[str, ProbabilityResult] = {}
    member_probabilities = getattr(model, "member_probabilities", None)
    if callable(member_probabilities):
        # An ensemble keeps its members' outputs of the latest paths: this computes nothing again.
        results.update(member_probabilities(paths))
    for name, member in members.items():
        if tuple(member.classes) != tuple(model.classes):
            raise CheckpointError(f"member {name!r}: its classes {list(member.classes)} differ from the model's "
                                  f"{list(model.classes)}")
        results[name] = member.predict_proba(paths)
    return result, results


def _evaluation_of(
    result: ProbabilityResult, targets: np.ndarray, classes: tuple[str, ...], paths: list[Path], top_losses: int,
    name: str,
) -> Evaluation:
    unreadable = tuple(Unreadable(paths[index], reason) for index, reason in sorted(result.failures.items()))
    if not result.kept:
        first = f"; first: {unreadable[0].path}: {unreadable[0].reason}" if unreadable else ""
        raise DatasetError(f"{name}: none of the {len(paths)} images could be read{first}")
    kept = np.asarray(result.kept, dtype=np.int64)
    return evaluate_probabilities(result.probabilities, targets[kept], classes, [paths[index] for index in kept],
                                  unreadable=unreadable, top_losses=top_losses, name=name)


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

"""Evaluate a model or an ensemble on labelled images, and a checkpoint or manifest on a dataset into a report folder.

``evaluate`` runs any probability model (a ``Predictor``, an ensemble) and scores its
probabilities with ``engine.evaluation.metrics``; ``evaluate_command`` is the CLI's work,
from a checkpoint or manifest and a dataset folder to a report folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.config import DataConfig, RunConfig
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.core.stop_signals import stops_deferred
from engine.data.prepare import PreparedDataset, prepare_configured_dataset
from engine.evaluation.calibration import TemperatureFit, calibrate, save_temperature
from engine.evaluation.choices import SPLITS
from engine.evaluation.ensemble import Ensemble
from engine.evaluation.manifest import is_manifest
from engine.evaluation.metrics import (
    TOP_LOSSES,
    ClassMetrics,
    Evaluation,
    TopLoss,
    Unreadable,
    evaluate_probabilities,
    rescaled,
)
from engine.evaluation.predict import Predictor
from engine.evaluation.predictions import ProbabilityModel, ProbabilityResult
from engine.evaluation.report import write_report
from engine.evaluation.tta import TestTimeAugmentation
from engine.models.checkpoint_metadata import read_checkpoint_metadata, resolve_checkpoint_path

__all__ = [
    "SPLITS", "LoadedModel", "check_evaluation_options", "data_config_of", "evaluate", "evaluate_command",
    "evaluate_loaded", "load_for_evaluation",
    # Re-exported because tests and callers import them from here; their home is engine.evaluation.metrics.
    "TOP_LOSSES", "ClassMetrics", "Evaluation", "TopLoss", "Unreadable", "evaluate_probabilities", "rescaled",
]

Progress = Callable[[int, int], None]


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
    files = [Path(path) for path in paths]
    model_classes = tuple(model.classes)
    targets = _target_indices(labels, files, tuple(classes) if classes is not None else model_classes, model_classes)
    result, member_results = _predict(model, files, members or {}, progress)
    name = "ensemble" if callable(getattr(model, "member_probabilities", None)) else "model"
    evaluation = _evaluation_of(result, targets, model_classes, files, top_losses, name)
    if temperature is not None:
        evaluation = rescaled(evaluation, temperature, top_losses=top_losses)
    scored_members = {
        member_name: _evaluation_of(member_result, targets, model_classes, files, top_losses, member_name)
        for member_name, member_result in member_results.items()
    }
    return dataclasses.replace(evaluation, members=scored_members)


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
    check_evaluation_options(split, top_losses)
    return evaluate_loaded(load_for_evaluation(Path(model_path), device, tta), data_path, split=split,
                           out_dir=out_dir, fit_temperature=fit_temperature, top_losses=top_losses, tta=tta,
                           progress=progress)


def check_evaluation_options(split: str, top_losses: int) -> None:
    """Refuse a split or a count of top losses ``evaluate_command`` has no meaning for, before a model loads.

    Raises:
        ConfigError: naming the option.
    """
    if split not in SPLITS:
        raise ConfigError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if top_losses < 0:
        raise ConfigError(f"top_losses: must be >= 0, got {top_losses}")


def evaluate_loaded(
    loaded: LoadedModel,
    data_path: str | Path,
    *,
    split: str = "val",
    out_dir: str | Path | None = None,
    fit_temperature: bool = False,
    top_losses: int = TOP_LOSSES,
    tta: str = "none",
    progress: Progress | None = None,
) -> Path:
    """``evaluate_command`` for a model already loaded (an export, say): the arguments are the same."""
    check_evaluation_options(split, top_losses)
    model = loaded.model
    data = loaded.data_config
    dataset = prepare_configured_dataset(data, path=data_path)
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
class LoadedModel:
    """A model to evaluate with what ``evaluate_command`` needs to know about it.

    Attributes:
        model: a ``Predictor``, a TTA wrapper or an ``Ensemble``.
        file: the checkpoint or manifest.
        data_config: the split settings it was trained with.
        checkpoint: where a fitted temperature is saved, or None where it cannot be.
        applied_temperature: the temperature the model already divides its logits by.
        notes: facts for the report.
        unsaved_because: why a fitted temperature cannot be saved with it (where ``checkpoint`` is None).
    """

    model: ProbabilityModel
    file: Path
    data_config: DataConfig
    checkpoint: Path | None
    applied_temperature: float
    notes: tuple[str, ...] = ()
    unsaved_because: str = ""


def load_for_evaluation(path: Path, device: str, tta: str) -> LoadedModel:
    """A checkpoint (or run folder) or an ensemble manifest, loaded with its split settings and notes."""
    if is_manifest(path):
        ensemble = Ensemble(path, device=device, tta=tta)
        members = ensemble.manifest.members
        configs = [data_config_of(read_checkpoint_metadata(member.path), member.path) for member in members]
        split_notes = []
        settings = [(config.val_fraction, config.test_fraction, config.split_seed) for config in configs]
        if len(set(settings)) > 1:
            odd = [member.name for member, setting in zip(members, settings, strict=True) if setting != settings[0]]
            split_notes.append(f"The members were not all split alike: the splits here follow {members[0].name} "
                               f"(data.val_fraction, data.test_fraction, data.split_seed = {settings[0]}); "
                               f"{', '.join(odd)} may have trained on some of these images.")
        return LoadedModel(ensemble, path, configs[0], None, 1.0, tuple(split_notes),
                           "an ensemble manifest has no place for it")
    checkpoint = resolve_checkpoint_path(path)
    predictor = Predictor(checkpoint, device=device)
    data_config = data_config_of(read_checkpoint_metadata(checkpoint), checkpoint)
    applied = predictor.temperature
    notes = (f"The model divides its logits by its saved temperature {applied:.4g}; the scores include it.",) \
        if applied != 1.0 else ()
    if tta == "none":
        return LoadedModel(predictor, checkpoint, data_config, checkpoint, applied, notes)
    return LoadedModel(TestTimeAugmentation(predictor, tta), checkpoint, data_config, None, applied, notes,
                       "a checkpoint evaluated with TTA has no place for it")


def _adopt_temperature(loaded: LoadedModel, fit: TemperatureFit) -> str:
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
        return f"{described}; applied here but not saved: {loaded.unsaved_because}."
    # Fitted on outputs already divided by the saved temperature: the factors multiply.
    total = fit.temperature * loaded.applied_temperature
    with stops_deferred():  # the checkpoint and its .json copy change together
        saved = save_temperature(loaded.checkpoint, total)
    return f"{described}; saved as temperature {total:.4g} in {saved}."


def data_config_of(metadata: Mapping[str, Any], source: Path) -> DataConfig:
    """The data section (split settings) of the run config in a model's metadata; the defaults without one.

    Raises:
        CheckpointError: the config is there but invalid (naming ``source``).
    """
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
    """``RUN/best`` for a run's checkpoint, ``EXPORT/onnx`` for an export, else the file's stem."""
    if model_file.parent.name == "checkpoints" or model_file.is_dir():
        return f"{model_file.parent.parent.name}/{model_file.stem}"
    return model_file.stem


def _default_out_dir(model_file: Path, split: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if model_file.suffix == ".json" or model_file.is_dir():  # a manifest, or an export's format folder
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
    result = model.predict_proba(paths, progress=progress)
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

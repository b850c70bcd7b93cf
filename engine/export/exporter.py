"""Export a checkpoint or an ensemble for deployment, and prove that each export computes what PyTorch computes.

Formats (``engine.export.formats``, one module each): ONNX (one graph with the softmax inside,
dynamic batch, a standalone ``predict.py`` beside it), ONNX int8, OpenVINO, Core ML, TorchScript and
a timm folder. Each format stands alone: one that cannot be written is refused with its reason, and
the others are still written.
Every exact export is run on real images against the PyTorch model before it is published (largest
probability difference at most 1e-4); a quantized one is judged by its top-1 agreement and accuracy
on the validation images instead, and one that loses too much is kept aside, not published. One this
machine cannot run (Core ML off macOS) is published marked as not executed, never as passed. Each
carries its labels and preprocessing in a ``metadata.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import timm
import torch

from engine.core.errors import CheckpointError, ConfigError, TransferStudioError
from engine.core.stop_signals import stops_deferred
from engine.data.settings import DataSettings
from engine.evaluation.predict import Predictor
from engine.export.formats import (
    EXPORT_FORMATS,
    METADATA_FORMAT,
    MIN_OPSET,
    ONNX_INPUT,
    ONNX_OUTPUT,
    PREDICT_SCRIPT,
    ExportFormat,
    ExportSubject,
    get_export_format,
    write_metadata,
)
from engine.export.formats.base import one_line
from engine.export.parity import CheckInputs, check_inputs, parity_difference
from engine.export.samples import DEFAULT_MAX_ACCURACY_DROP, export_samples
from engine.export.source import ExportSource, load_source, predictors_source

# Largest absolute difference of any probability between an export and PyTorch that still passes.
PARITY_TOLERANCE = 1e-4
METADATA_VERSION = 1

Log = Callable[[str], None]
_T = TypeVar("_T")

# Named here by the GUI (gui/export_formats_picker.py, gui/export_results.py) as well as in engine.export.formats.
__all__ = ["EXPORT_FORMATS", "PARITY_TOLERANCE", "PREDICT_SCRIPT", "ExportResult", "FormatExport",
           "export_ensemble", "export_model"]


@dataclass(frozen=True)
class FormatExport:
    """One published export.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``timm``.
        folder: the export's own folder (``OUT/<format>``), with ``metadata.json`` inside.
        path: the model file (``model.onnx``, ``model.torchscript.pt``), or the folder for timm.
        max_difference: largest absolute probability difference to PyTorch on the check images.
        export_seconds: time to write the export.
        check_seconds: time to reload it and run the parity check.
        judgement: for a format that is not exact (int8), its top-1 agreement and accuracies.
        unchecked: why the export could not be run here (Core ML off macOS), so was published
            unchecked; "" for a checked one.
    """

    format: str
    folder: Path
    path: Path
    max_difference: float
    export_seconds: float
    check_seconds: float
    judgement: dict[str, Any] = field(default_factory=dict)
    unchecked: str = ""


@dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote.

    Attributes:
        out_dir: the folder holding one subfolder per format.
        exports: by format name, in the order asked for.
        check_images: the real images of the parity check; empty when none could be found
            and random inputs were used instead.
        metadata: the facts every export's ``metadata.json`` shares (labels, preprocessing, source).
        skipped: formats left out because the source has no form in them (asked for all
            formats with ``formats=None``), with the reason.
        refused: formats asked for that were not published (a missing package, a converter that
            cannot express the model, a failed check), with the reason in one line.
    """

    out_dir: Path
    exports: dict[str, FormatExport]
    check_images: tuple[Path, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """One line per export (where it is, its parity, its timings), then one per skipped or refused format."""
        inputs = f"{len(self.check_images)} images" if self.check_images else "random inputs (no images found)"
        return [
            f"{item.format}: {item.path}  {_check_words(item, inputs)} "
            f"(export {item.export_seconds:.1f} s, check {item.check_seconds:.1f} s)"
            for item in self.exports.values()
        ] + [f"{name}: not exported: {reason}" for name, reason in self.skipped.items()] \
            + [f"{name}: refused: {reason}" for name, reason in self.refused.items()]


def _check_words(item: FormatExport, inputs: str) -> str:
    if item.unchecked:
        return item.unchecked
    if not item.judgement:
        return f"max |difference| to PyTorch {item.max_difference:.1e} on {inputs}"
    judged = item.judgement
    return (f"top-1 agreement with PyTorch {judged['top1_agreement']:.1%}, accuracy {judged['accuracy_int8']:.1%} "
            f"(float {judged['accuracy_float']:.1%}) on {judged['images']}")


def export_model(
    source: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    *,
    opset: int = MIN_OPSET,
    check_images: Sequence[Path] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    log: Log | None = None,
) -> ExportResult:
    """Export a checkpoint (or run folder, or ensemble manifest) and check every export against PyTorch.

    Writes ``OUT/onnx/`` (``model.onnx``, ``predict.py``, ``metadata.json``),
    ``OUT/torchscript/`` (``model.torchscript.pt``, ``metadata.json``) and ``OUT/timm/``
    (``config.json``, ``model.safetensors``, ``metadata.json``), each published only after
    its parity check passed; an older export of the same format is replaced.

    Args:
        source: a ``.safetensors`` checkpoint, its ``.json``, a run folder (its best), or an
            ensemble manifest ``.json``.
        out_dir: the export folder (created if needed).
        formats: names of ``EXPORT_FORMATS`` (``onnx``, ``onnx-int8``, ``openvino``, ``coreml``,
            ``torchscript``, ``timm``); None: every format the source has that is written by default
            (the opt-in ones, such as ``onnx-int8``, only by name). An ensemble has no timm form, nor
            has a checkpoint with an mlp head (timm cannot rebuild that head): asking for one is refused.
        opset: ONNX opset, at least 18 (the oldest the exporter writes).
        check_images: real images for the parity check; None takes a few from the data
            folder the model was trained on (random inputs if that folder is gone); an empty
            list asks for random inputs only.
        tolerance: the largest absolute probability difference to PyTorch an export may show
            and still be published (default ``PARITY_TOLERANCE``).
        max_accuracy_drop: the most top-1 accuracy (a fraction: 0.01 is one point) an int8 export
            may lose on the validation images and still be published.
        log: called with one line per finished or refused export (e.g. ``print``).

    Returns:
        The published exports, their parity and timings, and the formats refused with why: one whose
        package is missing (with the install command), that cannot express the model, whose converter
        failed, or that failed its check is not published (an older export of it stays as it was),
        and the other formats are still written.

    Raises:
        ConfigError: unknown or no formats, an opset below 18, or a negative tolerance.
        CheckpointError: the source cannot be loaded, or every format asked for was refused.
        DatasetError: none of the given check images can be read.
    """
    chosen = _check_formats(formats, opset, tolerance, max_accuracy_drop)
    exported = load_source(Path(source))
    return _export(exported, Path(out_dir), chosen, opset=opset, check_images=check_images, tolerance=tolerance,
                   max_accuracy_drop=max_accuracy_drop, log=log)


def export_ensemble(
    predictors: Sequence[Predictor],
    weights: Sequence[float] | None,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    *,
    opset: int = MIN_OPSET,
    check_images: Sequence[Path] | None = None,
    description: Mapping[str, Any] | None = None,
    tolerance: float = PARITY_TOLERANCE,
    log: Log | None = None,
) -> ExportResult:
    """Export loaded ensemble members as one graph averaging their softmax outputs.

    Args:
        predictors: the members, loaded on the CPU, with the same classes and input size,
            resize and crop (mean and std may differ: the graph re-normalises per member).
        weights: one non-negative weight per member (normalised to sum to 1); None: equal.
        out_dir: the export folder.
        formats: ``onnx`` and/or ``torchscript``; None: both (an ensemble has no timm form).
        opset: ONNX opset, at least 18.
        check_images: real images for the parity check (None: from the first member's data).
        description: facts about the ensemble for the metadata (e.g. where its members came from).
        tolerance: the largest absolute probability difference to PyTorch that still publishes.
        log: called with one line per finished export.

    Raises:
        ConfigError: bad formats, opset, weights or tolerance.
        CheckpointError: members that disagree on classes or preprocessing, or a failed parity check.
    """
    chosen = _check_formats(formats, opset, tolerance, DEFAULT_MAX_ACCURACY_DROP)
    exported = predictors_source(list(predictors), weights, {"kind": "ensemble", **(description or {})})
    return _export(exported, Path(out_dir), chosen, opset=opset, check_images=check_images, tolerance=tolerance,
                   max_accuracy_drop=DEFAULT_MAX_ACCURACY_DROP, log=log)


def _check_formats(formats: Sequence[str] | None, opset: int, tolerance: float,
                   max_accuracy_drop: float) -> list[str] | None:
    if not 0 <= max_accuracy_drop <= 1:
        raise ConfigError(f"export max_accuracy_drop: must be a fraction in [0, 1] (0.01 is one point of top-1), "
                          f"got {max_accuracy_drop!r}")
    if not tolerance >= 0:
        raise ConfigError(f"export tolerance: must be a number >= 0 (largest probability difference), "
                          f"got {tolerance!r}")
    if opset < MIN_OPSET:
        raise ConfigError(f"export opset: must be >= {MIN_OPSET} (the oldest torch's ONNX exporter writes), "
                          f"got {opset}")
    if formats is None:
        return None
    if isinstance(formats, str):
        formats = [formats]
    chosen = list(dict.fromkeys(formats))
    unknown = [name for name in chosen if name not in EXPORT_FORMATS]
    if unknown or not chosen:
        raise ConfigError(f"export formats: expected some of {', '.join(EXPORT_FORMATS)}, got {list(formats)!r}")
    return chosen


def _export(source: ExportSource, out_dir: Path, formats: list[str] | None, *, opset: int,
            check_images: Sequence[Path] | None, tolerance: float, max_accuracy_drop: float,
            log: Log | None) -> ExportResult:
    subject = source.subject()
    refusals = {name: reason for name in EXPORT_FORMATS
                if (reason := get_export_format(name).refusal(subject)) is not None}
    skipped: dict[str, str] = {}
    if formats is None:
        by_default = [name for name in EXPORT_FORMATS if get_export_format(name).by_default]
        formats = [name for name in by_default if name not in refusals]
        skipped = {name: reason for name, reason in refusals.items() if name in by_default}
    # Each format stands alone: one that cannot be written is refused, with why, and the others still export.
    refused = {name: f"{source.label}: {refusals[name]}" for name in formats if name in refusals}
    for name in formats:
        if name not in refused:
            try:
                get_export_format(name).require()
            except CheckpointError as error:
                refused[name] = str(error)
    sampled = [name for name in formats if name not in refused and get_export_format(name).needs_samples]
    if sampled:
        try:
            subject = dataclasses.replace(subject, samples=export_samples(
                source.configs[0], source.classes, source.settings[0], label=source.label,
                max_accuracy_drop=max_accuracy_drop))
        except CheckpointError as error:
            refused.update({name: str(error) for name in sampled})
    to_write = [name for name in formats if name not in refused]
    _refuse_if_nothing(to_write, refused)
    if log is not None:
        for name, reason in refused.items():
            log(f"{name}: refused: {reason}")
    check = check_inputs(source, subject.graph, check_images)
    shared = _shared_metadata(source, check)
    out_dir.mkdir(parents=True, exist_ok=True)
    exports: dict[str, FormatExport] = {}
    for name in to_write:
        try:
            exports[name] = _export_format(get_export_format(name), subject, check, shared, out_dir, opset, tolerance)
        except CheckpointError as error:
            refused[name] = str(error)
            if log is not None:
                log(f"{name}: refused: {error}")
            continue
        if log is not None:
            log(ExportResult(out_dir, {name: exports[name]}, check.paths).summary()[0])
    _refuse_if_nothing(list(exports), refused)
    return ExportResult(out_dir, exports, check.paths, shared, skipped,
                        {name: refused[name] for name in formats if name in refused})


def _refuse_if_nothing(formats: list[str], refused: dict[str, str]) -> None:
    """Raise when no format is left to write: an export that writes nothing is an error, not a result."""
    if not formats and refused:
        raise CheckpointError("; ".join(dict.fromkeys(refused.values())))


def _shared_metadata(source: ExportSource, check: CheckInputs) -> dict[str, Any]:
    settings = source.settings[0]
    channels, height, width = settings.input_size
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "kind": "ensemble" if source.is_ensemble else "model",
        "labels": list(source.classes),
        "preprocessing": {**settings.to_dict(), "steps": _describe_steps(settings)},
        "input": {"name": ONNX_INPUT, "shape": ["batch", channels, height, width], "dtype": "float32"},
        "output": {"name": ONNX_OUTPUT, "shape": ["batch", len(source.classes)], "dtype": "float32",
                   "meaning": "softmax probabilities in label order, rows sum to 1"},
        "source": source.description,
        # The run config of the (first) model: its split settings tell evaluate which images it validated on.
        "training_config": source.configs[0] if source.configs else {},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
    }


def _describe_steps(settings: DataSettings) -> str:
    """timm's eval transform in words, for readers of metadata.json (predict.py implements it)."""
    resize = {
        "squash": "resize both sides to floor(size / crop_pct), not keeping the aspect ratio",
        "border": "resize the longer side to floor(size / crop_pct), pad with the mean colour",
    }.get(settings.crop_mode, "resize the shorter side to floor(size / crop_pct)")
    return (f"decode as RGB (EXIF upright, transparency on white); {resize} ({settings.interpolation}); centre "
            "crop to size; scale pixels to [0, 1]; subtract mean and divide by std per channel; layout NCHW")


def _export_format(export_format: ExportFormat, subject: ExportSubject, check: CheckInputs, shared: dict[str, Any],
                   out_dir: Path, opset: int, tolerance: float) -> FormatExport:
    """Write one format into a staging folder, check it, then publish it as ``OUT/<name>``."""
    name = export_format.name
    # Process and thread in the name: two exports into one folder never share a staging folder.
    staging = out_dir / f".{name}.staging-{os.getpid()}-{threading.get_ident()}"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.perf_counter()
        metadata = {**shared, "export_format": name}
        path = _converted(name, subject.label, lambda: export_format.write(subject, staging, metadata, opset))
        export_seconds = time.perf_counter() - started
        unrunnable = export_format.not_runnable_here()
        if unrunnable is not None:
            # Published, and saying plainly that nothing checked it: never a pass it did not earn.
            metadata["parity"] = {"executed": False, "reason": unrunnable}
            write_metadata(staging, metadata)
            with stops_deferred():
                folder = _publish(staging, out_dir / name)
            return FormatExport(name, folder, folder / path.relative_to(staging), float("nan"), export_seconds, 0.0,
                                unchecked=unrunnable)
        started = time.perf_counter()
        runner = _converted(name, subject.label, lambda: export_format.load(path))
        difference = parity_difference(runner, check)
        try:
            judgement = export_format.judge(runner, subject)
        except CheckpointError as error:
            # Kept aside for a look (with what it was judged on), never where the published one goes.
            metadata["refused"] = str(error)
            write_metadata(staging, metadata)
            with stops_deferred():
                aside = _publish(staging, out_dir / f"{name}.refused")
            raise CheckpointError(f"{error} (kept aside in {aside})") from error
        check_seconds = time.perf_counter() - started
        if judgement is None and not difference <= tolerance:
            raise CheckpointError(
                f"{subject.label}: the {name} export differs from PyTorch by {difference:.2e} (more than "
                f"{tolerance:.1e}) on {len(check.images)} inputs; it was not published"
            )
        metadata["parity"] = {
            "executed": True,
            "max_difference": difference,
            "tolerance": tolerance if judgement is None else None,
            "images": [image.name for image in check.paths],
            "random_inputs": not check.paths,
        }
        if judgement is not None:
            metadata["judgement"] = judgement
        write_metadata(staging, metadata)
        with stops_deferred():
            folder = _publish(staging, out_dir / name)
    finally:
        with stops_deferred():  # a stop signal must not leave half a staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
    return FormatExport(name, folder, folder / path.relative_to(staging), difference, export_seconds, check_seconds,
                        judgement or {})


def _converted(name: str, label: str, step: Callable[[], _T]) -> _T:
    """Run a format's writer or loader; whatever a converter or runtime raises becomes one plain line."""
    try:
        return step()
    except TransferStudioError:  # ours already says what happened (a full disk: StorageError)
        raise
    except Exception as error:  # noqa: BLE001  third-party converters raise anything; the user gets its reason
        raise CheckpointError(f"{label}: the {name} converter failed ({one_line(error)}); "
                              "nothing of it was published") from error


def _publish(staging: Path, final: Path) -> Path:
    """Move a checked export folder into place, replacing an older one (not to be cut short by a stop signal)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{threading.get_ident()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final

"""Export a checkpoint or an ensemble for deployment, and prove that each export computes what PyTorch computes.

Formats: ONNX (one graph with the softmax inside, dynamic batch, a standalone ``predict.py``
beside it), TorchScript and a timm folder. Every export is run on real images against the
PyTorch model before it is published (largest probability difference at most 1e-4), and
carries its labels and preprocessing in a ``metadata.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from augment import create_eval_transform
from engine.core.atomic import atomic_write_text
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.data.images import load_rgb
from engine.evaluation.ensemble import Ensemble, is_manifest
from engine.evaluation.predict import Predictor, collect_image_paths
from engine.export.formats import (
    MIN_OPSET,
    ONNX_FILE,
    ONNX_INPUT,
    ONNX_OUTPUT,
    TORCHSCRIPT_FILE,
    ProbabilityRunner,
    example_batch,
    load_onnx_runner,
    load_timm_runner,
    load_torchscript_runner,
    require_onnx_packages,
    timm_head_problem,
    write_metadata,
    write_onnx,
    write_timm_folder,
    write_torchscript,
)
from engine.data.settings import DataSettings
from engine.models.checkpoint import read_checkpoint_metadata

EXPORT_FORMATS = ("onnx", "torchscript", "timm")
# Largest absolute difference of any probability between an export and PyTorch that still passes.
PARITY_TOLERANCE = 1e-4
# Images the parity check takes from the model's own data when the caller names none.
DEFAULT_CHECK_IMAGES = 8
METADATA_FORMAT = "transfer-studio-export"
METADATA_VERSION = 1
PREDICT_SCRIPT = "predict.py"
PREDICT_TEMPLATE = Path(__file__).resolve().parents[1] / "resources" / "predict_template.py"

Log = Callable[[str], None]


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
    """

    format: str
    folder: Path
    path: Path
    max_difference: float
    export_seconds: float
    check_seconds: float


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
    """

    out_dir: Path
    exports: dict[str, FormatExport]
    check_images: tuple[Path, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """One line per export (where it is, its parity, its timings), then one per skipped format."""
        inputs = f"{len(self.check_images)} images" if self.check_images else "random inputs (no images found)"
        return [
            f"{item.format}: {item.path}  max |difference| to PyTorch {item.max_difference:.1e} on {inputs} "
            f"(export {item.export_seconds:.1f} s, check {item.check_seconds:.1f} s)"
            for item in self.exports.values()
        ] + [f"{name}: not exported: {reason}" for name, reason in self.skipped.items()]


class ProbabilityGraph(nn.Module):
    """One model or an ensemble as a single module: normalised images in, softmax probabilities out.

    An ensemble averages its members' softmax outputs with fixed weights (the lectures'
    rule). A calibrated member divides its logits by its temperature first, as
    ``Predictor.predict_proba`` does. Members trained with another mean/std than the first get
    the input re-normalised inside the module, so every member sees exactly what its own
    preprocessing gives it.

    Args:
        members: eval-mode classifiers, ``(N, 3, H, W)`` images to ``(N, C)`` logits, same classes.
        weights: one per member, summing to 1 (None: a single member).
        adapters: per member, None or ``(scale, shift)`` ``(1, 3, 1, 1)`` tensors applied to the
            input as ``images * scale + shift``.
        temperatures: per member, the temperature ``T > 0`` its logits are divided by (None: all 1).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 adapters: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
                 temperatures: Sequence[float] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.weights = [float(weight) for weight in (weights or [1.0] * len(members))]
        self.temperatures = [float(value) for value in (temperatures or [1.0] * len(members))]
        self.adapted = [adapter is not None for adapter in (adapters or [None] * len(members))]
        for index, adapter in enumerate(adapters or []):
            if adapter is not None:
                self.register_buffer(f"scale_{index}", adapter[0])
                self.register_buffer(f"shift_{index}", adapter[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 normalised images to ``(N, C)`` probabilities (rows sum to 1)."""
        total: torch.Tensor | None = None
        for index, member in enumerate(self.members):
            inputs = images
            if self.adapted[index]:
                inputs = images * getattr(self, f"scale_{index}") + getattr(self, f"shift_{index}")
            logits = member(inputs)
            # Python-level branches: the graph holds only the operations a member needs.
            if self.temperatures[index] != 1.0:
                logits = logits / self.temperatures[index]
            probabilities = logits.softmax(dim=1)
            if len(self.members) > 1:
                probabilities = probabilities * self.weights[index]
            total = probabilities if total is None else total + probabilities
        assert total is not None  # members is never empty
        return total


@dataclass
class _Source:
    """What is exported: one Predictor, or ensemble members with their weights."""

    label: str  # names the source in messages
    members: list[Predictor]
    weights: list[float]
    settings: list[DataSettings]
    heads: list[Mapping[str, Any] | None]
    data_paths: list[str]
    description: dict[str, Any]
    # The ensemble to check against; None: the weighted average of the members' predictions.
    reference: Ensemble | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1 or self.description.get("kind") == "ensemble"

    @property
    def classes(self) -> list[str]:
        return self.members[0].classes


def export_model(
    source: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
    *,
    opset: int = MIN_OPSET,
    check_images: Sequence[Path] | None = None,
    tolerance: float = PARITY_TOLERANCE,
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
        formats: any of ``onnx``, ``torchscript``, ``timm``; None: every format the source
            has. An ensemble has no timm form, nor has a checkpoint with an mlp head (timm
            cannot rebuild that head): asking for one is refused.
        opset: ONNX opset, at least 18 (the oldest the exporter writes).
        check_images: real images for the parity check; None takes a few from the data
            folder the model was trained on (random inputs if that folder is gone); an empty
            list asks for random inputs only.
        tolerance: the largest absolute probability difference to PyTorch an export may show
            and still be published (default ``PARITY_TOLERANCE``).
        log: called with one line per finished export (e.g. ``print``).

    Returns:
        The published exports, their parity and timings.

    Raises:
        ConfigError: unknown or no formats, an opset below 18, or a negative tolerance.
        CheckpointError: the source cannot be loaded, cannot be exported in a format asked
            for, or an export differs from PyTorch by more than ``tolerance``; that export is
            not published (an older export of its format stays as it was).
        DatasetError: none of the given check images can be read.
    """
    chosen = _check_formats(formats, opset, tolerance)
    exported = _load_source(Path(source))
    return _export(exported, Path(out_dir), chosen, opset=opset, check_images=check_images, tolerance=tolerance,
                   log=log)


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
    chosen = _check_formats(formats, opset, tolerance)
    exported = _predictors_source(list(predictors), weights, {"kind": "ensemble", **(description or {})})
    return _export(exported, Path(out_dir), chosen, opset=opset, check_images=check_images, tolerance=tolerance,
                   log=log)


def _check_formats(formats: Sequence[str] | None, opset: int, tolerance: float) -> list[str] | None:
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


def _load_source(path: Path) -> _Source:
    if is_manifest(path):
        return _manifest_source(path)
    predictor = Predictor(path, device="cpu")
    metadata = read_checkpoint_metadata(predictor.checkpoint_path)
    description = {
        "kind": "model",
        "checkpoint": str(predictor.checkpoint_path),
        **{key: metadata.get(key) for key in ("backbone", "name", "epoch", "score", "config_digest")},
        "temperature": _temperature(predictor),
    }
    return _predictors_source([predictor], None, description)


def _manifest_source(path: Path) -> _Source:
    # Built without test-time augmentation: the exported graph is the plain weighted average.
    ensemble = Ensemble(path, device="cpu")
    predictors = [ensemble.models[name] for name in ensemble.members]
    weights = [ensemble.weights[name] for name in ensemble.members]
    description = {"kind": "ensemble", "manifest": str(path)}
    source = _predictors_source(predictors, weights, description)
    source.reference = ensemble
    return source


def _predictors_source(predictors: list[Predictor], weights: Sequence[float] | None,
                       description: dict[str, Any]) -> _Source:
    if not predictors:
        raise CheckpointError("export: no model to export (the ensemble has no members)")
    for predictor in predictors:
        if predictor.plan.device.type != "cpu":
            raise ConfigError(f"{predictor.checkpoint_path}: loaded on {predictor.plan.device}, but exports are "
                              "traced on the CPU; load it with Predictor(path, device='cpu')")
    metadata = [read_checkpoint_metadata(predictor.checkpoint_path) for predictor in predictors]
    settings = [DataSettings.from_dict(item["data_settings"]) for item in metadata]
    first = predictors[0]
    for predictor, member_settings in zip(predictors[1:], settings[1:], strict=True):
        if predictor.classes != first.classes:
            raise CheckpointError(
                f"{predictor.checkpoint_path}: classes {predictor.classes} differ from {first.classes} of "
                f"{first.checkpoint_path}; ensemble members must predict the same classes in the same order"
            )
        differing = [name for name in ("input_size", "interpolation", "crop_pct", "crop_mode")
                     if getattr(member_settings, name) != getattr(settings[0], name)]
        if differing:
            raise CheckpointError(
                f"{predictor.checkpoint_path}: its preprocessing ({', '.join(differing)}) differs from that of "
                f"{first.checkpoint_path}; one exported graph takes one image size, resize and crop"
            )
    normalised = _normalise_weights(weights, len(predictors))
    if len(predictors) > 1:
        description = {**description, "members": [
            {"checkpoint": str(predictor.checkpoint_path), "backbone": item.get("backbone"), "weight": weight,
             "temperature": _temperature(predictor)}
            for predictor, item, weight in zip(predictors, metadata, normalised, strict=True)
        ]}
    return _Source(
        label=description.get("manifest") or description.get("checkpoint") or str(first.checkpoint_path),
        members=predictors,
        weights=normalised,
        settings=settings,
        heads=[item.get("head") for item in metadata],
        data_paths=[str(((item.get("config") or {}).get("data") or {}).get("path") or "") for item in metadata],
        description=description,
    )


def _normalise_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    values = [float(weight) for weight in weights]
    if len(values) != count or any(not np.isfinite(value) or value < 0 for value in values) or sum(values) <= 0:
        raise ConfigError(
            f"ensemble weights: expected {count} finite non-negative numbers with a positive sum, got {values}"
        )
    total = sum(values)
    return [value / total for value in values]


def _export(source: _Source, out_dir: Path, formats: list[str] | None, *, opset: int,
            check_images: Sequence[Path] | None, tolerance: float, log: Log | None) -> ExportResult:
    refusals = _refusals(source)
    skipped: dict[str, str] = {}
    if formats is None:
        formats = [name for name in EXPORT_FORMATS if name not in refusals]
        skipped = refusals
    for name in formats:
        if name in refusals:
            raise CheckpointError(f"{source.label}: {refusals[name]}")
    if "onnx" in formats:
        require_onnx_packages()
    graph = _probability_graph(source).eval()
    check = _check_inputs(source, graph, check_images)
    shared = _shared_metadata(source, check)
    out_dir.mkdir(parents=True, exist_ok=True)
    exports: dict[str, FormatExport] = {}
    for name in formats:
        exports[name] = _export_format(name, source, graph, check, shared, out_dir, opset, tolerance)
        if log is not None:
            log(ExportResult(out_dir, {name: exports[name]}, check.paths).summary()[0])
    return ExportResult(out_dir, exports, check.paths, shared, skipped)


def _refusals(source: _Source) -> dict[str, str]:
    """The formats this source has no form in, with the reason."""
    if source.is_ensemble:
        return {"timm": "an ensemble has no timm form (a timm folder holds one timm model); export it as onnx or "
                        "torchscript, which hold the whole ensemble as one graph"}
    problem = timm_head_problem(source.heads[0])
    return {} if problem is None else {"timm": problem}


def _probability_graph(source: _Source) -> ProbabilityGraph:
    reference = source.settings[0]
    adapters: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for settings in source.settings:
        if (settings.mean, settings.std) == (reference.mean, reference.std):
            adapters.append(None)
            continue
        # Undo the graph input's normalisation, apply the member's: x_k = (x * std_0 + mean_0 - mean_k) / std_k.
        mean_0, std_0 = _channel_tensor(reference.mean), _channel_tensor(reference.std)
        mean_k, std_k = _channel_tensor(settings.mean), _channel_tensor(settings.std)
        adapters.append((std_0 / std_k, (mean_0 - mean_k) / std_k))
    members = [predictor.model for predictor in source.members]
    weights = source.weights if len(members) > 1 else None
    return ProbabilityGraph(members, weights, adapters, [_temperature(predictor) for predictor in source.members])


def _temperature(predictor: Predictor) -> float:
    # Checkpoints without temperature scaling divide by 1.
    return float(getattr(predictor, "temperature", 1.0))


def _channel_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)


@dataclass(frozen=True)
class _CheckInputs:
    """The parity check's inputs and PyTorch's answers to them."""

    paths: tuple[Path, ...]
    images: np.ndarray  # (N, 3, H, W) float32, normalised for the graph input
    expected: np.ndarray  # (N, C) float32 probabilities from PyTorch


def _check_inputs(source: _Source, graph: ProbabilityGraph, check_images: Sequence[Path] | None) -> _CheckInputs:
    paths = [Path(path) for path in check_images] if check_images is not None else _default_check_images(source)
    if paths:
        probabilities, kept = _reference_probabilities(source, paths)
        if kept:
            transform = create_eval_transform(source.settings[0])
            images = torch.stack([transform(load_rgb(paths[index])) for index in kept]).numpy()
            return _CheckInputs(tuple(paths[index] for index in kept), images, probabilities)
        if check_images is not None:
            raise DatasetError(f"export check images: none of the {len(paths)} files could be read "
                               f"(first: {paths[0]})")
    # No image to be had (the training data moved): random inputs still compare the graphs.
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((4, *source.settings[0].input_size), generator=generator)
    with torch.no_grad():
        expected = graph(images).numpy()
    return _CheckInputs((), images.numpy(), expected)


def _default_check_images(source: _Source) -> list[Path]:
    data = Path(source.data_paths[0]) if source.data_paths[0] else None
    if data is None or not data.is_dir():
        return []
    try:
        found = collect_image_paths([data])
    except DatasetError:
        return []
    # Spread over the sorted list, so that several classes are seen.
    step = max(1, len(found) // DEFAULT_CHECK_IMAGES)
    return found[::step][:DEFAULT_CHECK_IMAGES]


def _reference_probabilities(source: _Source, paths: list[Path]) -> tuple[np.ndarray, list[int]]:
    """PyTorch's probabilities for the files that decode, and their indices."""
    if source.reference is not None:
        result = source.reference.predict_proba(paths)
        return result.probabilities.astype(np.float32), list(result.kept)
    total: np.ndarray | None = None
    kept: list[int] = []
    for predictor, weight in zip(source.members, source.weights, strict=True):
        result = predictor.predict_proba(paths)
        kept = list(result.kept)
        total = result.probabilities * weight if total is None else total + result.probabilities * weight
    assert total is not None  # members is never empty
    return total.astype(np.float32), kept


def _shared_metadata(source: _Source, check: _CheckInputs) -> dict[str, Any]:
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


def _export_format(name: str, source: _Source, graph: ProbabilityGraph, check: _CheckInputs,
                   shared: dict[str, Any], out_dir: Path, opset: int, tolerance: float) -> FormatExport:
    """Write one format into a staging folder, check it, then publish it as ``OUT/<name>``."""
    # Process and thread in the name: two exports into one folder never share a staging folder.
    staging = out_dir / f".{name}.staging-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        started = time.perf_counter()
        metadata = {**shared, "export_format": name}
        path, load = _write_format(name, source, graph, staging, metadata, opset)
        export_seconds = time.perf_counter() - started
        started = time.perf_counter()
        difference = _parity(load(path), check)
        check_seconds = time.perf_counter() - started
        if not difference <= tolerance:
            raise CheckpointError(
                f"{source.label}: the {name} export differs from PyTorch by {difference:.2e} (more than "
                f"{tolerance:.1e}) on {len(check.images)} inputs; it was not published"
            )
        metadata["parity"] = {
            "max_difference": difference,
            "tolerance": tolerance,
            "images": [image.name for image in check.paths],
            "random_inputs": not check.paths,
        }
        write_metadata(staging, metadata)
        folder = _publish(staging, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FormatExport(name, folder, folder / path.relative_to(staging), difference, export_seconds, check_seconds)


def _write_format(name: str, source: _Source, graph: ProbabilityGraph, staging: Path, metadata: dict[str, Any],
                  opset: int) -> tuple[Path, Callable[[Path], ProbabilityRunner]]:
    """Write the model of one format into ``staging`` (adding format facts to ``metadata``).

    Returns:
        The model file (the folder for timm) and the loader of the parity check.
    """
    example = example_batch(source.settings[0])
    if name == "onnx":
        path = staging / ONNX_FILE
        # What predict.py (and any other consumer of the file alone) needs, as JSON strings.
        props = {"format": METADATA_FORMAT, **{key: json.dumps(metadata[key]) for key in ("labels", "preprocessing",
                                                                                         "source")}}
        metadata["opset"] = write_onnx(graph, example, path, opset=opset, metadata_props=props,
                                       doc_string=f"Transfer Studio export of {source.label}")
        atomic_write_text(staging / PREDICT_SCRIPT, PREDICT_TEMPLATE.read_text(encoding="utf-8"))
        return path, load_onnx_runner
    if name == "torchscript":
        path = staging / TORCHSCRIPT_FILE
        write_torchscript(graph, example, path, metadata=metadata)
        return path, load_torchscript_runner
    temperature = _temperature(source.members[0])
    write_timm_folder(source.members[0].model, staging, head=source.heads[0], classes=source.classes,
                      settings=source.settings[0], temperature=temperature)
    meaning = "logits in label order (timm models end before the softmax; apply it for probabilities)"
    if temperature != 1.0:
        meaning += f"; the classifier's weights are divided by the temperature {temperature:g}, so these logits "
        meaning += "are already calibrated"
    metadata["output"] = {**metadata["output"], "meaning": meaning}
    return staging, load_timm_runner


def _parity(run: ProbabilityRunner, check: _CheckInputs) -> float:
    """Largest |difference| to PyTorch, for the whole batch and one image alone (the batch is dynamic)."""
    whole = run(check.images)
    single = run(check.images[:1])
    if whole.shape != check.expected.shape:
        return float("inf")
    return float(max(np.abs(whole - check.expected).max(), np.abs(single - check.expected[:1]).max()))


def _publish(staging: Path, final: Path) -> Path:
    """Move a checked export folder into place, replacing an older one."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}-{threading.get_ident()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    return final

"""What each format of an export costs and gains on this machine: latency, throughput, size and top-1 accuracy.

For the source checkpoint (PyTorch, when it is still there) and every format folder of an export, side by
side in one process: the latency of one batch (``batch`` images, 1 by default) as the median and 95th
percentile of ``runs`` calls after ``warmup`` calls; the throughput of a larger batch in images per second;
the bytes on disk; and top-1 accuracy on the same labelled images (the model's validation images, or a
labelled folder given). Each format runs in its own runtime, with the export's own preprocessing.
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.core.atomic import atomic_write_json, atomic_write_text
from engine.core.errors import CheckpointError, DatasetError
from engine.data.settings import DataSettings
from engine.export.export_folders import read_export_metadata
from engine.export.formats import EXPORT_FORMATS, METADATA_FILE, PREDICT_SCRIPT, ProbabilityRunner, get_export_format
from engine.export.formats.base import one_line, torch_runner
from engine.export.samples import LabelledImages, folder_images, validation_images
from engine.export.source import load_source

SOURCE_ROW = "pytorch"
BENCHMARK_CSV = "benchmark.csv"
BENCHMARK_JSON = "benchmark.json"
THROUGHPUT_BATCH = 32
CSV_COLUMNS = ("format", "path", "size_bytes", "latency_p50_ms", "latency_p95_ms", "throughput_images_per_s",
               "top1")


@dataclass(frozen=True)
class FormatBenchmark:
    """One row of the table: a format (or the PyTorch source) measured on this machine.

    Attributes:
        format: an export format's name, or ``pytorch`` for the source checkpoint.
        path: the model file or folder.
        size_bytes: on disk (a folder's files together).
        latency_p50_ms: median time of one call on ``batch`` images.
        latency_p95_ms: 95th percentile of that time.
        throughput_images_per_s: images per second through calls of the throughput batch.
        top1: accuracy on the labelled images; None when there were none.
    """

    format: str
    path: str
    size_bytes: int
    latency_p50_ms: float
    latency_p95_ms: float
    throughput_images_per_s: float
    top1: float | None


@dataclass
class BenchmarkReport:
    """The measured formats of one export folder.

    Attributes:
        export_dir: the folder measured.
        rows: the source first (when there), then the formats in registry order.
        batch: images per call of the latency measurement.
        threads: CPU threads each runtime was given.
        images: which labelled images top-1 was measured on, in words ("" when none).
        notes: what was left out and why, in words.
        throughput_batch: images per call of the throughput measurement.
    """

    export_dir: Path
    rows: list[FormatBenchmark]
    batch: int
    threads: int
    images: str
    notes: list[str] = field(default_factory=list)
    throughput_batch: int = THROUGHPUT_BATCH

    @property
    def fastest(self) -> str:
        """The format with the lowest median latency."""
        return min(self.rows, key=lambda row: row.latency_p50_ms).format

    @property
    def most_accurate(self) -> str | None:
        """The format with the best top-1 (the smallest file among equals), or None without labelled images."""
        scored = [row for row in self.rows if row.top1 is not None]
        return max(scored, key=lambda row: (row.top1, -row.size_bytes)).format if scored else None

    def table(self) -> str:
        """The rows as a text table, the fastest and the most accurate marked."""
        lines = [f"{'format':<12} {'size':>9} {'p50 ms':>8} {'p95 ms':>8} {'img/s':>8} {'top-1':>7}",
                 "-" * 57]
        for row in self.rows:
            marks = [word for word, best in (("fastest", self.fastest), ("most accurate", self.most_accurate))
                     if best == row.format]
            top1 = f"{row.top1:.1%}" if row.top1 is not None else "n/a"
            lines.append(f"{row.format:<12} {row.size_bytes / 1e6:>7.1f}MB {row.latency_p50_ms:>8.2f} "
                         f"{row.latency_p95_ms:>8.2f} {row.throughput_images_per_s:>8.1f} {top1:>7}"
                         + (f"  <- {', '.join(marks)}" if marks else ""))
        lines.append(f"batch {self.batch} for latency, {self.throughput_batch} for throughput; {self.threads} threads; "
                     f"top-1 on {self.images or 'no labelled images'}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"export_dir": str(self.export_dir), "batch": self.batch, "throughput_batch": self.throughput_batch,
                "threads": self.threads, "images": self.images, "fastest": self.fastest,
                "most_accurate": self.most_accurate, "notes": self.notes, "rows": [asdict(row) for row in self.rows]}

    def save(self) -> tuple[Path, Path]:
        """Write ``benchmark.csv`` and ``benchmark.json`` into the export folder (atomically)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(row) for row in self.rows)
        return (atomic_write_text(self.export_dir / BENCHMARK_CSV, buffer.getvalue()),
                atomic_write_json(self.export_dir / BENCHMARK_JSON, self.to_dict()))


def read_export_folder(export_dir: Path) -> dict[str, dict[str, Any]]:
    """Each format folder of an export and its metadata, in registry order.

    Raises:
        CheckpointError: the folder is missing or holds no export, or a format's metadata is damaged (named).
    """
    if not export_dir.is_dir():
        raise CheckpointError(f"{export_dir}: not a folder of exports")
    found: dict[str, dict[str, Any]] = {}
    for name in EXPORT_FORMATS:
        file = export_dir / name / METADATA_FILE
        if not (export_dir / name).is_dir():
            continue
        metadata = read_export_metadata(file)
        found[name] = metadata
    if not found:
        raise CheckpointError(f"{export_dir}: no exports in it (expected folders such as onnx/ or torchscript/ "
                              "with a metadata.json, as main.py export writes)")
    return found


def benchmark_exports(
    export_dir: str | Path,
    *,
    data: str | Path | None = None,
    batch: int = 1,
    throughput_batch: int = THROUGHPUT_BATCH,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 30,
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkReport:
    """Measure the source checkpoint and every format of an export folder on this machine.

    Args:
        export_dir: a folder ``main.py export`` wrote.
        data: a labelled folder (or CSV) to measure top-1 on; None: the model's validation images.
        batch: images per call for latency.
        throughput_batch: images per call for throughput.
        threads: CPU threads for torch and onnxruntime; None: torch's current setting.
        warmup: calls before latency is timed.
        runs: timed calls.
        progress: called with (rows done, rows to do).

    Raises:
        CheckpointError: no export in the folder, damaged metadata, or a format that cannot be loaded.
        DatasetError: ``data`` cannot be used.
    """
    export_dir = Path(export_dir)
    exports = read_export_folder(export_dir)
    if threads is not None:
        torch.set_num_threads(threads)
    first = next(iter(exports.values()))
    settings = DataSettings.from_dict({key: value for key, value in first["preprocessing"].items() if key != "steps"})
    classes = list(first["labels"])
    notes: list[str] = []
    candidates: list[tuple[str, Path, Callable[[], ProbabilityRunner]]] = []
    source_runner, labelled = _source(first.get("source") or {}, classes, settings, data, notes)
    if source_runner is not None:
        candidates.append(source_runner)
    for name in exports:
        export_format = get_export_format(name)
        path = export_format.model_path(export_dir / name)
        reason = export_format.not_runnable_here()
        if reason is not None:
            notes.append(f"{name}: {reason}; not measured")
            continue
        candidates.append((name, path, functools.partial(export_format.load, path, threads=threads)))
    probe = _probe_images(labelled, settings)
    rows = []
    for done, (name, path, load) in enumerate(candidates):
        if progress is not None:
            progress(done, len(candidates))
        try:
            runner = load()
        except Exception as error:  # noqa: BLE001  a runtime that cannot load its format: one line, named
            raise CheckpointError(f"{path}: the {name} model cannot be loaded ({one_line(error)})") from error
        rows.append(_measure(name, path, runner, probe, labelled, batch=batch, throughput_batch=throughput_batch,
                             warmup=warmup, runs=runs))
    if progress is not None:
        progress(len(candidates), len(candidates))
    return BenchmarkReport(export_dir, rows, batch, threads or torch.get_num_threads(),
                           labelled.source if labelled is not None else "", notes, throughput_batch)


def _source(source: dict[str, Any], classes: list[str], settings: DataSettings, data: str | Path | None,
            notes: list[str]) -> tuple[tuple[str, Path, Callable[[], ProbabilityRunner]] | None,
                                       LabelledImages | None]:
    """The PyTorch source as a candidate row, and the labelled images top-1 is measured on."""
    location = source.get("manifest") or source.get("checkpoint")
    candidate = None
    exported = None
    if location and Path(location).exists():
        exported = load_source(Path(location))
        graph = exported.subject().graph
        candidate = (SOURCE_ROW, Path(location), lambda: torch_runner(graph))
    else:
        notes.append(f"the source model {location or '(not recorded)'} is not there any more: no PyTorch row")
    labelled = None
    try:
        if data is not None:
            labelled = folder_images(Path(data), classes, settings)
        elif exported is not None:
            labelled = validation_images(exported.configs[0], classes, settings, label=str(location))
        else:
            notes.append("no labelled images (give --data): top-1 not measured")
    except CheckpointError as error:
        if data is not None:
            raise
        notes.append(f"top-1 not measured: {error}")
    except DatasetError:
        raise
    return candidate, labelled


def _probe_images(labelled: LabelledImages | None, settings: DataSettings) -> np.ndarray:
    """Images to time with: the labelled ones, or seeded random ones of the input's shape."""
    if labelled is not None:
        return labelled.images
    return np.random.default_rng(0).standard_normal((THROUGHPUT_BATCH, *settings.input_size)).astype(np.float32)


def _measure(name: str, path: Path, runner: ProbabilityRunner, probe: np.ndarray, labelled: LabelledImages | None,
             *, batch: int, throughput_batch: int, warmup: int, runs: int) -> FormatBenchmark:
    single = _tiled(probe, batch)
    for _ in range(warmup):
        runner(single)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(single)
        times.append(time.perf_counter() - started)
    large = _tiled(probe, throughput_batch)
    # Warm from the latency calls; at least two calls and a second, so one slow call does not decide.
    started, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - started < 1.0:
        runner(large)
        calls += 1
    throughput = calls * throughput_batch / (time.perf_counter() - started)
    top1 = None
    if labelled is not None:
        answers = np.concatenate([runner(labelled.images[start:start + THROUGHPUT_BATCH])
                                  for start in range(0, len(labelled.images), THROUGHPUT_BATCH)])
        top1 = float((answers.argmax(axis=1) == labelled.labels).mean())
    size = _size_on_disk(path)
    return FormatBenchmark(name, str(path), size, float(np.percentile(times, 50) * 1000),
                           float(np.percentile(times, 95) * 1000), throughput, top1)


def _size_on_disk(path: Path) -> int:
    """Bytes a user ships: the model file and its companions (OpenVINO's weights beside its graph), not the
    metadata or the predict.py of the format folder; a checkpoint file alone."""
    folder = path if path.is_dir() else path.parent
    if not (folder / METADATA_FILE).is_file():  # the source checkpoint, beside other checkpoints
        return path.stat().st_size
    return sum(file.stat().st_size for file in folder.rglob("*")
               if file.is_file() and file.name not in (METADATA_FILE, PREDICT_SCRIPT))


def _tiled(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` images, repeating ``images`` as needed."""
    repeats = -(-count // len(images))
    return np.ascontiguousarray(np.concatenate([images] * repeats)[:count])

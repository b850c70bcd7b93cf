"""Scan a dataset for files unfit for training and find what is wrong with the data as a whole.

The scan hashes every file and checks its header and tail without decoding the pixels,
caches the result per file (size + mtime), and returns a ``HealthReport``
(``engine.data.health_report``).
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import PIL

from engine.core.atomic import atomic_write_json
from engine.core.errors import DatasetError
from engine.data.discovery import DatasetSource, Sample, discover_dataset
from engine.data.health_problems import (
    class_problems,
    content_problems,
    image_shape_problems,
    untrainable_presplit_classes,
)
from engine.data.health_report import (
    FILE_PROBLEM_KINDS,
    HEALTH_JSON,
    HEALTH_TEXT,
    PROBLEM_KINDS,
    SCHEMA_VERSION,
    SEVERITIES,
    FileRecord,
    HealthReport,
    Problem,
    kind_rank,
    load_report,
)
from engine.data.images import ImageFileError, inspect_bytes, read_header

# The report's names are part of this module's surface: callers import them from here.
__all__ = [
    "FILE_PROBLEM_KINDS", "HEALTH_JSON", "HEALTH_TEXT", "MAX_BYTES_IN_MEMORY",
    "PROBLEM_KINDS", "SCHEMA_VERSION", "SEVERITIES", "FileRecord", "HealthReport", "Problem", "ScanAborted",
    "load_report", "scan_dataset",
]

MAX_BYTES_IN_MEMORY = 256 * 1024 * 1024
"""Files up to this size are read whole for the tail test; larger ones are hashed in chunks."""

_CACHE_FIELDS = ("size_bytes", "mtime_ns", "sha256", "width", "height", "format", "mode", "problem", "reason")


class ScanAborted(Exception):  # control flow, like CancelFit: deliberately not a TransferStudioError
    """Raised by ``scan_dataset`` when ``should_abort()`` returned True; nothing is returned.

    Files finished before the abort are kept in the scan cache, so the next scan reuses them.
    """


def scan_dataset(
    path: str | Path,
    *,
    cache_file: Path | None = None,
    workers: int = 8,
    min_size: int = 32,
    max_aspect_ratio: float = 5.0,
    min_images_per_class: int = 5,
    progress: Callable[[int, int], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
) -> HealthReport:
    """Discover a dataset and check every candidate file, without decoding the images.

    Each file is stat'ed, read once, hashed (SHA-256), and its header and tail checked
    (see ``engine.data.images.inspect_bytes``) on a pool of threads. A file whose size and
    mtime match the cache is not read again. Safe to call from a worker thread.

    Args:
        path: data folder or CSV file (see ``engine.data.discovery.discover_dataset``).
        cache_file: JSON file of per-file results to reuse and update; None for no cache.
        workers: threads reading files.
        min_size: images whose shorter side is below this many pixels get ``too_small``.
        max_aspect_ratio: images whose long/short side ratio exceeds this get
            ``extreme_aspect_ratio``.
        min_images_per_class: classes with fewer usable images get ``few_images``.
        progress: called as ``progress(done, total)`` from the calling thread, once with
            ``done=0`` and after each file.
        should_abort: polled between files; when it returns True the scan stops.

    Raises:
        ScanAborted: ``should_abort()`` returned True; no report is produced.
        DatasetError: the data path itself cannot be used (see ``discover_dataset``).
    """
    source = discover_dataset(path)
    cached = _load_cache(cache_file)
    paths = list(dict.fromkeys(sample.path for sample in source.files))
    total = len(paths)
    if progress is not None:
        progress(0, total)

    results: dict[Path, dict[str, Any]] = {}
    reused = 0
    # Only a few files are in flight at once, so an abort takes effect within a file or
    # two per thread and waiting stays cheap however large the dataset is.
    in_flight_limit = 4 * max(1, workers)
    queued = iter(paths)
    complete = False
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="scan") as executor:
        pending: set[Future[tuple[Path, dict[str, Any], bool]]] = set()
        try:
            while True:
                while len(pending) < in_flight_limit and (file_path := next(queued, None)) is not None:
                    pending.add(executor.submit(_inspect_file, file_path, cached.get(str(file_path))))
                if not pending:
                    break
                if should_abort is not None and should_abort():
                    raise ScanAborted(f"scan of {source.root} aborted after {len(results)} of {total} files")
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    file_path, facts, was_reused = future.result()
                    results[file_path] = facts
                    reused += was_reused
                    if progress is not None:
                        progress(len(results), total)
            complete = True
        finally:
            # Also reached on abort, so the files already read are reused next time.
            for future in pending:
                future.cancel()
            _save_cache(cache_file, cached, results, complete=complete)

    return _build_report(
        source,
        results,
        min_size=min_size,
        max_aspect_ratio=max_aspect_ratio,
        min_images_per_class=min_images_per_class,
        files_read=total - reused,
        files_reused=reused,
    )


def _inspect_file(path: Path, cached: Mapping[str, Any] | None) -> tuple[Path, dict[str, Any], bool]:
    """Return ``(path, facts, reused)``; never raises for a bad or missing file."""
    facts: dict[str, Any] = dict.fromkeys(_CACHE_FIELDS)
    try:
        status = path.stat()
    except FileNotFoundError:
        facts.update(problem="unreadable", reason="file not found")
        return path, facts, False
    except OSError as error:
        facts.update(problem="unreadable", reason=f"cannot read the file's details ({error.strerror})")
        return path, facts, False
    if not stat.S_ISREG(status.st_mode):
        facts.update(problem="unreadable", reason="not a regular file")
        return path, facts, False
    if cached and cached.get("size_bytes") == status.st_size and cached.get("mtime_ns") == status.st_mtime_ns:
        return path, {name: cached.get(name) for name in _CACHE_FIELDS}, True

    # Size and mtime come from before the read: if the file changes meanwhile, the next
    # scan sees a different mtime and reads it again.
    facts.update(size_bytes=status.st_size, mtime_ns=status.st_mtime_ns)
    if status.st_size == 0:
        facts.update(problem="zero_byte", reason="the file is empty (0 bytes)")
        return path, facts, False
    try:
        data = path.read_bytes() if status.st_size <= MAX_BYTES_IN_MEMORY else None
        facts["sha256"] = hashlib.sha256(data).hexdigest() if data is not None else _sha256_of_file(path)
    except OSError as error:
        facts.update(problem="unreadable", reason=f"cannot read the file ({error.strerror})")
        return path, facts, False
    try:
        # A file too big to hold (a video dropped into a class folder, a huge TIFF) is
        # hashed in chunks and only its header is checked: no tail test.
        header = inspect_bytes(data, name=path) if data is not None else read_header(path)
    except ImageFileError as error:
        facts.update(problem=error.kind, reason=error.reason)
        return path, facts, False
    facts.update(width=header.width, height=header.height, format=header.format, mode=header.mode)
    return path, facts, False


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_cache(cache_file: Path | None) -> dict[str, dict[str, Any]]:
    if cache_file is None:
        return {}
    try:
        data = json.loads(Path(cache_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A missing or damaged cache only costs time: scan everything again.
        return {}
    if (
        not isinstance(data, dict)
        or data.get("schema_version") != SCHEMA_VERSION
        or data.get("pillow_version") != PIL.__version__  # another Pillow may judge files differently
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return {key: value for key, value in data["files"].items() if isinstance(value, dict)}


def _save_cache(
    cache_file: Path | None,
    previous: Mapping[str, dict[str, Any]],
    results: Mapping[Path, dict[str, Any]],
    *,
    complete: bool,
) -> None:
    if cache_file is None:
        return
    # A complete scan keeps only the files it saw (deleted files drop out); an aborted one
    # keeps the old entries too, since the files it did not reach may still be there.
    files = {} if complete else dict(previous)
    for path, facts in results.items():
        # Missing or unreadable files are checked afresh each time rather than cached.
        if facts.get("size_bytes") is not None and facts.get("problem") != "unreadable":
            files[str(path)] = facts
        else:
            files.pop(str(path), None)
    try:
        atomic_write_json(
            cache_file, {"schema_version": SCHEMA_VERSION, "pillow_version": PIL.__version__, "files": files}
        )
    except OSError as error:
        raise DatasetError(f"{cache_file}: cannot write the scan cache ({error.strerror or error})") from error


def _build_report(
    source: DatasetSource,
    facts: Mapping[Path, Mapping[str, Any]],
    *,
    min_size: int,
    max_aspect_ratio: float,
    min_images_per_class: int,
    files_read: int,
    files_reused: int,
) -> HealthReport:
    records = tuple(_record(sample, facts[sample.path]) for sample in source.files)
    problems = [
        Problem(
            kind=record.problem,
            message=record.reason or record.problem,
            paths=(record.path,),
            label=record.label,
            severity="error",
            excluded=True,
        )
        for record in records
        if record.problem is not None
    ]
    problems += content_problems(source, [record for record in records if record.problem is None])
    excluded = {path for problem in problems if problem.excluded for path in problem.paths}
    usable = [record for record in records if record.path not in excluded]

    if source.layout == "presplit":
        # A class with val/test images but nothing to train on cannot be learnt.
        problems += untrainable_presplit_classes(usable)
        excluded = {path for problem in problems if problem.excluded for path in problem.paths}
        usable = [record for record in usable if record.path not in excluded]

    problems += image_shape_problems(usable, min_size, max_aspect_ratio)
    counts = Counter(record.label for record in usable)
    class_counts = {label: counts.get(label, 0) for label in source.classes}
    problems += class_problems(class_counts, min_images_per_class, problems)
    non_empty = [count for count in class_counts.values() if count > 0]
    ratio = max(non_empty) / min(non_empty) if non_empty else 1.0
    problems.sort(key=lambda p: (kind_rank(p.kind), p.label or "", [str(path) for path in p.paths]))
    return HealthReport(
        root=source.root,
        layout=source.layout,
        classes=source.classes,
        class_counts=class_counts,
        records=records,
        problems=tuple(problems),
        imbalance_ratio=ratio,
        files_read=files_read,
        files_reused=files_reused,
    )


def _record(sample: Sample, facts: Mapping[str, Any]) -> FileRecord:
    return FileRecord(path=sample.path, label=sample.label, split=sample.split, **facts)



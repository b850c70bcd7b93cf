"""Scan a dataset for files unfit for training and explain what was found and left out.

The scan hashes every file and checks its header and tail without decoding the pixels,
caches the result per file (size + mtime), and returns a ``HealthReport`` that can be
saved as ``health.json`` and a plain-text ``health.txt`` a person can read.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import PIL

from engine.atomic import atomic_write_json, atomic_write_text
from engine.dataset import SPLITS, DatasetSource, Sample, discover_dataset
from engine.errors import DatasetError
from engine.images import ImageFileError, inspect_bytes, read_header

SCHEMA_VERSION = 1
"""Version of ``health.json`` and of the scan cache; bump when their fields change."""

HEALTH_JSON = "health.json"
HEALTH_TEXT = "health.txt"

FILE_PROBLEM_KINDS: tuple[str, ...] = (
    "unreadable",
    "corrupt",
    "truncated",
    "zero_byte",
    "not_an_image",
    "decompression_bomb",
)
"""Kinds a single file gets on its own; each leaves that file out of training."""

PROBLEM_KINDS: tuple[str, ...] = (
    *FILE_PROBLEM_KINDS,
    "conflicting_labels",
    "duplicate_in_class",
    "split_leakage",
    "empty_class",
    "few_images",
    "class_imbalance",
    "too_small",
    "extreme_aspect_ratio",
)
"""Every problem kind, in the order reports list them."""

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")

MAX_BYTES_IN_MEMORY = 256 * 1024 * 1024
"""Files up to this size are read whole for the tail test; larger ones are hashed in chunks."""

IMBALANCE_WARNING_RATIO = 3.0
"""Largest / smallest usable class size from which imbalance is reported."""

_TITLES = {
    "unreadable": "Unreadable files",
    "corrupt": "Corrupt images",
    "truncated": "Truncated images",
    "zero_byte": "Empty (zero-byte) files",
    "not_an_image": "Files that are not images",
    "decompression_bomb": "Images too large to decode safely (decompression bombs)",
    "conflicting_labels": "Same image under different labels",
    "duplicate_in_class": "Duplicates within a class",
    "split_leakage": "Same image in more than one split",
    "empty_class": "Classes without usable images",
    "few_images": "Classes with few images",
    "class_imbalance": "Class imbalance",
    "too_small": "Very small images",
    "extreme_aspect_ratio": "Extreme aspect ratios",
}

_CACHE_FIELDS = ("size_bytes", "mtime_ns", "sha256", "width", "height", "format", "mode", "problem", "reason")


class ScanAborted(Exception):  # control flow, like CancelFit: deliberately not a TransferStudioError
    """Raised by ``scan_dataset`` when ``should_abort()`` returned True; nothing is returned.

    Files finished before the abort are kept in the scan cache, so the next scan reuses them.
    """


@dataclass(frozen=True)
class FileRecord:
    """What the scan learnt about one candidate file.

    Attributes:
        path: absolute path.
        label: class name.
        split: ``train``, ``val``, ``test`` for pre-split data, else None.
        size_bytes: file size; None when the file could not be stat'ed.
        mtime_ns: modification time in nanoseconds; None when unknown.
        sha256: hex digest of the whole file; None when it could not be read.
        width: pixels as stored (before EXIF rotation); None when not an image.
        height: pixels as stored; None when not an image.
        format: Pillow's format name, e.g. ``JPEG``; None when not an image.
        mode: Pillow's mode, e.g. ``RGB``; None when not an image.
        problem: a kind from ``FILE_PROBLEM_KINDS``, or None when the file is a sound image.
        reason: why, in words, when ``problem`` is set.
    """

    path: Path
    label: str
    split: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    problem: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (the path as a string)."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["path"] = str(self.path)
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        """Rebuild a record written by ``to_dict``."""
        values = {item.name: data.get(item.name) for item in fields(cls)}
        values["path"] = Path(data["path"])
        values["label"] = str(data["label"])
        return cls(**values)


@dataclass(frozen=True)
class Problem:
    """One finding of the scan, and whether it cost files their place in training.

    Attributes:
        kind: one of ``PROBLEM_KINDS``.
        message: what is wrong and why it matters, without the paths (they follow).
        paths: the files concerned; with ``excluded`` these are exactly the files left out.
            Empty for class-level findings.
        label: the class concerned, when there is one.
        severity: ``error`` (the file is unusable), ``warning`` (worth a look) or
            ``info`` (handled, nothing to do).
        excluded: True when ``paths`` are left out of training.
    """

    kind: str
    message: str
    paths: tuple[Path, ...] = ()
    label: str | None = None
    severity: str = "warning"
    excluded: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (paths as strings)."""
        return {
            "kind": self.kind,
            "message": self.message,
            "paths": [str(path) for path in self.paths],
            "label": self.label,
            "severity": self.severity,
            "excluded": self.excluded,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        """Rebuild a problem written by ``to_dict``."""
        return cls(
            kind=str(data["kind"]),
            message=str(data["message"]),
            paths=tuple(Path(path) for path in data.get("paths", ())),
            label=data.get("label"),
            severity=str(data.get("severity", "warning")),
            excluded=bool(data.get("excluded", False)),
        )


@dataclass(frozen=True)
class HealthReport:
    """The result of a dataset scan.

    Attributes:
        root: the data folder or CSV file.
        layout: ``class_folders``, ``presplit`` or ``csv``.
        classes: every class found, sorted, including classes without usable images.
        class_counts: usable images per class (every class present, 0 included).
        records: one per candidate file, sorted by split, label and path.
        problems: findings, sorted by kind (in ``PROBLEM_KINDS`` order), label and path.
        imbalance_ratio: largest usable class count / smallest non-empty one
            (1.0 with fewer than two non-empty classes).
        files_read: files read from disk in this scan.
        files_reused: files whose result came from the scan cache, unread.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    records: tuple[FileRecord, ...]
    problems: tuple[Problem, ...]
    imbalance_ratio: float
    files_read: int = 0
    files_reused: int = 0
    _excluded: frozenset[Path] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        excluded = frozenset(path for problem in self.problems if problem.excluded for path in problem.paths)
        object.__setattr__(self, "_excluded", excluded)  # derived once; the dataclass stays frozen

    def excluded_paths(self) -> frozenset[Path]:
        """Return every file left out of training."""
        return self._excluded

    def usable_records(self) -> tuple[FileRecord, ...]:
        """Return the records fit for training, in ``records`` order.

        Leaves out unreadable, corrupt, truncated, empty, non-image and bomb files, all but
        the first (by split, then path) of identical files within a class, every copy of an
        image found under two labels, and copies leaking from train into val or test.
        """
        return tuple(record for record in self.records if record.path not in self._excluded)

    def problems_of(self, kind: str) -> tuple[Problem, ...]:
        """Return the problems of one kind."""
        return tuple(problem for problem in self.problems if problem.kind == kind)

    def summary(self) -> str:
        """Return one line: files, usable images, classes and what was left out."""
        usable = sum(self.class_counts.values())
        left_out = len(self.records) - usable
        errors = sum(1 for problem in self.problems if problem.severity == "error")
        warnings = sum(1 for problem in self.problems if problem.severity == "warning")
        return (
            f"{len(self.records)} files, {usable} usable images in {len(self.classes)} classes; "
            f"{left_out} left out of training; {errors} errors, {warnings} warnings"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict with ``schema_version``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "root": str(self.root),
            "layout": self.layout,
            "classes": list(self.classes),
            "class_counts": dict(self.class_counts),
            "imbalance_ratio": self.imbalance_ratio,
            "files_read": self.files_read,
            "files_reused": self.files_reused,
            "problems": [problem.to_dict() for problem in self.problems],
            "records": [record.to_dict() for record in self.records],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        """Rebuild a report written by ``to_dict``.

        Raises:
            DatasetError: the schema version is not ``SCHEMA_VERSION`` or a field is missing.
        """
        version = data.get("schema_version") if isinstance(data, Mapping) else None
        if version != SCHEMA_VERSION:
            raise DatasetError(f"health report: schema_version: expected {SCHEMA_VERSION}, got {version!r}")
        try:
            return cls(
                root=Path(data["root"]),
                layout=str(data["layout"]),
                classes=tuple(data["classes"]),
                class_counts={str(label): int(count) for label, count in data["class_counts"].items()},
                records=tuple(FileRecord.from_dict(record) for record in data["records"]),
                problems=tuple(Problem.from_dict(problem) for problem in data["problems"]),
                imbalance_ratio=float(data["imbalance_ratio"]),
                files_read=int(data.get("files_read", 0)),
                files_reused=int(data.get("files_reused", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DatasetError(f"health report: malformed ({type(error).__name__}: {error})") from error

    def to_text(self) -> str:
        """Return a plain-text report: summary, images per class, then problems by kind."""
        layout_names = {"class_folders": "class folders", "presplit": "pre-split folders", "csv": "CSV file"}
        lines = [
            f"Dataset health report for {self.root}",
            f"Layout: {layout_names.get(self.layout, self.layout)}",
            self.summary(),
            "",
            "Usable images per class:",
        ]
        width = max((len(label) for label in self.classes), default=0)
        lines += [f"  {label.ljust(width)}  {self.class_counts.get(label, 0)}" for label in self.classes]
        if self.imbalance_ratio > 1:
            lines.append(f"  (largest / smallest non-empty class: {self.imbalance_ratio:.1f})")
        lines.append("")
        if not self.problems:
            lines.append("No problems found.")
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            by_kind[problem.kind].append(problem)
        for kind in sorted(by_kind, key=_kind_rank):
            lines += self._kind_section(kind, by_kind[kind])
        if self._excluded:
            lines.append(
                "Files left out of training stay where they are, untouched; fix or remove them and scan again."
            )
        return "\n".join(lines).rstrip() + "\n"

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``health.json`` and ``health.txt`` into ``folder`` atomically.

        Returns:
            The JSON path and the text path.
        """
        folder = Path(folder)
        json_path = atomic_write_json(folder / HEALTH_JSON, self.to_dict())
        text_path = atomic_write_text(folder / HEALTH_TEXT, self.to_text())
        return json_path, text_path

    def _kind_section(self, kind: str, problems: list[Problem]) -> list[str]:
        file_count = sum(len(problem.paths) for problem in problems)
        if file_count:
            count = f"{file_count} file{'s' if file_count != 1 else ''}"
        else:
            count = f"{len(problems)} class{'es' if len(problems) != 1 else ''}" if problems[0].label else ""
        if all(problem.excluded for problem in problems):
            action = "left out of training"
        elif file_count and not any(problem.excluded for problem in problems):
            action = "kept for training"
        else:
            action = ""
        details = ", ".join(part for part in (count, action) if part)
        lines = [f"{_TITLES.get(kind, kind)} [{problems[0].severity}]" + (f": {details}" if details else "")]
        for problem in problems:
            if len(problem.paths) == 1:
                lines.append(f"  {self._shown(problem.paths[0])}: {problem.message}")
                continue
            prefix = f"{problem.label}: " if problem.label is not None else ""
            lines.append(f"  {prefix}{problem.message}")
            lines += [f"    {self._shown(path)}" for path in problem.paths]
        lines.append("")
        return lines

    def _shown(self, path: Path) -> str:
        base = self.root.parent if self.layout == "csv" else self.root
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            return str(path)


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
    (see ``engine.images.inspect_bytes``) on a pool of threads. A file whose size and
    mtime match the cache is not read again. Safe to call from a worker thread.

    Args:
        path: data folder or CSV file (see ``engine.dataset.discover_dataset``).
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


def load_report(folder: str | Path) -> HealthReport:
    """Read the ``health.json`` a previous ``HealthReport.save`` wrote into ``folder``.

    Raises:
        DatasetError: the file is missing, not JSON, or of another schema version.
    """
    json_path = Path(folder) / HEALTH_JSON
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DatasetError(f"{json_path}: health report not found; scan the dataset first") from error
    except (OSError, ValueError) as error:
        raise DatasetError(f"{json_path}: cannot read the health report ({error})") from error
    return HealthReport.from_dict(data)


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
    problems += _content_problems(source, [record for record in records if record.problem is None])
    excluded = {path for problem in problems if problem.excluded for path in problem.paths}
    usable = [record for record in records if record.path not in excluded]

    if source.layout == "presplit":
        # A class with val/test images but nothing to train on cannot be learnt.
        problems += _untrainable_presplit_classes(usable)
        excluded = {path for problem in problems if problem.excluded for path in problem.paths}
        usable = [record for record in usable if record.path not in excluded]

    problems += _image_shape_problems(usable, min_size, max_aspect_ratio)
    counts = Counter(record.label for record in usable)
    class_counts = {label: counts.get(label, 0) for label in source.classes}
    problems += _class_problems(class_counts, min_images_per_class, problems)
    non_empty = [count for count in class_counts.values() if count > 0]
    ratio = max(non_empty) / min(non_empty) if non_empty else 1.0
    problems.sort(key=lambda p: (_kind_rank(p.kind), p.label or "", [str(path) for path in p.paths]))
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


def _kind_rank(kind: str) -> int:
    return PROBLEM_KINDS.index(kind) if kind in PROBLEM_KINDS else len(PROBLEM_KINDS)


def _split_rank(record: FileRecord) -> int:
    return SPLITS.index(record.split) if record.split in SPLITS else -1


def _content_problems(source: DatasetSource, readable: list[FileRecord]) -> list[Problem]:
    """Find identical files: under two labels, twice in a class, or in two splits."""
    shown_base = source.root.parent if source.layout == "csv" else source.root
    by_hash: dict[str, list[FileRecord]] = defaultdict(list)
    for record in readable:
        by_hash[record.sha256 or ""].append(record)
    problems = []
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda record: (_split_rank(record), str(record.path)))
        labels = sorted({record.label for record in copies})
        if len(labels) > 1:
            problems.append(
                Problem(
                    kind="conflicting_labels",
                    message=(
                        f"the same image is labelled {' and '.join(repr(label) for label in labels)}; "
                        "no copy can be trusted"
                    ),
                    paths=tuple(record.path for record in copies),
                    severity="error",
                    excluded=True,
                )
            )
            continue
        kept, *others = copies
        kept_name = _relative(kept.path, shown_base)
        same_split = tuple(record.path for record in others if record.split == kept.split)
        if same_split:
            problems.append(
                Problem(
                    kind="duplicate_in_class",
                    message=f"identical to {kept_name}, which is kept; the copies would only add weight",
                    paths=same_split,
                    label=kept.label,
                    severity="info",
                    excluded=True,
                )
            )
        for split in SPLITS:
            leaked = tuple(record.path for record in others if record.split == split and split != kept.split)
            if leaked:
                problems.append(
                    Problem(
                        kind="split_leakage",
                        message=(
                            f"identical to {kept_name} in {kept.split}; a copy in {split} would "
                            "inflate the scores measured on it"
                        ),
                        paths=leaked,
                        label=kept.label,
                        severity="warning",
                        excluded=True,
                    )
                )
    return problems


def _untrainable_presplit_classes(usable: list[FileRecord]) -> list[Problem]:
    by_label: dict[str, list[FileRecord]] = defaultdict(list)
    for record in usable:
        by_label[record.label].append(record)
    problems = []
    for label, records in sorted(by_label.items()):
        if any(record.split == "train" for record in records):
            continue
        problems.append(
            Problem(
                kind="empty_class",
                message=(
                    f"no usable images in train, so the class cannot be learnt; its {len(records)} images in "
                    f"{'/'.join(sorted({str(r.split) for r in records}))} are left out"
                ),
                paths=tuple(record.path for record in records),
                label=label,
                severity="warning",
                excluded=True,
            )
        )
    return problems


def _image_shape_problems(usable: list[FileRecord], min_size: int, max_aspect_ratio: float) -> list[Problem]:
    problems = []
    for record in usable:
        if record.width is None or record.height is None:
            continue
        short, long = sorted((record.width, record.height))
        size = f"{record.width}×{record.height} pixels"
        if short < min_size:
            problems.append(
                Problem(
                    kind="too_small",
                    message=f"{size}, below {min_size} px on a side; upscaling it to the model's input blurs it",
                    paths=(record.path,),
                    label=record.label,
                )
            )
        if short > 0 and long / short > max_aspect_ratio:
            problems.append(
                Problem(
                    kind="extreme_aspect_ratio",
                    message=(
                        f"{size}, aspect ratio {long / short:.1f} above {max_aspect_ratio:g}; "
                        "resizing squashes it or cropping cuts most of it away"
                    ),
                    paths=(record.path,),
                    label=record.label,
                )
            )
    return problems


def _class_problems(class_counts: Mapping[str, int], min_images: int, found: list[Problem]) -> list[Problem]:
    already_empty = {problem.label for problem in found if problem.kind == "empty_class"}
    problems = []
    for label, count in class_counts.items():
        if count == 0 and label not in already_empty:
            problems.append(
                Problem(
                    kind="empty_class",
                    message="no usable images; the class is left out of training",
                    label=label,
                )
            )
        elif 0 < count < min_images:
            problems.append(
                Problem(
                    kind="few_images",
                    message=(
                        f"only {count} usable image{'s' if count != 1 else ''}; at least {min_images} "
                        "are needed to learn and check a class"
                    ),
                    label=label,
                )
            )
    non_empty = {label: count for label, count in class_counts.items() if count > 0}
    if len(non_empty) >= 2:
        largest = max(non_empty, key=lambda label: (non_empty[label], label))
        smallest = min(non_empty, key=lambda label: (non_empty[label], label))
        ratio = non_empty[largest] / non_empty[smallest]
        if ratio >= IMBALANCE_WARNING_RATIO:
            problems.append(
                Problem(
                    kind="class_imbalance",
                    message=(
                        f"{largest!r} has {non_empty[largest]} usable images and {smallest!r} has "
                        f"{non_empty[smallest]}: ratio {ratio:.1f}; the model will favour {largest!r} "
                        "unless the loss or sampling is balanced"
                    ),
                )
            )
    return problems


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)

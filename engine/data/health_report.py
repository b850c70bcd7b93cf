"""The health report of a dataset: what each file is, what is wrong, and what training leaves out.

``HealthReport`` is saved as ``health.json`` and as a plain-text ``health.txt`` a person
can read; ``engine.data.health`` builds it by scanning.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_write_json, atomic_write_text
from engine.core.errors import DatasetError

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
        return cls(
            path=Path(data["path"]),
            label=str(data["label"]),
            split=data.get("split"),
            size_bytes=data.get("size_bytes"),
            mtime_ns=data.get("mtime_ns"),
            sha256=data.get("sha256"),
            width=data.get("width"),
            height=data.get("height"),
            format=data.get("format"),
            mode=data.get("mode"),
            problem=data.get("problem"),
            reason=data.get("reason"),
        )


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
        for kind in sorted(by_kind, key=kind_rank):
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


def kind_rank(kind: str) -> int:
    """Where a problem kind comes in reports (unknown kinds last)."""
    return PROBLEM_KINDS.index(kind) if kind in PROBLEM_KINDS else len(PROBLEM_KINDS)


def relative_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes, or whole when it lies elsewhere."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)

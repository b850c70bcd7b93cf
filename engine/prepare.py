"""Turn a data path into train/val/test lists of sound images, ready for a run.

Scans the data (reusing the project's scan cache), saves the health report into the
project folder, leaves out what the report excludes, and splits the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.dataset import SPLITS, split_samples
from engine.errors import DatasetError
from engine.health import FileRecord, HealthReport, scan_dataset
from engine.paths import project_dir_for

SCAN_CACHE_NAME = "scan_cache.json"


@dataclass(frozen=True)
class PreparedDataset:
    """The images a run trains, validates and tests on.

    Attributes:
        root: the data folder or CSV file.
        classes: classes with at least one usable training image, sorted; a class's
            index is its position here.
        splits: ``train``, ``val`` and ``test`` records, each sorted by path
            (``val`` or ``test`` may be empty).
        report: the health report the split was made from.
    """

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, tuple[FileRecord, ...]]
    report: HealthReport

    def class_index(self, label: str) -> int:
        """Return the class index of ``label``.

        Raises:
            DatasetError: the label is not one of ``classes``.
        """
        try:
            return self.classes.index(label)
        except ValueError as error:
            raise DatasetError(
                f"{self.root}: unknown class {label!r}; expected one of {', '.join(self.classes)}"
            ) from error

    def targets(self, split: str) -> list[int]:
        """Return the class index of every record of ``split``, in order."""
        return [self.class_index(record.label) for record in self.splits[split]]


def prepare_dataset(
    path: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    project_dir: Path | None = None,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
) -> PreparedDataset:
    """Scan, report on and split a dataset.

    Pre-split data keeps its folders; a split without a folder is taken from train
    (val with ``val_fraction``; test with ``test_fraction``, when above 0). Other
    layouts get a stratified split seeded by ``seed``, in which identical files
    (same SHA-256) always share a split.

    Args:
        path: data folder or CSV file.
        val_fraction: share of each class for validation, in [0, 1).
        test_fraction: share of each class for the final test, in [0, 1).
        seed: the same seed gives the same split of the same files.
        project_dir: where ``scan_cache.json``, ``health.json`` and ``health.txt`` go;
            defaults to ``engine.paths.project_dir_for(path)``.
        workers: threads reading files during the scan.
        progress: passed to ``scan_dataset``.
        should_abort: passed to ``scan_dataset``.

    Raises:
        DatasetError: the path cannot be used, or fewer than 2 classes have usable images.
        engine.health.ScanAborted: ``should_abort()`` returned True.
        engine.errors.ConfigError: a fraction is out of range.
    """
    # Not created here: the cache and report writes create it, so a mistyped data path
    # raises before anything appears on disk.
    project_dir = Path(project_dir) if project_dir is not None else project_dir_for(path)
    report = scan_dataset(
        path,
        cache_file=project_dir / SCAN_CACHE_NAME,
        workers=workers,
        progress=progress,
        should_abort=should_abort,
    )
    _, text_path = report.save(project_dir)

    usable = report.usable_records()
    if not usable:
        raise DatasetError(
            f"{report.root}: no usable images among {len(report.records)} files "
            f"({_problem_counts(report)}); see {text_path}"
        )
    # The report already left out classes with nothing in train (pre-split), so every
    # remaining label has training data.
    classes = tuple(sorted({record.label for record in usable}))
    if len(classes) < 2:
        missing = [label for label in report.classes if label not in classes]
        found = ", ".join(f"{label}: {report.class_counts[label]} images" for label in classes)
        without = f"; without usable images: {', '.join(missing)}" if missing else ""
        raise DatasetError(
            f"{report.root}: at least 2 classes with usable images are needed, found {len(classes)} "
            f"({found}){without}; see {text_path}"
        )

    if report.layout == "presplit":
        splits = _presplit(usable, val_fraction, test_fraction, seed)
    else:
        splits = _random_split(usable, val_fraction, test_fraction, seed)
    return PreparedDataset(root=report.root, classes=classes, splits=splits, report=report)


def _presplit(
    usable: tuple[FileRecord, ...], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[FileRecord, ...]]:
    given = {split: [record for record in usable if record.split == split] for split in SPLITS}
    missing_val = val_fraction if not given["val"] else 0.0
    missing_test = test_fraction if not given["test"] else 0.0
    if missing_val == 0 and missing_test == 0:
        return {split: _by_path(records) for split, records in given.items()}
    # Carve the splits that have no folder out of train, as for unsplit data.
    carved = _random_split(tuple(given["train"]), missing_val, missing_test, seed)
    return {
        "train": carved["train"],
        "val": _by_path([*given["val"], *carved["val"]]),
        "test": _by_path([*given["test"], *carved["test"]]),
    }


def _random_split(
    records: tuple[FileRecord, ...], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[FileRecord, ...]]:
    indices = split_samples(
        [str(record.path) for record in records],
        [record.label for record in records],
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        # Usable records hold no duplicates within a class, but grouping by content keeps
        # the guarantee should that rule ever loosen: no image in two splits.
        groups=[record.sha256 or str(record.path) for record in records],
    )
    return {split: _by_path([records[index] for index in indices[split]]) for split in SPLITS}


def _by_path(records: list[FileRecord]) -> tuple[FileRecord, ...]:
    return tuple(sorted(records, key=lambda record: str(record.path)))


def _problem_counts(report: HealthReport) -> str:
    if not report.records:
        return "its class folders hold no files"
    counts = Counter(problem.kind for problem in report.problems if problem.excluded for _ in problem.paths)
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))

"""Turn a data path into train/val/test lists of sound images, ready for a run.

Scans the data (reusing the project's scan cache), saves the health report into the
project folder, leaves out what the report excludes and what the user excluded
(``engine.data.exclusions``), gives relabelled photos their new class (``engine.data.relabels``),
and splits the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.core.config import DataConfig
from engine.core.errors import DatasetError
from engine.core.paths import project_dir_for
from engine.data.discovery import SPLITS, split_samples
from engine.data.exclusions import apply_exclusions, load_exclusions
from engine.data.health import FileRecord, HealthReport, scan_dataset
from engine.data.relabels import apply_relabels, load_relabels, relabels_file

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
        excluded_by_user: sound images left out because the user excluded them
            (the project's ``exclusions.json``), sorted.
        relabelled_by_user: images whose class the user changed (the project's ``relabels.json``),
            sorted; their records carry the new class.
    """

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, tuple[FileRecord, ...]]
    report: HealthReport
    excluded_by_user: tuple[Path, ...] = ()
    relabelled_by_user: tuple[Path, ...] = ()

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

    Images the user excluded (the project's ``exclusions.json``) are left out like bad
    files; images the user relabelled (its ``relabels.json``) get their new class but keep
    their split. Pre-split data keeps its folders; a split without a folder is taken from
    train (val with ``val_fraction``; test with ``test_fraction``, when above 0). Other
    layouts get a stratified split seeded by ``seed``, in which identical files
    (same SHA-256) always share a split.

    Args:
        path: data folder or CSV file.
        val_fraction: share of each class for validation, in [0, 1).
        test_fraction: share of each class for the final test, in [0, 1).
        seed: the same seed gives the same split of the same files.
        project_dir: where ``scan_cache.json``, ``health.json`` and ``health.txt`` go, and
            ``exclusions.json`` and ``relabels.json`` are read from; defaults to
            ``engine.core.paths.project_dir_for(path)``.
        workers: threads reading files during the scan.
        progress: passed to ``scan_dataset``.
        should_abort: passed to ``scan_dataset``.

    Raises:
        DatasetError: the path cannot be used, the exclusions or relabels file is damaged or names
            a class the data does not have, or fewer than
            2 classes have usable images.
        engine.data.health.ScanAborted: ``should_abort()`` returned True.
        engine.core.errors.ConfigError: a fraction is out of range.
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

    usable, excluded_by_user = apply_exclusions(report.usable_records(), load_exclusions(project_dir))
    usable, relabelled_by_user = apply_relabels(usable, load_relabels(project_dir), report.classes,
                                                source=relabels_file(project_dir))
    if report.layout == "presplit" and (excluded_by_user or relabelled_by_user):
        # The report left out classes with nothing in train; the user's exclusions and relabels can
        # empty a class's train folder too, and a class that is never trained on cannot be learnt.
        trainable = {record.label for record in usable if record.split == "train"}
        usable = tuple(record for record in usable if record.label in trainable)
    if not usable:
        raise DatasetError(
            f"{report.root}: no usable images among {len(report.records)} files "
            f"({_problem_counts(report, len(excluded_by_user))}); see {text_path}"
        )
    # Every remaining label has training data (pre-split classes without any were left out).
    counts = Counter(record.label for record in usable)
    classes = tuple(sorted(counts))
    if len(classes) < 2:
        missing = [label for label in report.classes if label not in classes]
        found = ", ".join(f"{label}: {counts[label]} images" for label in classes)
        without = f"; without usable images: {', '.join(missing)}" if missing else ""
        raise DatasetError(
            f"{report.root}: at least 2 classes with usable images are needed, found {len(classes)} "
            f"({found}){without}; see {text_path}"
        )

    # Split by the labels as found, so relabelling a photo changes its class but never its split.
    as_found = {record.path: record for record in report.usable_records()}
    splits = split_records(
        tuple(as_found[record.path] for record in usable), presplit=report.layout == "presplit",
        val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
    )
    labelled = {record.path: record for record in usable}
    splits = {split: tuple(labelled[record.path] for record in records) for split, records in splits.items()}
    return PreparedDataset(
        root=report.root, classes=classes, splits=splits, report=report, excluded_by_user=excluded_by_user,
        relabelled_by_user=relabelled_by_user,
    )


def prepare_configured_dataset(data: DataConfig, *, path: str | Path | None = None) -> PreparedDataset:
    """Scan and split the dataset of a run's data settings: the same images in the same splits as that run.

    Args:
        data: the run's ``data`` settings (path, validation and test fractions, split seed).
        path: the dataset, when it is no longer at ``data.path`` (moved since training).

    Raises:
        DatasetError, ConfigError: as ``prepare_dataset``.
    """
    return prepare_dataset(data.path if path is None else path, val_fraction=data.val_fraction,
                           test_fraction=data.test_fraction, seed=data.split_seed)


def split_records(
    records: tuple[FileRecord, ...], *, presplit: bool, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[FileRecord, ...]]:
    """Split usable records into train, val and test as ``prepare_dataset`` does.

    Cheap (no file is read), so a form can show the split its settings give.

    Args:
        records: usable records of a health report.
        presplit: the records carry the split of their folder (``presplit`` layout).
        val_fraction: share of each class for validation (pre-split: only without a val folder).
        test_fraction: share of each class for testing (pre-split: only without a test folder).
        seed: the split seed.

    Raises:
        engine.core.errors.ConfigError: a fraction is out of range.
    """
    if presplit:
        return _presplit(records, val_fraction, test_fraction, seed)
    return _random_split(records, val_fraction, test_fraction, seed)


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


def _problem_counts(report: HealthReport, excluded_by_user: int) -> str:
    if not report.records:
        return "its class folders hold no files"
    counts = Counter(problem.kind for problem in report.problems if problem.excluded for _ in problem.paths)
    if excluded_by_user:
        counts["excluded by the user"] = excluded_by_user
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))

"""Find the labelled files of a dataset (class folders, pre-split folders or a CSV) and split them.

Discovery only lists candidate files and their labels; whether each file is a usable
image is for ``engine.data.health`` to judge.
"""

from __future__ import annotations

import csv
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import ConfigError, DatasetError

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, in the order they take precedence (a train copy beats a val copy)."""

LAYOUTS: tuple[str, ...] = ("class_folders", "presplit", "csv")

# Folder names accepted for each split of pre-split data (compared in lower case).
SPLIT_FOLDER_NAMES: dict[str, str] = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}

# Operating-system litter that is not hidden by a leading dot on every platform.
_SYSTEM_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})

_EXPECTED_LAYOUTS = (
    "expected one of: a folder of class folders (cat/, dog/ … holding images); "
    "a folder with train/ and val/ (or valid/, validation/) and optionally test/, each holding "
    "class folders; or a .csv file with the header path,label"
)


@dataclass(frozen=True)
class Sample:
    """One candidate file and its label.

    Attributes:
        path: absolute path of the file (it may not exist for a CSV row).
        label: class name.
        split: ``train``, ``val`` or ``test`` for pre-split data, else None.
    """

    path: Path
    label: str
    split: str | None = None


@dataclass(frozen=True)
class DatasetSource:
    """What discovery found at a data path, before any file is opened.

    Attributes:
        root: the data folder, or the CSV file, resolved to an absolute path.
        layout: ``class_folders``, ``presplit`` or ``csv``.
        classes: every class name, sorted, including classes with no files.
        files: every candidate file in a class folder (or CSV row), images or not,
            sorted by split, label and path.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    files: tuple[Sample, ...]


def discover_dataset(path: str | Path) -> DatasetSource:
    """List the labelled files at a data path.

    Accepts a folder of class folders, a folder of ``train``/``val``/``test`` folders of
    class folders, or a CSV file with columns ``path,label`` (relative paths are taken
    from the CSV's folder). Hidden files and folders (a leading dot, such as the project's
    ``.transfer-studio``) are ignored, as are files lying directly in the data folder.
    Files inside class folders are found at any depth.

    Args:
        path: the data folder or CSV file.

    Raises:
        DatasetError: the path is missing, the CSV is malformed, or no layout matches.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise DatasetError(f"data folder not found: {given}")
    root = given.resolve()
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: a {root.suffix or 'suffix-less'} file is not a dataset; {_EXPECTED_LAYOUTS}")
        return _discover_csv(root)

    folders = _visible_folders(root)
    split_folders = {
        folder: SPLIT_FOLDER_NAMES[folder.name.lower()]
        for folder in folders
        if folder.name.lower() in SPLIT_FOLDER_NAMES and _visible_folders(folder)
    }
    if "train" in split_folders.values():
        return _discover_presplit(root, folders, split_folders)
    if not folders:
        raise DatasetError(f"{root}: no class folders found; {_EXPECTED_LAYOUTS}")
    files = [sample for folder in folders for sample in _class_samples(folder, folder.name, None)]
    classes = tuple(sorted(folder.name for folder in folders))
    return DatasetSource(root=root, layout="class_folders", classes=classes, files=_sorted(files))


def split_samples(
    keys: Sequence[str | Path],
    labels: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> dict[str, list[int]]:
    """Split items into train, val and test, stratified per class and reproducible.

    Items are ordered by key before a per-class shuffle seeded by ``seed`` and the class
    name, so the result does not depend on the input order or on the other classes.
    Each class contributes ``round(n * fraction)`` items to val and to test, with at
    least one val item when it has 2 or more items (and ``val_fraction > 0``), at least
    one test item when it has 3 or more (and ``test_fraction > 0``), and always at least
    one train item; a class of 1 goes to train. Items sharing a group (e.g. identical
    file hashes) always land in the same split; such a group is counted under the label
    of its first key, and may make a class's val share overshoot or fall to zero.

    Args:
        keys: a stable identifier per item, usually its path.
        labels: the class of each item.
        val_fraction: share of each class for validation, in [0, 1).
        test_fraction: share of each class for testing, in [0, 1).
        seed: the same seed (and items) gives the same split.
        groups: optional group id per item.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: sorted indices into ``keys``.

    Raises:
        ConfigError: a fraction is out of range or the sequences differ in length.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction: must be in [0, 1), got {test_fraction}")
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction: must be below 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}"
        )
    if len(labels) != len(keys) or (groups is not None and len(groups) != len(keys)):
        raise ConfigError(
            f"split_samples: keys, labels and groups must have the same length, got {len(keys)}, "
            f"{len(labels)} and {len(groups) if groups is not None else len(keys)}"
        )

    # Units are the indivisible pieces: one group, or one item when there are no groups.
    order = sorted(range(len(keys)), key=lambda index: str(keys[index]))
    units: dict[str, list[int]] = {}
    for index in order:
        unit_id = groups[index] if groups is not None else f"item:{index}"
        units.setdefault(unit_id, []).append(index)
    units_by_label: dict[str, list[list[int]]] = defaultdict(list)
    for members in units.values():
        units_by_label[labels[members[0]]].append(members)

    result: dict[str, list[int]] = {split: [] for split in SPLITS}
    for label in sorted(units_by_label):
        class_units = units_by_label[label]
        random.Random(f"{seed}:{label}").shuffle(class_units)
        count = sum(len(members) for members in class_units)
        val_target, test_target = _split_targets(count, val_fraction, test_fraction)
        filled = dict.fromkeys(SPLITS, 0)
        for position, members in enumerate(class_units):
            # The last unit goes to train if train is still empty, so no class loses training data.
            may_leave_train = filled["train"] > 0 or position < len(class_units) - 1
            if may_leave_train and filled["val"] < val_target:
                split = "val"
            elif may_leave_train and filled["test"] < test_target:
                split = "test"
            else:
                split = "train"
            filled[split] += len(members)
            result[split].extend(members)
    return {split: sorted(indices) for split, indices in result.items()}


def _split_targets(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    val = round(count * val_fraction)
    test = round(count * test_fraction)
    if val_fraction > 0 and count >= 2:
        val = max(val, 1)
    if test_fraction > 0 and count >= 3:
        test = max(test, 1)
    # Keep at least one item for training: give up test before val.
    excess = val + test - (count - 1)
    if excess > 0:
        cut = min(excess, test)
        test -= cut
        val = max(val - (excess - cut), 0)
    return val, test


def _visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in _SYSTEM_NAMES


def _visible_folders(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DatasetError(f"{folder}: cannot list the folder ({error.strerror})") from error
    return [entry for entry in entries if _visible(entry.name) and entry.is_dir()]


def _class_samples(folder: Path, label: str, split: str | None) -> list[Sample]:
    samples: list[Sample] = []
    # Symlinked sub-folders are not followed: they can loop, and os.walk would not notice.
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if _visible(name)]
        base = Path(directory)
        samples.extend(Sample(base / name, label, split) for name in names if _visible(name))
    return samples


def _discover_presplit(root: Path, folders: list[Path], split_folders: dict[Path, str]) -> DatasetSource:
    others = [folder.name for folder in folders if folder not in split_folders]
    if others:
        raise DatasetError(
            f"{root}: mixes split folders ({', '.join(sorted(f.name for f in split_folders))}) with "
            f"other folders ({', '.join(others)}); {_EXPECTED_LAYOUTS}"
        )
    by_split: dict[str, list[Path]] = defaultdict(list)
    for folder, split in split_folders.items():
        by_split[split].append(folder)
    for split, candidates in by_split.items():
        if len(candidates) > 1:
            names = ", ".join(folder.name for folder in candidates)
            raise DatasetError(f"{root}: several folders ({names}) claim the {split} split; keep one")
    classes: set[str] = set()
    files: list[Sample] = []
    for split, (split_folder,) in by_split.items():
        for class_folder in _visible_folders(split_folder):
            classes.add(class_folder.name)
            files.extend(_class_samples(class_folder, class_folder.name, split))
    return DatasetSource(root=root, layout="presplit", classes=tuple(sorted(classes)), files=_sorted(files))


def _discover_csv(csv_path: Path) -> DatasetSource:
    base = csv_path.parent
    samples: list[Sample] = []
    first_line: dict[Path, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csv.reader(handle, strict=True)  # an unclosed quote is an error, not a field
            header = next(reader, None)
            columns = [cell.strip().lower() for cell in header or []]
            if "path" not in columns or "label" not in columns:
                raise DatasetError(
                    f"{csv_path}: line 1: expected a header with the columns path,label, "
                    f"got {','.join(header or []) or 'an empty file'!r}"
                )
            path_column, label_column = columns.index("path"), columns.index("label")
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are harmless
                if len(row) != len(columns):
                    raise DatasetError(
                        f"{csv_path}: line {line}: expected {len(columns)} fields ({','.join(columns)}), "
                        f"got {len(row)}: {','.join(row)!r}"
                    )
                value, label = row[path_column].strip(), row[label_column].strip()
                if not value or not label:
                    raise DatasetError(f"{csv_path}: line {line}: path and label must not be empty, got {row!r}")
                file_path = Path(os.path.abspath(base / Path(value).expanduser()))
                if file_path in first_line:
                    raise DatasetError(
                        f"{csv_path}: line {line}: {value} is already listed on line {first_line[file_path]}; "
                        "each file may appear once"
                    )
                first_line[file_path] = line
                samples.append(Sample(file_path, label))
    except csv.Error as error:
        raise DatasetError(f"{csv_path}: line {reader.line_num}: not valid CSV ({error})") from error
    except UnicodeDecodeError as error:
        raise DatasetError(f"{csv_path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise DatasetError(f"{csv_path}: cannot read the CSV file ({error.strerror})") from error
    if not samples:
        raise DatasetError(f"{csv_path}: the CSV lists no files; expected rows of path,label after the header")
    classes = tuple(sorted({sample.label for sample in samples}))
    return DatasetSource(root=csv_path, layout="csv", classes=classes, files=_sorted(samples))


def _sorted(samples: list[Sample]) -> tuple[Sample, ...]:
    rank = {split: position for position, split in enumerate(SPLITS)}
    return tuple(sorted(samples, key=lambda s: (rank.get(s.split or "", -1), s.label, str(s.path))))

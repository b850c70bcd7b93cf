"""Labels the user corrected without moving files, kept as ``relabels.json`` in the project folder.

The data doctor suggests a class for a mislabelled photo; relabelling writes it here, and dataset
preparation gives the photo that class instead of its folder's or CSV row's. Nothing in the data
folder changes until the user applies the relabels to the folders (``engine.review.folder_moves``).
Paths are stored as exclusions store them, so a dataset moved as a whole keeps its relabels.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.core.atomic import atomic_write_json
from engine.core.errors import DatasetError
from engine.data.exclusions import path_from_stored, stored_path
from engine.data.health import FileRecord

RELABELS_NAME = "relabels.json"
SCHEMA_VERSION = 1


def relabels_file(project_dir: str | Path) -> Path:
    """Return the path of the relabels file in ``project_dir`` (which may not exist yet)."""
    return Path(project_dir) / RELABELS_NAME


def load_relabels(project_dir: str | Path) -> dict[Path, str]:
    """Return each relabelled photo's absolute path and its new class; empty when there is no file.

    Raises:
        DatasetError: the file exists but cannot be read or is not a relabels file.
    """
    file = relabels_file(project_dir)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{file}: cannot read the relabelled photos ({error})") from error
    stored = payload.get("relabelled") if isinstance(payload, dict) else None
    if not isinstance(stored, dict) or not all(
        isinstance(path, str) and isinstance(label, str) and label for path, label in stored.items()
    ):
        raise DatasetError(f"{file}: expected an object with \"relabelled\": an object of path to class name")
    return {path_from_stored(path, project_dir): label for path, label in stored.items()}


def save_relabels(project_dir: str | Path, relabels: Mapping[Path, str]) -> Path:
    """Write every relabelled photo and its new class (replacing the previous file) and return the file.

    Raises:
        OSError: the project folder is not writable.
    """
    stored = {stored_path(path, project_dir): label for path, label in sorted(relabels.items())}
    return atomic_write_json(relabels_file(project_dir), {"schema": SCHEMA_VERSION, "relabelled": stored})


def apply_relabels(
    records: Sequence[FileRecord], relabels: Mapping[Path, str], classes: Sequence[str], *, source: Path
) -> tuple[tuple[FileRecord, ...], tuple[Path, ...]]:
    """Give every relabelled record its new class.

    Args:
        records: usable records, in order.
        relabels: from ``load_relabels``; entries of photos not among ``records`` are ignored.
        classes: the dataset's classes; a new class must be one of them.
        source: the relabels file, named in errors.

    Returns:
        (the records with their new labels, in order; sorted paths of those whose class changed).

    Raises:
        DatasetError: a photo was relabelled to a class the dataset does not have.
    """
    known = set(classes)
    updated, changed = [], []
    for record in records:
        label = relabels.get(record.path)
        if label is None or label == record.label:
            updated.append(record)
            continue
        if label not in known:
            raise DatasetError(f"{source}: {record.path.name} is relabelled to '{label}', which is not a class of "
                               f"this dataset ({', '.join(classes)}); relabel it again or remove the entry")
        updated.append(dataclasses.replace(record, label=label))
        changed.append(record.path)
    return tuple(updated), tuple(sorted(changed))

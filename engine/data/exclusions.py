"""Images the user chose to leave out of training, kept as ``exclusions.json`` in the project folder.

Paths are stored relative to the folder that holds the project folder (the data
folder, or a CSV's folder), so a dataset moved as a whole keeps its exclusions; a
rescan never touches the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from engine.core.atomic import atomic_write_json
from engine.core.errors import DatasetError
from engine.data.health import FileRecord

EXCLUSIONS_NAME = "exclusions.json"
SCHEMA_VERSION = 1


def exclusions_file(project_dir: str | Path) -> Path:
    """Return the path of the exclusions file in ``project_dir`` (which may not exist yet)."""
    return Path(project_dir) / EXCLUSIONS_NAME


def load_exclusions(project_dir: str | Path) -> frozenset[Path]:
    """Return the absolute paths of the images left out by the user; none when there is no file.

    Raises:
        DatasetError: the file exists but cannot be read or is not an exclusions file.
    """
    file = exclusions_file(project_dir)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{file}: cannot read the list of excluded images ({error})") from error
    stored = payload.get("excluded") if isinstance(payload, dict) else None
    if not isinstance(stored, list) or not all(isinstance(item, str) for item in stored):
        raise DatasetError(f"{file}: expected an object with \"excluded\": a list of paths")
    return frozenset(path_from_stored(item, project_dir) for item in stored)


def save_exclusions(project_dir: str | Path, paths: Iterable[str | Path]) -> Path:
    """Write the set of images left out by the user (replacing the previous list) and return the file.

    Args:
        project_dir: the dataset's project folder (created when missing).
        paths: absolute image paths; those inside the data folder are stored relative to it.

    Raises:
        OSError: the project folder is not writable.
    """
    stored = sorted({stored_path(path, project_dir) for path in paths})
    return atomic_write_json(exclusions_file(project_dir), {"schema": SCHEMA_VERSION, "excluded": stored})


def apply_exclusions(
    records: Sequence[FileRecord], excluded: frozenset[Path]
) -> tuple[tuple[FileRecord, ...], tuple[Path, ...]]:
    """Split ``records`` into those kept and the paths left out because they are in ``excluded``.

    Returns:
        (kept records in their order, sorted paths of the records left out).
    """
    kept = tuple(record for record in records if record.path not in excluded)
    dropped = tuple(sorted(record.path for record in records if record.path in excluded))
    return kept, dropped


def stored_path(path: str | Path, project_dir: str | Path) -> str:
    """The form of ``path`` kept in a project file: relative to the folder holding the project, when inside it."""
    try:
        return Path(path).relative_to(_base(project_dir)).as_posix()
    except ValueError:
        return str(path)


def path_from_stored(item: str, project_dir: str | Path) -> Path:
    """The absolute path of a ``stored_path`` entry (an absolute entry is kept as is)."""
    return _base(project_dir) / Path(PurePosixPath(item))


def _base(project_dir: str | Path) -> Path:
    return Path(project_dir).expanduser().resolve().parent

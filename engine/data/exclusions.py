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
    base = _base(project_dir)
    # A relative entry is joined as written; an absolute one is kept as is.
    return frozenset(base / Path(PurePosixPath(item)) for item in stored)


def save_exclusions(project_dir: str | Path, paths: Iterable[str | Path]) -> Path:
    """Write the set of images left out by the user (replacing the previous list) and return the file.

    Args:
        project_dir: the dataset's project folder (created when missing).
        paths: absolute image paths; those inside the data folder are stored relative to it.

    Raises:
        OSError: the project folder is not writable.
    """
    base = _base(project_dir)
    stored = sorted({_stored_form(Path(path), base) for path in paths})
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


def _base(project_dir: str | Path) -> Path:
    return Path(project_dir).expanduser().resolve().parent


def _stored_form(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)

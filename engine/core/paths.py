"""Where Transfer Studio keeps its files: the user cache, the user data folder, and each dataset's project folder.

The user cache (converted weights, cached features, scan caches) lives under
platformdirs' cache folder unless ``TRANSFER_STUDIO_CACHE_DIR`` points elsewhere;
the user data folder (projects of read-only datasets, chosen project folders) under
platformdirs' data folder unless ``TRANSFER_STUDIO_DATA_DIR`` does. Tests and shared
servers set both.

A dataset's project folder (runs, caches, health report, exclusions, searches) is, in
this order: the folder the user chose for it (``--project-dir``, the GUI's project
setting), remembered per data folder; ``DATA/.transfer-studio`` when it can be written;
a folder of the user data folder named after the data folder's absolute path. Opened
again later, the same data folder finds its runs in whichever of these places it used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import platformdirs

from engine.core.atomic import atomic_write_json, raise_injected_fault
from engine.core.errors import ConfigError

CACHE_ENV_VAR = "TRANSFER_STUDIO_CACHE_DIR"
DATA_ENV_VAR = "TRANSFER_STUDIO_DATA_DIR"
PROJECT_FOLDER_NAME = ".transfer-studio"
CHOSEN_PROJECTS_FILE = "project-folders.json"  # {absolute data folder: chosen project folder}


def user_cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the user cache.

    Args:
        *parts: sub-folder names, e.g. ``("weights",)``.
    """
    root = os.environ.get(CACHE_ENV_VAR) or platformdirs.user_cache_dir("transfer-studio", appauthor=False)
    folder = Path(root).joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def user_data_dir(*parts: str) -> Path:
    """The user data folder, or a folder inside it (not created here)."""
    root = os.environ.get(DATA_ENV_VAR) or platformdirs.user_data_dir("transfer-studio", appauthor=False)
    return Path(root).joinpath(*parts)


def project_dir_for(data_path: str | Path) -> Path:
    """Return the project folder that belongs to a dataset (not created here).

    See the module docstring for the order of the places tried.
    """
    base = data_base(data_path)
    chosen = chosen_project_dirs().get(str(base))
    if chosen is not None:
        return Path(chosen)
    local, per_user = base / PROJECT_FOLDER_NAME, per_user_project_dir(base)
    if local.is_dir() and can_write(local):
        return local
    if per_user.is_dir() or not can_write(base):
        return per_user
    return local


def data_base(data_path: str | Path) -> Path:
    """The absolute folder a dataset lives in: the folder itself, or the folder of a CSV."""
    data = Path(data_path).expanduser().resolve()
    return data.parent if data.is_file() else data


def per_user_project_dir(base: Path) -> Path:
    """The user-data project folder of a data folder, named after its last part and a hash of its whole path."""
    digest = hashlib.sha256(str(base).encode("utf-8")).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", base.name)[:40] or "root"
    return user_data_dir("projects", f"{readable}-{digest}")


def project_location_note(data_path: str | Path) -> str | None:
    """One line saying where the project folder is, when it is not ``DATA/.transfer-studio``; else None."""
    base = data_base(data_path)
    project = project_dir_for(base)
    if project == base / PROJECT_FOLDER_NAME:
        return None
    if str(base) in chosen_project_dirs():
        return f"project folder: {project} (chosen for {base})"
    return f"project folder: {project} ({base} cannot be written)"


def choose_project_dir(data_path: str | Path, project_dir: str | Path | None) -> Path:
    """Remember ``project_dir`` as the project folder of a dataset (None forgets the choice); returns the folder used.

    Raises:
        ConfigError: ``project_dir`` is a file, or a folder that cannot be created or written.
    """
    base = data_base(data_path)
    chosen = chosen_project_dirs()
    if project_dir is None:
        chosen.pop(str(base), None)
    else:
        folder = Path(project_dir).expanduser().resolve()
        check_project_dir(folder)
        chosen[str(base)] = str(folder)
    atomic_write_json(user_data_dir(CHOSEN_PROJECTS_FILE), chosen)
    return project_dir_for(base)


def check_project_dir(folder: Path) -> None:
    """Create ``folder`` if needed and make sure files can be written in it.

    Raises:
        ConfigError: it is a file, or cannot be created or written (the message names it).
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--project-dir: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--project-dir: cannot create {folder}: {error.strerror or error}") from None
    if not can_write(folder):
        raise ConfigError(f"--project-dir: cannot write in {folder}")


def chosen_project_dirs() -> dict[str, str]:
    """The project folders users chose, by absolute data folder; {} when none (or the file is damaged)."""
    try:
        chosen = json.loads(user_data_dir(CHOSEN_PROJECTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(chosen, dict):
        return {}
    return {str(key): str(value) for key, value in chosen.items() if isinstance(value, str)}


def can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` now (tried, not guessed from permission bits: root ignores them)."""
    try:
        raise_injected_fault(folder / "probe")
        handle, name = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True

"""Where a project's searches live and what a study may be called: free of Optuna, for the GUI's forms."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from engine.core.errors import ConfigError
from engine.core.paths import project_dir_for

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def searches_dir(data: str | Path) -> Path:
    """The folder holding a dataset's searches: ``<project>/searches``."""
    return project_dir_for(data) / "searches"


def default_study_name() -> str:
    """A new, sortable study name, e.g. ``search-20261124-101500``."""
    return datetime.now().strftime("search-%Y%m%d-%H%M%S")


def check_study_name(name: str) -> str:
    """Return ``name`` when it can name a study and its folder.

    Raises:
        ConfigError: it is empty, too long, or holds characters other than letters, digits, ``.``, ``_``, ``-``.
    """
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study: must be 1-100 letters, digits, '.', '_' or '-' (a folder name), got {name!r}")
    return name

"""The GUI's saved UI state (window geometry, splitters, last project, recent projects) in ``QSettings``.

Only UI state lives here, under constant keys. ``LAYOUT_VERSION`` is bumped when
the window's layout changes shape, so that state saved by an older layout is
ignored instead of being restored into the wrong widgets.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION_NAME = "TransferStudio"
APPLICATION_NAME = "Transfer Studio"

LAYOUT_VERSION = 1

KEY_LAYOUT_VERSION = "layout/version"
KEY_WINDOW_GEOMETRY = "main_window/geometry"
KEY_WINDOW_STATE = "main_window/state"
KEY_DATA_SPLITTER = "data_page/splitter"
KEY_LAST_PROJECT = "recent/last_data_folder"  # the data folder or CSV opened last, reopened at start
KEY_RECENT_PROJECTS = "recent/projects"

MAX_RECENT_PROJECTS = 10


def open_settings() -> QSettings:
    """Return the user's settings: an INI file in the per-user config folder on every platform."""
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION_NAME, APPLICATION_NAME
    )


def layout_is_current(settings: QSettings) -> bool:
    """Whether the saved layout state was written by this version of the layout."""
    return _to_int(settings.value(KEY_LAYOUT_VERSION)) == LAYOUT_VERSION


def read_bytes(settings: QSettings, key: str) -> QByteArray | None:
    """Return a saved ``QByteArray`` (geometry, state), or None if absent or not bytes."""
    value = settings.value(key)
    if isinstance(value, QByteArray) and not value.isEmpty():
        return value
    return None


def read_text(settings: QSettings, key: str) -> str | None:
    """Return a saved string, or None if absent or empty."""
    value = settings.value(key)
    return value if isinstance(value, str) and value else None


def read_last_project(settings: QSettings) -> Path | None:
    """The project (data folder or CSV) opened last, or None if none was; it may no longer exist."""
    text = read_text(settings, KEY_LAST_PROJECT)
    return Path(text) if text is not None else None


def read_recent_projects(settings: QSettings) -> list[Path]:
    """The recently opened projects (data folders or CSVs), most recent first; they may no longer exist."""
    value = settings.value(KEY_RECENT_PROJECTS)
    # An INI file gives a one-item list back as a plain string; a hand-edited one may hold anything.
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    projects: list[Path] = []
    for item in items:
        if isinstance(item, str) and item and Path(item) not in projects:
            projects.append(Path(item))
    return projects[:MAX_RECENT_PROJECTS]


def add_recent_project(settings: QSettings, path: Path) -> list[Path]:
    """Put ``path`` first in the recent projects (at most ``MAX_RECENT_PROJECTS``); returns the new list."""
    projects = [path, *(project for project in read_recent_projects(settings) if project != path)]
    return _write_recent_projects(settings, projects[:MAX_RECENT_PROJECTS])


def remove_recent_project(settings: QSettings, path: Path) -> list[Path]:
    """Drop ``path`` from the recent projects; returns the new list."""
    return _write_recent_projects(settings, [project for project in read_recent_projects(settings) if project != path])


def _write_recent_projects(settings: QSettings, projects: list[Path]) -> list[Path]:
    settings.setValue(KEY_RECENT_PROJECTS, [str(project) for project in projects])
    return projects


def _to_int(value: object) -> int | None:
    # INI files give back strings; a hand-edited file may hold anything.
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None

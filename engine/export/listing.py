"""The exports of a project, listed beside its checkpoints so that the pages can predict and evaluate with
the very file a user deploys.

Only ``metadata.json`` files are read; a damaged one is listed as unreadable with the reason.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from engine.core.errors import CheckpointError
from engine.evaluation.catalog import ModelEntry, list_models
from engine.export.export_folders import format_folders, read_export_metadata
from engine.export.formats import EXPORT_FORMATS, METADATA_FILE, get_export_format

EXPORTS_FOLDER = "exports"


def exports_folder(project_dir: str | Path) -> Path:
    """Where the app writes a project's exports (one folder per export, one subfolder per format)."""
    return Path(project_dir) / EXPORTS_FOLDER


def list_exports(project_dir: str | Path) -> list[ModelEntry]:
    """Every format folder of the project's exports, newest export first, formats in registry order."""
    folder = exports_folder(project_dir)
    if not folder.is_dir():
        return []
    exports = sorted((item for item in folder.iterdir() if item.is_dir()), key=lambda item: item.name, reverse=True)
    return [describe_export(format_folder) for export_dir in exports for format_folder in format_folders(export_dir)]


def list_models_and_exports(project_dir: str | Path) -> list[ModelEntry]:
    """``engine.evaluation.catalog.list_models``, then the project's exports."""
    return [*list_models(project_dir), *list_exports(project_dir)]


def describe_export(format_folder: str | Path) -> ModelEntry:
    """A format folder's entry (kind ``export``) from its ``metadata.json``; ``unreadable`` with why when damaged."""
    folder = Path(format_folder)
    name = folder.name
    title = get_export_format(name).title if name in EXPORT_FORMATS else name
    label = f"export · {folder.parent.name} · {title}"
    try:
        metadata = read_export_metadata(folder / METADATA_FILE)
    except CheckpointError as error:
        return ModelEntry(folder, "unreadable", label, name=name, problem=str(error))
    source = metadata.get("source") or {}
    judged = metadata.get("judgement") or {}
    accuracy = judged.get("accuracy_int8")
    return ModelEntry(
        path=folder,
        kind="export",
        label=label,
        name=name,
        backbone=source.get("backbone") if isinstance(source, dict) else None,
        classes=tuple(str(label) for label in metadata.get("labels") or ()),
        val_top1=float(accuracy) if isinstance(accuracy, int | float) else None,
        modified=_modified(folder / METADATA_FILE),
    )


def _modified(file: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(file.stat().st_mtime)
    except OSError:
        return None

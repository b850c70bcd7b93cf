"""Where exports are and what they say of themselves, read from their ``metadata.json`` files alone (no runtime,
no torch), so that the pages can list and recognise exports without loading model code.

A path names an export in any of the ways a user would point at one: the format folder
(``OUT/onnx``), its model file (``OUT/onnx/model.onnx``) or ``metadata.json``, or the export
folder ``OUT`` itself when it holds a single format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.core.errors import CheckpointError
from engine.export.formats import EXPORT_FORMATS, METADATA_FILE, METADATA_FORMAT


def read_export_metadata(file: Path) -> dict[str, Any]:
    """The ``metadata.json`` of one format folder.

    Raises:
        CheckpointError: it cannot be read or is not the metadata of a Transfer Studio export (named).
    """
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{file}: the export's metadata cannot be read ({error})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT \
            or "preprocessing" not in metadata or "labels" not in metadata:
        raise CheckpointError(f"{file}: not the metadata of a Transfer Studio export")
    return metadata


def format_folders(export_dir: Path) -> list[Path]:
    """The format folders (``onnx/``, ``torchscript/``...) of an export folder, in registry order."""
    return [export_dir / name for name in EXPORT_FORMATS if (export_dir / name / METADATA_FILE).is_file()]


def export_folder_of(path: str | Path) -> Path | None:
    """The format folder ``path`` names (see the module docstring), or None when it names no export.

    Raises:
        CheckpointError: ``path`` is an export folder of several formats (which one is ambiguous).
    """
    candidate = Path(path)
    if candidate.name == METADATA_FILE or candidate.is_file():  # metadata.json, or the model file beside it
        candidate = candidate.parent
    if (candidate / METADATA_FILE).is_file():
        return candidate
    if not candidate.is_dir():
        return None
    formats = format_folders(candidate)
    if len(formats) > 1:
        names = ", ".join(folder.name for folder in formats)
        raise CheckpointError(f"{candidate}: an export of several formats ({names}): name one, "
                              f"e.g. {formats[0]}")
    return formats[0] if formats else None


def is_export(path: str | Path) -> bool:
    """Whether ``path`` names an export (rather than a checkpoint, run folder or manifest)."""
    try:
        return export_folder_of(path) is not None
    except CheckpointError:
        return True  # an export, if an ambiguous one: loading it says so


def source_model_of(path: str | Path) -> Path | None:
    """The checkpoint or manifest an export was made from, where it still is (for what needs PyTorch: Grad-CAM)."""
    try:
        folder = export_folder_of(path)
        source = read_export_metadata(folder / METADATA_FILE).get("source") if folder is not None else None
    except CheckpointError:
        return None
    location = (source.get("manifest") or source.get("checkpoint")) if isinstance(source, dict) else None
    return Path(location) if location and Path(location).exists() else None

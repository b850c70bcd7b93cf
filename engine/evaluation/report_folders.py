"""A project's evaluation report folders: where they go, which exist, how to read one, which splits a model has.

Reports are folders written by ``main.py evaluate`` into ``PROJECT/evaluations``, each
with a ``report.json``; the GUI lists and reads them on pool threads.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.core.config import DataConfig, RunConfig
from engine.core.errors import TransferStudioError
from engine.data.discovery import SPLIT_FOLDER_NAMES
from engine.evaluation.catalog import ModelEntry
from engine.models.checkpoint_metadata import read_checkpoint_metadata

EVALUATIONS_FOLDER = "evaluations"
_REQUIRED_KEYS = ("classes", "summary", "confusion", "per_class", "reliability", "top_losses")


def evaluations_folder(project_dir: Path) -> Path:
    """Where the page writes a project's evaluation reports."""
    return project_dir / EVALUATIONS_FOLDER


def list_reports(project_dir: Path) -> list[Path]:
    """The project's report folders (those holding a ``report.json``), newest first."""
    reports = [path.parent for path in evaluations_folder(project_dir).glob("*/report.json")]
    return sorted(reports, key=lambda folder: (folder / "report.json").stat().st_mtime, reverse=True)


def report_folder_for(project_dir: Path, entry: ModelEntry, split: str, when: datetime) -> Path:
    """A new report folder ``evaluations/<model>-<split>-<stamp>`` (suffixed when the name is taken)."""
    if entry.kind == "export":  # EXPORT/onnx: the export's name and its format
        model = f"{entry.path.parent.name}-{entry.name}"
    elif entry.kind == "ensemble" or entry.run_dir is None:
        model = entry.name
    else:
        model = f"{entry.run_dir.name}-{entry.name}"
    base = evaluations_folder(project_dir) / f"{model}-{split}-{when:%Y%m%d-%H%M%S}"
    folder, counter = base, 1
    while folder.exists():
        counter += 1
        folder = base.with_name(f"{base.name}-{counter}")
    return folder


def missing_splits(model: ModelEntry, data_path: Path) -> dict[str, str]:
    """Why the ``val`` or ``test`` split holds no images for this model, for each that holds none.

    The model splits the data with its own settings (``data.val_fraction``,
    ``data.test_fraction``; an ensemble its first member's), and pre-split data with its folders.
    """
    checkpoint = model.members[0] if model.kind == "ensemble" and model.members else model.path
    try:
        # An export carries the run config it came from in its metadata.json (engine.export.exporter).
        config = json.loads((model.path / "metadata.json").read_text(encoding="utf-8"))["training_config"] \
            if model.kind == "export" else read_checkpoint_metadata(checkpoint)["config"]
        data = RunConfig.from_dict(config).data
    except (KeyError, TypeError, OSError, ValueError, TransferStudioError):
        data = DataConfig()  # as the evaluation does for a checkpoint without a config
    folders = {SPLIT_FOLDER_NAMES.get(path.name.lower()) for path in data_path.iterdir() if path.is_dir()} \
        if data_path.is_dir() else set()
    presplit = "train" in folders
    missing = {}
    for split, fraction in (("val", data.val_fraction), ("test", data.test_fraction)):
        if fraction <= 0 and not (presplit and split in folders):
            missing[split] = (f"No {split} split: the model was trained with data.{split}_fraction = {fraction:g} "
                              f"and the data has no {split}/ folder")
    return missing


def read_report(folder: str | Path) -> dict[str, Any]:
    """The parsed ``report.json`` of a report folder.

    Raises:
        TransferStudioError: the file is missing, not JSON, or not an evaluation report.
    """
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TransferStudioError(f"{path}: not a readable evaluation report ({error})") from error
    missing = [key for key in _REQUIRED_KEYS if not isinstance(report, dict) or key not in report]
    if missing:
        raise TransferStudioError(f"{path}: not an evaluation report (no {', '.join(missing)})")
    return report

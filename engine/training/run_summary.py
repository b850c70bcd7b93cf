"""Summaries of a project's run folders, for listing and comparing runs.

Each ``PROJECT/runs/*`` folder is read from its ``config.yaml``, ``status.json``,
``metrics.csv`` and the last line of ``events.jsonl``. A damaged or foreign folder
becomes an ``unreadable`` summary that says why; reading never raises for one folder.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from engine.core.errors import ConfigError
from engine.core.events import RunCancelled, RunFailed, RunFinished
from engine.training.run_lock import writer_alive
from engine.training.runfolder import RunFolder

RUNS_FOLDER = "runs"
FOLDER_STAMP_FORMAT = "%Y%m%d-%H%M%S"  # the prefix engine.training.runfolder.new_run_dir gives run folders
_STAMP_LENGTH = len("20260101-000000")
TERMINAL_STATES = {RunFinished.event: "finished", RunCancelled.event: "cancelled", RunFailed.event: "failed"}
# How much of events.jsonl is read at first to find its last line; doubled while the line is longer.
_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunSummary:
    """What the runs table shows of one run folder.

    Attributes:
        path: the run folder.
        state: ``finished``, ``cancelled``, ``failed``, ``running`` (no final event yet, and a
            live process writes the folder), ``interrupted`` (no final event, and no process
            writes it any more: killed, crashed, or a damaged status) or ``unreadable``.
        reason: why a run was cancelled, failed or cannot be read; "" otherwise.
        started: when the run was created (from the folder name, else the config file's time).
        backbone: the timm model name, None when unreadable.
        mode: ``feature_extraction``, ``fine_tune`` or ``two_stage``; None when unreadable.
        epochs_done: epochs with a row in ``metrics.csv``.
        epochs_planned: ``optim.epochs`` of the run's config; None when unreadable.
        best_val_top1: the highest validation top-1 accuracy (0 to 1), None before the first epoch.
        has_last_checkpoint: whether ``checkpoints/last.safetensors`` exists (the run can be resumed).
        metrics: the rows of ``metrics.csv``, one per finished epoch.
    """

    path: Path
    state: str
    reason: str = ""
    started: datetime | None = None
    backbone: str | None = None
    mode: str | None = None
    epochs_done: int = 0
    epochs_planned: int | None = None
    best_val_top1: float | None = None
    has_last_checkpoint: bool = False
    metrics: tuple[dict[str, float | None], ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def readable(self) -> bool:
        """Whether the folder's config and metrics could be read."""
        return self.state != "unreadable"

    def series(self, column: str) -> tuple[list[float], list[float]]:
        """``(epochs, values)`` of a ``metrics.csv`` column, skipping epochs where it is empty."""
        epochs: list[float] = []
        values: list[float] = []
        for row in self.metrics:
            epoch, value = row.get("epoch"), row.get(column)
            if epoch is not None and value is not None:
                epochs.append(epoch)
                values.append(value)
        return epochs, values


class _ConfigFacts(TypedDict):
    """What a run folder tells of its run before its metrics are read."""

    started: datetime | None
    backbone: str
    mode: str
    epochs_planned: int
    has_last_checkpoint: bool


def runs_folder(project_dir: str | Path) -> Path:
    """The folder that holds a project's runs (not created here)."""
    return Path(project_dir) / RUNS_FOLDER


def list_runs(project_dir: str | Path) -> list[RunSummary]:
    """Summaries of every folder under ``project_dir/runs``, newest first.

    Hidden entries and loose files are skipped; a project without runs gives ``[]``.

    Raises:
        OSError: the runs folder exists but cannot be listed.
    """
    folder = runs_folder(project_dir)
    if not folder.is_dir():
        return []
    runs = [read_run(entry) for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    oldest = datetime.min
    return sorted(runs, key=lambda run: (run.started or oldest, run.name), reverse=True)


def read_run(run_dir: str | Path) -> RunSummary:
    """Summarise one run folder; a folder that cannot be read gives an ``unreadable`` summary."""
    path = Path(run_dir)
    started = _started(path)
    folder = RunFolder(path)
    if not folder.config_path.is_file():
        return RunSummary(path, "unreadable", "no config.yaml: not a run folder", started)
    try:
        config = folder.load_config()
    except ConfigError as error:
        return RunSummary(path, "unreadable", _without_folder(str(error), path), started)
    known: _ConfigFacts = {"started": started, "backbone": config.model.backbone, "mode": config.model.mode,
                           "epochs_planned": config.optim.epochs,
                           "has_last_checkpoint": folder.checkpoint_path("last").is_file()}
    try:
        rows = tuple(folder.read_metrics())
    except (OSError, ValueError, TypeError, csv.Error) as error:  # TypeError: a row with extra cells
        return RunSummary(path, "unreadable", f"metrics.csv: {error}", **known)
    state, reason = _state_of(folder)
    accuracies = [value for row in rows if (value := row.get("val_top1")) is not None]
    epochs = [value for row in rows if (value := row.get("epoch")) is not None]
    return RunSummary(
        path, state, reason, epochs_done=int(max(epochs, default=0)),
        best_val_top1=max(accuracies, default=None), metrics=rows, **known,
    )


def _state_of(folder: RunFolder) -> tuple[str, str]:
    """The run's state and reason: its final event if it has one, else ``status.json``."""
    last = _last_event(folder.events_path) or {}
    state = TERMINAL_STATES.get(last.get("event", ""))
    if state == "cancelled":
        return state, last.get("message") or last.get("reason") or ""
    if state == "failed":
        return state, last.get("message") or last.get("error_type") or "the run failed"
    if state is not None:
        return state, ""
    status = folder.read_status()
    if writer_alive(folder.path, status):
        return "running", ""
    if status.get("state") in TERMINAL_STATES.values():  # its final event was lost (a full disk)
        return str(status["state"]), str(status.get("error") or status.get("reason") or "")
    pid, host = status.get("pid"), status.get("host")
    writer = f" (pid {pid} on {host})" if pid and host else ""
    return "interrupted", f"its process{writer} ended without finishing the run; resume it to go on"


def _last_event(path: Path) -> dict[str, Any] | None:
    """The last complete line of ``events.jsonl`` as an event, reading only the end of the file."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            span = _TAIL_BYTES
            while True:
                start = max(0, size - span)
                handle.seek(start)
                chunk = handle.read(size - start)
                end = chunk.rfind(b"\n")  # a partly written last line is not an event yet
                begin = chunk.rfind(b"\n", 0, end) if end >= 0 else -1
                if begin >= 0 or start == 0:
                    break
                span *= 2  # the last line is longer than what was read (a failure's traceback)
    except OSError:
        return None
    line = chunk[begin + 1:end].strip() if end >= 0 else b""
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a damaged line: fall back to status.json
    return event if isinstance(event, dict) else None


def _started(path: Path) -> datetime | None:
    try:
        return datetime.strptime(path.name[:_STAMP_LENGTH], FOLDER_STAMP_FORMAT)
    except ValueError:
        pass
    try:
        return datetime.fromtimestamp((path / "config.yaml").stat().st_mtime)
    except OSError:
        return None


def _without_folder(message: str, path: Path) -> str:
    """A message without the run folder's own path in front of its file names (the table shows the folder)."""
    return message.replace(f"{path}{os.sep}", "")

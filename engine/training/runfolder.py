"""The run folder: the one format the CLI writes and the GUI reads.

Layout::

    RUN_DIR/
      config.yaml        the RunConfig that reproduces the run
      events.jsonl       one JSON object per line, flushed per line
      metrics.csv        one row per finished epoch
      status.json        the latest state, with the writer's pid, host, start and heartbeat
      writer.lock        locked by the process writing the folder (engine.training.run_lock)
      checkpoints/       best.safetensors + best.json, last.safetensors + last.json
      tensorboard/       TensorBoard event files, when the logs extra is installed
      STOP               written by anyone who wants a clean stop

Everything read whole is written atomically; events are appended a whole line at a
time and readers only parse lines that end in a newline (a torn last line, from a power
cut, is skipped, and ``repair_events`` cuts it off before a resume appends). Every event is declared in
``engine.core.events``: writing an undeclared one raises, reading skips one (a newer
run's). The search folder's ``events.jsonl`` has the same lines. In a distributed run
one process writes the folder; the others hold an ``attach``-ed view that writes nothing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from engine.core.atomic import (
    TEMP_SUFFIX,
    atomic_write_json,
    atomic_write_text,
    injected_crash,
    raise_injected_fault,
    storage_error,
)
from engine.core.config import RunConfig, load_config, save_config
from engine.core.errors import CheckpointError
from engine.core.events import ENVELOPE, check_record, get_event_type, is_declared
from engine.training.run_lock import read_status_file, writer_identity, writer_lock

METRIC_COLUMNS = (
    "epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "ema_val_loss", "ema_val_top1",
    "learning_rate", "seconds", "train_skipped", "val_skipped",
)
STOP_FILE = "STOP"
HEARTBEAT_SECONDS = 30.0  # how often a running run rewrites status.json to say it is alive


class RunFolder:
    """Reads and writes one run folder.

    Attributes:
        writes: False for a view from a process that must not write (``attach``).
    """

    def __init__(self, path: str | Path, *, writes: bool = True) -> None:
        self.path = Path(path)
        self.writes = writes
        self.config_path = self.path / "config.yaml"
        self.events_path = self.path / "events.jsonl"
        self.metrics_path = self.path / "metrics.csv"
        self.status_path = self.path / "status.json"
        self.checkpoints_dir = self.path / "checkpoints"
        self.stop_path = self.path / STOP_FILE
        self.echo: TextIO | None = None  # a stream that also receives each event line (``--events-only``)
        self._started = datetime.now().isoformat(timespec="seconds")
        self._status: dict[str, Any] = {}
        self._status_time = 0.0

    @classmethod
    def create(cls, path: str | Path, config: RunConfig) -> RunFolder:
        """Make a new run folder holding ``config``.

        Raises:
            CheckpointError: the folder already holds a run (use resume instead).
        """
        folder = cls.check_free(path)
        folder.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, folder.config_path)
        return folder

    @classmethod
    def check_free(cls, path: str | Path) -> RunFolder:
        """The folder at ``path``, which must not hold a run yet (nothing is created).

        Raises:
            CheckpointError: the folder already holds a run (use resume instead).
        """
        folder = cls(path)
        if folder.config_path.exists():
            raise CheckpointError(f"{folder.path}: already holds a run; resume it with --resume {folder.path}")
        return folder

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """Open an existing run folder.

        Raises:
            CheckpointError: there is no run at ``path``.
        """
        folder = cls(path)
        if not folder.config_path.is_file():
            raise CheckpointError(f"{folder.path}: not a run folder (no config.yaml)")
        return folder

    @classmethod
    def attach(cls, path: str | Path) -> RunFolder:
        """A view of a run folder another process writes (rank 0 of a distributed run), from another rank.

        Every write of the view is dropped, and it never reports a stop request: the
        writer decides stops for all ranks (the folder may not even be on this machine).
        Reads work where the folder is visible.
        """
        return cls(path, writes=False)

    def load_config(self) -> RunConfig:
        """The config the run was started with."""
        return load_config(self.config_path)

    def write_event(self, event: str, /, *, epoch: int | None = None, step: int | None = None, **payload: Any) -> dict:
        """Append one event line and flush it to disk; returns the event object.

        Raises:
            TypeError: ``event`` or a field of ``payload`` is not declared in ``engine.core.events``,
                or a field it requires is missing.
        """
        record = create_event(event, epoch=epoch, step=step, **payload)
        if not self.writes:
            return record
        line = encode_event(record)
        _append_whole_line(self.events_path, line.encode("utf-8"))
        if self.echo is not None:
            self.echo.write(line)
            self.echo.flush()
        return record

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's writer lock while the block writes it (nothing for an attached view).

        Raises:
            RunLocked: another live process writes the folder.
        """
        if not self.writes:
            yield
            return
        with writer_lock(self.path):
            yield

    def write_status(self, state: str, **details: Any) -> None:
        """Replace ``status.json`` with the run's current state (running, finished, failed, cancelled).

        The writer's pid, host and start time go with it, and a heartbeat time that
        ``heartbeat`` renews while the run goes on.
        """
        if not self.writes:
            return
        self._status = {"state": state, **details}
        self._write_status_file()

    def heartbeat(self) -> None:
        """Renew the heartbeat of a running run's status, at most every ``HEARTBEAT_SECONDS``."""
        if self.writes and self._status.get("state") == "running" \
                and time.monotonic() - self._status_time >= HEARTBEAT_SECONDS:
            self._write_status_file()

    def _write_status_file(self) -> None:
        now = time.time()
        payload = {"state": self._status["state"], "updated": datetime.now().isoformat(timespec="seconds"),
                   **writer_identity(), "started": self._started, "heartbeat": round(now, 3)}
        payload.update({key: value for key, value in self._status.items() if key != "state"})
        atomic_write_json(self.status_path, payload)
        self._status_time = time.monotonic()

    def read_status(self) -> dict[str, Any]:
        """The last written status, or ``{"state": "unknown"}`` (also for a damaged file)."""
        return read_status_file(self.status_path)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` with one row per epoch (columns ``METRIC_COLUMNS``)."""
        if not self.writes:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _format_metric(row.get(key)) for key in METRIC_COLUMNS})
        atomic_write_text(self.metrics_path, buffer.getvalue())

    def read_metrics(self) -> list[dict[str, float | None]]:
        """The rows of ``metrics.csv`` as numbers (None where empty); a torn last row is left out."""
        return read_metrics_file(self.metrics_path)

    def repair_events(self) -> int:
        """Cut a torn last line (a power cut mid-append) off ``events.jsonl``; returns the bytes cut."""
        if not self.writes:
            return 0
        try:
            with open(self.events_path, "rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                keep = _whole_lines_end(handle, size)
                handle.truncate(keep)
        except FileNotFoundError:
            return 0
        return size - keep

    def request_stop(self) -> None:
        """Ask the training process to stop cleanly at the next batch."""
        self.stop_path.write_text("stop requested\n", encoding="utf-8")

    def stop_requested(self) -> bool:
        """True once ``STOP`` exists in the folder (always False for an attached view)."""
        return self.writes and self.stop_path.exists()

    def clear_stop(self) -> None:
        """Remove a stale ``STOP`` and the temporary files of writes a killed process never finished."""
        if not self.writes:
            return
        self.stop_path.unlink(missing_ok=True)
        for leftover in self.path.rglob(f"*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)

    def checkpoint_path(self, name: str) -> Path:
        """Path of checkpoint ``name`` (``best`` or ``last``), without checking it exists."""
        return self.checkpoints_dir / f"{name}.safetensors"


def read_metrics_file(path: Path) -> list[dict[str, float | None]]:
    """The rows of a ``metrics.csv`` as numbers (None where empty), without a torn last row; [] when there is none.

    Raises:
        OSError: the file cannot be read.
        ValueError, TypeError, csv.Error: a whole row is damaged (not numbers, extra cells).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # written whole by us, but a copy or a power cut may cut it
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{key: float(value) if value else None for key, value in row.items()} for row in rows]


def _whole_lines_end(handle: Any, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none), reading back from the end."""
    position = size
    while position > 0:
        step = min(64 * 1024, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        if (newline := chunk.rfind(b"\n")) >= 0:
            return position + newline + 1
    return 0


@dataclass
class EventTail:
    """Follows ``events.jsonl`` by byte offset, returning only complete lines."""

    path: Path
    offset: int = 0

    def read_new(self) -> list[dict[str, Any]]:
        """Events appended since the last call; a partly written last line waits for the next call.

        A damaged or foreign line, or an event this version does not declare, is skipped.
        """
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return [record for line in chunk[: end + 1].splitlines() if (record := decode_event(line)) is not None]


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete, declared event of a run folder (or of an ``events.jsonl`` path)."""
    target = Path(path)
    if target.is_dir():
        target = target / "events.jsonl"
    return EventTail(target).read_new()


def create_event(name: str, /, *, epoch: int | None = None, step: int | None = None, **fields: Any) -> dict[str, Any]:
    """The checked object of event ``name``, stamped with the time now (paths and scalars as given).

    Raises:
        TypeError: the event is not declared, a field is not declared, or a required one is missing.
    """
    for key in ENVELOPE:
        if key in fields:
            raise TypeError(f"event '{name}': '{key}' is part of every event's envelope, not a field")
    record = {"schema": get_event_type(name).schema, "event": name, "time": time.time(), "epoch": epoch,
              "step": step, **fields}
    check_record(record)
    return record


def encode_event(record: dict[str, Any]) -> str:
    """The JSON line of an event, ending in a newline (paths and numpy or torch scalars become JSON values).

    Raises:
        TypeError: a value has no JSON form.
        ValueError: a float is NaN or infinite (JSON has neither).
    """
    return json.dumps(record, allow_nan=False, default=_json_default) + "\n"


def decode_event(line: bytes | str) -> dict[str, Any] | None:
    """The event object of one line; None for a blank, damaged or foreign line, or an undeclared event.

    An event this version does not declare comes from a newer run; fields its declaration
    does not name are kept (a newer version of the event may add some).
    """
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and is_declared(record.get("event")) else None


def new_run_dir(project_dir: Path, backbone: str, *, kind: str = "runs") -> Path:
    """A fresh, sortable folder name under ``project_dir/kind`` (``runs``, ``lr-find``...)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = project_dir / kind / f"{stamp}-{backbone}"
    candidate, counter = base, 1
    while candidate.exists():
        counter += 1
        candidate = base.with_name(f"{base.name}-{counter}")
    return candidate


def _append_whole_line(path: Path, data: bytes) -> None:
    """Append ``data`` (one line) unbuffered, so a killed process loses no line it returned from.

    A write that fails part-way (a full disk) is cut back to where it began: a fragment left
    behind would glue onto the next line and hide that event too. One process writes a run
    folder's events, so nobody else's line can follow the fragment. No fsync per line: it
    would slow training, and the page cache survives a killed process.
    """
    try:
        raise_injected_fault(path)
        injected_crash(path)
        with open(path, "ab", buffering=0) as handle:
            start = handle.seek(0, os.SEEK_END)
            try:
                done = 0
                while done < len(data):
                    done += handle.write(data[done:])  # a short write returns less; the next one raises
            except OSError:
                handle.truncate(start)
                raise
    except OSError as error:
        raise storage_error(path, error) from error


def _format_metric(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} into an event")

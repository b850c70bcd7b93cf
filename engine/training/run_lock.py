"""One writer per run folder, and how a reader tells a live run from a dead one.

The writing process holds an OS file lock on ``RUN/writer.lock`` (filelock: ``flock`` on
POSIX, ``LockFileEx`` on Windows) for as long as it writes. The OS drops the lock when the
process ends, however it ends, so a "running" status whose lock nobody holds belongs
to a run that was killed: readers show it as interrupted. Where the lock cannot be
tried (a read-only copy of the folder), the pid, host and heartbeat that
``status.json`` records decide.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import filelock

from engine.core.errors import RunLocked

LOCK_FILE = "writer.lock"
# Readers try the lock for an instant; a writer starting then waits this long for them.
ACQUIRE_SECONDS = 3.0
# A run on another host whose status has not been rewritten for this long is taken for dead.
STALE_SECONDS = 10 * 60


@contextlib.contextmanager
def writer_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's writer lock while the block runs.

    Raises:
        RunLocked: another live process writes the folder (the message names its pid and host).
    """
    lock = filelock.FileLock(Path(run_dir) / LOCK_FILE, timeout=ACQUIRE_SECONDS)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunLocked(who_writes(run_dir)) from None
    try:
        yield
    finally:
        lock.release()


def check_unlocked(run_dir: str | Path) -> None:
    """Refuse a run folder that a live process writes, before starting anything on it.

    Raises:
        RunLocked: it is being written (the message names the pid and host).
    """
    if lock_held(run_dir):
        raise RunLocked(who_writes(run_dir))


def who_writes(run_dir: str | Path) -> str:
    """The one line that refuses a run folder another process writes."""
    status = read_status_file(Path(run_dir) / "status.json")
    pid, host = status.get("pid"), status.get("host")
    writer = f"process {pid} on {host}" if pid and host else "another process"
    return f"{run_dir}: {writer} is writing this run; stop it first, or wait for it to end"


def lock_held(run_dir: str | Path) -> bool | None:
    """Whether a live process holds the writer lock; None when this process cannot try it (a read-only folder)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    probe = filelock.FileLock(path, timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    except OSError:
        return None
    probe.release()
    return False


def writer_alive(run_dir: str | Path, status: dict[str, Any]) -> bool:
    """Whether the process that wrote ``status`` (a "running" status) is still writing the folder."""
    held = lock_held(run_dir)
    if held is not None:
        return held
    pid, host, heartbeat = status.get("pid"), status.get("host"), status.get("heartbeat")
    if host == socket.gethostname() and isinstance(pid, int):
        return _process_exists(pid)
    return isinstance(heartbeat, (int, float)) and time.time() - heartbeat < STALE_SECONDS


def writer_identity() -> dict[str, Any]:
    """What ``status.json`` records of the process writing it."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def read_status_file(path: Path) -> dict[str, Any]:
    """``status.json`` as a dict; ``{"state": "unknown"}`` when missing or garbage."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "unknown"}
    return status if isinstance(status, dict) else {"state": "unknown"}


def _process_exists(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill would end the process there; the lock decides on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else (or this OS cannot say: assume alive)
    return True

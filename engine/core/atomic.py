"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything read whole (configs, checkpoints, metadata, reports, status) is written
to a ``*.tmp`` sibling, fsynced, then moved over the target with ``os.replace``,
as timm's checkpoint saver does. A write that fails (a full disk, a quota, an I/O
error) leaves the previous file as it was and no temporary file; a full disk or an I/O
error becomes ``StorageError``, whose one line names the file, the disk and its free space.

``TRANSFER_STUDIO_INJECT_FAULTS`` makes chosen writes fail as a disk would, or the process
die mid-write, for fault-injection tests in child processes (SQLite's test VFS in spirit):
``KIND:GLOB[@N]`` items separated by ``;``, where KIND is an errno name (the write is refused)
or ``SIGKILL`` (the process kills itself once the temporary file is complete, before it
replaces the old one), and ``@N`` fires from the Nth matching write on (default 1). E.g.
``ENOSPC:*/checkpoints/last.safetensors@2``. Every write site calls ``raise_injected_fault``
and ``injected_crash``.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.errors import StorageError

TEMP_SUFFIX = ".tmp"
FAULTS_ENV_VAR = "TRANSFER_STUDIO_INJECT_FAULTS"
# What a failing disk, rather than a wrong path or permission, raises while writing.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
_fault_matches: Counter[str] = Counter()  # matching writes so far, per injected item (for ``@N``)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temp_path)``, fsync the result, then move it over ``path``.

    Args:
        path: the final file.
        write: writes the complete content to the temporary path it is given
            (for libraries such as safetensors that insist on a file name); what it returns is ignored.

    Returns:
        The final path.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Process and thread in the name: two writers of one file never share a temp file.
    temp = final.with_name(f"{final.name}.{os.getpid()}-{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        raise_injected_fault(final)
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        injected_crash(final)
        os.replace(temp, final)
    except OSError as error:
        raise storage_error(final, error) from error
    except Exception as error:
        # Some writers (safetensors) report the OS's error as an exception of their own, with its code in the text.
        if (code := _os_error_code(error)) in STORAGE_ERRNOS:
            raise storage_error(final, OSError(code, os.strerror(code))) from error
        raise
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(final.parent)
    return final


def _os_error_code(error: Exception) -> int | None:
    """The errno a library wrote into its own exception's text (``os error 28``, ``code: 28``), if any."""
    found = re.search(r"(?:os error|code:) (\d+)", str(error))
    return int(found[1]) if found else None


def raise_injected_fault(path: str | Path) -> None:
    """Raise the ``OSError`` that ``TRANSFER_STUDIO_INJECT_FAULTS`` asks for at a write of ``path``, if any."""
    for kind in _injected(path, crash=False):
        code = getattr(errno, kind, errno.EIO)
        raise OSError(code, os.strerror(code), str(path))


def injected_crash(path: str | Path) -> None:
    """Kill this process outright, as a power cut would stop it, where ``TRANSFER_STUDIO_INJECT_FAULTS`` asks."""
    for _ in _injected(path, crash=True):
        os.kill(os.getpid(), signal.SIGKILL)


def _injected(path: str | Path, *, crash: bool) -> list[str]:
    spec = os.environ.get(FAULTS_ENV_VAR)
    if not spec:
        return []
    fired = []
    for item in spec.split(";"):
        kind, _, rest = item.strip().partition(":")
        pattern, _, count = rest.rpartition("@") if "@" in rest else (rest, "", "1")
        if not pattern or (kind == "SIGKILL") != crash or not fnmatch.fnmatch(str(path), pattern):
            continue
        _fault_matches[item] += 1
        if _fault_matches[item] >= int(count or 1):
            fired.append(kind)
    return fired


def storage_error(path: Path, error: OSError) -> OSError:
    """``error`` as a ``StorageError`` naming the disk and its free space when the disk is at fault; else itself."""
    if isinstance(error, StorageError) or error.errno not in STORAGE_ERRNOS:
        return error
    disk = mount_point(path)
    try:
        usage = shutil.disk_usage(disk)
        space = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        space = "free space unknown"
    reason = os.strerror(error.errno).lower() if error.errno is not None else str(error)
    return StorageError(error.errno, f"cannot write {path}: {reason} (disk {disk}: {space})")


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or the nearest folder of it that exists)."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return current


def _size(count: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def _fsync_directory(folder: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything read whole (configs, checkpoints, metadata, reports, status) is written
to a ``*.tmp`` sibling, fsynced, then moved over the target with ``os.replace``,
as timm's checkpoint saver does.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


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
        write(temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(final.parent)
    return final


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

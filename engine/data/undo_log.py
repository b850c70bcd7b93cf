"""A write-ahead log of file changes that can be undone: one JSON object per line, fsynced before the change.

Folder moves of the data doctor and labels added by label-next both record each change here *before*
making it, so an interrupted batch can still be undone. A last line torn by a stop is a change that
never happened and is left out; any other damaged line is an error naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from engine.core.atomic import atomic_write_text
from engine.core.errors import DatasetError

Entry = TypeVar("Entry")


def append_entry(file: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the log and make it durable before the change it describes is made."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def read_entries(file: Path, parse: Callable[[dict[str, Any]], Entry], *, what: str) -> list[Entry]:
    """Every entry of the log, parsed; none when there is no log.

    Args:
        file: the log.
        parse: one line's object to an entry; raises KeyError or TypeError on a damaged one.
        what: an entry in words, for errors ("folder move").

    Raises:
        DatasetError: the log cannot be read, or a line other than the last is damaged.
    """
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file}: cannot read the log of {what}s ({error})") from error
    entries = []
    for number, line in enumerate(lines, start=1):
        try:
            entries.append(parse(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            if number == len(lines):
                break  # torn by a stop while it was written: that change never happened
            raise DatasetError(f"{file}: line {number} is not a {what} ({error})") from error
    return entries


def rewrite_entries(file: Path, entries: Sequence[dict[str, Any]]) -> None:
    """Replace the log by ``entries`` (atomically), e.g. without the batch just undone."""
    atomic_write_text(file, "".join(json.dumps(entry) + "\n" for entry in entries))


def free_name(target: Path) -> Path:
    """``target``, or the first ``stem_N.suffix`` beside it that no file has: never overwrite one."""
    candidate, number = target, 1
    while candidate.exists():
        candidate = target.with_name(f"{target.stem}_{number}{target.suffix}")
        number += 1
    return candidate

"""The Auto folder: ``PROJECT/auto/<stamp>/`` with its plan, its progress log and its report.

``plan.json`` (written whole, atomically) holds what Auto was asked for and the steps it
planned; ``progress.jsonl`` is a write-ahead log of what happened, one JSON object per line,
fsynced before the work it announces, so that ``main.py auto --resume`` knows which steps
are done, which run folder a cut step was writing, and how much of the budget is spent.
Standard library and ``engine.core``/``engine.data`` only: the CLI checks a folder before torch loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_write_json
from engine.core.errors import ConfigError
from engine.data.undo_log import append_entry, read_entries

AUTO_FOLDER = "auto"
PLAN_FILE = "plan.json"
PROGRESS_FILE = "progress.jsonl"
REPORT_JSON = "report.json"
REPORT_TEXT = "report.md"
SCHEMA_VERSION = 1


def auto_root(project_dir: str | Path) -> Path:
    """Where a project's Auto folders live."""
    return Path(project_dir) / AUTO_FOLDER


@dataclass(frozen=True)
class AutoFolder:
    """One Auto session's folder (a resumed session goes on in the same one).

    Attributes:
        path: ``PROJECT/auto/<stamp>``.
    """

    path: Path

    @classmethod
    def create(cls, project_dir: str | Path, plan: Mapping[str, Any]) -> AutoFolder:
        """A new folder under the project's ``auto/``, named after the time, holding ``plan``."""
        base = auto_root(project_dir) / datetime.now().strftime("%Y%m%d-%H%M%S")
        candidate, number = base, 1
        while candidate.exists():
            number += 1
            candidate = base.with_name(f"{base.name}-{number}")
        candidate.mkdir(parents=True)
        folder = cls(candidate)
        folder.write_plan(plan)
        return folder

    @classmethod
    def open(cls, path: str | Path) -> AutoFolder:
        """An existing Auto folder.

        Raises:
            ConfigError: ``path`` holds no readable ``plan.json`` (the message names ``--resume``).
        """
        folder = cls(Path(path).expanduser().resolve())
        try:
            plan = json.loads((folder.path / PLAN_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--resume: {path} is not an Auto folder (no {PLAN_FILE}); expected "
                              f"PROJECT/{AUTO_FOLDER}/<stamp>") from None
        except (OSError, ValueError) as error:
            raise ConfigError(f"--resume: cannot read {folder.path / PLAN_FILE} ({error})") from None
        if not isinstance(plan, dict) or plan.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"--resume: {folder.path / PLAN_FILE}: expected an Auto plan of schema "
                              f"{SCHEMA_VERSION}")
        return folder

    @property
    def project_dir(self) -> Path:
        """The project the folder belongs to."""
        return self.path.parent.parent

    def read_plan(self) -> dict[str, Any]:
        """The plan as last written."""
        plan: dict[str, Any] = json.loads((self.path / PLAN_FILE).read_text(encoding="utf-8"))
        return plan

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        """Replace ``plan.json`` whole (the plan grows once the first step has measured the device)."""
        atomic_write_json(self.path / PLAN_FILE, {"schema_version": SCHEMA_VERSION, **plan})

    def record(self, event: str, session_started: float, **fields: Any) -> dict[str, Any]:
        """Append one progress record, durable before the work it announces begins.

        Args:
            event: what happened, past tense (``step_started``, ``step_finished``...).
            session_started: ``time.monotonic()`` when this session began: ``elapsed`` counts from it,
                so that a resumed session knows how much of the budget the earlier ones spent.
            fields: the record's payload (JSON-serialisable).
        """
        entry = {"event": event, "time": time.time(), "elapsed": round(time.monotonic() - session_started, 3),
                 **fields}
        append_entry(self.path / PROGRESS_FILE, entry)
        return entry

    def records(self) -> list[dict[str, Any]]:
        """Every progress record in order (a last line torn by a kill is left out).

        Raises:
            DatasetError: a line other than the last is damaged.
        """
        return read_entries(self.path / PROGRESS_FILE, _checked, what="Auto progress record")

    def spent_seconds(self) -> float:
        """Budget the earlier sessions used: each session's last ``elapsed`` (a killed one's too)."""
        return sum(last for last in _session_lengths(self.records()))

    def report_paths(self) -> tuple[Path, Path]:
        """``report.json`` and ``report.md``."""
        return self.path / REPORT_JSON, self.path / REPORT_TEXT


def _checked(entry: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(entry.get("event"), str) or not isinstance(entry.get("elapsed"), (int, float)):
        raise KeyError("event or elapsed")
    return entry


def _session_lengths(records: list[dict[str, Any]]) -> Iterator[float]:
    length: float | None = None
    for entry in records:
        if entry["event"] == "session_started":
            if length is not None:
                yield length
            length = 0.0
        length = max(length or 0.0, float(entry["elapsed"]))
    if length is not None:
        yield length

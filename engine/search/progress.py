"""Where a search stands, folded from its events (live) or from its ``trials.json`` (an earlier study).

The GUI's search page only draws what this folds: the trials as ``TrialRecord`` rows, the stages'
plans and spaces, the best trial, and the status line in words.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.core.config import SearchParameter
from engine.core.events import SearchFinished, SearchStarted, StageStarted, TrialFinished, TrialStarted
from engine.search.records import LOST_REASON, TrialRecord, best_record
from engine.search.space import format_value, space_from_dicts
from engine.training.runfolder import read_events

STAGES = ("coarse", "fine")
COUNTED_STATES = ("complete", "pruned", "failed")  # a trial in one of these spent its stage's budget
TRIALS_FILE = "trials.json"
BEST_CONFIG_FILE = "best.yaml"
EVENTS_FILE = "events.jsonl"


@dataclass
class SearchProgress:
    """One search as the page shows it.

    Attributes:
        folder: the search folder, once known.
        study: the study name.
        metric: ``val_loss`` or ``val_top1``; ``direction``: ``minimize`` or ``maximize``.
        planned: trials per stage (``coarse``, ``fine``).
        stage: the stage under way (the last ``stage_started``).
        spaces: each stage's parameters, once announced.
        trials: trial number -> record.
        finished: the ``search_finished`` event (or the report's summary of it), once the search ended.
    """

    folder: Path | None = None
    study: str = ""
    metric: str = "val_loss"
    direction: str = "minimize"
    planned: dict[str, int] = field(default_factory=dict)
    stage: str | None = None
    spaces: dict[str, tuple[SearchParameter, ...]] = field(default_factory=dict)
    trials: dict[int, TrialRecord] = field(default_factory=dict)
    finished: dict[str, Any] | None = None

    def add_event(self, event: dict[str, Any]) -> None:
        """Fold one event of the search's ``events.jsonl`` in."""
        kind = event.get("event")
        if kind == SearchStarted.event:
            self.study = str(event.get("study") or self.study)
            self.folder = Path(event["folder"]) if event.get("folder") else self.folder
            self.metric = str(event.get("metric") or self.metric)
            self.direction = str(event.get("direction") or self.direction)
            stages = event.get("stages") or {}
            self.planned = {stage: int(stages.get(stage, {}).get("trials", 0)) for stage in STAGES}
            self.spaces["coarse"] = space_from_dicts(event.get("space") or [])
            self.finished = None  # a resumed study: the earlier end is history
            for number, record in self.trials.items():
                if record.state == "running":  # an earlier session's trial that never finished
                    self.trials[number] = replace(record, state="failed", reason=LOST_REASON)
        elif kind == StageStarted.event:
            self.stage = event.get("stage")
            self.spaces[str(self.stage)] = space_from_dicts(event.get("space") or [])
        elif kind == TrialStarted.event:
            number = int(event["number"])
            self.trials[number] = TrialRecord(number, event.get("stage"), "running", None, None, None,
                                              dict(event.get("params") or {}), _text(event.get("run_dir")))
        elif kind == TrialFinished.event:
            number = int(event["number"])
            value = event.get("value")
            self.trials[number] = TrialRecord(
                number, event.get("stage"), str(event.get("state") or "failed"),
                None if value is None else float(value), event.get("reason"), event.get("seconds"),
                dict(event.get("params") or {}), _text(event.get("run_dir")))
        elif kind == SearchFinished.event:
            self.finished = event

    def load_report(self, folder: Path, report: dict[str, Any]) -> None:
        """Take an earlier study's ``trials.json`` (written when its search ended or stopped)."""
        self.folder = folder
        self.study = str(report.get("study") or folder.name)
        self.metric = str(report.get("metric") or self.metric)
        self.direction = str(report.get("direction") or self.direction)
        self.trials = {int(item["number"]): TrialRecord(**item) for item in report.get("trials", [])}
        self.spaces = {"coarse": space_from_dicts(report.get("coarse_space") or [])}
        fine = report.get("fine_space")
        if fine:
            self.spaces["fine"] = space_from_dicts(fine.get("parameters") or [])
        self.stage = "fine" if fine else "coarse"
        self.planned = {stage: sum(1 for record in self.trials.values() if record.stage == stage) for stage in STAGES}
        best = self.best
        self.finished = {"event": SearchFinished.event, "state": report.get("state", "finished"),
                         "best_trial": best.number if best else None, "best_value": best.value if best else None}

    @property
    def records(self) -> list[TrialRecord]:
        """Every trial, by number."""
        return [self.trials[number] for number in sorted(self.trials)]

    @property
    def best(self) -> TrialRecord | None:
        """The best complete trial so far."""
        return best_record(self.records, self.direction)

    @property
    def parameters(self) -> tuple[SearchParameter, ...]:
        """The coarse space (the parameters every trial draws), or the fine one if only that is known."""
        return self.spaces.get("coarse") or self.spaces.get("fine") or ()

    def done(self, stage: str | None = None) -> int:
        """Trials that ended and spent a budget, in ``stage`` or in all."""
        return sum(1 for record in self.trials.values()
                   if record.state in COUNTED_STATES and not _interrupted(record)
                   and (stage is None or record.stage == stage))

    @property
    def running(self) -> int:
        """Trials under way."""
        return sum(1 for record in self.trials.values() if record.state == "running")

    @property
    def total(self) -> int:
        """Trials planned over both stages."""
        return sum(self.planned.values())

    @property
    def best_config_path(self) -> Path | None:
        """The best config the search wrote (``best.yaml``), if it exists."""
        if self.folder is None:
            return None
        path = self.folder / BEST_CONFIG_FILE
        return path if path.is_file() else None

    def status_text(self) -> str:
        """One line: the stage, trials done of planned, trials running, and the best so far."""
        parts = []
        if self.stage in self.planned:
            stage = self.stage
            parts.append(f"{stage.capitalize()} stage: {self.done(stage)} of {self.planned[stage]} trials done")
        else:
            parts.append(f"{self.done()} trials done")
        if self.running:
            parts.append(f"{self.running} running")
        parts.append(self.best_text())
        return " · ".join(parts)

    def best_text(self) -> str:
        """``best val_loss 0.249 (trial 3, coarse)``, or that none completed yet."""
        best = self.best
        if best is None:
            return "no trial completed yet"
        return f"best {self.metric} {best.value:.4g} (trial {best.number}, {best.stage})"

    def outcome_text(self) -> str:
        """How the search ended, in a sentence or two."""
        state = (self.finished or {}).get("state", "unfinished")
        counts = {name: sum(1 for record in self.trials.values() if record.state == name)
                  for name in ("complete", "pruned", "failed")}
        counted = ", ".join(f"{count} {name}" for name, count in counts.items() if count) or "none finished"
        headline = {"finished": "Search finished", "stopped": "Search stopped",
                    "left": "This worker is done; others still run trials",
                    "unfinished": "Search not finished (killed, or still running elsewhere)",
                    }.get(str(state), f"Search {state}")
        best = self.best
        text = f"{headline}: {len(self.trials)} trial{'' if len(self.trials) == 1 else 's'} ({counted})."
        if best is not None:
            values = ", ".join(f"{short_name(path)} {format_value(value)}" for path, value in best.params.items())
            text += f" Best {self.metric} {best.value:.4g} in trial {best.number} ({best.stage}): {values}."
        return text


def load_study(folder: Path) -> SearchProgress:
    """An earlier study from its folder: ``trials.json`` when the search wrote one, else its events.

    Raises:
        OSError: the folder cannot be read.
        ValueError: ``trials.json`` is not the report's JSON.
    """
    progress = SearchProgress(folder=folder, study=folder.name)
    report_path = folder / TRIALS_FILE
    if report_path.is_file():
        progress.load_report(folder, json.loads(report_path.read_text(encoding="utf-8")))
        return progress
    for event in read_events(folder / EVENTS_FILE):
        progress.add_event(event)
    progress.folder = folder
    return progress


def list_studies(searches: Path) -> list[Path]:
    """The study folders of a project's ``searches`` folder that recorded anything, newest first."""
    if not searches.is_dir():
        return []
    folders = [path for path in searches.iterdir()
               if path.is_dir() and ((path / TRIALS_FILE).is_file() or (path / EVENTS_FILE).is_file())]
    return sorted(folders, key=_last_change, reverse=True)


def describe_trial(record: TrialRecord, metric: str) -> str:
    """One line for a trial: number, stage, state, score and parameters."""
    score = "" if record.value is None or not math.isfinite(record.value) else f", {metric} {record.value:.4g}"
    values = ", ".join(f"{short_name(path)} {format_value(value)}" for path, value in record.params.items())
    text = f"Trial {record.number} ({record.stage or 'waiting'}, {record.state}{score}): {values or 'no values yet'}"
    return text + (f". {record.reason}" if record.reason else "")


def short_name(path: str) -> str:
    """A parameter's name without its section: ``optim.learning_rate`` -> ``learning_rate``."""
    return path.rpartition(".")[2]


def _interrupted(record: TrialRecord) -> bool:
    # A trial stopped by a stop request is recorded as failed but runs again on resume.
    return record.state == "failed" and (record.reason or "").startswith("interrupted")


def _last_change(folder: Path) -> float:
    times = [path.stat().st_mtime for path in (folder / TRIALS_FILE, folder / EVENTS_FILE) if path.is_file()]
    return max(times, default=0.0)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

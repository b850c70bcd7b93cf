"""The trials of a search as plain records: what the report, the progress view and the GUI show.

Free of Optuna, so the GUI reads a search's ``trials.json`` before any search code loads;
``engine.search.report`` builds the records from a study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LOST_REASON = "lost: its worker stopped without finishing it"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the report shows it.

    Attributes:
        number: Optuna's trial number.
        stage: ``coarse``, ``fine``, or None for a trial not started yet.
        state: ``complete``, ``pruned``, ``failed``, ``running`` or ``waiting`` (enqueued).
        value: the metric: the best epoch's for a complete trial, the last reported one for a pruned trial.
        reason: why a trial was pruned or failed.
        seconds: wall time of the trial.
        params: ``{dotted path: value}``.
        run_dir: its run folder (on the machine that ran it).
        host: that machine.
    """

    number: int
    stage: str | None
    state: str
    value: float | None
    reason: str | None
    seconds: float | None
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (a non-finite value becomes None)."""
        values = asdict(self)
        if values["value"] is not None and not math.isfinite(values["value"]):
            values["value"] = None
        return values


def best_record(records: Sequence[TrialRecord], direction: str) -> TrialRecord | None:
    """The complete trial with the best metric, or None."""
    complete = [(record.value, record) for record in records
                if record.state == "complete" and record.value is not None and math.isfinite(record.value)]
    if not complete:
        return None
    return min(complete, key=lambda scored: scored[0] if direction == "minimize" else -scored[0])[1]

"""The report of a search: the trials table (CSV and JSON), the best config as YAML, PNG plots and a summary.

Written into the search folder::

    trials.csv, trials.json   one row per trial: stage, state, metric, reason, seconds, run folder, parameters
    best.yaml                 the best trial's config, ready for ``main.py train DATA --config best.yaml``
    plots/history.png         the metric of each trial in order, and the best so far
    plots/<parameter>.png     the metric against each parameter, on its scale, with both stages' ranges
    report.txt                the summary in words, edge warnings included

Plots use matplotlib's object API on the Agg canvas (no pyplot, no backend switch).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from engine.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from engine.core.config import RunConfig, SearchParameter, to_yaml
from engine.core.events import SearchStarted, StageStarted, TrialFinished, parse_event
from engine.core.figures import new_figure, png_bytes
from engine.search.narrowing import FineSpace
from engine.search.records import LOST_REASON, TrialRecord, best_record
from engine.search.space import describe_parameter, format_value, space_from_dicts, space_to_dicts

SUMMARY_FILE = "report.txt"
STAGE_COLOURS = {"coarse": "#1f4e79", "fine": "#e07b00", None: "#616e7c"}
@dataclass(frozen=True)
class SearchReport:
    """The files ``write_search_report`` wrote."""

    summary: Path
    trials_csv: Path
    trials_json: Path
    best_config: Path | None
    plots: tuple[Path, ...]

    @property
    def files(self) -> list[str]:
        """Every written file, as strings."""
        paths = [self.summary, self.trials_csv, self.trials_json, self.best_config, *self.plots]
        return [str(path) for path in paths if path is not None]


def collect_trials(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as a ``TrialRecord``, in trial order."""
    return [_record(trial) for trial in study.get_trials(deepcopy=False)]


def _record(trial: FrozenTrial) -> TrialRecord:
    attrs = trial.user_attrs
    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[trial.state]
    reason = attrs.get("reason")
    if state == "failed" and "outcome" not in attrs:
        reason = LOST_REASON
    return TrialRecord(trial.number, attrs.get("stage"), state, trial.value, reason, attrs.get("seconds"),
                       dict(trial.params), attrs.get("run_dir"), attrs.get("host"))


def write_search_report(
    records: Sequence[TrialRecord],
    folder: str | Path,
    *,
    study: str,
    storage: str,
    metric: str,
    direction: str,
    coarse_space: Sequence[SearchParameter],
    fine_space: FineSpace | None,
    best_config: RunConfig | None,
    state: str,
) -> SearchReport:
    """Write the report files into the search folder, each atomically.

    Args:
        records: the study's trials (``collect_trials``).
        folder: the search folder.
        study, storage: named in the summary.
        metric: ``val_loss`` or ``val_top1``; ``direction``: ``minimize`` or ``maximize``.
        coarse_space, fine_space: the stages' spaces (the fine one once computed).
        best_config: the best trial's config, or None when no trial completed.
        state: how the search ended (``finished``, ``stopped``...).
    """
    folder = Path(folder)
    best = best_record(records, direction)
    paths = _parameter_order(records, coarse_space)
    rows = [_row(record, metric, paths) for record in records]
    trials_csv = atomic_write_text(folder / "trials.csv", _csv(rows, ["trial", "stage", "state", metric, "seconds",
                                                                      "reason", "run_dir", "host", *paths]))
    trials_json = atomic_write_json(folder / "trials.json", {
        "study": study, "storage": storage, "metric": metric, "direction": direction, "state": state,
        "best_trial": best.number if best else None, "coarse_space": space_to_dicts(coarse_space),
        "fine_space": fine_space.to_dict() if fine_space else None,
        "trials": [record.to_dict() for record in records],
    })
    best_path = None
    if best_config is not None:
        best_path = atomic_write_text(folder / "best.yaml", _best_header(study, best, metric) + to_yaml(best_config))
    plots = [atomic_write_bytes(folder / "plots" / "history.png", draw_history(records, metric, direction))]
    fine_by_path = {item.path: item for item in fine_space.parameters} if fine_space else {}
    for parameter in coarse_space:
        png = draw_parameter(records, parameter, fine_by_path.get(parameter.path), metric)
        plots.append(atomic_write_bytes(folder / "plots" / f"{parameter.path}.png", png))
    summary = folder / SUMMARY_FILE
    report = SearchReport(summary, trials_csv, trials_json, best_path, tuple(plots))
    text = summarise(records, study=study, storage=storage, metric=metric, direction=direction,
                     coarse_space=coarse_space, fine_space=fine_space, best_config=best_path, state=state)
    atomic_write_text(summary, text + "\n")
    return report


def summarise(
    records: Sequence[TrialRecord],
    *,
    study: str,
    storage: str,
    metric: str,
    direction: str,
    coarse_space: Sequence[SearchParameter],
    fine_space: FineSpace | None,
    best_config: Path | None,
    state: str,
) -> str:
    """The report in words: counts, both stages' spaces, edge warnings, the best trial and how to train it."""
    counts = {name: sum(1 for record in records if record.state == name)
              for name in ("complete", "pruned", "failed", "running", "waiting")}
    counted = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    better = "lower" if direction == "minimize" else "higher"
    # Trials score plain cross-entropy, not the run's smoothed loss (see engine.search.trial.TrialReporter).
    measured = "plain cross-entropy on the validation images, " if metric == "val_loss" else ""
    lines = [f"search {study}: {state}, {len(records)} trials ({counted or 'none yet'})",
             f"storage: {storage}", f"metric: {metric} ({measured}{better} is better)", "", "coarse stage:"]
    lines += [f"  {describe_parameter(parameter)}" for parameter in coarse_space]
    if fine_space is not None:
        around = ", ".join(str(number) for number in fine_space.top_trials)
        lines += ["", f"fine stage (narrowed around trials {around or 'none'}):"]
        lines += [f"  {describe_parameter(parameter)}" for parameter in fine_space.parameters]
        if fine_space.notes:
            lines += ["", "at the edge:"] + [f"  - {note}" for note in fine_space.notes]
    pruned = [(record, record.reason) for record in records if record.state in ("pruned", "failed") and record.reason]
    if pruned:
        lines += ["", "pruned and failed trials:"]
        lines += [f"  {record.number} ({record.stage}, {record.state}): {_first_sentence(reason)}"
                  for record, reason in pruned]
    best = best_record(records, direction)
    if best is None:
        lines += ["", "no trial completed yet, so there is no best config"]
    else:
        values = ", ".join(f"{path}={format_value(value)}" for path, value in best.params.items())
        lines += ["", f"best: trial {best.number} ({best.stage}), {metric} {best.value:.4g}: {values}"]
        if best_config is not None:
            lines.append(f"train with it: python main.py train DATA --config {best_config}")
    return "\n".join(lines)


def describe_search(folder: str | Path) -> str:
    """The summary a finished search left in its folder (``report.txt``)."""
    return (Path(folder) / SUMMARY_FILE).read_text(encoding="utf-8").rstrip("\n")


def describe_event(record: Mapping[str, Any]) -> str | None:
    """A search event in words, for a terminal; None for events a person need not read as they happen."""
    event = parse_event(record)
    if isinstance(event, SearchStarted):
        stages = event.stages
        resumed = "resuming " if event.resumed else ""
        return (f"{resumed}search {event.study}: {stages['coarse']['trials']} coarse trials x"
                f" {stages['coarse']['epochs']} epochs, then {stages['fine']['trials']} fine trials x"
                f" {stages['fine']['epochs']} epochs, scored by {event.metric} ({event.storage})")
    if isinstance(event, StageStarted) and event.space is not None:
        lines = [f"{event.stage} stage:"]
        lines += [f"  {describe_parameter(parameter)}" for parameter in space_from_dicts(event.space)]
        lines += [f"  ! {note}" for note in event.notes or []]
        return "\n".join(lines)
    if isinstance(event, TrialFinished):
        params = ", ".join(f"{path.rpartition('.')[2]}={format_value(value)}" for path, value in event.params.items())
        score = f"{event.value:.4g}" if event.value is not None else ""
        why = f": {_first_sentence(event.reason)}" if event.reason else ""
        return (f"trial {event.number} ({event.stage}) {event.outcome} {score} in {event.seconds:.1f} s"
                f" [{params}]{why}")
    return None


def _first_sentence(text: str) -> str:
    head, separator, _ = text.partition(". ")
    return head + "." if separator else text


def _best_header(study: str, best: TrialRecord | None, metric: str) -> str:
    if best is None:
        return ""
    return (f"# best of search {study}: trial {best.number} ({best.stage}), {metric} {best.value:.4g}\n"
            "# train with it: python main.py train DATA --config best.yaml\n")


def _parameter_order(records: Sequence[TrialRecord], space: Sequence[SearchParameter]) -> list[str]:
    paths = [parameter.path for parameter in space]
    for record in records:
        paths += [path for path in record.params if path not in paths]
    return paths


def _row(record: TrialRecord, metric: str, paths: Sequence[str]) -> dict[str, Any]:
    row = {"trial": record.number, "stage": record.stage or "", "state": record.state,
           metric: "" if record.value is None else f"{record.value:.6g}",
           "seconds": "" if record.seconds is None else f"{record.seconds:.1f}", "reason": record.reason or "",
           "run_dir": record.run_dir or "", "host": record.host or ""}
    for path in paths:
        value = record.params.get(path)
        row[path] = "" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)
    return row


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- plots -----------------------------------------------------------------------------------------------


def _plotted(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [record for record in records
            if record.state in ("complete", "pruned") and record.value is not None and math.isfinite(record.value)]


def draw_history(records: Sequence[TrialRecord], metric: str, direction: str) -> bytes:
    """Optimisation history as a PNG: each trial's metric by trial number, and the best complete so far."""
    figure = new_figure(7.5, 4.2)
    axes = figure.add_subplot()
    _scatter_by_stage(axes, _plotted(records), lambda record: record.number)
    best, line = None, []
    for record in sorted(records, key=lambda record: record.number):
        if record.state == "complete" and record.value is not None and math.isfinite(record.value):
            better = best is None or (record.value < best if direction == "minimize" else record.value > best)
            best = record.value if better else best
        if best is not None:
            line.append((record.number, best))
    if line:
        axes.step(*zip(*line, strict=True), where="post", color="#2e7d32", linewidth=1.5, label="best so far")
    _mark_unscored(axes, records, lambda record: record.number)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title("Optimisation history")
    _legend(axes)
    return png_bytes(figure)


def draw_parameter(
    records: Sequence[TrialRecord], parameter: SearchParameter, fine: SearchParameter | None, metric: str
) -> bytes:
    """The metric against one parameter as a PNG, on the parameter's scale; shaded: the coarse and fine ranges."""
    figure = new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    shown = [record for record in _plotted(records) if parameter.path in record.params]
    if parameter.choices is not None:
        positions = {choice: index for index, choice in enumerate(parameter.choices)}
        for record in shown:
            positions.setdefault(record.params[parameter.path], len(positions))
        # A small fixed spread per trial keeps equal choices from hiding each other.
        _scatter_by_stage(axes, shown, lambda record: positions[record.params[parameter.path]]
                          + ((record.number * 0.618) % 1 - 0.5) * 0.3)
        axes.set_xticks(range(len(positions)), [str(choice) for choice in positions])
    else:
        if parameter.scale == "log":
            axes.set_xscale("log")
        axes.axvspan(parameter.low, parameter.high, color=STAGE_COLOURS["coarse"], alpha=0.07, label="coarse range")
        if fine is not None and fine.low is not None:
            axes.axvspan(fine.low, fine.high, color=STAGE_COLOURS["fine"], alpha=0.12, label="fine range")
        _scatter_by_stage(axes, shown, lambda record: record.params[parameter.path])
        numeric = [record for record in records if isinstance(record.params.get(parameter.path), (int, float))]
        _mark_unscored(axes, numeric, lambda record: record.params[parameter.path])
    axes.set_xlabel(f"{parameter.path}" + (" (log scale)" if parameter.scale == "log" else ""))
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by {parameter.path}")
    _legend(axes)
    return png_bytes(figure)


def _scatter_by_stage(axes: Any, records: Sequence[TrialRecord], x_of: Any) -> None:
    for stage in ("coarse", "fine", None):
        for state, filled in (("complete", True), ("pruned", False)):
            chosen = [record for record in records if record.stage == stage and record.state == state]
            if not chosen:
                continue
            colour = STAGE_COLOURS[stage]
            axes.scatter([x_of(record) for record in chosen], [record.value for record in chosen], s=36,
                         facecolors=colour if filled else "none", edgecolors=colour, linewidths=1.2,
                         label=f"{stage or 'other'} ({state})")


def _mark_unscored(axes: Any, records: Sequence[TrialRecord], x_of: Any) -> None:
    """Trials that ended without a score (diverged at once, failed) as crosses level with the worst score."""
    scored = _plotted(records)
    unscored = [record for record in records if record.state in ("pruned", "failed") and record not in scored]
    if unscored:
        level = max((record.value for record in scored if record.value is not None), default=1.0)
        axes.scatter([x_of(record) for record in unscored], [level] * len(unscored), marker="x", s=40,
                     color="#c0392b", label="no score (diverged, failed)")


def _legend(axes: Any) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.25)

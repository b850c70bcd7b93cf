"""Runs an Auto plan: the scan, the feature-extraction baseline, the device's speed, the fine-tuning that fits,
the choice of a model and the report; every training step an ordinary run in the project's ``runs/``.

The budget is wall-clock time from the command's start. Each run gets a time cap (``TimeCap``)
from what is left, less what the later steps and the final choice need, so the whole ends
within the budget. A stop signal (SIGTERM, SIGINT, SIGHUP) or a run's ``STOP`` file ends the
running run cleanly with its checkpoints; Auto then names the best model so far and writes the
report. ``resume_auto`` goes on with the first unfinished step (a cut run is resumed from its
``last`` checkpoint), in the budget the earlier sessions left.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.auto.budget import format_seconds
from engine.auto.choice import Choice, choose_model, recorded_score
from engine.auto.plan import (
    FINISH_SECONDS,
    MIN_FINE_TUNE_EPOCHS,
    DataFacts,
    DeviceSpeed,
    Step,
    baseline_step,
    check_usable,
    choice_seconds,
    plan_fine_tuning,
)
from engine.auto.report import write_report
from engine.auto.speed import measure_speed
from engine.auto.state import AutoFolder
from engine.auto.time_cap import TimeCap
from engine.core.config import RunConfig
from engine.core.device import uses_cuda
from engine.core.errors import DatasetError, TransferStudioError
from engine.core.paths import project_dir_for
from engine.core.stop_signals import stop_received, stops_caught
from engine.data.prepare import PreparedDataset, prepare_dataset
from engine.evaluation.catalog import ensembles_folder
from engine.training.recommended import recommended_recipe
from engine.training.run_summary import read_run
from engine.training.runfolder import RunFolder, new_run_dir
from engine.training.train import RunResult, resume, train

Log = Callable[[str], object]
MEASURE_SECONDS = 10.0  # the speed probe and the least a fine-tuning step could use: below this, nothing follows
CANDIDATES_PER_RUN = 2  # a fine-tuning run's best and EMA checkpoints
MEASURED_MARGIN = 1.1  # on a later step's estimate from an epoch time measured on this machine


class DataRefused(DatasetError):
    """The data doctor refuses the dataset before any training (one class, a class with one photo...)."""


@dataclass(frozen=True)
class AutoResult:
    """How an Auto session ended.

    Attributes:
        folder: the Auto folder (plan, progress, report).
        state: ``finished`` or ``stopped``.
        recommended: the checkpoint or ensemble manifest to use; None when no run saved one.
        report: ``report.md``.
        stopped_at: the step the stop came in.
        choice: why the recommended model, with its validation scores.
    """

    folder: Path
    state: str
    recommended: Path | None
    report: Path
    stopped_at: str | None = None
    choice: Choice | None = None


def start_auto(base: RunConfig, budget_seconds: float, *, started: float, log: Log = print) -> AutoResult:
    """Scan ``base.data.path``, plan and run Auto in a new folder ``PROJECT/auto/<stamp>``.

    Args:
        base: the settings every step starts from (data, backbone, weights, device...).
        budget_seconds: wall-clock budget, counted from ``started``.
        started: ``time.monotonic()`` when the command began.
        log: receives a line per step as it happens.

    Raises:
        ConfigError: ``base.device`` names a device this machine lacks.
        DataRefused: the data cannot be trained on; nothing was written but the health report.
    """
    uses_cuda(base.device)  # a device this machine lacks is refused before anything is written
    with stops_caught():  # a signal is only noted; the running run, or the next check, stops
        dataset = _prepare(base)
        report = dataset.report
        folder = AutoFolder.create(project_dir_for(base.data.path), {
            "data": base.data.path, "budget_seconds": budget_seconds, "base_config": base.to_dict(),
            "steps": [baseline_step(report).to_dict()],
        })
        log(f"auto: {folder.path} (budget {format_seconds(budget_seconds)})")
        return _Session(folder, base, dataset, started, log).run()


def resume_auto(auto_dir: str | Path, *, started: float, log: Log = print) -> AutoResult:
    """Go on with an Auto folder's plan from its first unfinished step, in the budget left.

    Raises:
        ConfigError: ``auto_dir`` is not an Auto folder.
        DataRefused: the data can no longer be trained on.
    """
    folder = AutoFolder.open(auto_dir)
    with stops_caught():
        base = RunConfig.from_dict(folder.read_plan()["base_config"])
        dataset = _prepare(base)
        log(f"auto: resuming {folder.path}")
        return _Session(folder, base, dataset, started, log).run()


def _prepare(base: RunConfig) -> PreparedDataset:
    """The scanned and split dataset, as every step's run will see it; refused with the doctor's message."""
    data = base.data
    try:
        dataset = prepare_dataset(data.path, val_fraction=data.val_fraction, test_fraction=data.test_fraction,
                                  seed=data.split_seed)
        check_usable(dataset)
    except DatasetError as error:
        raise DataRefused(str(error)) from error
    return dataset


class _Stopped(Exception):  # noqa: N818 (control flow: the plan ends here)
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class _Session:
    """One run of the command over an Auto folder: the steps not done yet, then the choice and the report."""

    def __init__(self, folder: AutoFolder, base: RunConfig, dataset: PreparedDataset, started: float,
                 log: Log) -> None:
        self.folder = folder
        self.base = base
        self.dataset = dataset
        self.facts = DataFacts.of(dataset)
        self.started = started
        self.log = log
        self.plan = folder.read_plan()
        self.budget = float(self.plan["budget_seconds"])
        self.deadline = started + self.budget - folder.spent_seconds()
        self.records = folder.records()
        self.speed: DeviceSpeed | None = None
        for entry in self.records:
            if entry["event"] == "measured":
                self.speed = DeviceSpeed.from_dict(entry["speed"])

    # --- the session ----------------------------------------------------------------------------------

    def run(self) -> AutoResult:
        resumed = bool(self.records)
        self._record("session_started", resumed=resumed, budget_left=round(self.left(), 1))
        self._record("scanned", facts=dataclasses.asdict(self.facts), warnings=_doctor_warnings(self.dataset))
        self.log(f"scan: {self.facts.describe()}; {self.dataset.report.summary()}")
        stopped: _Stopped | None = None
        try:
            self._baseline()
            self._measure_and_plan()
            for step in self._steps()[1:]:
                self._fine_tune(step)
            self._check_stop("choice")
        except _Stopped as stop:
            stopped = stop
            self._record("stopped", step=stop.step, message=stop.message)
            self.log(f"stopped during {stop.step}: {stop.message}; the best model so far is kept")
        choice = self._choose(stopped=stopped is not None)
        state = "stopped" if stopped else "finished"
        self._record("session_ended", state=state)
        _, text = write_report(self.folder)
        self.log(f"report: {text}")
        return AutoResult(self.folder.path, state, choice.path if choice else None, text,
                          stopped.step if stopped else None, choice)

    def left(self) -> float:
        """Seconds of the budget left now."""
        return self.deadline - time.monotonic()

    # --- the steps ------------------------------------------------------------------------------------

    def _baseline(self) -> None:
        step = self._steps()[0]
        if self._done(step.name):
            return
        self._check_stop(step.name)
        self._train(step, self.left() - FINISH_SECONDS)

    def _measure_and_plan(self) -> None:
        if any(entry["event"] == "planned" for entry in self.records):
            return
        self._check_stop("plan")
        baseline = self._done("baseline")
        if baseline is None or not baseline.get("best_checkpoint"):
            self._planned([], ["the baseline saved no model, so nothing is built on it"])
            return
        if self.left() < MEASURE_SECONDS + FINISH_SECONDS:
            self._planned([], [f"no time left after the baseline ({format_seconds(self.budget - self.left())} of "
                               f"{format_seconds(self.budget)} used): feature extraction is the best this budget "
                               "allows"])
            return
        if self.speed is None:
            recipe = recommended_recipe("fine_tune", self.dataset.report)  # the batch fine-tuning will use
            batch_size = max(1, min(int(recipe["optim.batch_size"]), self.facts.train_images))
            self.speed = measure_speed(self.base, self.facts.classes, batch_size, Path(baseline["run_dir"]),
                                       baseline["seconds"])
            self._record("measured", speed=self.speed.to_dict())
            self.log(f"speed: {self.speed.device}: {1000 * self.speed.train_seconds:.1f} ms per image to fine-tune, "
                     f"{1000 * self.speed.eval_seconds:.1f} ms to predict at {self.speed.input_size} px")
        steps: list[Step] = []
        notes: list[str] = []
        for runs in (1, 2):  # time kept back to score the candidates grows with the runs planned
            seconds_left = self.left() - choice_seconds(self.facts, self.speed, 1 + CANDIDATES_PER_RUN * runs)
            steps, notes = plan_fine_tuning(self.facts, self.speed, seconds_left, self.dataset.report,
                                            chosen_side=self.base.data.input_size, seed=self.base.seed,
                                            budget_seconds=self.budget)
            if len(steps) <= runs:
                break
        self._planned(steps, notes)

    def _planned(self, steps: list[Step], notes: list[str]) -> None:
        self.plan["steps"] = [self._steps()[0].to_dict(), *(step.to_dict() for step in steps)]
        self.folder.write_plan({key: value for key, value in self.plan.items() if key != "schema_version"})
        self._record("planned", steps=[step.name for step in steps], notes=notes)
        described = "; ".join(f"{step.name}: {step.fine_tune_epochs} epochs (~{step.seconds:.0f}s)" for step in steps)
        self.log(f"plan: {described or 'no fine-tuning'}" + "".join(f"\n  {note}" for note in notes))

    def _fine_tune(self, step: Step) -> None:
        if self._done(step.name):
            return
        self._check_stop(step.name)
        later = [other for other in self._steps() if self._after(other, step) and not self._done(other.name)]
        candidates = len(self._candidates()) + CANDIDATES_PER_RUN * (1 + len(later))
        available = (self.left() - choice_seconds(self.facts, self.speed, candidates)
                     - sum(other.fixed_seconds + MIN_FINE_TUNE_EPOCHS * other.epoch_seconds for other in later))
        measured = self._measured_epoch_seconds()
        if measured is not None:
            step = dataclasses.replace(step, epoch_seconds=measured)
        if self._run_dir(step.name) is None:  # a new run: as many epochs as fit now
            fit = math.floor((available - step.fixed_seconds) / step.epoch_seconds)
            if fit < MIN_FINE_TUNE_EPOCHS:
                reason = (f"{available:.0f}s were left for it, and {MIN_FINE_TUNE_EPOCHS} epochs need "
                          f"~{step.fixed_seconds + MIN_FINE_TUNE_EPOCHS * step.epoch_seconds:.0f}s")
                self._record("step_skipped", step=step.name, reason=reason)
                self.log(f"{step.name}: skipped: {reason}")
                return
            step = step.with_fine_tune_epochs(min(step.fine_tune_epochs, fit))
        try:
            self._train(step, available)
        except TransferStudioError as error:  # the baseline still stands: say why this step failed and go on
            self._record("step_finished", step=step.name, run_dir=self._run_dir(step.name), state="failed",
                         reason="failed", message=str(error), candidates=[])
            self.log(f"{step.name}: failed: {error}")

    def _train(self, step: Step, cap_seconds: float) -> None:
        """Train (or resume) the step's run with a time cap; record how it ended; raise ``_Stopped`` on a stop."""
        config = self.base.with_changes(**step.changes)
        cap = TimeCap(time.monotonic() + max(0.0, cap_seconds))
        previous = self._run_dir(step.name)
        run_dir = Path(previous) if previous else new_run_dir(self.folder.project_dir, config.model.backbone)
        self._record("step_started", step=step.name, run_dir=str(run_dir), cap_seconds=round(cap_seconds, 1),
                     epochs=config.optim.epochs, resumed=previous is not None)
        epochs = (f"{config.model.head_epochs} head + {config.optim.epochs - config.model.head_epochs} fine-tuning"
                  if config.model.mode == "two_stage" else str(config.optim.epochs))
        self.log(f"{step.name}: {step.title}, {epochs} epochs, at most {format_seconds(cap_seconds)}: {run_dir}")
        began = time.monotonic()
        result = self._resume_run(run_dir, cap) if previous else train(config, run_dir, callbacks=[cap])
        seconds = time.monotonic() - began
        if result.reason == "stopped" or stop_received():
            message = f"{stop_received()} received" if stop_received() else "stop requested"
            self._record("step_stopped", step=step.name, run_dir=str(run_dir), message=message)
            raise _Stopped(step.name, message)
        candidates = [str(path) for path in _run_candidates(RunFolder(run_dir))]
        val_top1 = _best_top1(result)
        self._record("step_finished", step=step.name, run_dir=str(run_dir), state=result.state, reason=result.reason,
                     seconds=round(seconds, 1), best_checkpoint=str(result.best_checkpoint or "") or None,
                     candidates=candidates, val_top1=val_top1, epochs_done=len(result.history),
                     epoch_seconds=cap.epoch_seconds())
        score = f", val top-1 {val_top1:.1%}" if val_top1 is not None else ""
        cut = " (cut by its time cap)" if result.reason == "budget" else ""
        self.log(f"{step.name}: {result.state}{cut} in {seconds:.0f}s{score}")

    def _resume_run(self, run_dir: Path, cap: TimeCap) -> RunResult:
        """Go on with a step's run cut by a stop; a run that had ended already is taken as it is."""
        summary = read_run(run_dir)
        if summary.state == "finished":
            best = RunFolder(run_dir).checkpoint_path("best")
            return RunResult(run_dir, "finished", list(summary.metrics), best if best.is_file() else None)
        return resume(run_dir, callbacks=[cap])

    # --- the choice -----------------------------------------------------------------------------------

    def _choose(self, *, stopped: bool) -> Choice | None:
        candidates = self._candidates()
        if not candidates:
            return None
        needed = choice_seconds(self.facts, self.speed, len(candidates)) - FINISH_SECONDS
        unscored_because = "Auto was stopped" if stopped else (
            f"{max(0.0, self.left()):.0f}s were left and scoring {len(candidates)} models needs ~{needed:.0f}s")
        manifest = ensembles_folder(self.folder.project_dir) / f"auto-{self.folder.path.name}.json"
        choice = choose_model(candidates, manifest, score=not stopped and self.left() >= needed,
                              unscored_because=unscored_because, device=self.base.device)
        self._record("chosen", choice=choice.to_dict())
        accuracy = f", val top-1 {choice.val_accuracy:.1%}" if choice.val_accuracy is not None else ""
        self.log(f"choice: {choice.kind}{accuracy}: {choice.reason}")
        return choice

    def _candidates(self) -> list[Path]:
        """Checkpoints of every step's run so far: the finished ones', and a stopped run's best."""
        found: list[Path] = []
        for step in self._steps():
            finished = self._done(step.name)
            if finished is not None:
                found += [Path(path) for path in finished.get("candidates", [])]
            elif (run_dir := self._run_dir(step.name)) is not None:
                best = RunFolder(run_dir).checkpoint_path("best")
                found += [best] if best.is_file() else []
        return found

    # --- the records ----------------------------------------------------------------------------------

    def _record(self, event: str, **fields: Any) -> None:
        self.records.append(self.folder.record(event, self.started, **fields))

    def _steps(self) -> list[Step]:
        return [Step.from_dict(step) for step in self.plan["steps"]]

    def _after(self, other: Step, step: Step) -> bool:
        names = [item.name for item in self._steps()]
        return names.index(other.name) > names.index(step.name)

    def _done(self, name: str) -> dict[str, Any] | None:
        """The step's ``step_finished`` or ``step_skipped`` record, if it has one."""
        ends = [entry for entry in self.records
                if entry.get("step") == name and entry["event"] in ("step_finished", "step_skipped")]
        return ends[-1] if ends else None

    def _run_dir(self, name: str) -> str | None:
        """The run folder the step started writing, if it started."""
        starts = [entry["run_dir"] for entry in self.records if entry["event"] == "step_started"
                  and entry["step"] == name]
        return starts[-1] if starts else None

    def _measured_epoch_seconds(self) -> float | None:
        """A fine-tuning epoch's seconds as the latest finished fine-tuning run measured them (with a margin)."""
        for entry in reversed(self.records):
            if entry["event"] == "step_finished" and entry["step"] != "baseline" and entry.get("epoch_seconds"):
                return float(entry["epoch_seconds"]) * MEASURED_MARGIN
        return None

    def _check_stop(self, step: str) -> None:
        if stop_received():
            raise _Stopped(step, f"{stop_received()} received")


def _doctor_warnings(dataset: PreparedDataset) -> list[str]:
    """The health report's errors and warnings in a few lines: one per class-level finding, one per kind of file."""
    files: Counter[str] = Counter()
    lines: list[str] = []
    for problem in dataset.report.problems:
        if problem.severity == "info":
            continue
        if problem.paths:
            files[problem.kind] += len(problem.paths)
        else:
            lines.append(f"{problem.kind}: {problem.label + ': ' if problem.label else ''}{problem.message}")
    return lines + [f"{kind}: {count} file{'s' if count != 1 else ''} (see health.txt)"
                    for kind, count in files.items()]


def _run_candidates(folder: RunFolder) -> list[Path]:
    """A run's checkpoints worth scoring: ``best``, and ``ema`` where it recorded a better validation score.

    An EMA that scored no better is a near-copy of ``best``, whose scoring would cost a pass over the
    validation images and rarely helps an ensemble.
    """
    best, ema = folder.checkpoint_path("best"), folder.checkpoint_path("ema")
    if not best.is_file():
        return []
    return [best, ema] if ema.is_file() and recorded_score(ema) > recorded_score(best) else [best]


def _best_top1(result: RunResult) -> float | None:
    """The best epoch's validation top-1 of a run, from its history."""
    scores = [row["val_top1"] for row in result.history if row.get("val_top1") is not None]
    return max(float(score) for score in scores) if scores else None

"""Hyperparameter search: coarse-to-fine random search on Optuna, where every trial is a normal training run.

``run_search`` runs the coarse stage (many short trials), narrows the ranges around the
best of them, then runs the fine stage (fewer, longer trials), and writes the report.
Each trial trains through ``engine.training.train.train`` into its own run folder under
``<project>/searches/<study>/trials/``; the doctor's divergence check ends a diverging
trial at once, and Optuna's median pruner ends hopeless ones. The study lives in an
Optuna storage, so reruns resume it, ``jobs`` worker processes share it, and workers on
other machines join it with the same ``study`` and ``storage``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import filelock
import optuna
from optuna.pruners import MedianPruner
from optuna.trial import TrialState

from engine.core.config import RunConfig, SearchParameter, load_config
from engine.core.errors import ConfigError, DatasetError, TransferStudioError
from engine.core.events import SearchFailed, SearchFinished, SearchStarted, StageStarted
from engine.core.stop_signals import stop_received, stops_caught
from engine.search.folders import check_study_name, default_study_name, searches_dir
from engine.search.narrowing import FineSpace
from engine.search.records import TrialRecord, best_record
from engine.search.report import collect_trials, write_search_report
from engine.search.sampling import SeededRandomSampler
from engine.search.space import describe_parameter, is_whole, space_to_dicts
from engine.search.study import (
    DEFAULT_STORAGE_FILE,
    SearchStudy,
    ensure_fine_space,
    fail_lost_trials,
    open_study,
    plan_next,
    resolve_storage,
)
from engine.search.trial import SearchEvents, run_trial, start_trial, trial_config
from engine.training.runfolder import STOP_FILE, EventTail

POLL_SECONDS = 1.0  # how often a waiting worker looks at the storage again
PLANNING_LOCK = ".planning.lock"  # in the search folder: one worker at a time plans and claims its next trial


@dataclass
class SearchResult:
    """How a search ended.

    Attributes:
        study: the study name.
        storage: its storage URL.
        folder: the search folder (events, report, trial run folders).
        state: ``finished`` (every trial done), ``stopped`` (STOP file or signal) or
            ``left`` (a worker found nothing more to start; others still run trials).
        trials: every trial of the study.
        best: the best complete trial, if any.
        best_config: the best config as YAML, ready for ``main.py train DATA --config``.
        report: the report summary (``report.txt``), when one was written.
    """

    study: str
    storage: str
    folder: Path
    state: str
    trials: list[TrialRecord] = field(default_factory=list)
    best: TrialRecord | None = None
    best_config: Path | None = None
    report: Path | None = None


def run_search(
    data: str | Path,
    config: RunConfig | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    trials: int | None = None,
    jobs: int = 1,
    worker: bool = False,
    enqueue: Sequence[Mapping[str, Any]] = (),
    echo: TextIO | None = None,
    log: Callable[[str], Any] | None = None,
) -> SearchResult:
    """Run (or resume, or join) a coarse-to-fine search on ``data``.

    Args:
        data: the dataset (its project folder holds ``searches/<study>/``).
        config: the search's config (``config.search`` says what and how much to search);
            None uses the stored config of an existing study, or the defaults.
        study: study name; default a new ``search-<time>``. The same name and storage resume.
        storage: where the study lives (see ``engine.search.study.resolve_storage``);
            default a SQLite file in the search folder.
        trials: total trials over both stages, split in the config's coarse : fine proportion.
        jobs: trials at once on this machine, each in its own worker process.
        worker: join as one more worker: run trials until none is left to start, write
            no ``search_started``, and write the report only when the whole study is done.
        enqueue: parameter sets to try first (``{dotted path: value}``), e.g. a known
            good config; a set already in the study is not added again.
        echo: also write each event line to this stream (the GUI follows it).
        log: receives each trial's outcome and each stage's space in words (the CLI passes ``print``).

    Raises:
        ConfigError: a bad study name, storage, budget or space; or ``config`` differs
            from the config the study was created with.
        DatasetError: ``data`` does not exist; or the data fails every trial.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {jobs}")
    if worker and not study:
        raise ConfigError("--worker: needs --study NAME, the study to join")
    # A stop signal (SIGTERM, SIGINT, SIGHUP), whenever it comes, is only noted: the search stops
    # between trials, or the running trial's StopWatcher stops the trial, which comes back "interrupted".
    with stops_caught():
        runner = _open_runner(data, config, study=study, storage=storage, trials=trials, echo=echo, log=log,
                              create=not worker or config is not None)
        try:
            for params in enqueue:
                runner.search.load().enqueue_trial(dict(params), user_attrs={"enqueued": dict(params)},
                                                   skip_if_exists=True)
            if worker:
                state = runner.work()
                done = state == "done" and plan_next(runner.search.trials(), runner.search.config) == "done"
                return runner.finish(state, report=done)
            (runner.folder / STOP_FILE).unlink(missing_ok=True)  # a stale stop request from an earlier session
            runner.announce(jobs)
            state = runner.work() if jobs == 1 else _run_jobs(runner, jobs)
            if state != "stopped":
                state = runner.wait_for_running()
            return runner.finish(state, report=True)
        except Exception as error:
            # The one place a search records its own failure, so that a follower learns how it ended.
            runner.events.write(SearchFailed.event, error_type=type(error).__name__, message=str(error))
            raise


def _open_runner(
    data: str | Path, config: RunConfig | None, *, study: str | None, storage: str | None, trials: int | None,
    echo: TextIO | None, log: Callable[[str], Any] | None = None, create: bool = True,
) -> _Runner:
    data_path = Path(data).expanduser().resolve()
    if not data_path.exists():
        raise DatasetError(f"data folder not found: {data}")
    name = check_study_name(study or default_study_name())
    folder = searches_dir(data_path) / name
    if not create and storage is None and not (folder / DEFAULT_STORAGE_FILE).is_file():
        raise ConfigError(f"--study: no study '{name}' in {folder}; start it first (without --worker), or give"
                          " the worker its --storage")
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our events say what happens, in our words
    storage_url, optuna_storage = resolve_storage(storage, folder)
    search = open_study(name, storage_url, optuna_storage, data_path, config, trials=trials, create=create)
    check_search_settings(search.config, search.coarse_space)
    return _Runner(search, folder, SearchEvents(folder / "events.jsonl", echo=echo, log=log))


def check_search_settings(config: RunConfig, space: Sequence[SearchParameter]) -> None:
    """Refuse, before any trial, what would fail every trial.

    Raises:
        ConfigError: a two_stage trial without fine-tuning epochs, or a range whose end
            the config refuses (the message names the space entry and the config's reason).
    """
    searched = {parameter.path for parameter in space}
    model, search = config.model, config.search
    if model.mode == "two_stage" and "model.head_epochs" not in searched:
        for stage, epochs in (("coarse", search.coarse_epochs), ("fine", search.fine_epochs)):
            if epochs <= model.head_epochs and (stage == "coarse" or search.fine_trials > 0):
                raise ConfigError(
                    f"search.{stage}_epochs: two_stage trials first train the head for model.head_epochs"
                    f" ({model.head_epochs}) epochs, so they need more epochs than that, got {epochs}")
    for index, parameter in enumerate(space):
        ends = parameter.choices if parameter.choices is not None else (parameter.low, parameter.high)
        for value in ends:
            if is_whole(parameter) and value is not None:
                value = int(value)
            try:
                config.with_changes(**{parameter.path: value})
            except ConfigError as error:
                raise ConfigError(f"search.space[{index}]: {describe_parameter(parameter)} reaches a value the"
                                  f" config refuses: {error}") from error


class _Runner:
    """Runs trials of one study in this process until the study, a STOP file or a signal says stop."""

    def __init__(self, search: SearchStudy, folder: Path, events: SearchEvents) -> None:
        self.search = search
        self.folder = folder
        self.events = events
        self.settings = search.config.search

    def announce(self, jobs: int) -> None:
        """Write ``search_started`` and the current stage's ``stage_started``."""
        self.events.write(
            SearchStarted.event, study=self.search.name, storage=self.search.storage_url, folder=self.folder,
            space=space_to_dicts(self.search.coarse_space), metric=self.settings.metric,
            direction=self.search.direction, jobs=jobs, resumed=not self.search.created,
            stages={"coarse": {"trials": self.settings.coarse_trials, "epochs": self.settings.coarse_epochs},
                    "fine": {"trials": self.settings.fine_trials, "epochs": self.settings.fine_epochs,
                             "top_k": self.settings.top_k}},
        )
        fine = self.search.fine_space()
        if fine is None:
            self.events.write(StageStarted.event, stage="coarse", space=space_to_dicts(self.search.coarse_space))
        else:
            self._announce_fine(fine)

    def work(self) -> str:
        """Run trials until none is left to start (``done``) or a stop (``stopped``)."""
        while True:
            if self.stop_requested():
                return "stopped"
            # Planning and claiming a trial is one step for the workers sharing this folder: two workers that
            # both saw the last free slot would otherwise both start a trial, and run one more than the budget.
            with filelock.FileLock(self.folder / PLANNING_LOCK):
                study = self.search.load()
                fail_lost_trials(study)
                step = plan_next(study.get_trials(deepcopy=False), self.search.config)
                if step in ("done", "finishing"):
                    return "done"
                if step != "wait":
                    space, allowed = self._stage_space(step)
                    study = self.search.load(
                        sampler=SeededRandomSampler(self.settings.seed, allowed),
                        pruner=MedianPruner(n_startup_trials=self.settings.pruner_startup_trials,
                                            n_warmup_steps=self.settings.pruner_warmup_epochs + 1))  # epochs from 1
                    trial = start_trial(study, step, self.folder)
            if step == "wait":
                time.sleep(POLL_SECONDS)
                continue
            if run_trial(study, trial, self.search, step, space, self.events) == "interrupted":
                return "stopped"

    def wait_for_running(self) -> str:
        """Wait until trials running elsewhere end (or are found lost); ``finished`` or ``stopped``."""
        while True:
            study = self.search.load()
            fail_lost_trials(study)
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return "finished"
            if self.stop_requested():
                return "stopped"
            time.sleep(POLL_SECONDS)

    def finish(self, state: str, *, report: bool) -> SearchResult:
        """Write the report (when asked) and ``search_finished``; returns the result."""
        study = self.search.load()
        records = collect_trials(study)
        best = best_record(records, self.search.direction)
        if state == "done":
            state = "finished" if report else "left"
        result = SearchResult(self.search.name, self.search.storage_url, self.folder, state, records, best)
        if not report:
            return result
        fine = self.search.fine_space()
        best_config = self._best_config(best) if best else None
        written = write_search_report(
            records, self.folder, study=self.search.name, storage=self.search.storage_url,
            metric=self.settings.metric, direction=self.search.direction, coarse_space=self.search.coarse_space,
            fine_space=fine, best_config=best_config, state=state,
        )
        result.best_config, result.report = written.best_config, written.summary
        self.events.write(
            SearchFinished.event, state=state, best_trial=best.number if best else None,
            best_value=best.value if best else None, best_params=best.params if best else None,
            best_config_path=written.best_config, report=written.summary, files=written.files,
            trials={outcome: sum(1 for record in records if record.state == outcome)
                    for outcome in ("complete", "pruned", "failed", "running", "waiting")},
        )
        return result

    def _stage_space(self, stage: str) -> tuple[tuple[SearchParameter, ...], dict[str, tuple]]:
        if stage == "coarse":
            return self.search.coarse_space, {}
        fine, computed = ensure_fine_space(self.search.load(), self.search)
        if computed:
            self._announce_fine(fine)
        allowed = {item.path: item.choices for item in fine.parameters if item.choices is not None}
        return fine.parameters, allowed

    def _announce_fine(self, fine: FineSpace) -> None:
        self.events.write(StageStarted.event, stage="fine", space=space_to_dicts(fine.parameters),
                          notes=list(fine.notes), top_trials=list(fine.top_trials))

    def _best_config(self, best: TrialRecord) -> RunConfig:
        # The trial's own config.yaml when this machine ran it; else the same config rebuilt.
        config_path = Path(best.run_dir) / "config.yaml" if best.run_dir else None
        if config_path is not None and config_path.is_file():
            return load_config(config_path).with_changes(**{"data.path": self.search.config.data.path})
        epochs = self.settings.coarse_epochs if best.stage == "coarse" else self.settings.fine_epochs
        return trial_config(self.search.config, best.params, epochs)

    # --- stopping ------------------------------------------------------------------------------------

    def stop_requested(self) -> bool:
        """True after a signal, or once the search folder holds a STOP file."""
        return stop_received() is not None or (self.folder / STOP_FILE).exists()


# --- parallel jobs ---------------------------------------------------------------------------------------


def _run_jobs(runner: _Runner, jobs: int) -> str:
    """Run ``jobs`` worker processes on this machine; echo their events; returns ``done`` or ``stopped``.

    Workers are spawned (not forked: torch and open storage connections do not survive a
    fork) and each takes ``cpu_count / jobs`` CPU threads. A signal to this process is
    passed on, so the workers' runs stop cleanly.
    """
    search, events = runner.search, runner.events
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    tail = EventTail(events.path, offset=events.path.stat().st_size if events.path.exists() else 0)
    processes: list[multiprocessing.process.BaseProcess] = []

    def forward(_name: str) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker's run stops cleanly and records the trial

    with stops_caught(forward):
        for index in range(jobs):
            if runner.stop_requested():  # a worker started after the stop would not hear of it
                break
            processes.append(context.Process(
                target=_worker_main, name=f"search-worker-{index + 1}",
                args=(search.config.data.path, search.config.to_dict(), search.storage_url, search.name, threads)))
            processes[-1].start()
        while any(process.is_alive() for process in processes):
            _echo_new(tail, events)
            for process in processes:
                process.join(timeout=0.5 / jobs)
        _echo_new(tail, events)
    if runner.stop_requested():
        return "stopped"
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed and plan_next(search.trials(), search.config) not in ("done", "finishing"):
        raise TransferStudioError(f"--jobs: {len(failed)} of {jobs} workers failed (exit codes {failed}) before the"
                                  " study was done; their errors are above. Rerun with the same --study to resume")
    return "done"


def _echo_new(tail: EventTail, events: SearchEvents) -> None:
    for event in tail.read_new():
        events.relay(event)


def _worker_main(data: str, config: dict[str, Any], storage: str, study: str, threads: int) -> None:
    """Entry point of a ``--jobs`` worker process: trials only; the parent writes the report."""
    import torch

    torch.set_num_threads(threads)
    with stops_caught():
        _open_runner(data, RunConfig.from_dict(config), study=study, storage=storage, trials=None, echo=None).work()

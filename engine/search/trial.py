"""One trial of a search: its config, its run folder, the callback that reports to Optuna, and its outcome.

A trial is a normal training run (``engine.training.train.train``) in its own folder, tagged by a
``trial.json`` and by the Optuna trial's user attributes (stage, run folder, worker). Its
score is measured by ``TrialReporter`` on the validation images, reported each epoch, and
the median pruner may end it; the doctor's divergence check ends it at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import optuna
import torch
import torch.nn.functional as F
from optuna.trial import Trial, TrialState

from engine.core.atomic import atomic_write_json
from engine.core.config import RunConfig, SearchParameter
from engine.core.errors import ConfigError
from engine.core.events import RunCancelled, TrialFinished, TrialStarted, parse_event
from engine.search.report import describe_event
from engine.search.sampling import suggest_values
from engine.search.study import HEARTBEAT_SECONDS, SearchStudy
from engine.training.callback import EPOCH_METRICS, Callback, CancelFit, LoopState
from engine.training.runfolder import create_event, encode_event, read_events
from engine.training.train import train

TRIAL_FILE = "trial.json"


def trial_config(base: RunConfig, params: Mapping[str, Any], epochs: int) -> RunConfig:
    """The config of one trial: ``base`` with the drawn values, the stage's epochs, and the divergence check on.

    The search section is reset to its defaults: a trial's ``config.yaml`` trains on its
    own. Values of ``params`` win over the stage's epochs (``optim.epochs`` may be searched).

    Raises:
        ConfigError: the combination is invalid (the message names the field).
    """
    checks = tuple(base.doctor.checks)
    if "divergence" not in checks:
        checks += ("divergence",)
    changes = {"optim.epochs": epochs, "doctor.enabled": True, "doctor.checks": list(checks), "search": {},
               **params}
    return base.with_changes(**changes)


class TrialReporter(Callback):
    """Scores each epoch on the validation images, reports it to the Optuna trial, and prunes when told.

    ``val_loss`` here is plain cross-entropy: the run's own ``val_loss`` carries its label
    smoothing and class weights, which would make every trial that samples more smoothing
    look worse whatever it learnt. ``val_top1`` is the run's own. The pruning decision is
    taken after an epoch and acted on before the next, as early stopping does, so the last
    finished epoch is checkpointed; the run then ends with reason ``pruned``. The last
    epoch is never judged: the trial is complete by then.

    Args:
        trial: the running trial.
        metric: ``val_loss`` or ``val_top1`` (the study's direction matches).
        last_epoch: the trial's final epoch.
    """

    order = 60

    def __init__(self, trial: Trial, metric: str, last_epoch: int) -> None:
        self.trial = trial
        self.metric = metric
        self.last_epoch = last_epoch
        self.values: list[float] = []  # one per epoch with validation images
        self.pruned_at: int | None = None
        self._loss_sum: float | torch.Tensor = 0.0
        self._count = 0

    def before_epoch(self, state: LoopState) -> None:
        if self.pruned_at is not None:
            raise CancelFit("pruned", f"median pruner at epoch {self.pruned_at}: {self.metric} {self.values[-1]:.4g}"
                                      " is worse than the median of finished trials at that epoch")
        self._loss_sum, self._count = 0.0, 0

    def after_loss(self, state: LoopState) -> None:
        if state.training or state.outputs is None or state.targets is None or state.targets.dim() != 1:
            return
        # Summed on the device, read once per epoch: a read per batch would wait for the GPU each time.
        self._loss_sum = self._loss_sum + F.cross_entropy(state.outputs.float(), state.targets, reduction="sum")
        self._count += len(state.targets)

    def after_epoch(self, state: LoopState) -> None:
        if self.metric == "val_loss":
            value = float(self._loss_sum) / self._count if self._count else None
        else:
            value = state.scratch.get(EPOCH_METRICS, {}).get(self.metric)
        if value is None:
            return
        self.values.append(float(value))
        self.trial.report(float(value), state.epoch)
        if state.epoch < self.last_epoch and self.trial.should_prune():
            self.pruned_at = state.epoch

    def best(self, direction: str) -> float | None:
        """The best epoch's value, or None without validation images."""
        if not self.values:
            return None
        return min(self.values) if direction == "minimize" else max(self.values)


class SearchEvents:
    """Appends the search's events to its ``events.jsonl``; safe with several writing processes.

    Each event is one ``os.write`` of one line to a file opened with ``O_APPEND``, so lines
    of concurrent workers never interleave; a line a full disk cut short is ended by the next
    write, so it never swallows an event. Lines are built as a run folder's are (declared
    in ``engine.core.events``), so one reader follows both.
    """

    def __init__(self, path: Path, echo: TextIO | None = None, log: Callable[[str], Any] | None = None) -> None:
        self.path = path
        self.echo = echo
        self.log = log

    def write(self, event: str, /, **payload: Any) -> dict[str, Any]:
        """Append one event, then pass it on (``relay``); returns the record.

        Raises:
            TypeError: the event or a field is not declared in ``engine.core.events``, or one is missing.
        """
        record = create_event(event, **payload)
        line = encode_event(record)
        data = line.encode("utf-8")
        descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size:
                os.lseek(descriptor, size - 1, os.SEEK_SET)  # writes still go to the end (O_APPEND)
                if os.read(descriptor, 1) != b"\n":
                    # A full disk cut an earlier line short (here or in another worker), and with several
                    # writers it cannot be cut back: start on a line of its own (readers skip the fragment).
                    data = b"\n" + data
            if os.write(descriptor, data) < len(data):
                raise OSError(errno.ENOSPC, f"{self.path}: event {event!r} was cut short (is the disk full?)")
        finally:
            os.close(descriptor)
        self.relay(json.loads(line))
        return record

    def relay(self, record: dict[str, Any]) -> None:
        """Echo an event as its JSON line, and log it in words (events of other processes come here too)."""
        if self.echo is not None:
            self.echo.write(encode_event(record))
            self.echo.flush()
        if self.log is not None:
            words = describe_event(record)
            if words:
                self.log(words)


def start_trial(study: optuna.Study, stage: str, folder: Path) -> optuna.Trial:
    """Ask the study for a trial and mark it as this stage's and this process's: the claim ``plan_next`` counts.

    Args:
        study: the study, loaded with the stage's sampler and the median pruner.
        stage: ``coarse`` or ``fine``.
        folder: the search folder; the run goes to ``trials/trial-NNNN``.
    """
    trial = study.ask()
    run_dir = folder / "trials" / f"trial-{trial.number:04d}"
    for key, value in {"stage": stage, "run_dir": str(run_dir), "host": socket.gethostname(), "pid": os.getpid(),
                       "heartbeat": time.time()}.items():
        trial.set_user_attr(key, value)
    return trial


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    search: SearchStudy,
    stage: str,
    space: Sequence[SearchParameter],
    events: SearchEvents,
) -> str:
    """Train a trial that ``start_trial`` started, and tell the study how it ended.

    Args:
        study: the study the trial belongs to.
        trial: the trial, from ``start_trial``.
        search: what the study remembers (config, coarse space).
        stage: ``coarse`` or ``fine``.
        space: the stage's parameters.
        events: where ``trial_started`` and ``trial_finished`` go.

    Returns:
        The outcome: ``complete``, ``pruned``, ``failed`` or ``interrupted`` (a stop signal
        reached the run; the trial does not spend the budget and runs again on resume).

    Raises:
        TransferStudioError: what would fail every trial (unreadable data, missing
            weights); the trial is recorded as failed first.
    """
    settings = search.config.search
    started = time.monotonic()
    run_dir = Path(trial.user_attrs["run_dir"])
    params = suggest_values(trial, space, search.coarse_space, trial.user_attrs.get("enqueued"))
    events.write(TrialStarted.event, number=trial.number, stage=stage, params=params, run_dir=run_dir)

    def finish(outcome: str, value: float | None = None, reason: str | None = None) -> str:
        seconds = round(time.monotonic() - started, 3)
        for key, attr in (("outcome", outcome), ("seconds", seconds), ("reason", reason)):
            if attr is not None:
                trial.set_user_attr(key, attr)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(outcome, TrialState.FAIL)
        study.tell(trial, value if outcome == "complete" else None, state=state)
        events.write(TrialFinished.event, number=trial.number, stage=stage,
                     state="failed" if outcome == "interrupted" else outcome, outcome=outcome, value=value,
                     reason=reason, seconds=seconds, params=params, run_dir=run_dir)
        return outcome

    try:
        config = trial_config(search.config, params, settings.coarse_epochs if stage == "coarse"
                              else settings.fine_epochs)
    except ConfigError as error:
        return finish("failed", reason=f"config refused: {error}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / TRIAL_FILE, {
        "study": search.name, "storage": search.storage_url, "stage": stage, "trial": trial.number,
        "params": params, "search_folder": str(run_dir.parents[1]), "host": socket.gethostname(),
    })
    reporter = TrialReporter(trial, settings.metric, config.optim.epochs)
    try:
        with _heartbeat(trial):
            result = train(config, run_dir, callbacks=[reporter])
    except (RuntimeError, ValueError, ArithmeticError) as error:
        # One trial's values can exhaust memory, or be refused deep in the set-up (a
        # ConfigError is a ValueError); the next trial's values may be fine.
        return finish("failed", reason=f"{type(error).__name__}: {error}")
    except Exception as error:
        # Anything else (unreadable data, missing weights) would fail every trial: record it, then stop.
        finish("failed", reason=f"{type(error).__name__}: {error}")
        raise
    if result.state == "finished":
        best = reporter.best(search.direction)
        if best is None:
            return finish("failed", reason=f"no {settings.metric}: the run has no validation images"
                                           " (set data.val_fraction > 0)")
        return finish("complete", value=best)
    message = _cancel_message(run_dir)
    if result.reason == "diverged":
        return finish("pruned", reason=f"diverged: {message}")
    if result.reason == "pruned":
        return finish("pruned", reason=message)
    if result.reason == "stopped":
        return finish("interrupted", reason=f"interrupted: {message}")
    return finish("failed", reason=f"{result.reason}: {message}")


@contextlib.contextmanager
def _heartbeat(trial: Trial) -> Iterator[None]:
    """Record the time in the trial every ``HEARTBEAT_SECONDS``, so other workers can tell it is alive."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            trial.set_user_attr("heartbeat", time.time())

    thread = threading.Thread(target=beat, name=f"heartbeat-trial-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _cancel_message(run_dir: Path) -> str:
    cancelled = [event for event in map(parse_event, read_events(run_dir)) if isinstance(event, RunCancelled)]
    if not cancelled:
        return ""
    return cancelled[-1].message or cancelled[-1].reason

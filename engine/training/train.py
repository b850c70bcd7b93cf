"""Turn a RunConfig into a finished run folder: data, model, optimizer, loop, callbacks.

``train`` starts a run, ``resume`` continues one from its ``last`` checkpoint (or starts it
again from its own config when it was killed before the first); both train its stages
through ``engine.training.stage_runner`` and record here how the run ended. Both write every
step of the way into the run folder (see ``engine.training.runfolder``) while holding its
writer lock, and any failure is recorded there as ``run_failed`` before it propagates. In a worker started by
torchrun (``main.py train --nproc N``) both train data-parallel with the other workers:
each trains on its share of every epoch, and rank 0 alone validates and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine.core.config import RunConfig, save_config
from engine.core.device import uses_cuda
from engine.core.errors import CheckpointError, ConfigError
from engine.core.events import DatasetScanned, RunCancelled, RunFailed, RunFinished, RunRestarted
from engine.core.paths import project_dir_for
from engine.core.stop_signals import stops_deferred
from engine.training.callback import Callback, CancelFit, LoopState
from engine.training.callbacks import CheckpointSaver, MetricsRecorder, StopWatcher, TensorBoardWriter
from engine.training.distributed import SINGLE_PROCESS, DistributedContext, distributed_session
from engine.training.run_summary import read_run
from engine.training.runfolder import RunFolder, new_run_dir
from engine.training.setup import prepare_run_data, seed_everything
from engine.training.stage_runner import StageRunner

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """How a run ended.

    Attributes:
        run_dir: the run folder.
        state: ``finished`` or ``cancelled``.
        history: one metrics row per finished epoch.
        best_checkpoint: path of ``best``, if one was saved.
        reason: why a cancelled run stopped.
    """

    run_dir: Path
    state: str
    history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    reason: str | None = None


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    echo: TextIO | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train a new run.

    Under torchrun every worker calls this with the same arguments and trains its share
    of each epoch (see ``engine.training.distributed``); rank 0 validates, writes the run folder
    (its ``run_dir`` is the one all ranks use) and prints the effective batch.

    Args:
        config: the run's settings; ``config.data.path`` names the dataset.
        run_dir: folder for the run (default: a new folder under the dataset's project ``runs/``).
        echo: also print each event as a JSON line to this stream (the GUI's ``--events-only``).
        progress_bar: show tqdm bars on stderr.
        callbacks: extra loop callbacks.

    Raises:
        ConfigError, DatasetError, BackboneUnavailable, CheckpointError: bad input, before or
            during the run; a run folder that exists records it as ``run_failed``.
    """
    if not config.data.path:
        raise ConfigError("data.path: must name a dataset folder or CSV, got ''")
    uses_cuda(config.device)  # a device this machine lacks is refused before a run folder exists
    with distributed_session(config.device) as distributed:
        folder_path = Path(run_dir) if run_dir else new_run_dir(project_dir_for(config.data.path),
                                                                config.model.backbone)
        if distributed.enabled:
            folder_path = Path(distributed.broadcast_text(str(folder_path)))  # rank 0's, should they differ
        folder = RunFolder.create(folder_path, config) if distributed.is_main else RunFolder.attach(folder_path)
        folder.echo = echo
        return _run(folder, config, resume_from=None, progress_bar=progress_bar, callbacks=callbacks,
                    distributed=distributed)


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    echo: TextIO | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue a stopped, killed or failed run from its ``last`` checkpoint, with its own config.

    A run killed before its first checkpoint starts again from its ``config.yaml``, in the
    same folder (``run_restarted``). A finished run goes on only with more ``epochs``. Under
    torchrun every rank reads the folder (it must be visible to all of them) and rank 0 writes it.

    Args:
        run_dir: the run folder.
        epochs: train to this many epochs in all (more than the run's ``optim.epochs``), e.g. to
            train a finished run further; None keeps the run's own.

    Raises:
        CheckpointError: not a run folder, or a finished run and no more ``epochs``.
        RunLocked: another live process writes the folder.
        ConfigError: ``epochs`` is not more than the run already has.
    """
    folder = RunFolder.open(run_dir)
    config = folder.load_config()
    with distributed_session(config.device) as distributed:
        if not distributed.is_main:
            folder = RunFolder.attach(run_dir)
        folder.echo = echo
        with folder.writing():
            config = _extended(folder, config, epochs)
            folder.clear_stop()
            folder.repair_events()
            last = folder.checkpoint_path("last")
            resume_from: Path | None = last
            if not last.is_file():
                resume_from = None
                message = "it was stopped before its first checkpoint, so it starts again from its config.yaml"
                log.warning("%s: %s", folder.path, message)
                folder.write_event(RunRestarted.event, message=message)
                folder.write_metrics([])
            return _train_locked(folder, config, resume_from=resume_from, progress_bar=progress_bar,
                                 callbacks=callbacks, distributed=distributed)


def _extended(folder: RunFolder, config: RunConfig, epochs: int | None) -> RunConfig:
    """The run's config, with ``epochs`` in all when given (saved into the folder); refuses a finished run without."""
    planned = config.optim.epochs
    if epochs is None:
        if read_run(folder.path).state == "finished":
            raise CheckpointError(
                f"{folder.path}: finished all {planned} epochs; to train it further, resume it with more epochs "
                f"in all: python main.py train --resume {folder.path} --epochs {planned + max(1, planned // 2)}")
        return config
    if epochs <= planned:
        raise ConfigError(f"--epochs: the run already has {planned} epochs; give more than {planned} to train further")
    extended = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs=epochs))
    if folder.writes:
        save_config(extended, folder.config_path)
    return extended


def _run(
    folder: RunFolder,
    config: RunConfig,
    *,
    resume_from: Path | None,
    progress_bar: bool,
    callbacks: Sequence[Callback],
    distributed: DistributedContext = SINGLE_PROCESS,
) -> RunResult:
    with folder.writing():
        return _train_locked(folder, config, resume_from=resume_from, progress_bar=progress_bar,
                             callbacks=callbacks, distributed=distributed)


def _train_locked(
    folder: RunFolder,
    config: RunConfig,
    *,
    resume_from: Path | None,
    progress_bar: bool,
    callbacks: Sequence[Callback],
    distributed: DistributedContext,
) -> RunResult:
    stop_watcher = StopWatcher(folder, distributed)
    try:
        with stop_watcher.installed():
            return _train_in_folder(folder, config, resume_from, stop_watcher, progress_bar, callbacks, distributed)
    except CancelFit as cancel:
        # A stop before the loop began (e.g. during feature extraction): nothing to checkpoint yet.
        folder.write_event(RunCancelled.event, reason=cancel.reason, message=cancel.message, checkpoint=None)
        folder.write_status("cancelled", reason=cancel.reason)
        return RunResult(folder.path, "cancelled", reason=cancel.reason)
    except Exception as error:
        # The one place a run records its own failure; the caller decides how to show it. A stop signal now
        # (torchrun ending the other ranks once one has died) must not cut the record short.
        with stops_deferred():
            _record_failure(folder, error)
        raise


def _record_failure(folder: RunFolder, error: Exception) -> None:
    """Write ``run_failed`` and the failed status, as far as the disk lets (it may be the disk that failed)."""
    # Each may fail on its own; the other, or the lock's release, still tells readers the run is over.
    with contextlib.suppress(OSError):
        folder.write_event(
            RunFailed.event, error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
        )
    with contextlib.suppress(OSError):
        folder.write_status("failed", error=str(error))


def _train_in_folder(
    folder: RunFolder,
    config: RunConfig,
    resume_from: Path | None,
    stop_watcher: StopWatcher,
    progress_bar: bool,
    extra_callbacks: Sequence[Callback],
    distributed: DistributedContext,
) -> RunResult:
    seed_everything(config.seed)
    dataset = prepare_run_data(config)
    folder.write_event(
        DatasetScanned.event, root=dataset.root, classes=list(dataset.classes),
        counts={split: len(records) for split, records in dataset.splits.items()},
        problems=len(dataset.report.problems), excluded=len(dataset.report.excluded_paths()),
    )
    runner = StageRunner(folder, config, dataset, stop_watcher, distributed, resume_from=resume_from,
                         progress_bar=progress_bar,
                         extra_callbacks=[*extra_callbacks, TensorBoardWriter(folder, config)])
    if runner.resumed is not None and runner.start_epoch > config.optim.epochs:
        return _finish_trained(folder, runner, config)
    state, saver = runner.run()
    return _finish(folder, state, saver, runner.recorder, distributed)


def _finish_trained(folder: RunFolder, runner: StageRunner, config: RunConfig) -> RunResult:
    """End a run whose every epoch was saved before it was cut short (killed, or its disk full) at its very end."""
    resumed = runner.resumed
    assert resumed is not None
    best_path = folder.checkpoint_path("best")
    best = best_path if best_path.is_file() else None
    folder.write_metrics(resumed.history)  # the last row may have been lost with the end
    folder.write_event(
        RunFinished.event, epoch=resumed.completed_epoch, step=resumed.step, best_checkpoint=best,
        best_value=resumed.best_score, best_epoch=resumed.best_epoch, metric=config.optim.monitor,
        stopped_early=False, message="every epoch had been trained and saved; the run's end is written now",
    )
    folder.write_status("finished", epoch=resumed.completed_epoch, best_value=resumed.best_score)
    return RunResult(folder.path, "finished", resumed.history, best)


def _finish(
    folder: RunFolder, state: LoopState, saver: CheckpointSaver, recorder: MetricsRecorder,
    distributed: DistributedContext,
) -> RunResult:
    best_path = folder.checkpoint_path("best")
    best = best_path if best_path.is_file() else None
    if distributed.enabled:  # as rank 0 saw it, when it has saved (other ranks may be ahead of it)
        best = Path(shared) if (shared := distributed.broadcast_text(str(best or ""))) else None
    if state.cancel_reason not in (None, "early_stop"):
        folder.write_event(
            RunCancelled.event, epoch=state.epoch, step=state.step, reason=state.cancel_reason,
            message=state.cancel_message, checkpoint=folder.checkpoint_path("last"),
        )
        folder.write_status("cancelled", reason=state.cancel_reason, epoch=state.epoch)
        return RunResult(folder.path, "cancelled", recorder.history, best, state.cancel_reason)
    folder.write_event(
        RunFinished.event, epoch=state.epoch, step=state.step, best_checkpoint=best,
        best_value=saver.best_value, best_epoch=saver.best_epoch, metric=saver.monitor,
        stopped_early=state.cancel_reason == "early_stop", message=state.cancel_message,
    )
    folder.write_status("finished", epoch=state.epoch, best_value=saver.best_value)
    return RunResult(folder.path, "finished", recorder.history, best, state.cancel_reason)

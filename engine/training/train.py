"""Turn a RunConfig into a finished run folder: data, model, optimizer, loop, callbacks.

``train`` starts a run, ``resume`` continues one from its ``last`` checkpoint. Both
write every step of the way into the run folder (see ``engine.training.runfolder``), and any
failure is recorded there as ``run_failed`` before it propagates. In a worker started by
torchrun (``main.py train --nproc N``) both train data-parallel with the other workers:
each trains on its share of every epoch, and rank 0 alone validates and writes.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from augment import create_mixup
from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.core.paths import project_dir_for
from engine.data.loading import FeatureBatches, SkippedImages
from engine.data.prepare import PreparedDataset
from engine.models.backbones import LoadedBackbone
from engine.models.checkpoint import Checkpoint, load_checkpoint, read_checkpoint_metadata
from engine.models.heads import head_signature
from engine.training.callbacks import (
    CheckpointSaver,
    DistributedTraining,
    EventReporter,
    LRSchedule,
    MetricsRecorder,
    ProgressBar,
    StopWatcher,
)
from engine.training.distributed import SINGLE_PROCESS, DistributedContext, distributed_session
from engine.training.doctor import DoctorContext, create_doctor
from engine.training.loop import Callback, CancelFit, Loop, LoopState
from engine.training.losses import create_loss
from engine.training.recipes import EarlyStopping, EmaWeights, GradualUnfreezing, MixBatches, trainable_stages_at
from engine.training.runfolder import RunFolder, new_run_dir
from engine.training.schedules import create_scheduler
from engine.training.setup import (
    BatchScale,
    TrainingSetup,
    batch_scale,
    build_training,
    create_optimizer,
    prepare_run_data,
    seed_everything,
)


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
    echo: TextIO | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue a stopped, killed or finished run from its ``last`` checkpoint, with its own config.

    Under torchrun every rank reads the folder (it must be visible to all of them) and rank 0 writes it.
    """
    folder = RunFolder.open(run_dir)
    config = folder.load_config()
    with distributed_session(config.device) as distributed:
        if not distributed.is_main:
            folder = RunFolder.attach(run_dir)
        folder.echo = echo
        folder.clear_stop()
        return _run(folder, config, resume_from=folder.checkpoint_path("last"),
                    progress_bar=progress_bar, callbacks=callbacks, distributed=distributed)


def _run(
    folder: RunFolder,
    config: RunConfig,
    *,
    resume_from: Path | None,
    progress_bar: bool,
    callbacks: Sequence[Callback],
    distributed: DistributedContext = SINGLE_PROCESS,
) -> RunResult:
    stop_watcher = StopWatcher(folder, distributed)
    try:
        with stop_watcher.installed():
            return _train_in_folder(folder, config, resume_from, stop_watcher, progress_bar, callbacks, distributed)
    except CancelFit as cancel:
        # A stop before the loop began (e.g. during feature extraction): nothing to checkpoint yet.
        folder.write_event("run_cancelled", reason=cancel.reason, message=cancel.message, checkpoint=None)
        folder.write_status("cancelled", reason=cancel.reason)
        return RunResult(folder.path, "cancelled", reason=cancel.reason)
    except Exception as error:
        # The one place a run records its own failure; the caller decides how to show it.
        folder.write_event(
            "run_failed", error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
        )
        folder.write_status("failed", error=str(error))
        raise


@dataclass(frozen=True)
class _Stage:
    """A part of a run with its own set-up: ``two_stage`` runs have two."""

    mode: str
    first_epoch: int
    last_epoch: int


def _stages_of(config: RunConfig) -> list[_Stage]:
    if config.model.mode != "two_stage":
        return [_Stage(config.model.mode, 1, config.optim.epochs)]
    head_epochs = config.model.head_epochs
    return [_Stage("feature_extraction", 1, head_epochs), _Stage("fine_tune", head_epochs + 1, config.optim.epochs)]


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
        "dataset_scanned", root=dataset.root, classes=list(dataset.classes),
        counts={split: len(records) for split, records in dataset.splits.items()},
        problems=len(dataset.report.problems), excluded=len(dataset.report.excluded_paths()),
    )
    # One set of checks watches every stage of the run.
    doctor = create_doctor(config, DoctorContext(
        config=config, num_classes=len(dataset.classes), report=folder.write_event, health=dataset.report,
    ))
    resumed = _read_resume_point(folder, resume_from) if resume_from is not None else None
    start_epoch = resumed.completed_epoch + 1 if resumed else 1
    step = resumed.step if resumed else 0
    history = resumed.history if resumed else []
    rng_state = resumed.checkpoint.rng_state if resumed else None
    metadata: dict[str, Any] = {}
    skipped = SkippedImages(folder.write_event)  # one per run: a bad file is reported once, whatever the stage
    recorder = MetricsRecorder(list(dataset.classes), history,
                               reduce=distributed.all_reduce_sum if distributed.enabled else None,
                               skipped_counts=skipped.counts)
    scale = batch_scale(config, distributed.world_size)
    saver: CheckpointSaver | None = None
    loaded: LoadedBackbone | None = None
    state = None
    for stage in _stages_of(config):
        if stage.last_epoch < start_epoch:
            continue
        first_epoch_here = max(start_epoch, stage.first_epoch)
        setup = build_training(
            config, dataset, mode=stage.mode, loaded=loaded,
            trainable_stages=trainable_stages_at(config, first_epoch_here, stage.first_epoch),
            report=folder.write_event, check_stop=stop_watcher.check, distributed=distributed, skipped=skipped,
        )
        if isinstance(setup.train_batches, FeatureBatches):
            # Draw the shuffles of the epochs done before a resume, so that the next epoch sees the order
            # it would have seen without the stop (drawing one batch draws a whole epoch's order).
            for _ in range(first_epoch_here - stage.first_epoch):
                next(iter(setup.train_batches), None)
        if loaded is None:
            metadata.update(_checkpoint_metadata(config, dataset, setup.loaded))
            if distributed.enabled:
                metadata["world_size"] = distributed.world_size
            saver = CheckpointSaver(folder, setup.loaded.model, metadata, monitor=config.optim.monitor,
                                    best_value=resumed.best_score if resumed else None,
                                    best_epoch=resumed.best_epoch if resumed else None)
            if resumed is not None:
                setup.loaded.model.load_state_dict(resumed.checkpoint.model_state)
        loaded = setup.loaded
        metadata["stage"] = stage.mode
        optimizer = create_optimizer(setup, config)
        if resumed is not None and resumed.checkpoint.metadata.get("stage", stage.mode) == stage.mode:
            optimizer.load_state_dict(resumed.checkpoint.optimizer_state)
            resumed = None  # restored: later stages start afresh
        batches_per_epoch = len(setup.train_batches)
        stage_optim = dataclasses.replace(config.optim, epochs=stage.last_epoch - stage.first_epoch + 1)
        scheduler = create_scheduler(optimizer, stage_optim, batches_per_epoch)
        loss_function = create_loss(config, setup.train_targets, len(dataset.classes)).to(setup.plan.device)
        if distributed.enabled and state is None and distributed.is_main and folder.echo is None:
            print(f"distributed: {scale.describe()}", flush=True)  # with --events-only, run_started says it
        folder.write_event(
            "run_started" if state is None else "stage_started", epoch=first_epoch_here, step=step,
            config=config.to_dict(), classes=list(dataset.classes), backbone=config.model.backbone,
            mode=config.model.mode, stage=stage.mode, weights_source=setup.loaded.weights_source,
            device=setup.plan.describe(), data_settings=setup.loaded.data_settings.to_dict(),
            trainable_parameters=sum(p.numel() for part in setup.parts.values() for p in part),
            train_images=len(dataset.splits["train"]), val_images=len(dataset.splits["val"]),
            batches_per_epoch=batches_per_epoch, last_epoch=stage.last_epoch,
            resumed_from=str(resume_from) if resume_from and state is None else None,
            **(_distributed_payload(distributed, scale) if distributed.enabled else {}),
        )
        folder.write_status("running", epoch=first_epoch_here, num_epochs=config.optim.epochs)
        callbacks: list[Callback] = [
            stop_watcher, LRSchedule(scheduler, first_epoch=stage.first_epoch), recorder, saver,
            EventReporter(folder, every_steps=max(1, batches_per_epoch // 10), history=recorder.history),
            *_recipe_callbacks(config, setup, stage, folder, metadata, loss_function, recorder.history,
                               len(dataset.classes)),
            *doctor,
            *extra_callbacks,
        ]
        if distributed.enabled:
            callbacks.append(DistributedTraining(distributed, setup.train_sampler))
        if progress_bar and distributed.is_main:
            callbacks.append(ProgressBar())
        loop = Loop(
            model=setup.loop_model, optimizer=optimizer, loss_function=loss_function,
            train_batches=setup.train_batches, val_batches=setup.val_batches,
            device_plan=setup.plan, callbacks=callbacks,
        )
        if rng_state is not None:  # restored only now: building the model drew its initial weights
            torch.set_rng_state(rng_state)
            rng_state = None
        state = loop.fit(stage.last_epoch, start_epoch=first_epoch_here, start_step=step)
        step = state.step
        if state.cancel_reason is not None:
            break
    return _finish(folder, state, saver, recorder, distributed)


def _recipe_callbacks(
    config: RunConfig,
    setup: TrainingSetup,
    stage: _Stage,
    folder: RunFolder,
    metadata: dict[str, Any],
    loss_function: nn.Module,
    history: list[dict[str, Any]],
    num_classes: int,
) -> list[Callback]:
    callbacks: list[Callback] = []
    mixup = create_mixup(config.augment, num_classes, config.optim.label_smoothing)
    if mixup is not None:
        callbacks.append(MixBatches(mixup))
    if config.optim.ema and folder.writes:  # validated and saved by rank 0 alone in a distributed run
        callbacks.append(EmaWeights(
            loop_model=setup.loop_model, export_model=setup.loaded.model, val_batches=setup.val_batches,
            plan=setup.plan, loss_function=loss_function, decay=config.optim.ema_decay, run_folder=folder,
            metadata=metadata,
        ))
    if config.optim.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(config.optim.monitor, config.optim.early_stopping_patience, history))
    if stage.mode == "fine_tune" and config.model.unfreeze_every > 0:
        callbacks.append(GradualUnfreezing(setup.loaded.model, config, stage.first_epoch, folder.write_event))
    return callbacks


def _distributed_payload(distributed: DistributedContext, scale: BatchScale) -> dict[str, Any]:
    """What ``run_started`` adds in a distributed run: the processes, the effective batch and its learning rate."""
    return {
        "world_size": distributed.world_size, "backend": distributed.backend,
        "effective_batch_size": scale.effective_batch_size, "peak_learning_rate": scale.peak_learning_rate,
        "reference_batch_size": scale.reference_batch_size, "batch_scale": scale.describe(),
    }


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
            "run_cancelled", epoch=state.epoch, step=state.step, reason=state.cancel_reason,
            message=state.cancel_message, checkpoint=folder.checkpoint_path("last"),
        )
        folder.write_status("cancelled", reason=state.cancel_reason, epoch=state.epoch)
        return RunResult(folder.path, "cancelled", recorder.history, best, state.cancel_reason)
    folder.write_event(
        "run_finished", epoch=state.epoch, step=state.step, best_checkpoint=best,
        best_value=saver.best_value, best_epoch=saver.best_epoch, metric=saver.monitor,
        stopped_early=state.cancel_reason == "early_stop", message=state.cancel_message,
    )
    folder.write_status("finished", epoch=state.epoch, best_value=saver.best_value)
    return RunResult(folder.path, "finished", recorder.history, best, state.cancel_reason)


def _checkpoint_metadata(config: RunConfig, dataset: PreparedDataset, loaded: LoadedBackbone) -> dict[str, Any]:
    return {
        "classes": list(dataset.classes),
        "backbone": loaded.backbone,
        "weights_source": loaded.weights_source,
        "mode": config.model.mode,
        "data_settings": loaded.data_settings.to_dict(),
        "head": head_signature(config.model),
        "config_digest": config.digest(),
        "config": config.to_dict(),
    }


@dataclass
class _ResumePoint:
    checkpoint: Checkpoint
    completed_epoch: int
    step: int
    history: list[dict[str, Any]]
    best_score: float | None
    best_epoch: int | None


def _read_resume_point(folder: RunFolder, checkpoint_path: Path) -> _ResumePoint:
    checkpoint = load_checkpoint(checkpoint_path, with_training_state=True)
    completed = int(checkpoint.metadata["epoch"])
    history = [row for row in folder.read_metrics() if row.get("epoch") and row["epoch"] <= completed]
    if checkpoint.metadata.get("metrics") and all(row["epoch"] != completed for row in history):
        # Killed after saving the checkpoint but before metrics.csv took the epoch's row: the checkpoint has it.
        history.append(dict(checkpoint.metadata["metrics"]))
    best_path = folder.checkpoint_path("best")
    best = read_checkpoint_metadata(best_path) if best_path.is_file() else {}
    return _ResumePoint(checkpoint, completed, int(checkpoint.metadata["step"]), history, best.get("score"),
                        best.get("epoch"))

"""The stages of one training run, trained in turn in its folder (a ``two_stage`` run has two).

``StageRunner`` builds each stage's set-up, optimizer, schedule and callbacks, runs the
loop, and carries over what the stages share; a resumed run goes on from the ``last``
checkpoint of its folder. ``engine.training.train`` records how the run ended.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augment import create_mixup
from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.core.events import RunStarted, StageStarted
from engine.data.loading import FeatureBatches, SkippedImages
from engine.data.prepare import PreparedDataset
from engine.models.backbones import LoadedBackbone
from engine.models.checkpoint import Checkpoint, load_checkpoint, read_checkpoint_metadata
from engine.models.heads import head_signature
from engine.training.batch_probe import probe_batch_size
from engine.training.callback import Callback, LoopState
from engine.training.callbacks import (
    CheckpointSaver,
    DistributedTraining,
    EventReporter,
    LRSchedule,
    MetricsRecorder,
    ProgressBar,
    StopWatcher,
)
from engine.training.distributed import DistributedContext
from engine.training.doctor import DoctorContext, create_doctor
from engine.training.loop import Loop
from engine.training.losses import create_loss
from engine.training.optimizer import BatchScale, batch_scale
from engine.training.recipes import EarlyStopping, EmaWeights, GradualUnfreezing, MixBatches, trainable_stages_at
from engine.training.runfolder import RunFolder
from engine.training.schedules import create_scheduler
from engine.training.setup import TrainingSetup, build_training, create_optimizer

log = logging.getLogger(__name__)

SYNC_EVERY_MOST = 50
"""The loop reads its losses back every tenth of an epoch (a point of the live curves each time) and at
least every this many steps, so that the doctor acts on time; each read makes the host wait for the GPU."""


@dataclass(frozen=True)
class _Stage:
    """A part of a run with its own set-up: ``two_stage`` runs have two."""

    mode: str
    first_epoch: int
    last_epoch: int


def _stages_of(config: RunConfig) -> list[_Stage]:
    """The stages of a run with ``config``, in the order they train."""
    if config.model.mode != "two_stage":
        return [_Stage(config.model.mode, 1, config.optim.epochs)]
    head_epochs = config.model.head_epochs
    return [_Stage("feature_extraction", 1, head_epochs), _Stage("fine_tune", head_epochs + 1, config.optim.epochs)]


class StageRunner:
    """Trains the stages of one run in turn, in its folder, and carries over what they share.

    A ``two_stage`` run has two stages (the head on cached features, then fine-tuning),
    any other run one. They share the data, the doctor's checks, the metrics history, the
    checkpoint saver (made by the first stage trained), the backbone (the second stage goes
    on training the first one's), the step count and, until the stage it belongs to has
    used it, the point a resumed run goes on from.
    """

    def __init__(
        self,
        folder: RunFolder,
        config: RunConfig,
        dataset: PreparedDataset,
        stop_watcher: StopWatcher,
        distributed: DistributedContext,
        *,
        resume_from: Path | None,
        progress_bar: bool,
        extra_callbacks: Sequence[Callback],
    ) -> None:
        """Get the run ready for its first stage.

        Args:
            folder: the run's folder.
            config: the run's settings.
            dataset: its scanned and split images.
            stop_watcher: turns a stop request into ``CancelFit`` (between feature batches too).
            distributed: this process's place in a distributed run.
            resume_from: the ``last`` checkpoint of a run to go on with, or None for a new run.
            progress_bar: show tqdm bars on stderr.
            extra_callbacks: loop callbacks of the caller's, in every stage.
        """
        self.folder = folder
        self.config = config
        self.dataset = dataset
        self.stop_watcher = stop_watcher
        self.distributed = distributed
        self.progress_bar = progress_bar
        self.extra_callbacks = extra_callbacks
        resumed = _read_resume_point(folder, resume_from) if resume_from is not None else None
        self.resumed = resumed  # None once its optimizer state is restored: later stages start afresh
        self.resume_from = resume_from
        self.start_epoch = resumed.completed_epoch + 1 if resumed else 1
        self.step = resumed.step if resumed else 0
        self.rng_state = resumed.checkpoint.rng_state if resumed else None  # restored once, before the first fit
        # One set of checks watches every stage of the run.
        self.doctor = create_doctor(config, DoctorContext(
            config=config, num_classes=len(dataset.classes), report=folder.write_event, health=dataset.report,
        ))
        self.skipped = SkippedImages(folder.write_event)  # one per run: a bad file is reported once
        self.recorder = MetricsRecorder(list(dataset.classes), resumed.history if resumed else [],
                                        reduce=distributed.all_reduce_sum if distributed.enabled else None,
                                        skipped_counts=self.skipped.counts)
        # The config the stages build with: optim.batch_size auto becomes a number before the first fine-tuning stage.
        self.build_config = config
        self.scale = batch_scale(config, distributed.world_size)
        self.metadata: dict[str, Any] = {}  # what every checkpoint carries; the saver and EMA share it
        self.saver: CheckpointSaver | None = None
        self.loaded: LoadedBackbone | None = None
        self.state: LoopState | None = None  # the latest stage's, once one has trained

    def run(self) -> tuple[LoopState, CheckpointSaver]:
        """Train every stage that has epochs left, up to the first that is cancelled.

        Returns:
            The last stage's loop state (its ``cancel_reason`` says why it stopped early) and the
            checkpoint saver of the run (which knows the best epoch).

        Raises:
            ConfigError: a resumed run has no epochs left.
        """
        for stage in _stages_of(self.config):
            if stage.last_epoch < self.start_epoch:
                continue
            if self._train(stage).cancel_reason is not None:
                break
        if self.state is None or self.saver is None:  # every stage ended before start_epoch
            raise ConfigError(f"optim.epochs: the run already trained all {self.config.optim.epochs} epochs; "
                              "raise optim.epochs to train it further")
        return self.state, self.saver

    def _train(self, stage: _Stage) -> LoopState:
        first_epoch = max(self.start_epoch, stage.first_epoch)
        setup = self._build(stage, first_epoch)
        self.saver = self.saver or self._start_saving(setup)
        self.loaded = setup.loaded
        self.metadata["stage"] = stage.mode
        optimizer = self._create_optimizer(setup, stage)
        loss_function = create_loss(self.config, setup.train_targets, len(self.dataset.classes)).to(setup.plan.device)
        self._announce(stage, setup, first_epoch)
        optim = self.config.optim
        loop = Loop(
            model=_compiled(setup, self.config.model.compile), optimizer=optimizer, loss_function=loss_function,
            train_batches=setup.train_batches, val_batches=setup.val_batches,
            device_plan=setup.plan, callbacks=self._callbacks(stage, setup, optimizer, loss_function),
            sync_every=sync_interval(_steps_per_epoch(setup, optim.accumulate_steps)),
            accumulate_steps=optim.accumulate_steps, clip_grad_norm=optim.clip_grad_norm,
        )
        if self.rng_state is not None:  # restored only now: building the model drew its initial weights
            torch.set_rng_state(self.rng_state)
            self.rng_state = None
        self.state = loop.fit(stage.last_epoch, start_epoch=first_epoch, start_step=self.step)
        self.step = self.state.step
        return self.state

    def _build(self, stage: _Stage, first_epoch: int) -> TrainingSetup:
        """The stage's model and batches, its batches' shuffles where a run that never stopped would have them."""
        def build(loaded: LoadedBackbone | None) -> TrainingSetup:
            return build_training(
                self.build_config, self.dataset, mode=stage.mode, loaded=loaded,
                trainable_stages=trainable_stages_at(self.config, first_epoch, stage.first_epoch),
                report=self.folder.write_event, check_stop=self.stop_watcher.check, distributed=self.distributed,
                skipped=self.skipped,
            )

        setup = build(self.loaded)
        if self._resolve_auto_batch(stage, setup):
            setup = build(setup.loaded)  # the loaders again, at the batch size found
        if isinstance(setup.train_batches, FeatureBatches):
            # Draw the shuffles of the epochs done before a resume, so that the next epoch sees the order
            # it would have seen without the stop (drawing one batch draws a whole epoch's order).
            for _ in range(first_epoch - stage.first_epoch):
                next(iter(setup.train_batches), None)
        return setup

    def _resolve_auto_batch(self, stage: _Stage, setup: TrainingSetup) -> bool:
        """Replace ``optim.batch_size: auto`` by the largest batch that fits, on CUDA; True if the loaders must follow.

        Elsewhere (and for the head alone, which needs little memory) ``auto`` trains at
        ``OptimConfig.fixed_batch_size()``. Every rank of a distributed run takes the smallest
        size any of them found, so that the ranks' batches stay alike.
        """
        optim = self.build_config.optim
        if optim.batch_size != "auto" or stage.mode != "fine_tune" or not setup.plan.is_cuda:
            return False
        size = probe_batch_size(setup.loop_model, setup.plan, setup.loaded.data_settings.input_size,
                                len(self.dataset.classes), train_images=len(self.dataset.splits["train"]))
        if self.distributed.enabled:
            size = -self.distributed.all_reduce_max(-size)
        log.info("optim.batch_size auto: %d images per batch fit in the GPU's memory", size)
        self.build_config = dataclasses.replace(self.config, optim=dataclasses.replace(optim, batch_size=size))
        self.scale = batch_scale(self.build_config, self.distributed.world_size)
        return True

    def _start_saving(self, setup: TrainingSetup) -> CheckpointSaver:
        """The checkpoint saver of the whole run, made by the first stage it trains; a resumed run's weights."""
        self.metadata.update(_checkpoint_metadata(self.config, self.dataset, setup.loaded))
        if self.distributed.enabled:
            self.metadata["world_size"] = self.distributed.world_size
        resumed = self.resumed
        if resumed is not None:
            setup.loaded.model.load_state_dict(resumed.checkpoint.model_state)
        return CheckpointSaver(self.folder, setup.loaded.model, self.metadata, monitor=self.config.optim.monitor,
                               best_value=resumed.best_score if resumed else None,
                               best_epoch=resumed.best_epoch if resumed else None)

    def _create_optimizer(self, setup: TrainingSetup, stage: _Stage) -> torch.optim.Optimizer:
        """A new optimizer, with the resumed run's state when it was saved in this stage."""
        optimizer = create_optimizer(setup, self.build_config)
        if self.resumed is not None and self.resumed.checkpoint.metadata.get("stage", stage.mode) == stage.mode:
            optimizer.load_state_dict(self.resumed.checkpoint.optimizer_state)
            self.resumed = None  # restored: later stages start afresh
        return optimizer

    def _announce(self, stage: _Stage, setup: TrainingSetup, first_epoch: int) -> None:
        """Write ``run_started`` (the first stage this process trains) or ``stage_started``, and the status."""
        first = self.state is None
        distributed = self.distributed
        if distributed.enabled and first and distributed.is_main and self.folder.echo is None:
            print(f"distributed: {self.scale.describe()}", flush=True)  # with --events-only, run_started says it
        self.folder.write_event(
            RunStarted.event if first else StageStarted.event, epoch=first_epoch, step=self.step,
            config=self.config.to_dict(), classes=list(self.dataset.classes), backbone=self.config.model.backbone,
            mode=self.config.model.mode, stage=stage.mode, weights_source=setup.loaded.weights_source,
            device=setup.plan.describe(), data_settings=setup.loaded.data_settings.to_dict(),
            trainable_parameters=sum(p.numel() for part in setup.parts.values() for p in part),
            train_images=len(self.dataset.splits["train"]), val_images=len(self.dataset.splits["val"]),
            batches_per_epoch=len(setup.train_batches), last_epoch=stage.last_epoch,
            resumed_from=str(self.resume_from) if self.resume_from and first else None,
            device_reason=setup.plan.reason, batch_size=self.build_config.optim.fixed_batch_size(),
            accumulate_steps=self.config.optim.accumulate_steps,
            **(_distributed_payload(distributed, self.scale) if distributed.enabled else {}),
        )
        self.folder.write_status("running", epoch=first_epoch, num_epochs=self.config.optim.epochs)

    def _callbacks(
        self, stage: _Stage, setup: TrainingSetup, optimizer: torch.optim.Optimizer, loss_function: nn.Module
    ) -> list[Callback]:
        """The stage's loop features: the standard ones, the config's recipes, the doctor's, the caller's."""
        assert self.saver is not None
        stage_optim = dataclasses.replace(self.config.optim, epochs=stage.last_epoch - stage.first_epoch + 1)
        scheduler = create_scheduler(optimizer, stage_optim, _steps_per_epoch(setup, stage_optim.accumulate_steps))
        callbacks = [
            *standard_callbacks(self.folder, self.stop_watcher, LRSchedule(scheduler, first_epoch=stage.first_epoch),
                                self.recorder, self.saver, self.doctor),
            *self._recipe_callbacks(stage, setup, loss_function), *self.extra_callbacks,
        ]
        if self.distributed.enabled:
            callbacks.append(DistributedTraining(self.distributed, setup.train_sampler))
        if self.progress_bar and self.distributed.is_main:
            callbacks.append(ProgressBar())
        return callbacks

    def _recipe_callbacks(self, stage: _Stage, setup: TrainingSetup, loss_function: nn.Module) -> list[Callback]:
        """The features the config's ``optim`` and ``model`` sections ask for (``engine.training.recipes``)."""
        config, folder = self.config, self.folder
        callbacks: list[Callback] = []
        mixup = create_mixup(config.augment, len(self.dataset.classes), config.optim.label_smoothing)
        if mixup is not None:
            callbacks.append(MixBatches(mixup))
        if config.optim.ema and folder.writes:  # validated and saved by rank 0 alone in a distributed run
            callbacks.append(EmaWeights(
                loop_model=setup.loop_model, export_model=setup.loaded.model, val_batches=setup.val_batches,
                plan=setup.plan, loss_function=loss_function, decay=config.optim.ema_decay, run_folder=folder,
                metadata=self.metadata,
            ))
        if config.optim.early_stopping_patience > 0:
            callbacks.append(EarlyStopping(config.optim.monitor, config.optim.early_stopping_patience,
                                           self.recorder.history, counting_from=stage.first_epoch))
        if stage.mode == "fine_tune" and config.model.unfreeze_every > 0:
            callbacks.append(GradualUnfreezing(setup.loaded.model, config, stage.first_epoch, folder.write_event))
        return callbacks


def standard_callbacks(
    folder: RunFolder, stop_watcher: StopWatcher, schedule: LRSchedule, recorder: MetricsRecorder,
    saver: CheckpointSaver, doctor: Sequence[Callback],
) -> list[Callback]:
    """The callbacks every run attaches whatever its config: stop requests, the schedule, metrics,
    checkpoints, progress events and the doctor's checks (``bench.step_overhead`` times the loop with them)."""
    return [stop_watcher, schedule, recorder, saver, EventReporter(folder, history=recorder.history), *doctor]


def sync_interval(steps_per_epoch: int) -> int:
    """Steps between the loop's reads of its losses: a tenth of an epoch of ``steps_per_epoch``, at most
    ``SYNC_EVERY_MOST``."""
    return min(SYNC_EVERY_MOST, max(1, steps_per_epoch // 10))


def _steps_per_epoch(setup: TrainingSetup, accumulate_steps: int) -> int:
    """Optimizer steps in one epoch of the setup's training batches."""
    return math.ceil(len(setup.train_batches) / accumulate_steps)


def _compiled(setup: TrainingSetup, compile_model: bool) -> nn.Module:
    """The module the loop runs: ``torch.compile``'d on CUDA when ``model.compile`` asks (same parameters)."""
    if not compile_model:
        return setup.loop_model
    if not setup.plan.is_cuda:
        log.warning("model.compile is ignored on %s: torch.compile is used on CUDA GPUs only", setup.plan.device)
        return setup.loop_model
    return torch.compile(setup.loop_model)


def _distributed_payload(distributed: DistributedContext, scale: BatchScale) -> dict[str, Any]:
    """What ``run_started`` adds in a distributed run: the processes, the effective batch and its learning rate."""
    return {
        "world_size": distributed.world_size, "backend": distributed.backend,
        "effective_batch_size": scale.effective_batch_size, "peak_learning_rate": scale.peak_learning_rate,
        "reference_batch_size": scale.reference_batch_size, "batch_scale": scale.describe(),
    }


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
    """Where a resumed run goes on from: its ``last`` checkpoint and what the folder says of the epochs before."""

    checkpoint: Checkpoint
    completed_epoch: int
    step: int
    history: list[dict[str, Any]]
    best_score: float | None
    best_epoch: int | None


def _read_resume_point(folder: RunFolder, checkpoint_path: Path) -> _ResumePoint:
    checkpoint = load_checkpoint(checkpoint_path, with_training_state=True)
    completed = int(checkpoint.metadata["epoch"])
    history = [row for row in folder.read_metrics() if (epoch := row.get("epoch")) and epoch <= completed]
    if checkpoint.metadata.get("metrics") and all(row["epoch"] != completed for row in history):
        # Killed after saving the checkpoint but before metrics.csv took the epoch's row: the checkpoint has it.
        history.append(dict(checkpoint.metadata["metrics"]))
    best_path = folder.checkpoint_path("best")
    best = read_checkpoint_metadata(best_path) if best_path.is_file() else {}
    return _ResumePoint(checkpoint, completed, int(checkpoint.metadata["step"]), history, best.get("score"),
                        best.get("epoch"))

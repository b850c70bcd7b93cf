"""Smith's learning-rate range test: sweep the rate up exponentially, watch the loss, suggest a rate.

``LRFinder`` is a plain loop callback; ``lr_range_test`` runs it on a real run's model,
batches and optimizer and puts the weights back afterwards; ``suggest_learning_rate``
reads the curve (``engine.training.lr_curve``, re-exported here with the curve and its
plot); ``find_learning_rate`` is the command, writing the curve into a folder
(``events.jsonl``, ``lr_find.csv``, ``lr_find.png``) that the GUI draws from.
"""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from engine.core.atomic import atomic_write_text
from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.core.events import LrFindFinished, LrFindStarted, LrFindStep, RunCancelled, RunFailed
from engine.models.backbones import classifier_of
from engine.training.callback import Callback, CancelFit, LoopState
from engine.training.callbacks import StopWatcher
from engine.training.loop import Loop
from engine.training.losses import create_loss
from engine.training.lr_curve import LRFinderCurve, format_rate, suggest_learning_rate, write_plot
from engine.training.runfolder import RunFolder
from engine.training.schedules import scaled_learning_rate
from engine.training.setup import (
    Reporter,
    TrainingSetup,
    build_training,
    create_optimizer,
    prepare_run_data,
    seed_everything,
)

DONE_REASON = "lr_find_done"
DIVERGENCE_FACTOR = 3.0  # stop once the smoothed loss exceeds this many times its minimum
SMOOTHING = 0.9  # EMA weight of the past; see LRFinder for why not fastai's 0.98
CSV_NAME = "lr_find.csv"
PLOT_NAME = "lr_find.png"


class LRFinder(Callback):
    """Raises the learning rate exponentially, one step at a time, and records the loss.

    Every parameter group's rate is set each step keeping the groups' ratios: a
    fine-tuned backbone's group stays at its fraction of the head's (its ``lr_scale``,
    which timm's schedulers apply in a real run), and the recorded rate is the head's,
    the largest. The loss is smoothed with a debiased exponential moving average; the
    sweep ends with ``CancelFit("lr_find_done")`` when the smoothed loss exceeds 3x its
    minimum, the loss is not finite, or ``num_steps`` steps ran. Stopping early is what
    makes the test cheap: past the blow-up the curve says nothing more.

    The smoothing weight is 0.9 rather than fastai's 0.98: an average over ~10 steps
    lags by ~9 steps, 0.7 of a decade in a 100-step sweep over 8 decades, where 0.98
    would lag by ~4 decades and move every feature of the curve far to the right.

    Args:
        start_lr: head rate of the first step.
        end_lr: head rate of step ``num_steps``.
        num_steps: optimizer steps of the whole sweep (at least 2).
        smoothing: EMA weight of the past, in [0, 1).
        report: receives ``lr_find_step`` events (``learning_rate``, ``loss``, ``smoothed_loss``).
    """

    order = 0

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_steps: int = 100,
        *,
        smoothing: float = SMOOTHING,
        report: Reporter | None = None,
    ) -> None:
        _check_range(start_lr, end_lr, num_steps)
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_steps = num_steps
        self.smoothing = smoothing
        self.report = report
        self.curve = LRFinderCurve()
        self._ratios: list[float] = []
        self._average = 0.0
        self._best = math.inf

    def rate_at(self, index: int) -> float:
        """Head rate of sweep step ``index`` (0-based)."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (index / (self.num_steps - 1))

    def before_fit(self, state: LoopState) -> None:
        rates = [group["lr"] * group.get("lr_scale", 1.0) for group in state.optimizer.param_groups]
        self._ratios = [rate / max(rates) for rate in rates]
        self.curve = LRFinderCurve()
        self._average, self._best = 0.0, math.inf

    def before_batch(self, state: LoopState) -> None:
        if not state.training:
            return
        rate = self.rate_at(len(self.curve.learning_rates))
        for group, ratio in zip(state.optimizer.param_groups, self._ratios, strict=True):
            group["lr"] = rate * ratio

    def after_step(self, state: LoopState) -> None:
        assert state.loss is not None
        rate = self.rate_at(len(self.curve.learning_rates))
        loss = float(state.loss.detach())
        if not math.isfinite(loss):
            self.curve.ended = "diverged"
            raise CancelFit(DONE_REASON, f"the loss became {loss} at learning rate {rate:.3g}")
        count = len(self.curve.losses) + 1
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smoothed = self._average / (1 - self.smoothing**count)
        self.curve.learning_rates.append(rate)
        self.curve.losses.append(loss)
        self.curve.smoothed_losses.append(smoothed)
        if self.report is not None:
            self.report(LrFindStep.event, step=count, learning_rate=rate, loss=loss, smoothed_loss=smoothed)
        self._best = min(self._best, smoothed)
        if smoothed > DIVERGENCE_FACTOR * self._best:
            self.curve.ended = "diverged"
            raise CancelFit(DONE_REASON, f"the smoothed loss passed {DIVERGENCE_FACTOR:g}x its minimum")
        if count >= self.num_steps:
            self.curve.ended = "completed"
            raise CancelFit(DONE_REASON, f"all {self.num_steps} steps ran")

    def after_cancel_fit(self, state: LoopState) -> None:
        if state.cancel_reason != DONE_REASON:
            self.curve.ended = "stopped"


def lr_range_test(
    setup: TrainingSetup,
    config: RunConfig,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    report: Reporter | None = None,
    callbacks: Sequence[Callback] = (),
) -> LRFinderCurve:
    """Sweep the rate on the setup's real model, batches and optimizer; leave the model as it was.

    The optimizer and loss are the ones a run would create: ``engine.training.setup.create_optimizer``
    (AdamW, the config's weight decay, the head and backbone groups) and
    ``engine.training.losses.create_loss`` (label smoothing, class weights); no schedule runs. The
    training batches are re-iterated over as many epochs as the sweep needs, without
    validation. Afterwards every module's weights and buffers (BatchNorm statistics
    included), its train/eval mode and the batches' shuffling generator are as before,
    so a run built on the same setup trains exactly as if the sweep had not happened.

    Args:
        setup: from ``engine.training.setup.build_training``.
        config: the settings the setup was built from.
        start_lr, end_lr, num_steps: the sweep (head rates; see ``LRFinder``).
        report: receives an ``lr_find_step`` event per step.
        callbacks: extra loop callbacks (e.g. a ``StopWatcher``).

    Returns:
        The recorded curve.
    """
    finder = LRFinder(start_lr, end_lr, num_steps, report=report)
    num_classes = count_classes(setup)
    modules = _distinct(setup.loaded.model, setup.loop_model)
    saved_states = [copy.deepcopy(module.state_dict()) for module in modules]
    saved_modes = [(module, module.training) for root in modules for module in root.modules()]
    generator = getattr(setup.train_batches, "generator", None)
    generator = generator if isinstance(generator, torch.Generator) else None
    saved_generator = generator.get_state() if generator is not None else None
    try:
        optimizer = create_optimizer(setup, config)
        loss_function = create_loss(config, setup.train_targets, num_classes).to(setup.plan.device)
        loop = Loop(
            model=setup.loop_model, optimizer=optimizer, loss_function=loss_function,
            train_batches=setup.train_batches, val_batches=None, device_plan=setup.plan,
            callbacks=[finder, *callbacks],
        )
        loop.fit(math.ceil(num_steps / max(1, len(setup.train_batches))))
    finally:
        for module, state in zip(modules, saved_states, strict=True):
            module.load_state_dict(state)
        for module, training in saved_modes:
            module.training = training
        if generator is not None:
            generator.set_state(saved_generator)
    return finder.curve


@dataclass
class LRFinderResult:
    """What ``find_learning_rate`` found and wrote.

    Attributes:
        out_dir: the folder holding ``config.yaml``, ``events.jsonl``, the CSV and the plot.
        state: ``finished`` or ``cancelled``.
        curve: the recorded curve (empty if cancelled before the sweep).
        suggestion: the suggested head learning rate, or None when cancelled.
        reason: why that rate, in plain words.
        min_loss_rate: rate at the lowest smoothed loss.
        learning_rate_setting: the ``optim.learning_rate`` that gives ``suggestion``; differs
            from it only under the linear scaling rule (``optim.reference_batch_size``).
        csv_path, plot_path: the files written (None when cancelled).
    """

    out_dir: Path
    state: str
    curve: LRFinderCurve
    suggestion: float | None = None
    reason: str = ""
    min_loss_rate: float | None = None
    learning_rate_setting: float | None = None
    csv_path: Path | None = None
    plot_path: Path | None = None


def find_learning_rate(
    config: RunConfig,
    out_dir: str | Path,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    echo: TextIO | None = None,
) -> LRFinderResult:
    """Run the range test on ``config``'s data and model, and write the curve and a suggestion.

    Writes into the new folder ``out_dir``: ``config.yaml``, ``events.jsonl``
    (``lr_find_started``, one ``lr_find_step`` per step, ``lr_find_finished``;
    ``run_cancelled`` or ``run_failed`` as a training run would), ``status.json``,
    ``lr_find.csv`` and ``lr_find.png``. A ``STOP`` file or a stop signal (SIGTERM, SIGINT,
    SIGHUP) before the sweep's end stops it cleanly: ``run_cancelled``, and no CSV or plot.

    Args:
        config: the run's settings; ``config.data.path`` names the dataset.
        out_dir: a folder that holds no run yet.
        start_lr, end_lr, num_steps: the sweep of head rates.
        echo: also write each event line to this stream.

    Raises:
        ConfigError, DatasetError, BackboneUnavailable, CheckpointError: bad input; once
            the folder exists, recorded there as ``run_failed`` first.
    """
    if not config.data.path:
        raise ConfigError("data.path: must name a dataset folder or CSV, got ''")
    _check_range(start_lr, end_lr, num_steps)
    folder = RunFolder.create(out_dir, config)
    folder.echo = echo
    stop_watcher = StopWatcher(folder)
    try:
        with stop_watcher.installed():
            return _find_in_folder(folder, config, stop_watcher, start_lr, end_lr, num_steps)
    except CancelFit as cancel:  # a stop before the sweep began (during feature extraction)
        folder.write_event(RunCancelled.event, reason=cancel.reason, message=cancel.message)
        folder.write_status("cancelled", reason=cancel.reason)
        return LRFinderResult(folder.path, "cancelled", LRFinderCurve(ended="stopped"))
    except Exception as error:
        # As in engine.training.train: the one place the command records its own failure.
        folder.write_event(
            RunFailed.event, error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
        )
        folder.write_status("failed", error=str(error))
        raise


def _find_in_folder(
    folder: RunFolder,
    config: RunConfig,
    stop_watcher: StopWatcher,
    start_lr: float,
    end_lr: float,
    num_steps: int,
) -> LRFinderResult:
    seed_everything(config.seed)
    dataset = prepare_run_data(config)
    setup = build_training(config, dataset, report=folder.write_event, check_stop=stop_watcher.check)
    # A two-stage run starts by training the head alone: that first stage is what is swept.
    swept_mode = "feature_extraction" if config.model.mode == "two_stage" else config.model.mode
    folder.write_event(
        LrFindStarted.event, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, classes=list(dataset.classes),
        backbone=config.model.backbone, mode=config.model.mode, stage=swept_mode, device=setup.plan.describe(),
        train_images=len(dataset.splits["train"]), batches_per_epoch=len(setup.train_batches),
    )
    folder.write_status("running")
    curve = lr_range_test(
        setup, config, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
        report=folder.write_event, callbacks=[stop_watcher],
    )
    if curve.ended == "stopped":
        folder.write_event(RunCancelled.event, step=len(curve.losses), reason="stopped",
                           message=stop_watcher.message())
        folder.write_status("cancelled", reason="stopped")
        return LRFinderResult(folder.path, "cancelled", curve)
    suggestion, reason, setting = _suggest(curve, config, start_lr)
    csv_path = atomic_write_text(folder.path / CSV_NAME, curve.to_csv())
    title = f"{config.model.backbone}, {swept_mode.replace('_', ' ')}, batch size {config.optim.fixed_batch_size()}"
    plot_path = write_plot(curve, folder.path / PLOT_NAME, suggestion=suggestion, reason=reason, title=title)
    folder.write_event(
        LrFindFinished.event, step=len(curve.losses), suggestion=suggestion, reason=reason,
        min_loss_rate=curve.min_loss_rate, learning_rate_setting=setting, ended=curve.ended, csv=csv_path,
        plot=plot_path,
    )
    folder.write_status("finished", suggestion=suggestion)
    return LRFinderResult(
        folder.path, "finished", curve, suggestion, reason, curve.min_loss_rate, setting, csv_path, plot_path
    )


def _suggest(curve: LRFinderCurve, config: RunConfig, start_lr: float) -> tuple[float | None, str, float | None]:
    """The suggested head rate, why, and the ``optim.learning_rate`` that gives it (None, None: no finite loss)."""
    if not curve.losses:
        return None, (
            f"the loss was not finite from the first step, at {format_rate(start_lr)}: the inputs or the model "
            "give inf or nan; run the sanity check"
        ), None
    suggestion, reason = suggest_learning_rate(curve)
    setting = learning_rate_setting(suggestion, config)
    if not math.isclose(setting, suggestion):
        reason += (
            f" (set optim.learning_rate to {format_rate(setting)}: the linear scaling rule multiplies it by "
            f"batch_size / reference_batch_size = {config.optim.fixed_batch_size()}/"
            f"{config.optim.reference_batch_size})"
        )
    return suggestion, reason, setting


def learning_rate_setting(rate: float, config: RunConfig) -> float:
    """The ``optim.learning_rate`` that gives the head ``rate`` after the linear scaling rule (if it is on)."""
    return rate * config.optim.learning_rate / scaled_learning_rate(config.optim)


def count_classes(setup: TrainingSetup) -> int:
    """Outputs of the setup's head: the width of its last linear layer (else one past the largest target)."""
    linears = [module for module in classifier_of(setup.loaded.model).modules() if isinstance(module, nn.Linear)]
    return linears[-1].out_features if linears else int(setup.train_targets.max()) + 1


def _check_range(start_lr: float, end_lr: float, num_steps: int) -> None:
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"start_lr: must be > 0 and below end_lr ({end_lr:g}), got {start_lr:g}")
    if num_steps < 2:
        raise ConfigError(f"num_steps: must be >= 2, got {num_steps}")


def _distinct(*modules: nn.Module) -> list[nn.Module]:
    seen: list[nn.Module] = []
    for module in modules:
        if all(module is not other for other in seen):
            seen.append(module)
    return seen

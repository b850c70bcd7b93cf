"""Smith's learning-rate range test: sweep the rate up exponentially, watch the loss, suggest a rate.

``LRFinder`` is a plain loop callback; ``lr_range_test`` runs it on a real run's model,
batches and optimizer and puts the weights back afterwards; ``suggest_learning_rate``
reads the curve; ``find_learning_rate`` is the command, writing the curve into a folder
(``events.jsonl``, ``lr_find.csv``, ``lr_find.png``) that the GUI draws from.
"""

from __future__ import annotations

import copy
import io
import math
import textwrap
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn

from engine.core.atomic import atomic_write, atomic_write_text
from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.models.backbones import classifier_of
from engine.training.callbacks import StopWatcher
from engine.training.loop import Callback, CancelFit, Loop, LoopState
from engine.training.losses import create_loss
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


@dataclass
class LRFinderCurve:
    """The loss against the learning rate, one point per optimizer step of the sweep.

    Attributes:
        learning_rates: the head's rate at each step (other groups keep their ratio to it).
        losses: training loss of each step's batch.
        smoothed_losses: exponentially smoothed, debiased ``losses``.
        ended: ``diverged`` (smoothed loss passed 3x its minimum, or became inf/nan),
            ``completed`` (every step ran) or ``stopped`` (another callback ended the fit).
    """

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed_losses: list[float] = field(default_factory=list)
    ended: str = "completed"

    @property
    def min_loss_rate(self) -> float | None:
        """The rate at which the smoothed loss was lowest, or None for an empty curve."""
        if not self.smoothed_losses:
            return None
        return self.learning_rates[int(np.argmin(self.smoothed_losses))]

    def to_csv(self) -> str:
        """``learning_rate,loss,smoothed_loss`` with one row per step."""
        lines = ["learning_rate,loss,smoothed_loss"]
        for rate, loss, smoothed in zip(self.learning_rates, self.losses, self.smoothed_losses, strict=True):
            lines.append(f"{rate:.6g},{loss:.6g},{smoothed:.6g}")
        return "\n".join(lines) + "\n"


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
            self.report("lr_find_step", step=count, learning_rate=rate, loss=loss, smoothed_loss=smoothed)
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
    saved_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
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
        if saved_generator is not None:
            generator.set_state(saved_generator)
    return finder.curve


def suggest_learning_rate(curve: LRFinderCurve) -> tuple[float, str]:
    """Pick a rate from a range-test curve, and say why in plain words.

    The rule: the rate where the smoothed loss falls fastest (most negative slope
    against log rate, before the minimum), but no more than a tenth of the rate at the
    minimum. The steepest fall is where training makes the most progress per step;
    the minimum is already on the edge of blowing up (the sweep got there in a few
    steps, a real run spends thousands), so a decade below it is the safe ceiling.
    The result is rounded to one significant digit.

    Returns:
        ``(rate, reason)``, e.g. ``(0.002, "the smoothed loss falls fastest at 2.1e-3 (and is
        lowest at 3.0e-2; a tenth of that is 3.0e-3): try 2e-3")``.

    Raises:
        ValueError: the curve is empty.
    """
    rates = np.asarray(curve.learning_rates, dtype=float)
    smoothed = np.asarray(curve.smoothed_losses, dtype=float)
    if len(rates) == 0:
        raise ValueError("an empty range-test curve suggests nothing")
    if len(rates) < 3:
        rate = _round_rate(rates[0] / 10)
        return rate, (
            f"the loss blew up within {len(rates)} steps, by {_format_rate(rates[-1])}: the sweep started too "
            f"high; start it lower (a tenth of its start is {_format_rate(rate, digits=1)})"
        )
    lowest = int(np.argmin(smoothed))
    min_rate = float(rates[lowest])
    tenth = min_rate / 10
    drop = smoothed[0] - smoothed[lowest]
    if lowest < 2 or drop <= 0.02 * abs(smoothed[0]):
        rate = _round_rate(tenth)
        return rate, (
            f"the loss never fell clearly (lowest at {_format_rate(min_rate)}, only "
            f"{drop / max(abs(smoothed[0]), 1e-12):.0%} below its start): start the sweep lower, or run the "
            f"sanity check; a tenth of the lowest point is {_format_rate(rate)}"
        )
    slopes = np.gradient(smoothed[: lowest + 1], np.log10(rates[: lowest + 1]))
    steepest = int(np.argmin(slopes[:lowest]))
    steepest_rate = float(rates[steepest])
    rate = _round_rate(min(steepest_rate, tenth))
    reason = (
        f"the smoothed loss falls fastest at {_format_rate(steepest_rate)} (and is lowest at {_format_rate(min_rate)}; "
        f"a tenth of that is {_format_rate(tenth)}): try {_format_rate(rate, digits=1)}"
    )
    if curve.ended == "completed" and lowest == len(rates) - 1:
        reason += "; the loss was still falling at the end of the sweep, so a higher end rate may show more"
    return rate, reason


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
    ``lr_find.csv`` and ``lr_find.png``. A ``STOP`` file or SIGTERM stops it cleanly.

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
        folder.write_event("run_cancelled", reason=cancel.reason, message=cancel.message)
        folder.write_status("cancelled", reason=cancel.reason)
        return LRFinderResult(folder.path, "cancelled", LRFinderCurve(ended="stopped"))
    except Exception as error:
        # As in engine.training.train: the one place the command records its own failure.
        folder.write_event(
            "run_failed", error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
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
        "lr_find_started", start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, classes=list(dataset.classes),
        backbone=config.model.backbone, mode=config.model.mode, stage=swept_mode, device=setup.plan.describe(),
        train_images=len(dataset.splits["train"]), batches_per_epoch=len(setup.train_batches),
    )
    folder.write_status("running")
    curve = lr_range_test(
        setup, config, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
        report=folder.write_event, callbacks=[stop_watcher],
    )
    if curve.ended == "stopped":
        folder.write_event("run_cancelled", step=len(curve.losses), reason="stopped", message="stop requested")
        folder.write_status("cancelled", reason="stopped")
        return LRFinderResult(folder.path, "cancelled", curve)
    if curve.losses:
        suggestion, reason = suggest_learning_rate(curve)
    else:
        suggestion, reason = None, (
            f"the loss was not finite from the first step, at {_format_rate(start_lr)}: the inputs or the model "
            "give inf or nan; run the sanity check"
        )
    setting = learning_rate_setting(suggestion, config) if suggestion is not None else None
    if setting is not None and not math.isclose(setting, suggestion):
        reason += (
            f" (set optim.learning_rate to {_format_rate(setting)}: the linear scaling rule multiplies it by "
            f"batch_size / reference_batch_size = {config.optim.batch_size}/{config.optim.reference_batch_size})"
        )
    csv_path = atomic_write_text(folder.path / CSV_NAME, curve.to_csv())
    title = f"{config.model.backbone}, {swept_mode.replace('_', ' ')}, batch size {config.optim.batch_size}"
    plot_path = write_plot(curve, folder.path / PLOT_NAME, suggestion=suggestion, reason=reason, title=title)
    folder.write_event(
        "lr_find_finished", step=len(curve.losses), suggestion=suggestion, reason=reason,
        min_loss_rate=curve.min_loss_rate, learning_rate_setting=setting, ended=curve.ended, csv=csv_path,
        plot=plot_path,
    )
    folder.write_status("finished", suggestion=suggestion)
    return LRFinderResult(
        folder.path, "finished", curve, suggestion, reason, curve.min_loss_rate, setting, csv_path, plot_path
    )


def learning_rate_setting(rate: float, config: RunConfig) -> float:
    """The ``optim.learning_rate`` that gives the head ``rate`` after the linear scaling rule (if it is on)."""
    return rate * config.optim.learning_rate / scaled_learning_rate(config.optim)


def write_plot(
    curve: LRFinderCurve, path: str | Path, *, suggestion: float | None = None, reason: str = "", title: str = ""
) -> Path:
    """Draw the curve as a PNG, atomically: loss per step and smoothed loss against the rate (log axis).

    The lowest smoothed loss and the suggestion are marked, and ``reason`` is printed
    under the title, so the picture explains itself outside the app.
    """
    # The object API with the Agg canvas, not pyplot: no global backend switch, no GUI
    # event loop, safe in any process or thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rates = np.asarray(curve.learning_rates, dtype=float)
    losses = np.asarray(curve.losses, dtype=float)
    smoothed = np.asarray(curve.smoothed_losses, dtype=float)
    figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(rates, losses, color="#a9c1dc", linewidth=1, label="loss per step")
    axes.plot(rates, smoothed, color="#1f4e79", linewidth=2.2, label="smoothed loss")
    if len(rates):
        lowest = int(np.argmin(smoothed))
        axes.plot(rates[lowest], smoothed[lowest], "o", color="#1f4e79", markersize=7,
                  label=f"lowest smoothed loss, at {_format_rate(rates[lowest])}")
        # The blown-up tail would squash the useful part: cap the axis a little above the start.
        top = max(smoothed[: lowest + 1].max(), losses[: lowest + 1].max()) * 1.2
        bottom = min(smoothed.min(), losses[: lowest + 1].min())
        axes.set_ylim(max(0.0, bottom - 0.08 * (top - bottom)), top)
    if suggestion is not None:
        axes.axvline(suggestion, color="#c0392b", linestyle="--", linewidth=1.5)
        if len(rates):
            at = np.interp(np.log10(suggestion), np.log10(rates), smoothed)
            axes.plot(suggestion, at, "o", color="#c0392b", markersize=7,
                      label=f"suggested rate, {_format_rate(suggestion, digits=1)}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate of the head (log scale)")
    axes.set_ylabel("training loss")
    figure.suptitle(f"Learning-rate range test{': ' + title if title else ''}", fontsize=12)
    if reason:
        lines = math.ceil(len(reason) / 115)  # as many lines as needed, of even length: no orphaned word
        axes.set_title("\n".join(textwrap.wrap(reason, math.ceil(len(reason) / lines) + 8)), fontsize=9,
                       color="#444444")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower left", frameon=True, framealpha=0.9, edgecolor="none")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write(path, lambda temp: temp.write_bytes(buffer.getvalue()))


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


def _round_rate(rate: float) -> float:
    """One significant digit: 2.6e-3 -> 3e-3."""
    return float(f"{rate:.0e}")


def _format_rate(rate: float, *, digits: int = 2) -> str:
    """``2.1e-3`` (``digits`` significant digits), without the exponent's leading zeros and plus sign."""
    mantissa, exponent = f"{rate:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"

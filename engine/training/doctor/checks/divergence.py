"""The ``divergence`` check: stops a run whose loss is not finite or has grown far past its start."""

from __future__ import annotations

import math
import statistics
from collections import deque

from engine.training.callback import CancelFit, LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.rates import format_rate, nice_rate
from engine.training.doctor.registry import register_check


@register_check
class Divergence(DoctorCheck):
    """Stops the run when the loss is not finite or has grown ``divergence_factor`` times its start.

    The start is the first step's loss, but never less than ln C: a run that starts below
    chance (resumed, or a second stage) must not be stopped for noise around a small value.
    The current loss is the median of the last three steps, so one bad batch of a healthy
    run cannot trip it. Losses are judged where the loop reads them back from the device
    (every ``Loop.sync_every`` steps), so a real divergence stops at the first sync point
    after crossing the limit. It raises the diagnosis, then ``CancelFit("diverged")``; the
    run saves ``last``.
    """

    name = "divergence"
    default = True
    title = "Training diverged"
    description = (
        "Stops the run, with a 'last' checkpoint, when the loss becomes NaN or infinite or grows to "
        "doctor.divergence_factor times its starting value, and suggests a learning rate ten times lower."
    )

    SMOOTHING_BATCHES = 3

    def before_fit(self, state: LoopState) -> None:
        self._baseline: float | None = None
        self._recent: deque[float] = deque(maxlen=self.SMOOTHING_BATCHES)

    def after_sync(self, state: LoopState) -> None:
        for reading in state.losses:
            self._judge(state, reading.loss)

    def _judge(self, state: LoopState, loss: float) -> None:
        chance = math.log(max(self.context.num_classes, 2))
        if self._baseline is None:
            self._baseline = max(loss, chance) if math.isfinite(loss) else chance
        if not math.isfinite(loss):
            self._stop(state, loss, loss)
        self._recent.append(loss)
        smoothed = statistics.median(self._recent)
        if smoothed > self.settings.divergence_factor * self._baseline:
            self._stop(state, loss, smoothed)

    def _stop(self, state: LoopState, loss: float, smoothed: float) -> None:
        rate = self.context.config.optim.learning_rate
        lower = nice_rate(rate / 10)
        baseline = self._baseline or 0.0
        stopped = (f"so the run was stopped after {state.step} steps (its last weights are in the 'last' "
                   "checkpoint)")
        if math.isfinite(loss):
            seen = (f"The training loss reached {smoothed:.4g} (median of the last {len(self._recent)} batches), "
                    f"{smoothed / baseline:.0f}x its starting value of {baseline:.3g} and past the limit of "
                    f"{self.settings.divergence_factor:g}x: training has diverged, {stopped}.")
        else:
            seen = f"The training loss became {loss} at step {state.step}: the weights have blown up, {stopped}."
        message = (f"{seen} The usual cause is a learning rate too high for this model: lower it from "
                   f"{format_rate(rate)} to {format_rate(lower)}.")
        self.raise_diagnosis(state, self.diagnose(
            "error", message,
            evidence={"loss": loss, "smoothed_loss": smoothed, "initial_loss": baseline,
                      "divergence_factor": self.settings.divergence_factor, "steps": state.step,
                      "learning_rate": float(state.optimizer.param_groups[0]["lr"])},
            fix={"optim.learning_rate": lower},
        ), kind="diverged")
        raise CancelFit("diverged", message)

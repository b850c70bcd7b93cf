"""The ``learning_rate_too_low`` check: a loss that stays flat from the start of training."""

from __future__ import annotations

import math
import statistics

from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.rates import RateWatch, format_rate, nice_rate
from engine.training.doctor.registry import register_check


@register_check
class LearningRateTooLow(DoctorCheck):
    """Warns when the loss has not moved from its start after ``flat_window`` steps.

    The window starts with the run, so a loss that fell and then levelled off (a model
    that has learnt) is never called flat. The start and end levels are the means of the
    window's first and last quarters; the loss counts as flat when it fell by less than
    5 %, and still would with the quarters' noise (two standard errors) in its favour.
    Healthy demo runs fall by 60-95 % over their first 100 steps; rate 1e-5 falls 2 %,
    1e-7 not at all.

    While the schedule is still warming up the rate is low on purpose, so the decision
    waits for the warmup to end. A run shorter than the window is judged over all its
    steps at its last step, if it has at least ``MIN_STEPS``.
    """

    name = "learning_rate_too_low"
    default = True
    title = "Learning rate too low"
    description = (
        "Warns when the loss has stayed flat for doctor.flat_window steps from the start of training "
        "(or the whole run, if shorter): the weights barely move, so the learning rate is too low. "
        "Suggests a rate 10-30x higher, or the LR finder's suggestion."
    )

    MIN_STEPS = 20
    MAX_RELATIVE_CHANGE = 0.05
    NOISE_STANDARD_ERRORS = 2.0
    # No movement at all (< 1 %) calls for a bigger jump than a little movement.
    STILL_RELATIVE_CHANGE = 0.01

    def before_fit(self, state: LoopState) -> None:
        planned = (state.num_epochs - state.start_epoch + 1) * state.steps_per_epoch
        self._window = min(self.settings.flat_window, planned)
        self._last_step = state.step + planned
        self._active = state.step == 0 and self._window >= self.MIN_STEPS
        self._losses: list[float] = []
        self._rates = RateWatch()

    def before_step(self, state: LoopState) -> None:
        if self._active:
            self._rates.observe(state.optimizer, state.step + 1)

    def after_sync(self, state: LoopState) -> None:
        for reading in state.losses:
            if self._active:
                self._add(state, reading.loss, reading.step)

    def _add(self, state: LoopState, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            self._active = False
            return
        self._losses.append(loss)
        rising = self._rates.at(step).rising
        if len(self._losses) < self._window:
            return
        if rising and step < self._last_step:
            return  # still warming up: the rate is low on purpose
        self._active = False
        self._judge(state)

    def _judge(self, state: LoopState) -> None:
        losses = self._losses
        quarter = max(3, self._window // 4)
        start, end = losses[:quarter], losses[-quarter:]
        start_level, end_level = statistics.fmean(start), statistics.fmean(end)
        if start_level <= 0:
            return
        change = (start_level - end_level) / start_level
        noise = math.sqrt(statistics.pvariance(start) / len(start) + statistics.pvariance(end) / len(end))
        noise /= start_level
        flat = -self.MAX_RELATIVE_CHANGE < change < self.MAX_RELATIVE_CHANGE - self.NOISE_STANDARD_ERRORS * noise
        if not flat:
            return
        rate = self.context.config.optim.learning_rate
        factor = 30 if change < self.STILL_RELATIVE_CHANGE else 10
        finder = self.context.suggested_learning_rate
        if finder is not None and finder > rate:
            suggestion, how = finder, "the LR finder's suggestion"
        else:
            suggestion, how = nice_rate(rate * factor), f"{factor}x higher"
        message = (
            f"The loss stayed flat for {len(losses)} steps: {start_level:.3f} at the start, {end_level:.3f} now "
            f"({change:.1%} lower; a learning run falls far more in that time). At the learning rate "
            f"{format_rate(rate)} each step moves the weights too little. Try {format_rate(suggestion)} ({how})"
            + ("." if finder is not None and finder > rate else ", or let the LR finder suggest one.")
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"steps": len(losses), "start_loss": start_level, "end_loss": end_level,
                      "relative_change": change, "noise": noise, "learning_rate": rate,
                      "suggested_learning_rate": suggestion},
            fix={"optim.learning_rate": suggestion},
        ), kind="flat")

"""The ``bad_start`` check: a loss that sat at its start for a while, then fell suddenly (a hockey stick)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.rates import RateWatch, StepRates, format_rate
from engine.training.doctor.registry import register_check


@register_check
class BadStart(DoctorCheck):
    """Warns when the loss sat at its starting level for a while, then fell suddenly (a hockey stick).

    The plateau ends when the 5-batch mean falls 5 % below the start (the median of the
    first 5 losses); it must have lasted at least ``MIN_PLATEAU`` steps (healthy demo runs:
    4-8 steps; rate 1e-4, a slow but steady learner, about 20). The fall is sudden when,
    within half the plateau's length after it, the loss is 25 % below the start: at least
    ten times the plateau's pace. If the rate was still warming up when the loss began to
    fall, the warmup's low start is the suspect and the diagnosis is ``info`` (the run is
    sound, it wastes steps); otherwise the initialisation is, and it is a ``warning``.
    """

    name = "bad_start"
    default = True
    title = "Slow start"
    description = (
        "Warns when the loss stayed flat for a while and then fell suddenly: a sign of a poor "
        "initialisation (weights too small, units saturated) or of a warmup that starts too low."
    )

    SMOOTHING = 5
    START_DROP = 0.05
    MIN_PLATEAU = 20
    FALL = 0.25

    def before_fit(self, state: LoopState) -> None:
        self._active = state.step == 0
        self._losses: list[float] = []
        self._rates = RateWatch()
        self._plateau: int | None = None
        self._warming_up_at_fall = False
        self._rate_at_fall = 0.0

    def before_step(self, state: LoopState) -> None:
        if self._active:
            self._rates.observe(state.optimizer, state.step + 1)

    def after_sync(self, state: LoopState) -> None:
        for reading in state.losses:
            if self._active:
                self._judge(state, reading.loss, self._rates.at(reading.step))

    def _judge(self, state: LoopState, loss: float, rates: StepRates) -> None:
        if not math.isfinite(loss):
            self._active = False
            return
        self._losses.append(loss)
        count = len(self._losses)
        if count < self.SMOOTHING:
            return
        start = statistics.median(self._losses[: self.SMOOTHING])
        level = statistics.fmean(self._losses[-self.SMOOTHING:])
        if self._plateau is None:
            if level < (1 - self.START_DROP) * start:
                self._plateau = count
                self._active = count >= self.MIN_PLATEAU
                self._warming_up_at_fall = rates.rising
                self._rate_at_fall = max(rates.rates.values(), default=0.0)
            return
        if count < self._plateau + max(self.SMOOTHING, self._plateau // 2):
            return
        self._active = False
        if level <= (1 - self.FALL) * start:
            self._raise(state, start, level, count - self._plateau)

    def _raise(self, state: LoopState, start: float, level: float, fall_steps: int) -> None:
        optim = self.context.config.optim
        seen = (f"The loss sat near {start:.3f} for {self._plateau} steps, then fell to {level:.3f} within "
                f"{fall_steps} steps.")
        severity = "warning"
        if self._warming_up_at_fall and optim.warmup_epochs > 0:
            severity = "info"
            shorter = round(optim.warmup_epochs / 2, 2)
            fix: dict[str, Any] = {"optim.warmup_epochs": shorter}
            message = (f"{seen} It only started to fall as the warming-up learning rate reached "
                       f"{format_rate(self._rate_at_fall)}: the warmup starts too low for this run and wastes its "
                       f"first steps. Shorten it (optim.warmup_epochs: {optim.warmup_epochs:g} -> {shorter:g}), "
                       "and if the flat start remains, check the initialisation of any layer you added.")
        else:
            fix = {}
            message = (f"{seen} A long flat start followed by a sudden fall is the mark of a poor initialisation: "
                       "layers initialised too small (or saturated) pass on tiny gradients until their weights "
                       "grow. Check the initialisation of any layer you added (Kaiming for ReLU layers, a zero "
                       "output layer) and that inputs are normalised.")
        self.raise_diagnosis(state, self.diagnose(
            severity, message,
            evidence={"plateau_steps": self._plateau or 0, "start_loss": start, "loss_after_fall": level,
                      "fall_steps": fall_steps, "learning_rate_at_fall": self._rate_at_fall,
                      "in_warmup": self._warming_up_at_fall},
            fix=fix,
        ), kind="bad_start")

"""The ``learning_rate_collapsed`` check: a schedule that reached its bottom with much of the run to go."""

from __future__ import annotations

import math
import statistics
from collections import deque

from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck
from engine.training.doctor.rates import RateWatch, format_rate
from engine.training.doctor.registry import register_check


@register_check
class LearningRateCollapsed(DoctorCheck):
    """Warns when the learning rate has collapsed to a sliver of its peak with much of the run still to go.

    A schedule should spend the run decaying towards its end. One that reaches the bottom
    early (a step schedule stepping too often or too deep, a decay counted over too few
    updates) leaves every later update too small to change the weights: the run goes on but
    has stalled, and ends about where it was when the rate fell. The loss-based checks miss
    it, because the loss had already fallen before the stall.

    The rate (of the fastest group, the head) counts as collapsed below ``COLLAPSED_SHARE``
    of its peak. It must stay there for ``max(one epoch, WINDOW_SHARE of the run, MIN_STEPS)``
    updates in a row while at least ``MIN_REMAINING_SHARE`` of the run is still ahead. Healthy
    schedules never do: cosine is below 0.5 % of its peak only in its last 4.5 % of updates;
    the default step schedule (x0.1 every 3 epochs) holds 1 % from epoch 7 and 0.1 % only in
    the last epoch of 10; warmup starts at 1 %; ``cosine_restarts`` touches its floor for 4.5 %
    of each cycle, never a whole window. On the demo (130 steps), a cosine decay that reaches its
    floor of 1e-6 (0.03 % of the peak) ten updates after warmup is caught at step 36 with 94 steps
    to go, and a step schedule that steps every epoch at step 65 with 65 to go.
    """

    name = "learning_rate_collapsed"
    default = True
    title = "Learning rate collapsed"
    description = (
        "Warns when the learning rate has stayed below 0.5% of its peak for an epoch (or 5% of the run) while "
        "a quarter of the run or more is still ahead: the schedule decayed far too early, so the weights barely "
        "move and the rest of the run is wasted. Suggests a schedule that decays over the whole run."
    )

    COLLAPSED_SHARE = 0.005
    MIN_REMAINING_SHARE = 0.25
    WINDOW_SHARE = 0.05
    MIN_STEPS = 10

    def before_fit(self, state: LoopState) -> None:
        per_epoch = state.steps_per_epoch
        self._total = state.num_epochs * per_epoch
        self._last_step = state.step + (state.num_epochs - state.start_epoch + 1) * per_epoch
        self._window = max(per_epoch, math.ceil(self.WINDOW_SHARE * self._total), self.MIN_STEPS)
        self._rates = RateWatch()
        self._collapsed_since: int | None = None
        self._before: deque[float] = deque(maxlen=self._window)  # losses of the steps before the collapse
        self._losses: list[float] = []  # and since

    def before_step(self, state: LoopState) -> None:
        self._rates.observe(state.optimizer, state.step + 1)

    def after_sync(self, state: LoopState) -> None:
        for reading in state.losses:
            rates = self._rates.at(reading.step)
            # Raised once per run, whatever the stage.
            if not self.diagnoses and self._rates.peak:
                self._judge(state, reading.loss, reading.step, rates.rates)

    def _judge(self, state: LoopState, loss: float, step: int, rates: dict[str, float]) -> None:
        fastest = max(self._rates.peak, key=self._rates.peak.__getitem__)
        rate, peak = rates.get(fastest, 0.0), self._rates.peak[fastest]
        if peak <= 0 or rate >= self.COLLAPSED_SHARE * peak:
            self._collapsed_since, self._losses = None, []
            self._before.append(loss)
            return
        if self._collapsed_since is None:
            self._collapsed_since = step
        self._losses.append(loss)
        remaining = self._last_step - step
        if len(self._losses) >= self._window and remaining >= self.MIN_REMAINING_SHARE * self._total:
            self._raise(state, rate, peak, remaining)

    def _raise(self, state: LoopState, rate: float, peak: float, remaining: int) -> None:
        optim = self.context.config.optim
        now = statistics.fmean(self._losses)
        before = statistics.fmean(self._before) if self._before else now
        if optim.schedule == "step":
            every = f"{optim.step_epochs:g} epoch{'' if optim.step_epochs == 1 else 's'}"
            cause = (f"The step schedule multiplies the rate by {optim.step_factor:g} every {every}, which brings "
                     f"it to the bottom long before the {optim.epochs}-epoch run ends.")
        else:
            cause = (f"The {optim.schedule} schedule should take the whole run to decay, but reached its bottom "
                     f"with {remaining} updates still to go.")
        schedule = "linear" if optim.schedule == "cosine" else "cosine"
        message = (
            f"The learning rate fell to {format_rate(rate)} at step {self._collapsed_since}, "
            f"{100 * rate / peak:.2g} % of its peak of {format_rate(peak)}, and has stayed there for "
            f"{len(self._losses)} steps, with {remaining} of the run's {self._total} steps still ahead. At this rate "
            f"the weights barely move, so the run has stalled: the training loss averaged {now:.3f} over those "
            f"steps ({before:.3f} over as many before), and the remaining epochs will change little. {cause} Use a "
            f"schedule that decays over the whole run (optim.schedule: {schedule})."
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"learning_rate": rate, "peak_learning_rate": peak, "share_of_peak": rate / peak,
                      "collapsed_at_step": self._collapsed_since, "steps_collapsed": len(self._losses),
                      "steps_remaining": remaining, "total_steps": self._total, "loss_before": before,
                      "loss_now": now, "schedule": optim.schedule},
            fix={"optim.schedule": schedule},
        ), kind="collapsed")

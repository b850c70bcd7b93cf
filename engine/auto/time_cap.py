"""A run's share of the Auto budget: a loop callback that ends the fit, cleanly, when its time is up.

The run config has no time limit of its own, so Auto passes this callback to
``engine.training.train.train``. It stops at an epoch boundary when the next epoch, as long as
the last one took, would end past the deadline (the finished epochs are checkpointed, ``best``
included), and at the next batch once the deadline itself has passed. The run then ends
``cancelled`` with reason ``budget``, a stopped run like any other: ``main.py train --resume``
could train it further.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.training.callback import Callback, CancelFit, LoopState

BUDGET_REASON = "budget"


class TimeCap(Callback):
    """Raises ``CancelFit("budget")`` before an epoch that would not end in time, or once time is up.

    Args:
        deadline: ``clock()`` value by which the run must end.
        clock: seconds, monotonic (a test may pass its own).

    Attributes:
        fits: each fit's (each stage's) finished epochs, in seconds, hooks and checkpoints included.
    """

    order = 1000  # after every other callback's epoch hooks: an epoch's duration includes its checkpoints

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self.clock = clock
        self.fits: list[list[float]] = []
        self._epoch_started: float | None = None

    def before_fit(self, state: LoopState) -> None:
        # A two_stage run's stages differ in speed by orders of magnitude: each fit is timed on its own.
        self.fits.append([])
        self._epoch_started = None

    def before_epoch(self, state: LoopState) -> None:
        now = self.clock()
        epochs = self.fits[-1]
        if self._epoch_started is not None:
            epochs.append(now - self._epoch_started)
        self._epoch_started = None
        if now >= self.deadline or (epochs and now + epochs[-1] > self.deadline):
            raise CancelFit(BUDGET_REASON, self._message(now, epochs[-1] if epochs else None))
        self._epoch_started = now

    def before_batch(self, state: LoopState) -> None:
        now = self.clock()
        if now >= self.deadline:
            self._epoch_started = None  # a cut epoch is no measure of an epoch
            raise CancelFit(BUDGET_REASON, self._message(now, None))

    def after_fit(self, state: LoopState) -> None:
        if self._epoch_started is not None and state.cancel_reason is None:
            self.fits[-1].append(self.clock() - self._epoch_started)
        self._epoch_started = None

    def _message(self, now: float, last_epoch: float | None) -> str:
        if last_epoch is None or now >= self.deadline:
            return "Auto's time for this step is up"
        return (f"Auto's time for this step ends in {self.deadline - now:.0f}s, and an epoch takes "
                f"~{last_epoch:.0f}s")

    def epoch_seconds(self) -> float | None:
        """Mean seconds of the latest fit's epochs after its first (which also decodes every photo), if any."""
        epochs = self.fits[-1] if self.fits else []
        steady = epochs[1:] or epochs
        return sum(steady) / len(steady) if steady else None

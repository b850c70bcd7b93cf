"""The learning-rate schedule: a timm scheduler stepped once per optimizer update."""

from __future__ import annotations

from typing import Any

from engine.training.callback import Callback, LoopState


class LRSchedule(Callback):
    """Steps a timm scheduler once per optimizer update (``t_in_epochs=False``).

    The schedule's clock counts updates since ``first_epoch`` (a ``two_stage`` run's
    second stage has a schedule of its own), derived from the epoch and the updates within
    it so that a resumed run lands on exactly the rate it left.
    """

    order = -50

    def __init__(self, scheduler: Any, first_epoch: int = 1) -> None:
        self.scheduler = scheduler
        self.first_epoch = first_epoch

    def before_fit(self, state: LoopState) -> None:
        self.scheduler.step_update((state.start_epoch - self.first_epoch) * state.steps_per_epoch)

    def after_step(self, state: LoopState) -> None:
        self.scheduler.step_update((state.epoch - self.first_epoch) * state.steps_per_epoch + state.epoch_step)

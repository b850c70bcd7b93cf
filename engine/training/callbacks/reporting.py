"""Progress in the run folder: the events of epochs and batches, ``metrics.csv`` and ``status.json``."""

from __future__ import annotations

import statistics
from typing import Any

from engine.core.events import BatchFinished, BatchSizeChanged, EpochFinished, EpochStarted
from engine.training.callback import EPOCH_METRICS, Callback, LoopState
from engine.training.callbacks.metrics import is_finite_number
from engine.training.runfolder import RunFolder


class EventReporter(Callback):
    """Writes progress events, ``metrics.csv`` and ``status.json`` as the run goes.

    A ``batch_finished`` event is written at each of the loop's sync points (every
    ``Loop.sync_every`` steps and at the end of each training pass), with the mean
    training loss of the steps since the previous one, and a ``batch_size_changed`` event
    when the loop splits its batches after running out of memory.

    Args:
        run_folder: the run's folder.
        history: earlier epochs' rows, when resuming.
    """

    order = 50

    def __init__(self, run_folder: RunFolder, *, history: list[dict] | None = None) -> None:
        self.run_folder = run_folder
        self.rows = list(history or [])

    def before_epoch(self, state: LoopState) -> None:
        self.run_folder.write_event(
            EpochStarted.event, epoch=state.epoch, step=state.step,
            num_epochs=state.num_epochs, batches=state.batches_per_epoch,
        )
        self.run_folder.write_status("running", epoch=state.epoch, num_epochs=state.num_epochs)

    def after_sync(self, state: LoopState) -> None:
        if not state.losses:
            return
        last = state.losses[-1]
        self.run_folder.write_event(
            BatchFinished.event, epoch=last.epoch, step=last.step, batch=last.batch_index + 1,
            batches=state.batches_per_epoch, train_loss=statistics.fmean(entry.loss for entry in state.losses),
            learning_rate=last.learning_rate,
        )

    def after_batch_size_changed(self, state: LoopState) -> None:
        micro, previous = state.micro_batch_size or state.batch_size, state.previous_micro_batch_size or 0
        effective = state.batch_size * state.accumulate_steps
        message = (f"The device ran out of memory with {previous} images per pass, so each batch of "
                   f"{state.batch_size} now goes through the model {micro} images at a time. Their gradients add "
                   "up before each step, so the effective batch and the learning rate stay the same; "
                   "steps take a little longer.")
        self.run_folder.write_event(
            BatchSizeChanged.event, epoch=state.epoch, step=state.step, micro_batch_size=micro,
            previous_micro_batch_size=previous, batch_size=state.batch_size, effective_batch_size=effective,
            reason="out of memory", message=message,
        )

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {"epoch": state.epoch})
        self.rows.append(row)
        self.run_folder.write_metrics(self.rows)
        self.run_folder.write_event(EpochFinished.event, epoch=state.epoch, step=state.step, metrics=_clean(row))


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """The values of a metrics row that JSON keeps: finite numbers, None and the per-class dicts."""
    return {
        key: value for key, value in row.items() if value is None or is_finite_number(value) or isinstance(value, dict)
    }

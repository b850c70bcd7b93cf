"""Progress in the run folder: the events of epochs and batches, ``metrics.csv`` and ``status.json``."""

from __future__ import annotations

from typing import Any

from engine.core.events import BatchFinished, EpochFinished, EpochStarted
from engine.training.callback import EPOCH_METRICS, Callback, LoopState
from engine.training.callbacks.metrics import is_finite_number
from engine.training.runfolder import RunFolder


class EventReporter(Callback):
    """Writes progress events, ``metrics.csv`` and ``status.json`` as the run goes.

    Args:
        run_folder: the run's folder.
        every_steps: write a ``batch_finished`` event every this many optimizer steps.
        history: earlier epochs' rows, when resuming.
    """

    order = 50

    def __init__(self, run_folder: RunFolder, *, every_steps: int = 10, history: list[dict] | None = None) -> None:
        self.run_folder = run_folder
        self.every_steps = max(1, every_steps)
        self.rows = list(history or [])
        self._loss_sum = 0.0
        self._loss_count = 0

    def before_epoch(self, state: LoopState) -> None:
        self.run_folder.write_event(
            EpochStarted.event, epoch=state.epoch, step=state.step,
            num_epochs=state.num_epochs, batches=state.batches_per_epoch,
        )
        self.run_folder.write_status("running", epoch=state.epoch, num_epochs=state.num_epochs)

    def after_step(self, state: LoopState) -> None:
        assert state.loss is not None
        loss = float(state.loss.detach())
        self._loss_sum += loss
        self._loss_count += 1
        if state.step % self.every_steps == 0 or state.batch_index == state.batches_per_epoch - 1:
            self.run_folder.write_event(
                BatchFinished.event, epoch=state.epoch, step=state.step, batch=state.batch_index + 1,
                batches=state.batches_per_epoch, train_loss=self._loss_sum / self._loss_count,
                learning_rate=state.optimizer.param_groups[0]["lr"],
            )
            self._loss_sum, self._loss_count = 0.0, 0

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

"""Checkpoints: ``last`` after every epoch and on a clean stop, ``best`` when the monitored metric improves."""

from __future__ import annotations

import math
import time
from typing import Any

from torch import nn

from engine.core.errors import CheckpointError
from engine.core.events import CheckpointSaved
from engine.models.checkpoint import read_checkpoint_metadata, save_checkpoint
from engine.training.callback import EPOCH_METRICS, Callback, LoopState
from engine.training.callbacks.metrics import is_finite_number
from engine.training.runfolder import RunFolder


class CheckpointSaver(Callback):
    """Saves ``last`` after every epoch and on a clean stop, and ``best`` when the monitored metric improves.

    An epoch that equals the best accuracy improves on it when its validation loss is lower
    (on a few hundred validation images top-1 often ties, and the lower loss is the surer
    model). The tie-breaker of the best epoch before a resume is read from the ``best``
    checkpoint's metrics.

    Args:
        run_folder: where checkpoints go.
        model: the module whose weights are saved (the whole network, even when only its head trains).
        metadata: facts every checkpoint carries (classes, backbone, data settings...).
        monitor: metric of the epoch row to maximise (``val_top1``); falls back to lowest ``val_loss``.
        best_value: the best score of earlier epochs when resuming.
        best_epoch: the epoch that scored it.
    """

    order = 40

    def __init__(
        self,
        run_folder: RunFolder,
        model: nn.Module,
        metadata: dict[str, Any],
        *,
        monitor: str = "val_top1",
        best_value: float | None = None,
        best_epoch: int | None = None,
    ) -> None:
        self.run_folder = run_folder
        self.model = model
        self.metadata = metadata
        self.monitor = monitor
        self.best_value = best_value  # a score: higher is better
        self.best_epoch = best_epoch
        # Breaks a tie in best_value (higher is better): minus the best epoch's validation loss.
        self.best_tie_breaker = self._resumed_tie_breaker() if best_value is not None else -math.inf

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {})
        self._save("last", state, completed_epoch=state.epoch, metrics=row)
        value = self._score(row)
        if value is None:
            return
        tie_breaker = self._tie_breaker(row)
        if self.best_value is None or (value, tie_breaker) > (self.best_value, self.best_tie_breaker):
            self.best_value, self.best_tie_breaker, self.best_epoch = value, tie_breaker, state.epoch
            self._save("best", state, completed_epoch=state.epoch, metrics=row)

    def after_cancel_fit(self, state: LoopState) -> None:
        # The interrupted epoch is incomplete: resuming repeats it, from these weights.
        self._save("last", state, completed_epoch=state.epoch - 1, metrics={}, stopped=state.cancel_reason)

    def _score(self, row: dict[str, Any]) -> float | None:
        """Higher is better: the monitored accuracy, or minus the validation loss."""
        if self.monitor != "val_loss" and row.get(self.monitor) is not None:
            return float(row[self.monitor])
        if row.get("val_loss") is not None:
            return -float(row["val_loss"])
        return None

    def _tie_breaker(self, row: dict[str, Any]) -> float:
        """Higher is better, between epochs of equal score: minus the validation loss when the score is an
        accuracy (an epoch without a finite loss ranks below every epoch with one)."""
        if self.monitor == "val_loss" or row.get(self.monitor) is None or not is_finite_number(row.get("val_loss")):
            return -math.inf
        return -float(row["val_loss"])

    def _resumed_tie_breaker(self) -> float:
        """The tie-breaker of the best epoch before a resume, from the ``best`` checkpoint's metrics."""
        path = self.run_folder.checkpoint_path("best")
        if not path.is_file():
            return -math.inf
        try:
            metrics = read_checkpoint_metadata(path).get("metrics") or {}
        except CheckpointError:
            return -math.inf  # a damaged best: the next tie replaces it
        return self._tie_breaker(metrics)

    def _save(
        self, name: str, state: LoopState, *, completed_epoch: int, metrics: dict, stopped: str | None = None
    ) -> None:
        if not self.run_folder.writes:
            return  # another rank of a distributed run saves
        metadata = {
            **self.metadata,
            "name": name,
            "epoch": completed_epoch,
            "step": state.step,
            "metrics": {key: value for key, value in metrics.items() if is_finite_number(value)},
            "score": self._score(metrics),
            "stopped": stopped,
            "saved": time.time(),
        }
        path = save_checkpoint(
            self.run_folder.checkpoint_path(name),
            model_state=self.model.state_dict(),
            metadata=metadata,
            optimizer_state=state.optimizer.state_dict() if name == "last" else None,
        )
        self.run_folder.write_event(
            CheckpointSaved.event, epoch=completed_epoch, step=state.step, name=name, path=path,
            metric=self.monitor, value=self._score(metrics),
        )

"""A progress bar on an interactive terminal: a tqdm bar per epoch and one summary line after it."""

from __future__ import annotations

import sys
from typing import Any

from engine.training.callback import EPOCH_METRICS, Callback, LoopState


class ProgressBar(Callback):
    """A tqdm bar per epoch on an interactive terminal."""

    order = 60

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None

    def before_train(self, state: LoopState) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=state.batches_per_epoch, desc=f"epoch {state.epoch}/{state.num_epochs}",
            unit="batch", file=self.stream, leave=False,
        )

    def after_batch(self, state: LoopState) -> None:
        if self._bar is not None and state.training:
            self._bar.update(1)

    def after_sync(self, state: LoopState) -> None:
        if self._bar is not None and state.losses:
            self._bar.set_postfix(loss=f"{state.losses[-1].loss:.4f}")

    def after_train(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {})
        parts = [f"epoch {state.epoch}/{state.num_epochs}"]
        for key in ("train_loss", "val_loss", "val_top1"):
            if row.get(key) is not None:
                parts.append(f"{key} {row[key]:.4f}")
        print("  ".join(parts), file=self.stream, flush=True)

    after_cancel_fit = after_train

"""Per-epoch metrics: loss and accuracies of both passes, gathered batch by batch into one row per epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from engine.training.callback import EPOCH_METRICS, Callback, LoopState

# The sums an epoch's row is made of, in the order ranks exchange them.
_SUM_KEYS = (
    "train_count", "train_loss", "train_top1", "train_hard_count", "train_skipped",
    "val_count", "val_loss", "val_top1", "val_hard_count", "val_top5", "val_skipped",
)


class MetricsRecorder(Callback):
    """Per-epoch training and validation metrics: loss, top-1, top-5, per-class accuracy.

    Publishes the finished epoch's row in ``state.scratch["epoch_metrics"]`` and keeps
    every row in ``history``. The metrics average over the images that decoded;
    ``train_skipped`` and ``val_skipped`` say how many the epoch left out.

    Args:
        class_names: the classes, in index order.
        history: earlier epochs' rows, when resuming.
        reduce: in a distributed run, sums a tensor over all ranks; every rank then computes
            the row of the whole epoch (rank 0's validation, every rank's training).
        skipped_counts: images left out of the latest pass over each split (``train``, ``val``),
            read after each epoch (``SkippedImages.counts``), or None.
    """

    order = 10

    def __init__(
        self,
        class_names: list[str],
        history: list[dict[str, Any]] | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        skipped_counts: Mapping[str, int] | None = None,
    ) -> None:
        self.class_names = class_names
        self.history = list(history or [])
        self.reduce = reduce
        self.skipped_counts = skipped_counts if skipped_counts is not None else {}
        self._sums: dict[str, float] = {}
        self._epoch_started = 0.0
        # Sums kept on the model's device and read once per epoch: reading them per batch would
        # make the host wait for the GPU at every step. Per split: loss x count, top-1, top-5 hits.
        self._device_sums: dict[str, torch.Tensor] = {}
        self._per_class_correct = torch.zeros(len(class_names))
        self._per_class_total = torch.zeros(len(class_names))

    def before_epoch(self, state: LoopState) -> None:
        self._epoch_started = time.perf_counter()
        self._sums = {}
        self._device_sums = {}
        self._per_class_correct = torch.zeros(len(self.class_names))
        self._per_class_total = torch.zeros(len(self.class_names))

    def after_batch(self, state: LoopState) -> None:
        if state.loss is None or state.outputs is None or state.targets is None:
            return
        prefix = "train" if state.training else "val"
        count = len(state.targets)
        self._add(f"{prefix}_count", count)
        loss = state.loss.detach().float() * count
        if state.targets.dim() != 1:  # soft targets (mixup): accuracy is undefined
            self._add_on_device(prefix, torch.stack([loss, torch.zeros_like(loss), torch.zeros_like(loss)]))
            return
        logits, targets = state.outputs.detach().float(), state.targets
        correct = logits.argmax(dim=1) == targets
        self._add(f"{prefix}_hard_count", count)
        top_k = logits.topk(min(5, logits.shape[1]), dim=1).indices
        in_top_k = (top_k == targets[:, None]).any(dim=1)
        self._add_on_device(prefix, torch.stack([loss, correct.sum().float(), in_top_k.sum().float()]))
        if not state.training:
            device = targets.device
            if self._per_class_total.device != device:
                self._per_class_total = self._per_class_total.to(device)
                self._per_class_correct = self._per_class_correct.to(device)
            # index_add_, not bincount: bincount reads the largest label back to size its result.
            self._per_class_total.index_add_(0, targets, torch.ones_like(targets, dtype=torch.float))
            self._per_class_correct.index_add_(0, targets, correct.float())

    def _add_on_device(self, prefix: str, values: torch.Tensor) -> None:
        sums = self._device_sums.get(prefix)
        self._device_sums[prefix] = values if sums is None else sums + values

    def _read_device_sums(self) -> None:
        """Bring the epoch's device sums to the host, in one transfer per device."""
        for prefix, sums in self._device_sums.items():
            loss, top1, top5 = sums.tolist()
            self._add(f"{prefix}_loss", loss)
            self._add(f"{prefix}_top1", top1)
            if prefix == "val":
                self._add("val_top5", top5)
        self._per_class_correct = self._per_class_correct.cpu()
        self._per_class_total = self._per_class_total.cpu()

    def after_epoch(self, state: LoopState) -> None:
        self._read_device_sums()
        for prefix in ("train", "val"):
            self._sums[f"{prefix}_skipped"] = float(self.skipped_counts.get(prefix, 0))
        if self.reduce is not None:
            self._reduce_sums(self.reduce)
        row: dict[str, Any] = {"epoch": state.epoch}
        for prefix in ("train", "val"):
            row[f"{prefix}_skipped"] = int(self._sums[f"{prefix}_skipped"])
            count = self._sums.get(f"{prefix}_count", 0)
            row[f"{prefix}_loss"] = self._sums[f"{prefix}_loss"] / count if count else None
            hard = self._sums.get(f"{prefix}_hard_count", 0)  # batches with class indices, not mixed targets
            row[f"{prefix}_top1"] = self._sums.get(f"{prefix}_top1", 0) / hard if hard else None
        val_count = self._sums.get("val_count", 0)
        has_top5 = val_count and len(self.class_names) >= 5
        row["val_top5"] = self._sums.get("val_top5", 0) / val_count if has_top5 else None
        row["learning_rate"] = state.optimizer.param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - self._epoch_started
        if val_count:
            accuracy = self._per_class_correct / self._per_class_total.clamp(min=1)
            row["val_per_class_top1"] = {
                name: float(accuracy[index]) for index, name in enumerate(self.class_names)
                if self._per_class_total[index] > 0
            }
        self.history.append(row)
        state.scratch[EPOCH_METRICS] = row

    def _add(self, key: str, value: float) -> None:
        self._sums[key] = self._sums.get(key, 0.0) + value

    def _reduce_sums(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        # Validation sums come from rank 0 alone, plus zeros, so they are exactly one process's;
        # training sums add up every rank's share (float64 keeps the counts exact).
        local = torch.tensor([self._sums.get(key, 0.0) for key in _SUM_KEYS], dtype=torch.float64)
        totals = reduce(torch.cat([local, self._per_class_correct.double(), self._per_class_total.double()]))
        self._sums = {key: float(totals[index]) for index, key in enumerate(_SUM_KEYS)}
        classes = len(self.class_names)
        offset = len(_SUM_KEYS)
        self._per_class_correct = totals[offset : offset + classes].float()
        self._per_class_total = totals[offset + classes :].float()


def is_finite_number(value: Any) -> bool:
    """True for an int or float that is finite (a metric worth writing), False for bools, None, NaN and the rest."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""The standard callbacks of a run: stop requests, LR schedule, metrics, checkpoints, events, progress,
and the step-keeping of the ranks of a distributed run.

Each is one feature of the loop in ``engine.training.loop`` and knows nothing of the others
except through ``LoopState.scratch`` (metrics publish the finished epoch's row there).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from engine.models.checkpoint import save_checkpoint
from engine.training.distributed import SINGLE_PROCESS, DistributedContext
from engine.training.loop import Callback, CancelEpoch, CancelFit, LoopState
from engine.training.runfolder import RunFolder

EPOCH_METRICS = "epoch_metrics"

# What stopped a run, as ranks exchange it; the highest code any rank has wins.
_STOP_MESSAGES = {1: "stop requested", 2: "SIGTERM received", 3: "SIGINT received", 4: "the torchrun launcher is gone"}
_STOP_CODES = {"STOP": 1, "SIGTERM": 2, "SIGINT": 3, "ORPHANED": 4}


class StopWatcher(Callback):
    """Turns a ``STOP`` file, SIGTERM or Ctrl+C into a clean ``CancelFit("stopped")`` at the next batch.

    Signals are caught only inside ``installed()``, which the run wraps around all of
    its work, so a stop during feature extraction is as clean as one during an epoch.

    In a distributed run the ranks agree before each training batch and at the end of
    each epoch (any rank's signal, rank 0's ``STOP`` file), so that all of them stop at
    the same batch. Rank 0, validating alone, cuts validation short; the stop then
    follows at the epoch's end, as it would have in one process. Workers whose torchrun
    launcher was killed outright (SIGKILL, which it cannot pass on) stop the same way.

    Args:
        run_folder: the folder whose ``STOP`` file asks for a stop.
        distributed: this process's place in a distributed run.
    """

    order = -100

    def __init__(self, run_folder: RunFolder, distributed: DistributedContext = SINGLE_PROCESS) -> None:
        self.run_folder = run_folder
        self.distributed = distributed
        self.signalled: str | None = None
        # A worker outlives a killed launcher (torchrun starts it in a session of its own) and
        # is adopted by another process: a new parent means nobody waits for the run any more.
        self._launcher = os.getppid() if distributed.enabled else None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Catch SIGTERM and SIGINT while the block runs (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def check(self) -> None:
        """Raise ``CancelFit`` if a stop was asked for."""
        if self.signalled:
            raise CancelFit("stopped", f"{self.signalled} received")
        if self.run_folder.stop_requested():
            raise CancelFit("stopped", "stop requested")

    def before_batch(self, state: LoopState) -> None:
        if not self.distributed.enabled:
            self.check()
        elif state.training:
            self._agree()
        elif self._stop_code():
            raise CancelEpoch  # rank 0 validating alone: the others wait for the epoch's end

    def after_epoch(self, state: LoopState) -> None:
        if self.distributed.enabled:
            self._agree()

    def _stop_code(self) -> int:
        if self._launcher is not None and os.getppid() != self._launcher:
            return _STOP_CODES["ORPHANED"]
        if self.signalled:
            return _STOP_CODES.get(self.signalled, 2)
        return _STOP_CODES["STOP"] if self.run_folder.stop_requested() else 0

    def _agree(self) -> None:
        code = self.distributed.all_reduce_max(self._stop_code())
        if code:
            raise CancelFit("stopped", _STOP_MESSAGES[code])

    def _on_signal(self, number: int, _frame: object) -> None:
        self.signalled = signal.Signals(number).name


class LRSchedule(Callback):
    """Steps a timm scheduler once per optimizer update (``t_in_epochs=False``).

    The schedule's clock counts updates since ``first_epoch`` (a ``two_stage`` run's
    second stage has a schedule of its own), derived from epoch and batch index so that
    a resumed run lands on exactly the rate it left.
    """

    order = -50

    def __init__(self, scheduler: Any, first_epoch: int = 1) -> None:
        self.scheduler = scheduler
        self.first_epoch = first_epoch

    def before_fit(self, state: LoopState) -> None:
        self.scheduler.step_update((state.start_epoch - self.first_epoch) * state.batches_per_epoch)

    def after_step(self, state: LoopState) -> None:
        updates = (state.epoch - self.first_epoch) * state.batches_per_epoch + state.batch_index + 1
        self.scheduler.step_update(updates)


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
        self._per_class_correct = torch.zeros(len(class_names))
        self._per_class_total = torch.zeros(len(class_names))

    def before_epoch(self, state: LoopState) -> None:
        self._epoch_started = time.perf_counter()
        self._sums = {}
        self._per_class_correct.zero_()
        self._per_class_total.zero_()

    def after_batch(self, state: LoopState) -> None:
        if state.loss is None or state.outputs is None or state.targets is None:
            return
        prefix = "train" if state.training else "val"
        count = len(state.targets)
        logits = state.outputs.detach().float()
        self._add(f"{prefix}_count", count)
        self._add(f"{prefix}_loss", float(state.loss.detach()) * count)
        if state.targets.dim() != 1:
            return  # soft targets (mixup): accuracy is undefined
        targets = state.targets
        correct = logits.argmax(dim=1) == targets
        self._add(f"{prefix}_top1", float(correct.sum()))
        self._add(f"{prefix}_hard_count", count)
        if not state.training:
            k = min(5, logits.shape[1])
            top_k = logits.topk(k, dim=1).indices
            self._add("val_top5", float((top_k == targets[:, None]).any(dim=1).sum()))
            cpu_targets = targets.cpu()
            self._per_class_total += torch.bincount(cpu_targets, minlength=len(self.class_names)).float()
            self._per_class_correct += torch.bincount(
                cpu_targets[correct.cpu()], minlength=len(self.class_names)
            ).float()

    def after_epoch(self, state: LoopState) -> None:
        for prefix in ("train", "val"):
            self._sums[f"{prefix}_skipped"] = float(self.skipped_counts.get(prefix, 0))
        if self.reduce is not None:
            self._reduce_sums()
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

    def _reduce_sums(self) -> None:
        # Validation sums come from rank 0 alone, plus zeros, so they are exactly one process's;
        # training sums add up every rank's share (float64 keeps the counts exact).
        local = torch.tensor([self._sums.get(key, 0.0) for key in _SUM_KEYS], dtype=torch.float64)
        totals = self.reduce(torch.cat([local, self._per_class_correct.double(), self._per_class_total.double()]))
        self._sums = {key: float(totals[index]) for index, key in enumerate(_SUM_KEYS)}
        classes = len(self.class_names)
        offset = len(_SUM_KEYS)
        self._per_class_correct = totals[offset : offset + classes].float()
        self._per_class_total = totals[offset + classes :].float()


_SUM_KEYS = (
    "train_count", "train_loss", "train_top1", "train_hard_count", "train_skipped",
    "val_count", "val_loss", "val_top1", "val_hard_count", "val_top5", "val_skipped",
)


class CheckpointSaver(Callback):
    """Saves ``last`` after every epoch and on a clean stop, and ``best`` when the monitored metric improves.

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

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {})
        self._save("last", state, completed_epoch=state.epoch, metrics=row)
        value = self._score(row)
        if value is not None and (self.best_value is None or value > self.best_value):
            self.best_value, self.best_epoch = value, state.epoch
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
            "metrics": {key: value for key, value in metrics.items() if _is_number(value)},
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
            "checkpoint_saved", epoch=completed_epoch, step=state.step, name=name, path=path,
            metric=self.monitor, value=self._score(metrics),
        )


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
            "epoch_started", epoch=state.epoch, step=state.step,
            num_epochs=state.num_epochs, batches=state.batches_per_epoch,
        )
        self.run_folder.write_status("running", epoch=state.epoch, num_epochs=state.num_epochs)

    def after_step(self, state: LoopState) -> None:
        loss = float(state.loss.detach())
        self._loss_sum += loss
        self._loss_count += 1
        if state.step % self.every_steps == 0 or state.batch_index == state.batches_per_epoch - 1:
            self.run_folder.write_event(
                "batch_finished", epoch=state.epoch, step=state.step, batch=state.batch_index + 1,
                batches=state.batches_per_epoch, train_loss=self._loss_sum / self._loss_count,
                learning_rate=state.optimizer.param_groups[0]["lr"],
            )
            self._loss_sum, self._loss_count = 0.0, 0

    def after_epoch(self, state: LoopState) -> None:
        row = state.scratch.get(EPOCH_METRICS, {"epoch": state.epoch})
        self.rows.append(row)
        self.run_folder.write_metrics(self.rows)
        self.run_folder.write_event("epoch_finished", epoch=state.epoch, step=state.step, metrics=_clean(row))


class DistributedTraining(Callback):
    """Keeps the ranks of a distributed run in step: the DDP wrapper, each epoch's share, one loss for all.

    The loop's model runs inside ``DistributedDataParallel`` for the fit, rebuilt when
    gradual unfreezing changes which parameters train (DDP averages the gradients of
    those it was built with only). Before each epoch the training sampler learns the
    epoch, so that the ranks share out one new order. Each training batch's loss becomes
    the mean over all ranks' batches: checks that act on it (the doctor's divergence
    stop) then decide alike on every rank, and rank 0 reports the loss of the whole step.

    Args:
        distributed: this process's place in the run.
        sampler: the training sampler (with ``set_epoch``), or None.
    """

    order = -90  # before anything looks at the loss or runs the model

    def __init__(self, distributed: DistributedContext, sampler: Any = None) -> None:
        self.distributed = distributed
        self.sampler = sampler
        self.module: nn.Module | None = None
        self._wrapped_for: list[int] = []

    def before_fit(self, state: LoopState) -> None:
        self.module = state.model
        self._wrap(state)

    def before_epoch(self, state: LoopState) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(state.epoch)

    def before_train(self, state: LoopState) -> None:
        if self._trainable() != self._wrapped_for:
            self._wrap(state)  # every rank unfreezes at the same epoch, so all rebuild together

    def after_loss(self, state: LoopState) -> None:
        if not state.training or state.loss is None or state.targets is None:
            return
        count = float(len(state.targets))
        local = torch.stack([state.loss.detach().double() * count, state.loss.new_tensor(count, dtype=torch.float64)])
        totals = self.distributed.all_reduce_sum(local)
        mean = (totals[0] / totals[1]).to(state.loss.dtype)
        # The value becomes exactly the mean (x - x is 0) while the gradient stays this rank's
        # own loss's: DDP averages the gradients.
        state.loss = mean + (state.loss - state.loss.detach())

    def after_fit(self, state: LoopState) -> None:
        state.model = self.module  # the wrapper must be gone before the group is (see distributed_session)

    def _trainable(self) -> list[int]:
        return [id(parameter) for parameter in self.module.parameters() if parameter.requires_grad]

    def _wrap(self, state: LoopState) -> None:
        self._wrapped_for = self._trainable()
        state.model = self.distributed.wrap(self.module)


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

    def after_step(self, state: LoopState) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{float(state.loss.detach()):.4f}")

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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is None or _is_number(value) or isinstance(value, dict)}

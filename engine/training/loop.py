"""The training loop: short, fixed, and extended only through callbacks.

Stages ``fit``, ``epoch``, ``train``, ``validate`` and ``batch`` each call
``before_<stage>`` and ``after_<stage>`` on every callback, in ``order``. Inside a
training batch the hooks ``after_loss``, ``before_step`` and ``after_step`` let
callbacks watch gradients and updates. Callbacks stop work by raising
``CancelBatch``, ``CancelEpoch`` or ``CancelFit``; the loop catches them, calls
``after_cancel_<stage>``, and still runs the ``after_`` hooks of enclosing stages.

Nothing in a step reads a tensor back to the host, so on a GPU the host queues work
ahead of the device: the training losses stay on the device and are read together every
``sync_every`` steps and at the end of each training pass (``after_sync``). A step may
add up the gradients of ``accumulate_steps`` batches. When the device runs out of
memory, the loop splits every batch into halves (then quarters...) whose gradients add
up to the whole batch's, so the step, the effective batch and the learning rate stay as
they were (``after_batch_size_changed``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from engine.core.device import DevicePlan
from engine.training.batch_probe import is_out_of_memory
from engine.training.callback import Callback, CancelBatch, CancelEpoch, CancelFit, LoopState, StepLoss

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Loop:
    """Runs epochs of training and validation over data loaders, calling callbacks.

    Args:
        model: module to optimise; ``model(inputs)`` returns logits ``(N, C)``.
        optimizer: optimizer over the trainable parameters.
        loss_function: ``loss(logits, targets)``, a mean over the batch.
        train_batches: iterable of ``(inputs, targets)`` re-iterated every epoch.
        val_batches: the same for validation, or None.
        device_plan: device, AMP dtype and memory format.
        callbacks: features of the run (metrics, checkpoints, doctor...).
        sync_every: read the training losses back to the host every this many steps.
        accumulate_steps: batches whose gradients add up before each optimizer step.
        clip_grad_norm: clip the gradients' total norm to this before each step, or None.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: LossFunction,
        train_batches: Iterable[tuple[Any, torch.Tensor]],
        val_batches: Iterable[tuple[Any, torch.Tensor]] | None,
        device_plan: DevicePlan,
        callbacks: Sequence[Callback] = (),
        sync_every: int = 1,
        accumulate_steps: int = 1,
        clip_grad_norm: float | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.device_plan = device_plan
        self.callbacks = sorted(callbacks, key=lambda callback: callback.order)
        self.sync_every = max(1, sync_every)
        self.accumulate_steps = max(1, accumulate_steps)
        self.clip_grad_norm = clip_grad_norm
        self.scaler = device_plan.grad_scaler()
        self.micro_batch_size: int | None = None  # set once the device runs out of memory
        self._window_batches = 0  # batches whose gradients wait for the next step
        self._window_loss: torch.Tensor | None = None
        self._unread: list[tuple[int, int, int, torch.Tensor, float]] = []

    def fit(self, num_epochs: int, *, start_epoch: int = 1, start_step: int = 0) -> LoopState:
        """Train from ``start_epoch`` to ``num_epochs`` inclusive; returns the final state."""
        batches = len(self.train_batches)  # type: ignore[arg-type]
        state = LoopState(
            model=self.model,
            optimizer=self.optimizer,
            num_epochs=num_epochs,
            batches_per_epoch=batches,
            steps_per_epoch=math.ceil(batches / self.accumulate_steps),
            accumulate_steps=self.accumulate_steps,
            start_epoch=start_epoch,
            step=start_step,
        )
        try:
            self._call("before_fit", state)
            for epoch in range(start_epoch, num_epochs + 1):
                state.epoch = epoch
                self._with_events("epoch", state, self._one_epoch, CancelEpoch)
        except CancelFit as cancel:
            state.cancel_reason, state.cancel_message = cancel.reason, cancel.message
            self._call("after_cancel_fit", state)
        self._call("after_fit", state)
        return state

    def _one_epoch(self, state: LoopState) -> None:
        state.training = True
        state.epoch_step = 0
        self._with_events("train", state, self._train_pass, CancelEpoch)
        val_batches = self.val_batches
        if val_batches is not None:
            state.training = False
            with torch.inference_mode():
                self._with_events("validate", state, lambda s: self._all_batches(s, val_batches), CancelEpoch)

    def _train_pass(self, state: LoopState) -> None:
        self._window_batches, self._window_loss, self._unread = 0, None, []
        self._all_batches(state, self.train_batches)
        if self._window_batches:  # the epoch's batches ran out inside an accumulation window
            self._step(state)
        self._sync(state)

    def _all_batches(self, state: LoopState, batches: Iterable[tuple[Any, torch.Tensor]]) -> None:
        state.model.train(state.training)
        for index, (inputs, targets) in enumerate(batches):
            state.batch_index = index
            state.inputs = self.device_plan.to_device(inputs)
            state.targets = self.device_plan.to_device(targets)
            state.batch_size = len(targets)
            self._with_events("batch", state, self._one_batch, CancelBatch)

    def _one_batch(self, state: LoopState) -> None:
        state.outputs, state.loss = self._forward_in_pieces(state)
        self._call("after_loss", state)
        if not state.training:
            return
        self._window_batches += 1
        self._window_loss = state.loss if self._window_loss is None else self._window_loss + state.loss
        last_of_epoch = state.batch_index == state.batches_per_epoch - 1
        if self._window_batches == self.accumulate_steps or last_of_epoch:
            self._step(state)

    def _forward_in_pieces(self, state: LoopState) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's outputs and mean loss, in pieces of ``micro_batch_size``; gradients added up in training.

        Running out of memory halves the pieces and starts the batch again; the gradients of
        the step's earlier batches are lost then, and ``_step`` scales up those that remain.
        """
        while True:
            try:
                return self._forward(state)
            except RuntimeError as error:  # torch.OutOfMemoryError on CUDA; a plain RuntimeError on MPS
                if not is_out_of_memory(error):
                    raise
                reason = str(error).splitlines()[0][:200] or "out of memory"
            # Outside the except block, so that the failed attempt's tensors can be freed.
            self._shrink_pieces(state, reason)

    def _forward(self, state: LoopState) -> tuple[torch.Tensor, torch.Tensor]:
        size = state.batch_size
        piece = min(self.micro_batch_size or size, size)
        starts = range(0, size, piece)
        outputs: list[torch.Tensor] = []
        loss: torch.Tensor | None = None
        for number, start in enumerate(starts):
            inputs, targets = state.inputs, state.targets
            assert targets is not None
            if piece < size:
                inputs, targets = inputs[start : start + piece], targets[start : start + piece]
            share = len(targets) / size
            with self._gradient_sync(state, last_piece=number == len(starts) - 1), self.device_plan.autocast():
                piece_outputs = state.model(inputs)
                piece_loss = self.loss_function(piece_outputs, targets)
            if state.training:
                if number == 0 and self._window_batches == 0:
                    # The step's gradients start here, after the forward pass, as in PyTorch's own examples:
                    # freeing the last step's gradients before it slowed the forward pass by 8% on CPU.
                    self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(piece_loss * (share / self.accumulate_steps)).backward()
            outputs.append(piece_outputs.detach())
            weighted = piece_loss.detach() * share if len(starts) > 1 else piece_loss.detach()
            loss = weighted if loss is None else loss + weighted
        assert loss is not None
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), loss

    def _gradient_sync(self, state: LoopState, *, last_piece: bool) -> contextlib.AbstractContextManager:
        """DistributedDataParallel's ``no_sync`` for every backward pass of a step but its last."""
        last = last_piece and (self._window_batches + 1 == self.accumulate_steps
                               or state.batch_index == state.batches_per_epoch - 1)
        no_sync = getattr(state.model, "no_sync", None)
        return no_sync() if state.training and not last and no_sync is not None else contextlib.nullcontext()

    def _shrink_pieces(self, state: LoopState, reason: str) -> None:
        current = self.micro_batch_size or state.batch_size
        if current <= 1:
            raise torch.OutOfMemoryError(f"{reason} (even one image per forward pass does not fit)")
        self.optimizer.zero_grad(set_to_none=True)
        self._window_batches, self._window_loss = 0, None
        if self.device_plan.is_cuda:
            torch.cuda.empty_cache()
        self.micro_batch_size = max(1, current // 2)
        state.previous_micro_batch_size, state.micro_batch_size = current, self.micro_batch_size
        self._call("after_batch_size_changed", state)

    def _step(self, state: LoopState) -> None:
        if self._window_batches != self.accumulate_steps:
            # A short window (the epoch's end, or batches lost to a memory error): its gradients
            # were each divided by accumulate_steps, so scale them back to a mean over the window.
            grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, self.accumulate_steps / self._window_batches)
        self.scaler.unscale_(self.optimizer)
        if self.clip_grad_norm is not None:
            parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(parameters, self.clip_grad_norm)
        self._call("before_step", state)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.step += 1
        state.epoch_step += 1
        assert self._window_loss is not None
        mean_loss = self._window_loss / self._window_batches if self._window_batches > 1 else self._window_loss
        self._unread.append((state.step, state.epoch, state.batch_index, mean_loss,
                             float(self.optimizer.param_groups[0]["lr"])))
        self._window_batches, self._window_loss = 0, None
        self._call("after_step", state)
        if state.step % self.sync_every == 0:
            self._sync(state)

    def _sync(self, state: LoopState) -> None:
        """Read the unread training losses back to the host, at once, and hand them to ``after_sync``."""
        if not self._unread:
            return
        values = torch.stack([entry[3].float() for entry in self._unread]).tolist()  # the one host sync
        state.losses = [StepLoss(step, epoch, batch_index, value, rate)
                        for (step, epoch, batch_index, _, rate), value in zip(self._unread, values, strict=True)]
        self._unread = []
        self._call("after_sync", state)

    def _with_events(
        self, stage: str, state: LoopState, body: Callable[[LoopState], None], cancel: type[Exception]
    ) -> None:
        with contextlib.suppress(cancel):
            self._call(f"before_{stage}", state)
            body(state)
        self._call(f"after_{stage}", state)

    def _call(self, hook: str, state: LoopState) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(state)


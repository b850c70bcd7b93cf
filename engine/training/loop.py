"""The training loop: short, fixed, and extended only through callbacks.

Stages ``fit``, ``epoch``, ``train``, ``validate`` and ``batch`` each call
``before_<stage>`` and ``after_<stage>`` on every callback, in ``order``. Inside a
training batch the hooks ``after_loss``, ``before_step`` and ``after_step`` let
callbacks watch gradients and updates. Callbacks stop work by raising
``CancelBatch``, ``CancelEpoch`` or ``CancelFit``; the loop catches them, calls
``after_cancel_<stage>``, and still runs the ``after_`` hooks of enclosing stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from engine.core.device import DevicePlan
from engine.training.callback import Callback, CancelBatch, CancelEpoch, CancelFit, LoopState

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Loop:
    """Runs epochs of training and validation over data loaders, calling callbacks.

    Args:
        model: module to optimise; ``model(inputs)`` returns logits ``(N, C)``.
        optimizer: optimizer over the trainable parameters.
        loss_function: ``loss(logits, targets)``.
        train_batches: iterable of ``(inputs, targets)`` re-iterated every epoch.
        val_batches: the same for validation, or None.
        device_plan: device, AMP dtype and memory format.
        callbacks: features of the run (metrics, checkpoints, doctor...).
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
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.device_plan = device_plan
        self.callbacks = sorted(callbacks, key=lambda callback: callback.order)
        self.scaler = device_plan.grad_scaler()

    def fit(self, num_epochs: int, *, start_epoch: int = 1, start_step: int = 0) -> LoopState:
        """Train from ``start_epoch`` to ``num_epochs`` inclusive; returns the final state."""
        state = LoopState(
            model=self.model,
            optimizer=self.optimizer,
            num_epochs=num_epochs,
            batches_per_epoch=len(self.train_batches),  # type: ignore[arg-type]
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
        self._with_events("train", state, lambda s: self._all_batches(s, self.train_batches), CancelEpoch)
        val_batches = self.val_batches
        if val_batches is not None:
            state.training = False
            with torch.inference_mode():
                self._with_events("validate", state, lambda s: self._all_batches(s, val_batches), CancelEpoch)

    def _all_batches(self, state: LoopState, batches: Iterable[tuple[Any, torch.Tensor]]) -> None:
        state.model.train(state.training)
        for index, (inputs, targets) in enumerate(batches):
            state.batch_index = index
            state.inputs = self.device_plan.to_device(inputs)
            state.targets = self.device_plan.to_device(targets)
            self._with_events("batch", state, self._one_batch, CancelBatch)

    def _one_batch(self, state: LoopState) -> None:
        with self.device_plan.autocast():
            state.outputs = state.model(state.inputs)
            state.loss = self.loss_function(state.outputs, state.targets)
        self._call("after_loss", state)
        if not state.training:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(state.loss).backward()
        self.scaler.unscale_(self.optimizer)
        self._call("before_step", state)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.step += 1
        self._call("after_step", state)

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

"""The step-keeping of a distributed run's ranks: the DDP wrapper, each epoch's share, one loss for all."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.training.callback import Callback, LoopState
from engine.training.distributed import DistributedContext


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
        loss = state.loss.detach().double()
        # full_like, not new_tensor: a copy from host memory would wait for the device's queue.
        local = torch.stack([loss * count, torch.full_like(loss, count)])
        totals = self.distributed.all_reduce_sum(local)
        # The loop has already taken this rank's gradients (DDP averages them); what callbacks
        # see from here on is the loss of the whole step.
        state.loss = (totals[0] / totals[1]).to(state.loss.dtype)

    def after_fit(self, state: LoopState) -> None:
        state.model = self.module  # the wrapper must be gone before the group is (see distributed_session)

    def _trainable(self) -> list[int]:
        assert self.module is not None
        return [id(parameter) for parameter in self.module.parameters() if parameter.requires_grad]

    def _wrap(self, state: LoopState) -> None:
        self._wrapped_for = self._trainable()
        state.model = self.distributed.wrap(self.module)

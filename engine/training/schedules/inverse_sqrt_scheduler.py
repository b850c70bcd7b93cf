"""``InverseSqrtLRScheduler``: timm's ``Scheduler`` with fairseq's inverse square-root decay, for ``inverse_sqrt``."""

from __future__ import annotations

import math

import torch
from timm.scheduler.scheduler import Scheduler


class InverseSqrtLRScheduler(Scheduler):
    """Linear warmup, then ``lr * sqrt(timescale / t)`` (Vaswani et al. 2017, fairseq's ``inverse_sqrt``).

    The rate is the peak until update ``timescale`` and halves every four-fold of ``t``
    after it; it never goes below ``lr_min``. Not a ``warmup_prefix`` schedule: ``t`` counts
    from the start of training, so with ``timescale == warmup_t`` the decay starts at the
    peak right where warmup ends.

    Args:
        optimizer: the optimizer.
        timescale: updates at which the decay starts (usually the warmup length), >= 1.
        lr_min: floor of the rate.
        warmup_t: updates of linear warmup.
        warmup_lr_init: rate at update 0 of warmup.
        t_in_epochs: whether ``t`` counts epochs (``step``) or updates (``step_update``).
        initialize: set ``initial_lr`` in the groups (timm's convention).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        timescale: int,
        lr_min: float = 0.0,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        t_in_epochs: bool = False,
        initialize: bool = True,
    ) -> None:
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=t_in_epochs, initialize=initialize)
        if timescale < 1:
            raise ValueError(f"timescale: must be >= 1, got {timescale}")
        self.timescale = timescale
        self.lr_min = lr_min
        self.warmup_t = warmup_t
        self.warmup_lr_init = warmup_lr_init
        if warmup_t:
            self.warmup_steps = [(value - warmup_lr_init) / warmup_t for value in self.base_values]
            super().update_groups(warmup_lr_init)
        else:
            self.warmup_steps = [0.0 for _ in self.base_values]

    def _get_lr(self, t: int) -> list[float]:
        if t < self.warmup_t:
            return [self.warmup_lr_init + t * step for step in self.warmup_steps]
        decay = math.sqrt(self.timescale / max(t, self.timescale))
        return [max(self.lr_min, value * decay) for value in self.base_values]

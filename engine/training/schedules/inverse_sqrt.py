"""The inverse_sqrt schedule: ``peak * sqrt(warmup / t)`` after warmup (Vaswani et al. 2017, fairseq's).

Without warmup the decay starts after one epoch. timm has no such scheduler, so it is
written in ``inverse_sqrt_scheduler`` on timm's ``Scheduler`` base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.schedules.plan import SchedulePlan, register_schedule

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler


def create_inverse_sqrt(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Inverse square-root decay from the end of warmup (or of the first epoch), never below the floor."""
    # On first use: the scheduler subclasses timm's (see engine.training.schedules.plan).
    from engine.training.schedules.inverse_sqrt_scheduler import InverseSqrtLRScheduler

    timescale = plan.warmup_steps or plan.batches_per_epoch
    return InverseSqrtLRScheduler(
        optimizer, timescale=timescale, lr_min=plan.min_learning_rate, warmup_t=plan.warmup_steps,
        warmup_lr_init=plan.warmup_learning_rate, t_in_epochs=False,
    )


register_schedule("inverse_sqrt", create_inverse_sqrt)

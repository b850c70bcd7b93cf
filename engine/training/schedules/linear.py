"""The linear schedule: a straight line from the peak down to ``min_learning_rate`` at the last update."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.schedules.plan import SchedulePlan, register_schedule

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler


def create_linear(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Linear decay over every update after warmup (timm's polynomial schedule of power 1)."""
    from timm.scheduler import PolyLRScheduler  # on first use: see engine.training.schedules.plan

    return PolyLRScheduler(
        optimizer, t_initial=plan.decay_steps, power=1.0, lr_min=plan.min_learning_rate, **plan.warmup_arguments(),
    )


register_schedule("linear", create_linear)

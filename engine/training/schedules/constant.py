"""The constant schedule: the peak rate after warmup, to the end (a step schedule that never steps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.schedules.plan import SchedulePlan, register_schedule

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler


def create_constant(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """The peak rate from the end of warmup to the last update."""
    from timm.scheduler import StepLRScheduler  # on first use: see engine.training.schedules.plan

    return StepLRScheduler(optimizer, decay_t=plan.total_steps + 1, decay_rate=1.0, **plan.warmup_arguments())


register_schedule("constant", create_constant)

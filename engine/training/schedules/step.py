"""The step schedule: the rate times ``optim.step_factor`` every ``optim.step_epochs``, counted after warmup."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.schedules.plan import SchedulePlan, register_schedule

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler


def create_step(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Drops by ``step_factor`` every ``step_epochs`` of updates after warmup."""
    from timm.scheduler import StepLRScheduler  # on first use: see engine.training.schedules.plan

    return StepLRScheduler(
        optimizer, decay_t=plan.epochs_to_steps(plan.optim.step_epochs), decay_rate=plan.optim.step_factor,
        **plan.warmup_arguments(),
    )


register_schedule("step", create_step)

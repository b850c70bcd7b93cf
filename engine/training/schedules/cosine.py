"""The cosine schedule: half a cosine from the peak down to ``min_learning_rate`` at the last update.

Loshchilov & Hutter's SGDR without restarts; the default schedule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.schedules.plan import SchedulePlan, register_schedule

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler


def create_cosine(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Cosine decay over every update after warmup."""
    from timm.scheduler import CosineLRScheduler  # on first use: see engine.training.schedules.plan

    return CosineLRScheduler(
        optimizer, t_initial=plan.decay_steps, lr_min=plan.min_learning_rate, **plan.warmup_arguments(),
    )


register_schedule("cosine", create_cosine)

"""The cosine_restarts schedule: cosine cycles of ``optim.restart_epochs``, each restarting at the peak (SGDR).

Each cycle ends at a low point, where a snapshot ensemble takes its members; ``cycle_ends``
says after which epochs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from engine.core.config import OptimConfig
from engine.training.schedules.plan import SchedulePlan, epochs_to_steps, register_schedule, step_counts

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler

NAME = "cosine_restarts"


def create_cosine_restarts(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Cosine cycles after warmup; after the last complete one the rate holds ``min_learning_rate``."""
    from timm.scheduler import CosineLRScheduler  # on first use: see engine.training.schedules.plan

    cycle_steps = plan.epochs_to_steps(plan.optim.restart_epochs)
    return CosineLRScheduler(
        optimizer, t_initial=cycle_steps, lr_min=plan.min_learning_rate,
        # Enough cycles to cover the run; after the last one timm holds lr_min.
        cycle_limit=math.ceil(plan.decay_steps / cycle_steps), cycle_mul=1.0, cycle_decay=1.0,
        **plan.warmup_arguments(),
    )


def cycle_ends(optim_config: OptimConfig, batches_per_epoch: int) -> list[int]:
    """Epochs after which a ``cosine_restarts`` cycle has reached its low point: where to take snapshots.

    Cycle k ends at update ``warmup + k * restart_epochs * batches_per_epoch``; its epoch is
    the last one that finishes no later than that (the next update restarts at the peak).
    Only complete cycles count: choose ``epochs = warmup_epochs + k * restart_epochs`` for
    the last epoch to end one.

    Returns:
        Ascending 1-based epoch numbers; empty unless ``optim_config.schedule`` is ``cosine_restarts``.
    """
    if optim_config.schedule != NAME:
        return []
    total_steps, warmup_steps = step_counts(optim_config, batches_per_epoch)
    cycle_steps = epochs_to_steps(optim_config.restart_epochs, batches_per_epoch)
    ends: list[int] = []
    for end_step in range(warmup_steps + cycle_steps, total_steps + 1, cycle_steps):
        epoch = end_step // batches_per_epoch
        if epoch >= 1 and (not ends or ends[-1] != epoch):
            ends.append(epoch)
    return ends


register_schedule(NAME, create_cosine_restarts)

"""The schedules' common ground: the registry functions, ``SchedulePlan``, ``create_scheduler`` and the scaling rule.

Every schedule starts with a linear warmup from 1% of the peak rate, then decays by its
own shape counted from the end of warmup. The loop calls ``scheduler.step_update(step)``
once before the first update (with the start step) and after every update.

Config validation lists the registered schedules, in the GUI and the CLI too, so this
package imports neither torch nor timm at import time: each schedule imports timm's
scheduler inside its factory, the first time a run builds one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from engine.core.config import SCHEDULES, OptimConfig
from engine.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from timm.scheduler.scheduler import Scheduler

# Warmup starts at this share of each group's peak rate.
WARMUP_START_FACTOR = 0.01


@dataclass(frozen=True)
class SchedulePlan:
    """What a schedule factory builds from, counted in optimizer updates ("steps").

    Attributes:
        optim: the optimizer settings (for the schedule's own fields, e.g. ``step_factor``).
        batches_per_epoch: optimizer updates per epoch.
        total_steps: updates in the whole run, ``optim.epochs * batches_per_epoch``.
        warmup_steps: updates of linear warmup, at most ``total_steps``.
        peak_learning_rate: rate of the fastest parameter group (the head) at the end of warmup.
            Factories schedule this rate; every group follows it at its own ``lr_scale``.
        warmup_learning_rate: where warmup starts, ``peak_learning_rate * WARMUP_START_FACTOR``.
        min_learning_rate: the fastest group's floor, ``optim.min_learning_rate``.
    """

    optim: OptimConfig
    batches_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_learning_rate: float
    warmup_learning_rate: float
    min_learning_rate: float

    @property
    def decay_steps(self) -> int:
        """Updates after warmup (at least 1, as timm's schedulers need)."""
        return max(1, self.total_steps - self.warmup_steps)

    def epochs_to_steps(self, epochs: float) -> int:
        """A duration in epochs as a whole number of updates, at least 1."""
        return epochs_to_steps(epochs, self.batches_per_epoch)

    def warmup_arguments(self) -> dict[str, Any]:
        """timm's warmup arguments: linear from ``warmup_learning_rate``, decay counted after it, per update."""
        return {
            "warmup_t": self.warmup_steps,
            "warmup_lr_init": self.warmup_learning_rate,
            "warmup_prefix": True,
            "t_in_epochs": False,
        }


ScheduleFactory = Callable[["torch.optim.Optimizer", SchedulePlan], "Scheduler"]


def register_schedule(name: str, factory: ScheduleFactory, *, replace: bool = False) -> ScheduleFactory:
    """Add a schedule to the registry that ``optim.schedule`` is validated against.

    Args:
        name: the ``optim.schedule`` value that selects it.
        factory: ``factory(optimizer, plan)`` returns a timm ``Scheduler`` with
            ``t_in_epochs=False`` that schedules ``plan.peak_learning_rate`` (see ``SchedulePlan``).
        replace: allow replacing another schedule registered under the same name.

    Returns:
        The factory.

    Raises:
        ValueError: ``name`` is taken by another factory and ``replace`` is false.
    """
    return cast(ScheduleFactory, SCHEDULES.register(name, factory, replace=replace))


def get_schedule(name: str) -> ScheduleFactory:
    """Return the factory of a registered schedule.

    Raises:
        ConfigError: no schedule has this name (the message lists the registered ones).
    """
    return cast(ScheduleFactory, SCHEDULES.get(name))


def list_schedules() -> list[str]:
    """Return the registered schedule names, built-in ones first, in registration order."""
    return list(SCHEDULES.names())


def create_scheduler(optimizer: torch.optim.Optimizer, optim_config: OptimConfig, batches_per_epoch: int) -> Scheduler:
    """Build ``optim_config.schedule`` over ``optim_config.epochs * batches_per_epoch`` updates.

    Each parameter group's current rate (``initial_lr`` once a scheduler has run, as after
    resuming from an optimizer state) is its peak. The groups are rewritten in timm's
    ``lr_scale`` convention (the one timm's layer decay uses): ``initial_lr`` becomes the
    fastest group's peak and ``lr_scale`` each group's share of it. The schedule then
    computes one curve and every group follows it at its share, so the ratio between groups
    (head and backbone) holds at every step, warmup start and final floor included.
    Calling this again on the same optimizer (resume, a new group) gives the same rates.

    Args:
        optimizer: the optimizer, with each group's ``lr`` set to its peak rate.
        optim_config: ``schedule``, ``epochs``, ``warmup_epochs`` (capped at ``epochs``),
            ``min_learning_rate`` and the chosen schedule's own fields.
        batches_per_epoch: optimizer updates per epoch.

    Returns:
        A timm scheduler with ``t_in_epochs=False``; call ``step_update(step)`` at the start
        step and after every update. It has already set the rates of step 0.

    Raises:
        ConfigError: an unknown schedule, or no group has a positive rate.
        ValueError: ``batches_per_epoch`` is below 1.
    """
    factory = get_schedule(optim_config.schedule)
    total_steps, warmup_steps = step_counts(optim_config, batches_per_epoch)
    peak = _share_peak_rate(optimizer)
    plan = SchedulePlan(
        optim=optim_config,
        batches_per_epoch=batches_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        peak_learning_rate=peak,
        warmup_learning_rate=peak * WARMUP_START_FACTOR,
        min_learning_rate=optim_config.min_learning_rate,
    )
    return factory(optimizer, plan)


def scaled_learning_rate(optim_config: OptimConfig) -> float:
    """The peak rate after the linear scaling rule, for the head's parameter group.

    Goyal et al. 2017 ("Accurate, Large Minibatch SGD"): when the batch grows k times, an
    epoch takes k times fewer updates, each averaging k times more images; multiplying the
    rate by k keeps the distance the weights travel per epoch about the same. So a rate
    tuned at ``reference_batch_size`` is used at ``batch_size`` as
    ``learning_rate * batch_size / reference_batch_size``. The rule holds best for SGD and
    moderate batches and needs warmup for large ones; with adaptive optimisers like AdamW it
    is a starting point, not a law. Without ``reference_batch_size`` the rate is unchanged.
    """
    if optim_config.reference_batch_size is None:
        return optim_config.learning_rate
    return optim_config.learning_rate * optim_config.fixed_batch_size() / optim_config.reference_batch_size


def step_counts(optim_config: OptimConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(total, warmup) updates of a run; warmup is capped at the total.

    Raises:
        ValueError: ``batches_per_epoch`` is below 1.
    """
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch: must be >= 1, got {batches_per_epoch}")
    total_steps = optim_config.epochs * batches_per_epoch
    warmup_steps = min(round(optim_config.warmup_epochs * batches_per_epoch), total_steps)
    return total_steps, warmup_steps


def epochs_to_steps(epochs: float, batches_per_epoch: int) -> int:
    """A duration in epochs as a whole number of updates, at least 1."""
    return max(1, round(epochs * batches_per_epoch))


def _share_peak_rate(optimizer: torch.optim.Optimizer) -> float:
    """Rewrite the groups as ``initial_lr`` = the top peak and ``lr_scale`` = their share; return the top peak."""
    peaks = [
        float(group.get("initial_lr", group["lr"])) * float(group.get("lr_scale", 1.0))
        for group in optimizer.param_groups
    ]
    top = max(peaks, default=0.0)
    if top <= 0:
        raise ConfigError(f"optim.learning_rate: every parameter group needs a rate > 0, got {peaks}")
    for group, peak in zip(optimizer.param_groups, peaks, strict=True):
        group["initial_lr"] = top
        group["lr_scale"] = peak / top
    return top

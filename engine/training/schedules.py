"""Learning-rate schedules: a registry of timm schedulers stepped per optimizer update, and the linear scaling rule.

Every schedule starts with a linear warmup from 1% of the peak rate, then decays by its
own shape counted from the end of warmup. The loop calls ``scheduler.step_update(step)``
once before the first update (with the start step) and after every update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.scheduler import CosineLRScheduler, PolyLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler

from engine.core.config import OptimConfig
from engine.core.errors import ConfigError

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
        return _epochs_to_steps(epochs, self.batches_per_epoch)


ScheduleFactory = Callable[[torch.optim.Optimizer, SchedulePlan], Scheduler]

_schedules: dict[str, ScheduleFactory] = {}


def register_schedule(name: str, factory: ScheduleFactory, *, replace: bool = False) -> ScheduleFactory:
    """Add a schedule to the registry.

    Args:
        name: the ``optim.schedule`` value that selects it.
        factory: ``factory(optimizer, plan)`` returns a timm ``Scheduler`` with
            ``t_in_epochs=False`` that schedules ``plan.peak_learning_rate`` (see ``SchedulePlan``).
        replace: allow replacing a schedule registered under the same name.

    Returns:
        The factory.

    Raises:
        ValueError: ``name`` is taken and ``replace`` is false.
    """
    if name in _schedules and not replace:
        raise ValueError(f"a schedule named '{name}' is already registered; pass replace=True to replace it")
    _schedules[name] = factory
    return factory


def get_schedule(name: str) -> ScheduleFactory:
    """Return the factory of a registered schedule.

    Raises:
        ConfigError: no schedule has this name.
    """
    factory = _schedules.get(name)
    if factory is None:
        raise ConfigError(f"optim.schedule: must be one of {', '.join(_schedules)}, got {name!r}")
    return factory


def list_schedules() -> list[str]:
    """Return the registered schedule names, in registration order."""
    return list(_schedules)


def create_scheduler(
    optimizer: torch.optim.Optimizer, optim_config: OptimConfig, batches_per_epoch: int
) -> Scheduler:
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
    total_steps, warmup_steps = _step_counts(optim_config, batches_per_epoch)
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


def cycle_ends(optim_config: OptimConfig, batches_per_epoch: int) -> list[int]:
    """Epochs after which a ``cosine_restarts`` cycle has reached its low point: where to take snapshots.

    Cycle k ends at update ``warmup + k * restart_epochs * batches_per_epoch``; its epoch is
    the last one that finishes no later than that (the next update restarts at the peak).
    Only complete cycles count: choose ``epochs = warmup_epochs + k * restart_epochs`` for
    the last epoch to end one.

    Returns:
        Ascending 1-based epoch numbers; empty unless ``optim_config.schedule`` is ``cosine_restarts``.
    """
    if optim_config.schedule != "cosine_restarts":
        return []
    total_steps, warmup_steps = _step_counts(optim_config, batches_per_epoch)
    cycle_steps = _epochs_to_steps(optim_config.restart_epochs, batches_per_epoch)
    ends: list[int] = []
    for end_step in range(warmup_steps + cycle_steps, total_steps + 1, cycle_steps):
        epoch = end_step // batches_per_epoch
        if epoch >= 1 and (not ends or ends[-1] != epoch):
            ends.append(epoch)
    return ends


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
    return optim_config.learning_rate * optim_config.batch_size / optim_config.reference_batch_size


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


def _step_counts(optim_config: OptimConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(total, warmup) updates; warmup is capped at the total."""
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch: must be >= 1, got {batches_per_epoch}")
    total_steps = optim_config.epochs * batches_per_epoch
    warmup_steps = min(round(optim_config.warmup_epochs * batches_per_epoch), total_steps)
    return total_steps, warmup_steps


def _epochs_to_steps(epochs: float, batches_per_epoch: int) -> int:
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


def _create_cosine(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Half a cosine from the peak down to ``min_learning_rate`` at the last update (Loshchilov & Hutter)."""
    return CosineLRScheduler(
        optimizer, t_initial=plan.decay_steps, lr_min=plan.min_learning_rate, **_warmup(plan),
    )


def _create_constant(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """The peak rate after warmup, to the end (a step schedule that never steps)."""
    return StepLRScheduler(optimizer, decay_t=plan.total_steps + 1, decay_rate=1.0, **_warmup(plan))


def _create_step(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """The rate times ``step_factor`` every ``step_epochs``, counted from the end of warmup."""
    return StepLRScheduler(
        optimizer, decay_t=plan.epochs_to_steps(plan.optim.step_epochs), decay_rate=plan.optim.step_factor,
        **_warmup(plan),
    )


def _create_linear(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """A straight line from the peak down to ``min_learning_rate`` at the last update."""
    return PolyLRScheduler(
        optimizer, t_initial=plan.decay_steps, power=1.0, lr_min=plan.min_learning_rate, **_warmup(plan),
    )


def _create_inverse_sqrt(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """``peak * sqrt(warmup / t)`` after warmup; without warmup the decay starts after one epoch."""
    timescale = plan.warmup_steps or plan.batches_per_epoch
    return InverseSqrtLRScheduler(
        optimizer, timescale=timescale, lr_min=plan.min_learning_rate, warmup_t=plan.warmup_steps,
        warmup_lr_init=plan.warmup_learning_rate, t_in_epochs=False,
    )


def _create_cosine_restarts(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """Cosine cycles of ``restart_epochs``, each restarting at the peak (SGDR; snapshot ensembles)."""
    cycle_steps = plan.epochs_to_steps(plan.optim.restart_epochs)
    return CosineLRScheduler(
        optimizer, t_initial=cycle_steps, lr_min=plan.min_learning_rate,
        # Enough cycles to cover the run; after the last one timm holds lr_min.
        cycle_limit=math.ceil(plan.decay_steps / cycle_steps), cycle_mul=1.0, cycle_decay=1.0,
        **_warmup(plan),
    )


def _warmup(plan: SchedulePlan) -> dict[str, object]:
    """timm's warmup arguments: linear from ``warmup_learning_rate``, decay counted after it, per update."""
    return {
        "warmup_t": plan.warmup_steps,
        "warmup_lr_init": plan.warmup_learning_rate,
        "warmup_prefix": True,
        "t_in_epochs": False,
    }


register_schedule("cosine", _create_cosine)
register_schedule("constant", _create_constant)
register_schedule("step", _create_step)
register_schedule("linear", _create_linear)
register_schedule("inverse_sqrt", _create_inverse_sqrt)
register_schedule("cosine_restarts", _create_cosine_restarts)

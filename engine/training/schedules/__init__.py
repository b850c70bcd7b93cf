"""Learning-rate schedules, one file each, stepped per optimizer update; and the linear scaling rule.

A schedule is one module here that calls ``register_schedule(name, factory)``; importing it
below makes it a built-in, and ``optim.schedule`` may then name it (the config validates
against the registry). A schedule from outside the engine registers the same way.
``plan`` holds what they share: ``SchedulePlan``, ``create_scheduler`` and the registry functions.
"""

# Importing a schedule registers it; this order is the order configs and the GUI list them in.
# isort: off
from engine.training.schedules import cosine  # noqa: F401
from engine.training.schedules import constant  # noqa: F401
from engine.training.schedules import step  # noqa: F401
from engine.training.schedules import linear  # noqa: F401
from engine.training.schedules import inverse_sqrt  # noqa: F401
from engine.training.schedules import cosine_restarts  # noqa: F401
# isort: on
from engine.training.schedules.cosine_restarts import cycle_ends
from engine.training.schedules.plan import (
    WARMUP_START_FACTOR,
    ScheduleFactory,
    SchedulePlan,
    create_scheduler,
    get_schedule,
    list_schedules,
    register_schedule,
    scaled_learning_rate,
)

__all__ = [
    "WARMUP_START_FACTOR", "ScheduleFactory", "SchedulePlan", "create_scheduler", "cycle_ends", "get_schedule",
    "list_schedules", "register_schedule", "scaled_learning_rate",
]

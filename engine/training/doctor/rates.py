"""What several checks measure and say alike: each parameter group's learning rate, and rates as people write them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class StepRates:
    """The rates one step used, per group, and whether the schedule was rising then."""

    rates: dict[str, float]
    rising: bool


class RateWatch:
    """Per parameter group: the learning rate of the step being taken, whether the schedule is rising, and its peak.

    Call ``observe`` in ``before_step``: the rates are then the ones that step uses. Checks
    that judge a step only when its loss is read back (``Callback.after_sync``) pass the
    step's number and look its rates up with ``at``.
    """

    # A group counts as near its peak at or above this share of it.
    NEAR_PEAK = 0.5

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.previous: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self._steps: dict[int, StepRates] = {}

    def observe(self, optimizer: torch.optim.Optimizer, step: int | None = None) -> None:
        """Record the rate each group uses for the coming step; keep them for ``at(step)`` when ``step`` is given."""
        self.previous, self.current = self.current, {}
        for index, group in enumerate(optimizer.param_groups):
            if not group["params"]:
                continue
            name = group_name(group, index)
            rate = float(group["lr"])
            # timm's schedulers keep the fastest group's peak in initial_lr and each group's share in lr_scale.
            planned = float(group.get("initial_lr", 0.0)) * float(group.get("lr_scale", 1.0))
            self.current[name] = rate
            self.peak[name] = max(self.peak.get(name, 0.0), planned, rate)
        if step is not None:
            self._steps[step] = StepRates(dict(self.current), self.rising())

    def at(self, step: int) -> StepRates:
        """The rates step ``step`` used (observed with that number), forgetting it and every step before it."""
        found = self._steps.get(step, StepRates(dict(self.current), self.rising()))
        self._steps = {number: rates for number, rates in self._steps.items() if number > step}
        return found

    def rising(self, name: str | None = None) -> bool:
        """Whether the rate went up since the last step (warmup), for one group or any."""
        names: Iterable[str] = [name] if name is not None else list(self.current)
        return any(
            item in self.previous and self.current.get(item, 0.0) > self.previous[item] * (1 + 1e-6)
            for item in names
        )

    def near_peak(self, name: str) -> bool:
        """Whether the group's rate is at its plateau: not warming up, not deep into the decay."""
        if name not in self.current:
            return False
        return not self.rising(name) and self.current[name] >= self.NEAR_PEAK * self.peak[name]


def group_name(group: dict[str, Any], index: int) -> str:
    """A parameter group's ``name`` (``head``, ``backbone_no_decay``...), or ``group_<index>``."""
    return str(group.get("name") or f"group_{index}")


def nice_rate(value: float) -> float:
    """``value`` rounded, in log space, to 1, 2, 3 or 5 times a power of ten (3.7e-4 -> 3e-4)."""
    if value <= 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    best = min((1, 2, 3, 5, 10), key=lambda choice: abs(math.log(mantissa / choice)))
    return float(f"{best * 10.0**exponent:.1e}")


def format_rate(value: float) -> str:
    """A learning rate as people write it: ``3e-4``, ``0.01``, ``10``."""
    text = f"{value:.2e}" if 0 < abs(value) < 0.01 or abs(value) >= 1000 else f"{value:.3g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{float(mantissa):g}e{int(exponent)}"
    return text

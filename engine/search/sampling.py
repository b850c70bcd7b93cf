"""Seeded random draws through Optuna: the distribution of each parameter, and a sampler whose draws
depend only on the search's seed, the trial number and the parameter's name, so workers in
separate processes never repeat each other.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial

from engine.core.config import SearchParameter
from engine.search.space import is_whole, range_ends


def distribution_for(
    parameter: SearchParameter, coarse: SearchParameter | None = None, *, include: Any = None
) -> BaseDistribution:
    """The Optuna distribution that draws ``parameter``.

    Args:
        parameter: the range or choices of the current stage.
        coarse: the same parameter in the coarse stage; a categorical keeps the coarse
            choices, because Optuna refuses a second list of choices for one name in a
            study (the sampler keeps to ``parameter.choices``).
        include: a value the range must contain (an enqueued trial's), widening it if needed.
    """
    if parameter.choices is not None:
        return CategoricalDistribution((coarse or parameter).choices)
    low, high = range_ends(parameter)
    if include is not None and not isinstance(include, bool) and isinstance(include, (int, float)):
        low, high = min(low, float(include)), max(high, float(include))
    log = parameter.scale == "log"
    if is_whole(parameter):
        return IntDistribution(math.floor(low), math.ceil(high), log=log)
    return FloatDistribution(low, high, log=log)


def suggest_values(
    trial: Trial,
    parameters: Sequence[SearchParameter],
    coarse: Sequence[SearchParameter],
    enqueued: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw every parameter for ``trial`` through Optuna; returns ``{dotted path: value}``.

    Args:
        trial: the running trial.
        parameters: the stage's space.
        coarse: the coarse space (categoricals keep its choices, see ``distribution_for``).
        enqueued: values fixed for this trial (``enqueue_trial``); a range is widened to
            contain them, so that Optuna takes them without an out-of-range warning.
    """
    coarse_by_path = {item.path: item for item in coarse}
    fixed = enqueued or {}
    values = {}
    for parameter in parameters:
        distribution = distribution_for(parameter, coarse_by_path.get(parameter.path),
                                        include=fixed.get(parameter.path))
        if isinstance(distribution, CategoricalDistribution):
            value = trial.suggest_categorical(parameter.path, distribution.choices)
        elif isinstance(distribution, IntDistribution):
            value = trial.suggest_int(parameter.path, distribution.low, distribution.high, log=distribution.log)
        else:
            value = trial.suggest_float(parameter.path, distribution.low, distribution.high, log=distribution.log)
        values[parameter.path] = value
    return values


class SeededRandomSampler(RandomSampler):
    """Optuna's random search, where each draw depends only on (seed, trial number, parameter name).

    Workers in separate processes (or machines) share no random state: with one seeded
    generator each they would draw the same values. Seeding every draw by the trial
    number instead makes trials distinct across workers and the same on a rerun.

    Args:
        seed: the search's seed (``search.seed``).
        allowed_choices: per parameter name, the subset of a categorical's choices to draw
            from (the fine stage's), when its distribution must keep the coarse list.
    """

    def __init__(self, seed: int, allowed_choices: Mapping[str, Sequence[Any]] | None = None) -> None:
        super().__init__(seed)
        self.seed = seed
        self.allowed_choices = {name: tuple(choices) for name, choices in (allowed_choices or {}).items()}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # Masked: SeedSequence takes only non-negative words (a negative seed is still a valid config).
        words = [self.seed & 0xFFFFFFFF, trial.number & 0xFFFFFFFF, zlib.crc32(param_name.encode("utf-8"))]
        rng = np.random.default_rng(words)
        return draw(param_distribution, rng, self.allowed_choices.get(param_name))


def draw(distribution: BaseDistribution, rng: np.random.Generator, allowed: Sequence[Any] | None = None) -> Any:
    """One random value of ``distribution``: uniform on its scale (log or linear), or over its choices.

    Whole numbers get equal shares: the range is drawn as [low - 0.5, high + 0.5] and rounded.
    """
    if isinstance(distribution, CategoricalDistribution):
        pool = [choice for choice in distribution.choices if allowed is None or choice in allowed]
        pool = pool or list(distribution.choices)
        return pool[int(rng.integers(len(pool)))]
    if isinstance(distribution, IntDistribution):
        value = _uniform(distribution.low - 0.5, distribution.high + 0.5, distribution.log, rng)
        return int(min(max(round(value), distribution.low), distribution.high))
    if isinstance(distribution, FloatDistribution):
        return float(min(max(_uniform(distribution.low, distribution.high, distribution.log, rng),
                             distribution.low), distribution.high))
    raise TypeError(f"cannot draw from {type(distribution).__name__}")


def _uniform(low: float, high: float, log: bool, rng: np.random.Generator) -> float:
    if log:
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return float(rng.uniform(low, high))

"""The fine stage's space: each coarse range narrowed around the best coarse trials, widened at an edge.

Ranges narrow on each parameter's own scale (log10 for log parameters); when the best
value lies in the outer ``search.edge_fraction`` of its coarse range, that side reaches
past the coarse range, as far as the config's own validation allows, and a note says so
in words. Everything here is a pure function of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.config import RunConfig, SearchConfig, SearchParameter
from engine.core.errors import ConfigError
from engine.search.space import format_value, is_whole, range_ends, space_from_dicts, space_to_dicts

# The fine range reaches this share of the coarse range past the outermost top trial, so
# that a single top trial (or several with one value) still leaves a range to draw from.
MARGIN_FRACTION = 0.05
# Steps of the bisection that finds how far a refused widening may go.
BISECTION_STEPS = 40

Check = Callable[[str, Any], "str | None"]
"""``check(path, value)``: why the config refuses ``value`` at ``path``, or None when it accepts it."""


@dataclass(frozen=True)
class Narrowed:
    """The fine-stage version of one parameter.

    Attributes:
        parameter: the fine range (or the choices the top trials used).
        edge: ``low`` or ``high`` when the best coarse value lay in that outer share of
            the coarse range, else None.
        note: the edge warning in words, or None.
    """

    parameter: SearchParameter
    edge: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class FineSpace:
    """The fine stage's space, computed once from the coarse trials and stored with the study.

    Attributes:
        parameters: one entry per coarse parameter, in the same order.
        notes: the edge warnings, in words.
        top_trials: numbers of the coarse trials it was narrowed around, best first.
    """

    parameters: tuple[SearchParameter, ...]
    notes: tuple[str, ...] = ()
    top_trials: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (a study user attribute)."""
        return {"parameters": space_to_dicts(self.parameters), "notes": list(self.notes),
                "top_trials": list(self.top_trials)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FineSpace:
        """Inverse of ``to_dict``."""
        return cls(space_from_dicts(values["parameters"]), tuple(values.get("notes", ())),
                   tuple(values.get("top_trials", ())))


def narrow_parameter(
    parameter: SearchParameter,
    top_values: Sequence[Any],
    *,
    edge_fraction: float,
    widen_fraction: float,
    check: Check | None = None,
) -> Narrowed:
    """Narrow one coarse parameter around the values of the top trials.

    A range becomes [smallest, largest] of ``top_values`` on the parameter's scale (log10
    for log), padded by ``MARGIN_FRACTION`` of the coarse width and kept inside the coarse
    range, except on a side where the best value (``top_values[0]``) lies within
    ``edge_fraction`` of the coarse width from the end: that side reaches
    ``widen_fraction`` of the width past the coarse range, as far as ``check`` allows.
    Choices become those the top trials used, in the coarse order.

    Args:
        parameter: the coarse range or choices.
        top_values: the parameter's value in each top trial, best first (at least one).
        edge_fraction: outer share of the range that counts as its edge (``search.edge_fraction``).
        widen_fraction: how far past the edge to reach (``search.widen_fraction``).
        check: says why the config refuses a value; a refused widening stops at the last
            accepted value.
    """
    if not top_values:
        raise ValueError(f"{parameter.path}: narrowing needs the value of at least one top trial")
    if parameter.choices is not None:
        used = [choice for choice in parameter.choices if choice in top_values]
        return Narrowed(SearchParameter(parameter.path, choices=tuple(used or parameter.choices)))
    to_scale, from_scale = _scale_functions(parameter.scale)
    range_low, range_high = range_ends(parameter)
    coarse_low, coarse_high = to_scale(range_low), to_scale(range_high)
    width = coarse_high - coarse_low
    positions = [to_scale(float(value)) for value in top_values]
    margin = MARGIN_FRACTION * width
    low = max(min(positions) - margin, coarse_low)
    high = min(max(positions) + margin, coarse_high)
    best = positions[0]
    edge = "low" if best <= coarse_low + edge_fraction * width else None
    edge = "high" if best >= coarse_high - edge_fraction * width else edge
    whole = is_whole(parameter)
    fine_low, fine_high = _round_range(from_scale(low), from_scale(high), whole)
    note = None
    if edge is not None:
        side_value = range_low if edge == "low" else range_high
        step = -widen_fraction * width if edge == "low" else widen_fraction * width
        target = from_scale((coarse_low if edge == "low" else coarse_high) + step)
        if whole:
            target = math.floor(target) if edge == "low" else math.ceil(target)
            target = min(target, side_value - 1) if edge == "low" else max(target, side_value + 1)
        reached, refusal = _widest_accepted(parameter.path, side_value, target, whole, check)
        if side_value >= 0 > reached:
            # Below 0 a setting usually means something else (trainable_stages -1 = every stage)
            # or nothing, so a range the user kept non-negative stays so.
            reached, refusal = 0.0, f"{parameter.path} stays >= 0 (a negative value means something else or nothing)"
        if edge == "low":
            fine_low = reached
        else:
            fine_high = reached
        note = _edge_note(parameter, edge, float(top_values[0]), edge_fraction, reached, refusal)
    return Narrowed(SearchParameter(parameter.path, low=fine_low, high=fine_high, scale=parameter.scale), edge, note)


def narrow_space(
    space: Sequence[SearchParameter],
    top_params: Sequence[Mapping[str, Any]],
    settings: SearchConfig,
    *,
    top_trials: Sequence[int] = (),
    check: Check | None = None,
) -> FineSpace:
    """The fine space: every parameter of ``space`` narrowed around the top trials' values.

    Args:
        space: the coarse space.
        top_params: the top coarse trials' parameters, best first; a parameter none of
            them holds (added to the config later) keeps its coarse range.
        settings: ``edge_fraction`` and ``widen_fraction`` come from here.
        top_trials: their trial numbers, recorded with the result.
        check: see ``narrow_parameter``.
    """
    parameters, notes = [], []
    for parameter in space:
        values = [params[parameter.path] for params in top_params if parameter.path in params]
        if not values:
            parameters.append(parameter)
            continue
        narrowed = narrow_parameter(parameter, values, edge_fraction=settings.edge_fraction,
                                    widen_fraction=settings.widen_fraction, check=check)
        parameters.append(narrowed.parameter)
        if narrowed.note:
            notes.append(narrowed.note)
    return FineSpace(tuple(parameters), tuple(notes), tuple(top_trials))


def config_check(base: RunConfig) -> Check:
    """A ``check`` that asks the config's own validation whether ``base`` accepts a value."""
    def check(path: str, value: Any) -> str | None:
        try:
            base.with_changes(**{path: value})
        except ConfigError as error:
            return str(error)
        return None

    return check


def _scale_functions(scale: str) -> tuple[Callable[[float], float], Callable[[float], float]]:
    if scale == "log":
        return math.log10, lambda position: 10.0 ** position
    return (lambda value: value), (lambda position: position)


def _round_range(low: float, high: float, whole: bool) -> tuple[float, float]:
    if not whole:
        return low, high
    # Rounding to the nearest whole number keeps every top value inside (the margin is under
    # half a step on short ranges) without widening a short range by a step on each side.
    return float(round(low)), float(round(high))


def _widest_accepted(
    path: str, edge: float, target: float, whole: bool, check: Check | None
) -> tuple[float, str | None]:
    """How far from the coarse ``edge`` towards ``target`` the config accepts; and the refusal, if any.

    A refused ``target`` is bisected against the accepted ``edge`` (whole steps for whole numbers).
    """
    cast = (lambda value: int(round(value))) if whole else float
    if check is None:
        return float(target), None
    refusal = check(path, cast(target))
    if refusal is None:
        return float(target), None
    accepted, refused = edge, target
    for _ in range(BISECTION_STEPS):
        middle = (accepted + refused) / 2
        if whole:
            middle = math.floor(middle) if refused < accepted else math.ceil(middle)
            if middle in (accepted, refused):
                break
        if check(path, cast(middle)) is None:
            accepted = middle
        else:
            refused = middle
    if not whole:
        # Bisection stops a hair from the limit (1e-14 for a limit of 0): take the round number there.
        for digits in range(7):
            rounded = round(accepted, digits)
            if abs(rounded - accepted) <= 1e-6 * abs(target - edge) and check(path, rounded) is None:
                return rounded, refusal
    return float(accepted), refusal


def _edge_note(
    parameter: SearchParameter, edge: str, best: float, edge_fraction: float, reached: float, refusal: str | None
) -> str:
    side = "lowest" if edge == "low" else "highest"
    range_low, range_high = range_ends(parameter)
    coarse_end = range_low if edge == "low" else range_high
    seen = (f"{parameter.path}: the best coarse value {format_value(best)} lies in the {side} "
            f"{edge_fraction:.0%} of its range [{format_value(parameter.low)}, {format_value(parameter.high)}]"
            f" ({parameter.scale} scale)")
    if reached == coarse_end:
        return f"{seen}; the fine stage cannot widen that side, because {refusal}."
    widened = f"{seen}; the fine stage widens the {edge} side to {format_value(reached)}"
    if refusal:
        return f"{widened}, as far as the config allows ({refusal})."
    return f"{widened}: the best value may lie outside the range searched."

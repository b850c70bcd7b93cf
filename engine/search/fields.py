"""Which config fields a search may sample, and how a search space is written as text.

The fields offered, a starting range for a newly chosen field, and the text form of
range ends and choice lists, as the GUI's search-space table shows and reads them.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Collection
from typing import Any

import yaml

from engine.core.config import (
    ACTIVATIONS,
    AUGMENT_PRESETS,
    CLASS_BALANCE,
    HEADS,
    RANDOM_POLICIES,
    SCHEDULES,
    RunConfig,
    SearchParameter,
    numeric_kind,
)

# The sections whose fields are hyperparameters; data, doctor and search settings stay fixed.
SEARCHED_SECTIONS = ("model", "optim", "augment")
# Text fields worth searching, and their choices; other text fields (backbone, weights) are not.
# optim.schedule's choices are a registry, filled on first lookup: searchable_fields reads its names then.
TEXT_CHOICES: dict[str, Collection[str]] = {
    "model.head": HEADS, "model.head_activation": ACTIVATIONS, "optim.schedule": SCHEDULES,
    "optim.class_balance": CLASS_BALANCE, "augment.preset": AUGMENT_PRESETS, "augment.random_policy": RANDOM_POLICIES,
}
_ENTRY = re.compile(r"search\.space\[(\d+)\]")


def searchable_fields() -> dict[str, tuple[Any, ...] | None]:
    """Config fields a search may sample: dotted path -> its choices, or None for a number field."""
    fields: dict[str, tuple[Any, ...] | None] = {}
    hints = typing.get_type_hints(RunConfig)
    for section in SEARCHED_SECTIONS:
        owner = hints[section]
        for item in dataclasses.fields(owner):
            path = f"{section}.{item.name}"
            if numeric_kind(path) is not None:
                fields[path] = None
            elif typing.get_type_hints(owner)[item.name] is bool:
                fields[path] = (False, True)
            elif path in TEXT_CHOICES:
                fields[path] = tuple(TEXT_CHOICES[path])
    return fields


def starting_parameter(path: str, current: Any, choices: tuple[Any, ...] | None) -> SearchParameter:
    """A first range for a field just added to the space: a decade either side of a positive
    ``current`` value (log scale), a few steps around a whole number, or all of its ``choices``."""
    if choices is not None:
        return SearchParameter(path, choices=choices)
    if numeric_kind(path) is int:
        current = int(current or 0)
        return SearchParameter(path, low=max(current - 2, 0), high=current + 2)
    if current:
        return SearchParameter(path, low=float(current) / 10, high=float(current) * 10, scale="log")
    return SearchParameter(path, low=0.0, high=0.5)


def format_number(value: Any) -> str:
    """A range end as the table shows it (``0.0001``, ``1e-05``; "" for none)."""
    return "" if value is None else f"{value:g}"


def format_choices(choices: tuple[Any, ...]) -> str:
    """Choices as the table shows them: ``light, strong``; ``false, true``."""
    return ", ".join(str(choice).lower() if isinstance(choice, bool) else str(choice) for choice in choices)


def parse_choices(text: str) -> list[Any]:
    """``"light, strong"`` -> ``["light", "strong"]``; numbers and true/false become values of their type."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = yaml.safe_load(part)
        except yaml.YAMLError:
            value = part
        values.append(value if isinstance(value, (bool, int, float, str)) else part)
    return values


def entry_of(message: str) -> int | None:
    """The space entry a validation message names (``search.space[2].high: ...`` -> 2), or None."""
    match = _ENTRY.search(message)
    return int(match.group(1)) if match else None

"""What a hyperparameter search samples: the default space of each mode, and the parameters in words and JSON.

The coarse stage draws from ``search.space`` (or the default space of ``model.mode``);
the fine stage from the narrowed space of ``engine.search.narrowing``; ``engine.search.sampling``
draws the values. Free of Optuna, so the GUI shows and edits a space before it loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from engine.core.config import RunConfig, SearchParameter, numeric_kind


def default_space(config: RunConfig) -> tuple[SearchParameter, ...]:
    """The space searched when ``search.space`` is empty, for ``config.model.mode``.

    Learning rate and weight decay on log scales, label smoothing and mixup alpha on
    linear ones; when the backbone trains (``fine_tune``, ``two_stage``) also the number
    of trainable stages and the augmentation preset. Feature extraction trains on cached
    features whose first view is never augmented, so the preset only matters there when
    ``augment.feature_views`` > 1 (then ``none`` is not allowed).
    """
    fine_tuning = config.model.mode != "feature_extraction"
    # A new head on frozen features takes larger steps than a pretrained backbone can.
    low_rate, high_rate = (1e-5, 1e-2) if fine_tuning else (1e-4, 1e-1)
    space = [
        SearchParameter("optim.learning_rate", low=low_rate, high=high_rate, scale="log"),
        SearchParameter("optim.weight_decay", low=1e-5, high=1e-1, scale="log"),
        SearchParameter("optim.label_smoothing", low=0.0, high=0.2),
        SearchParameter("augment.mixup_alpha", low=0.0, high=0.4),
    ]
    if fine_tuning:
        space.append(SearchParameter("model.trainable_stages", low=1, high=4))
        space.append(SearchParameter("augment.preset", choices=("none", "light", "standard", "strong")))
    elif config.augment.feature_views > 1:
        space.append(SearchParameter("augment.preset", choices=("light", "standard", "strong")))
    return tuple(space)


def resolve_space(config: RunConfig) -> tuple[SearchParameter, ...]:
    """``config.search.space`` when it declares any parameter, else ``default_space(config)``."""
    return config.search.space or default_space(config)


def is_whole(parameter: SearchParameter) -> bool:
    """True when the parameter's config field takes whole numbers (it is then drawn as one)."""
    return parameter.choices is None and numeric_kind(parameter.path) is int


def range_ends(parameter: SearchParameter) -> tuple[float, float]:
    """``(low, high)`` of a range parameter, as floats.

    Raises:
        ValueError: ``low`` or ``high`` is None, as in a choices parameter (config validation refuses such a range).
    """
    if parameter.low is None or parameter.high is None:
        raise ValueError(f"{parameter.path}: a range needs both low and high")
    return float(parameter.low), float(parameter.high)


def describe_parameter(parameter: SearchParameter) -> str:
    """One line, e.g. ``optim.learning_rate in [0.0001, 0.1] (log)`` or ``augment.preset in {light, strong}``."""
    if parameter.choices is not None:
        return f"{parameter.path} in {{{', '.join(str(choice) for choice in parameter.choices)}}}"
    kind = "whole, " if is_whole(parameter) else ""
    bounds = f"[{format_value(parameter.low)}, {format_value(parameter.high)}]"
    return f"{parameter.path} in {bounds} ({kind}{parameter.scale})"


def format_value(value: Any) -> str:
    """A parameter value for people: 3 significant digits for numbers."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def space_to_dicts(space: Sequence[SearchParameter]) -> list[dict[str, Any]]:
    """JSON-safe form of a space (for Optuna study attributes and events)."""
    return [{key: list(value) if isinstance(value, tuple) else value for key, value in asdict(item).items()}
            for item in space]


def space_from_dicts(items: Sequence[Mapping[str, Any]]) -> tuple[SearchParameter, ...]:
    """Inverse of ``space_to_dicts``."""
    return tuple(
        SearchParameter(path=item["path"], low=item.get("low"), high=item.get("high"),
                        scale=item.get("scale", "linear"),
                        choices=None if item.get("choices") is None else tuple(item["choices"]))
        for item in items
    )

"""Wall-clock budgets as people write them (``90s``, ``10m``, ``1h30m``), read and written back.

Standard library only, so that ``main.py auto`` refuses a budget it cannot read before torch loads.
"""

from __future__ import annotations

import re

from engine.core.errors import ConfigError

# One or more <number><unit> parts, largest unit first; a bare number means seconds.
_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
SMALLEST_BUDGET_SECONDS = 10.0  # below this not even the scan and a feature-extraction head are worth starting


def parse_budget(text: str) -> float:
    """Seconds in a budget string: ``90s``, ``90`` (seconds), ``10m``, ``1.5h``, ``1h30m``, ``2m30s``.

    Raises:
        ConfigError: the string is not a duration, repeats or misorders its units, or is under
            ``SMALLEST_BUDGET_SECONDS``; the message names ``--budget``.
    """
    cleaned = text.strip().lower().replace(" ", "")
    expected = "expected a duration such as 90s, 10m or 1h30m"
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = _PART.findall(cleaned)
        units = [unit for _, unit in parts]
        in_order = units == sorted(set(units), key="hms".index)  # each unit once, hours before minutes before seconds
        if not parts or "".join(number + unit for number, unit in parts) != cleaned or not in_order:
            raise ConfigError(f"--budget: {expected}, got {text!r}")
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds < SMALLEST_BUDGET_SECONDS:
        raise ConfigError(f"--budget: at least {SMALLEST_BUDGET_SECONDS:g}s is needed to train anything, got {text!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    """A duration the way ``parse_budget`` reads it, to the second: ``45s``, ``3m``, ``1h2m5s``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value)
    return text or "0s"

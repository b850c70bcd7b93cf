"""What the doctor reports: a ``Diagnosis`` (what was seen, with its numbers, and the config change that fixes it)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.config import RunConfig
from engine.core.events import DiagnosisRaised

SEVERITIES: tuple[str, ...] = ("info", "warning", "error")
"""Diagnosis severities, mildest first: ``info`` (worth knowing), ``warning`` (act on it), ``error`` (broken run)."""

DIAGNOSIS_EVENT = DiagnosisRaised.event  # kept for the callers that import it; new code names DiagnosisRaised.event


@dataclass(frozen=True)
class Diagnosis:
    """One finding of a check.

    Attributes:
        check: name of the check that raised it (``divergence``...).
        severity: ``info``, ``warning`` or ``error``.
        title: a few words, e.g. ``Learning rate too low``.
        message: what was seen and what to do, in plain language, with the numbers.
        evidence: the measurements behind it (numbers, short strings, lists of them).
        fix: dotted config changes that apply the suggestion, e.g. ``{"optim.learning_rate": 3e-3}``;
            empty when no config setting fixes it.
    """

    check: str
    severity: str
    title: str
    message: str
    evidence: dict[str, float | int | str | list] = dataclasses.field(default_factory=dict)
    fix: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"diagnosis severity: must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become the strings ``"nan"``, ``"inf"``, ``"-inf"``)."""
        return {
            "check": self.check,
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "evidence": json_safe(self.evidence),
            "fix": json_safe(self.fix),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Diagnosis:
        """Rebuild a diagnosis from ``to_dict`` output (e.g. a ``diagnosis_raised`` event)."""
        return cls(
            check=str(values["check"]), severity=str(values["severity"]), title=str(values["title"]),
            message=str(values["message"]), evidence=dict(values.get("evidence") or {}),
            fix=dict(values.get("fix") or {}),
        )

    def apply(self, config: RunConfig) -> RunConfig:
        """Return ``config`` with the suggested ``fix`` applied (the GUI's "apply" button).

        Raises:
            ConfigError: the fix does not make a valid config.
        """
        return config.with_changes(**self.fix)


def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists, tensors and numpy scalars as numbers, and non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

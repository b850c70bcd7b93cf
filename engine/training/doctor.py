"""The training doctor's framework: diagnoses, the base class and registry of checks, and ``create_doctor``.

A check is a loop ``Callback`` that watches a run for one known failure pattern (the
lessons of CS231n's "Training Neural Networks") and, when it sees it, raises a
``Diagnosis``: what was seen, in plain language and with its numbers, and the config
change that would fix it. Diagnoses become ``diagnosis_raised`` events; measurements
the GUI can plot become ``*_measured`` events. The checks themselves live in
``engine.training.doctor_checks``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.training.loop import Callback, LoopState

if TYPE_CHECKING:
    from engine.data.health import HealthReport

SEVERITIES: tuple[str, ...] = ("info", "warning", "error")
"""Diagnosis severities, mildest first: ``info`` (worth knowing), ``warning`` (act on it), ``error`` (broken run)."""

DIAGNOSIS_EVENT = "diagnosis_raised"

Reporter = Callable[..., Any]


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


@dataclass
class DoctorContext:
    """What the checks know about a run besides the loop state.

    Attributes:
        config: the run's settings (``config.doctor`` holds the thresholds).
        num_classes: classes of the dataset, C.
        report: writes an event, called as ``report(event, epoch=, step=, **payload)``
            (``RunFolder.write_event`` fits).
        health: the dataset's health report, for checks about the data itself.
        suggested_learning_rate: the LR finder's suggestion as an ``optim.learning_rate``
            value, when one was run; preferred over rules of thumb in suggestions.
    """

    config: RunConfig
    num_classes: int
    report: Reporter
    health: HealthReport | None = None
    suggested_learning_rate: float | None = None


class DoctorCheck(Callback):
    """Base of the doctor's checks: a callback that raises diagnoses, each kind at most once.

    Subclasses set ``name`` (the ``doctor.checks`` entry), ``title`` and ``description``
    (shown by ``main.py doctor --list`` and as GUI tooltips) and override the loop hooks
    they need. They run after the metrics recorder (order 10), so a finished epoch's
    row is in ``state.scratch["epoch_metrics"]``.

    One instance may watch several fits (the two stages of a ``two_stage`` run): per-fit
    state belongs in ``before_fit``; what was already raised stays raised.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    order = 20

    def __init__(self, context: DoctorContext) -> None:
        self.context = context
        self.settings = context.config.doctor
        self.diagnoses: list[Diagnosis] = []
        self._raised_kinds: set[str] = set()

    def diagnose(
        self,
        severity: str,
        message: str,
        *,
        evidence: dict[str, Any] | None = None,
        fix: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> Diagnosis:
        """Build a diagnosis of this check (``title`` defaults to the check's)."""
        return Diagnosis(self.name, severity, title or self.title, message, dict(evidence or {}), dict(fix or {}))

    def raise_diagnosis(self, state: LoopState, diagnosis: Diagnosis, *, kind: str = "") -> bool:
        """Emit ``diagnosis`` as a ``diagnosis_raised`` event, unless this kind was raised before.

        Args:
            state: the loop state (for the event's epoch and step).
            diagnosis: what to report.
            kind: which of this check's findings it is (e.g. ``too_high``); each is raised once per run.

        Returns:
            True when the event was written, False when the kind had been raised already.
        """
        if kind in self._raised_kinds:
            return False
        self._raised_kinds.add(kind)
        self.diagnoses.append(diagnosis)
        self.context.report(DIAGNOSIS_EVENT, epoch=_epoch_of(state), step=state.step, **diagnosis.to_dict())
        return True

    def record(self, state: LoopState, event: str, **measurements: Any) -> None:
        """Write a measurement event (``*_measured``) for the GUI to plot."""
        self.context.report(event, epoch=_epoch_of(state), step=state.step, **json_safe(measurements))


_registered: dict[str, type[DoctorCheck]] = {}


@functools.cache
def _builtin_checks() -> dict[str, type[DoctorCheck]]:
    # Imported on first use, not at import time: the built-in checks subclass DoctorCheck from here.
    from engine.training.doctor_checks import BUILTIN_CHECKS

    return {check.name: check for check in BUILTIN_CHECKS}


def register_check(check: type[DoctorCheck]) -> type[DoctorCheck]:
    """Add a check class to the registry (usable as a class decorator).

    Raises:
        ValueError: the class has no ``name``, or another class has the same name.
    """
    if not check.name:
        raise ValueError(f"doctor check {check.__qualname__} has no name")
    existing = {**_builtin_checks(), **_registered}.get(check.name)
    if existing is not None and existing is not check:
        raise ValueError(f"a doctor check named '{check.name}' is already registered ({existing.__qualname__})")
    _registered[check.name] = check
    return check


def get_check(name: str) -> type[DoctorCheck]:
    """Return the check class registered as ``name``.

    Raises:
        ConfigError: no check has this name (the message suggests the closest one).
    """
    checks = {**_builtin_checks(), **_registered}
    if name not in checks:
        close = difflib.get_close_matches(name, list(checks), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known checks: {', '.join(checks)}"
        raise ConfigError(f"doctor.checks: unknown check '{name}'{hint}")
    return checks[name]


def list_checks() -> list[type[DoctorCheck]]:
    """Every registered check class: the built-in ones in their standard order, then added ones."""
    return list({**_builtin_checks(), **_registered}.values())


def create_doctor(config: RunConfig, context: DoctorContext) -> list[DoctorCheck]:
    """The checks ``config.doctor.checks`` names, ready to pass to the loop as callbacks.

    Returns:
        One instance per named check (duplicates once), in the config's order; empty
        when ``doctor.enabled`` is false.

    Raises:
        ConfigError: a name is not a registered check.
    """
    if not config.doctor.enabled:
        return []
    classes = [get_check(name) for name in dict.fromkeys(config.doctor.checks)]
    return [check(context) for check in classes]


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


def _epoch_of(state: LoopState) -> int | None:
    return state.epoch or None  # 0 before the first epoch starts

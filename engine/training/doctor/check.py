"""The base of every doctor check: ``DoctorCheck``, a loop callback that raises each kind of diagnosis once,
and the ``DoctorContext`` it is built with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from engine.core.config import RunConfig
from engine.core.events import DiagnosisRaised
from engine.training.callback import Callback, LoopState
from engine.training.doctor.diagnosis import Diagnosis, json_safe

if TYPE_CHECKING:
    from engine.data.health import HealthReport

Reporter = Callable[..., Any]


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
    (shown by ``main.py doctor --list`` and as GUI tooltips), ``default`` (whether a new
    config runs it), override the loop hooks they need, and register with
    ``@register_check``. They run after the metrics recorder (order 10), so a finished
    epoch's row is in ``state.scratch["epoch_metrics"]``.

    One instance may watch several fits (the two stages of a ``two_stage`` run): per-fit
    state belongs in ``before_fit``; what was already raised stays raised.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Checks from outside the engine run only where a config names them.
    default: ClassVar[bool] = False
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
        self.context.report(DiagnosisRaised.event, epoch=_epoch_of(state), step=state.step, **diagnosis.to_dict())
        return True

    def record(
        self, state: LoopState, event: str, *, at: tuple[int, int] | None = None, **measurements: Any
    ) -> None:
        """Write a measurement event (``*_measured``) for the GUI to plot.

        ``at`` is the ``(epoch, step)`` measured, when it was read back at a later sync point.
        """
        epoch, step = at if at is not None else (_epoch_of(state), state.step)
        self.context.report(event, epoch=epoch or None, step=step, **json_safe(measurements))


def _epoch_of(state: LoopState) -> int | None:
    return state.epoch or None  # 0 before the first epoch starts

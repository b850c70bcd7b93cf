"""The training doctor's findings for the run on screen, each with an "Apply fix" button.

A diagnosis (a ``diagnosis_raised`` event) shows as a card: severity icon and colour,
title, the plain-language message, the evidence behind it, and, when the doctor knows a
config change that fixes it, a button that applies the change to the config being
edited, so that the next run uses it. A ``batch_size_changed`` event (the run ran out of
memory and now splits each batch) shows as such a card too: the fix starts the next run at
the size that fits.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig
from engine.core.errors import ConfigError
from engine.core.events import BatchSizeChanged
from gui.pages.train.run_log import describe_batch_change
from gui.services.config_state import ConfigState
from gui.style import ok_color, severity_color

if TYPE_CHECKING:
    from engine.training.doctor import DoctorCheck

_ICONS = {
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
}
IDLE_TEXT = "The training doctor watches each run and explains here what goes wrong, and how to fix it."
HEALTHY_TEXT = "No problems so far."
HEALTHY_END_TEXT = "No problems found in this run."
DISABLED_TEXT = "The doctor is off for this run (doctor.enabled)."
BATCH_SPLIT_TITLE = "Batches split to fit in memory"


class DiagnosisCard(QFrame):
    """One diagnosis: icon, title, message, evidence, and an "Apply fix" button when it has a fix.

    Args:
        event: a ``diagnosis_raised`` event (``check``, ``severity``, ``title``, ``message``,
            ``evidence``, ``fix``).
        state: the config the fix is applied to.
    """

    fix_applied = Signal(dict)  # the changes, {dotted path: new value}

    def __init__(self, event: dict[str, Any], state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.diagnosis = event
        self.state = state
        self.fix: dict[str, Any] = dict(event.get("fix") or {})
        severity = str(event.get("severity", "info"))
        color = severity_color(severity, self.palette())
        self.setObjectName("diagnosis_card")
        self.setStyleSheet(
            "#diagnosis_card { background: palette(base); border: 1px solid palette(mid);"
            f" border-left: 4px solid {color.name()}; border-radius: 4px; }}"
        )
        icon = QLabel(self)
        icon.setPixmap(self.style().standardIcon(_ICONS.get(severity, _ICONS["info"])).pixmap(22, 22))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.title_label = QLabel(str(event.get("title", "")), self)
        font = QFont(self.title_label.font())
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setStyleSheet(f"color: {color.name()};")
        self.title_label.setWordWrap(True)
        self.message_label = _wrapped(str(event.get("message", "")), self)
        self.evidence_label = _wrapped(_evidence_text(event.get("evidence") or {}), self)
        self.evidence_label.setStyleSheet("color: palette(placeholder-text);")
        self.evidence_label.setVisible(bool(event.get("evidence")))
        # The button sits beside the title, so it is in sight however long the message is.
        self.fix_button = QPushButton("Apply fix", self)
        self.fix_button.setToolTip(f"Change {_changes_text(self.fix, state)} in the settings of the next run")
        self.fix_button.clicked.connect(self._on_fix_button_clicked)
        self.fix_button.setVisible(bool(self.fix))
        self.fix_label = _wrapped(f"Suggested fix: {_changes_text(self.fix, state)}", self)
        self.fix_label.setVisible(bool(self.fix))
        title_row = QHBoxLayout()
        title_row.addWidget(self.title_label, 1)
        title_row.addWidget(self.fix_button, 0, Qt.AlignmentFlag.AlignTop)

        text = QVBoxLayout()
        text.setSpacing(4)
        text.addLayout(title_row)
        text.addWidget(self.message_label)
        text.addWidget(self.evidence_label)
        text.addWidget(self.fix_label)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(text, 1)

    @property
    def severity(self) -> str:
        """``info``, ``warning`` or ``error``."""
        return str(self.diagnosis.get("severity", "info"))

    def apply_fix(self) -> bool:
        """Apply the suggested change to the config; False (and why, on the card) if it was refused."""
        before = {path: _current_value(self.state, path) for path in self.fix}
        if not self.state.apply(self.fix):
            errors = self.state.errors
            reason = "; ".join(errors.get(path, "") for path in self.fix if path in errors) or "refused"
            self.fix_label.setText(f"Could not apply the fix: {reason}")
            self.fix_label.setStyleSheet(f"color: {severity_color('error', self.palette()).name()};")
            return False
        changes = ", ".join(f"{path} from {before[path]} to {_format(value)}" for path, value in self.fix.items())
        self.fix_label.setText(f"Changed {changes}. The next run uses it.")
        self.fix_label.setStyleSheet(f"color: {ok_color(self.palette()).name()};")
        self.fix_button.setEnabled(False)
        self.fix_button.setText("Applied")
        self.fix_applied.emit(dict(self.fix))
        return True

    def _on_fix_button_clicked(self) -> None:
        self.apply_fix()


class DoctorPanel(QWidget):
    """The diagnoses of the current run, newest last, under a one-line summary.

    Args:
        state: the config that "Apply fix" changes.
    """

    fix_applied = Signal(dict)  # {dotted path: new value} of a fix the user applied

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.cards: list[DiagnosisCard] = []
        self.summary_label = _wrapped(IDLE_TEXT, self)
        self.watch_label = _wrapped("", self)
        self.watch_label.setStyleSheet("color: palette(placeholder-text);")
        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(0, 0, 4, 0)
        self._list_layout.setSpacing(8)
        self._list_layout.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self._list)
        self._scroll = scroll
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.watch_label)
        layout.addWidget(scroll, 1)
        self._phase = "idle"  # idle (no run yet), running, ended
        self._doctor = state.config.doctor  # the settings of the run on screen, or of the next one
        self._accumulate_steps = state.config.optim.accumulate_steps  # likewise
        state.changed.connect(self._on_state_changed)
        self._update_summary()

    @property
    def diagnoses(self) -> list[dict[str, Any]]:
        """The ``diagnosis_raised`` events shown, in order (a batch split as one, with check ``batch_size_changed``)."""
        return [card.diagnosis for card in self.cards]

    def reset(self) -> None:
        """Forget the last run's diagnoses; a new run of the current config is starting."""
        for card in self.cards:
            card.deleteLater()
        self.cards.clear()
        self._phase, self._doctor = "running", self.state.config.doctor
        self._accumulate_steps = self.state.config.optim.accumulate_steps
        self._update_summary()

    def mark_run_ended(self) -> None:
        """The run is over: a healthy one says so in the past tense."""
        self._phase = "ended"
        self._update_summary()

    def add_diagnosis(self, event: dict[str, Any]) -> DiagnosisCard:
        """Show a ``diagnosis_raised`` event as a card."""
        card = DiagnosisCard(event, self.state, self._list)
        card.fix_applied.connect(self.fix_applied)
        self._list_layout.insertWidget(self._list_layout.count() - 1, card)
        self.cards.append(card)
        self._update_summary()
        self._scroll.ensureWidgetVisible(card)
        return card

    def add_batch_change(self, event: dict[str, Any]) -> DiagnosisCard:
        """Show a ``batch_size_changed`` event as a warning card whose fix avoids the split next time."""
        micro, batch = event.get("micro_batch_size"), event.get("batch_size")
        fix: dict[str, Any] = {}
        if isinstance(micro, int) and isinstance(batch, int) and 0 < micro < batch and batch % micro == 0:
            # The same images per step, loaded in batches that fit: no split, no failed first try.
            fix = {"optim.batch_size": micro, "optim.accumulate_steps": self._accumulate_steps * (batch // micro)}
        evidence = {key: event[key] for key in ("previous_micro_batch_size", "micro_batch_size", "effective_batch_size")
                    if event.get(key) is not None}
        return self.add_diagnosis({
            "event": event.get("event", BatchSizeChanged.event), "check": BatchSizeChanged.event,
            "severity": "warning", "title": BATCH_SPLIT_TITLE, "message": describe_batch_change(event),
            "evidence": evidence, "fix": fix,
        })

    def _update_summary(self) -> None:
        if self.cards:
            counts = {severity: sum(card.severity == severity for card in self.cards)
                      for severity in ("error", "warning", "info")}
            parts = [f"{count} {name if count == 1 else name + 's'}" for name, count in
                     (("error", counts["error"]), ("warning", counts["warning"]), ("note", counts["info"]))
                     if count]
            worst = next(severity for severity in ("error", "warning", "info") if counts[severity])
            text, color = "The doctor found " + ", ".join(parts) + ".", severity_color(worst, self.palette())
        elif not self._doctor.enabled:
            text, color = DISABLED_TEXT, None
        elif self._phase == "idle":
            text, color = IDLE_TEXT, None
        else:
            text = HEALTHY_TEXT if self._phase == "running" else HEALTHY_END_TEXT
            color = ok_color(self.palette())
        self.summary_label.setText(text)
        self.summary_label.setStyleSheet(f"color: {color.name()};" if color is not None else "")
        if self.isVisible():  # else when shown: the checks' titles come from their classes, which need torch
            self._update_watch_list()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._update_watch_list()

    def _update_watch_list(self) -> None:
        checks = {name: _check_class(name) for name in self._doctor.checks}
        titles = [check.title.lower() if check else name for name, check in checks.items()]
        self.watch_label.setText("Watching for: " + ", ".join(titles) + ".")
        self.watch_label.setToolTip(
            "\n\n".join(f"{check.title}: {check.description}" for check in checks.values() if check))
        self.watch_label.setVisible(self._doctor.enabled and not self.cards and bool(titles))

    def _on_state_changed(self, config: RunConfig) -> None:
        if self._phase != "running":  # the next run's checks; a running run keeps its own
            self._doctor = config.doctor
            self._update_summary()


def _check_class(name: str) -> type[DoctorCheck] | None:
    from engine.training.doctor import get_check  # torch: loaded on first use

    try:
        return get_check(name)
    except ConfigError:
        return None  # a check of a newer version, or a typo in a config file: show its name


def _wrapped(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _format(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(item) for item in value) + "]"
    return str(value)


def _evidence_text(evidence: dict[str, Any]) -> str:
    return " · ".join(f"{key.replace('_', ' ')}: {_format(value)}" for key, value in evidence.items())


def _changes_text(fix: dict[str, Any], state: ConfigState) -> str:
    """E.g. ``optim.learning_rate 10 → 1`` (the current value, then the suggested one)."""
    return ", ".join(f"{path} {_current_value(state, path)} → {_format(value)}" for path, value in fix.items())


def _current_value(state: ConfigState, path: str) -> str:
    try:
        return _format(state.value(path))
    except AttributeError:
        return "(not a setting here)"  # a fix from a newer Transfer Studio; applying it will say why

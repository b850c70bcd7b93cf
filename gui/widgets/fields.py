"""Form fields bound to a ConfigState path: edits go through engine validation, refusals show at the field.

Every field takes its tooltip from the config field's own help text, so the GUI, the
CLI's ``config --default`` and the docs say the same thing.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig
from gui.services.config_state import ConfigState

OFF_TEXT = "off"  # what an optional control shows when its step does not run
AUTO_TEXT = "auto"  # the config value, and what its control shows, when the engine chooses
ERROR_STYLE = "color: palette(bright-text); background: #c62828; border-radius: 3px; padding: 1px 4px;"


def help_text(path: str) -> str:
    """The config field's help text (for tooltips), e.g. for ``optim.learning_rate``."""
    section, _, name = path.rpartition(".")
    owner: Any = RunConfig
    for part in section.split(".") if section else []:
        owner = typing.get_type_hints(owner)[part]
    for field in dataclasses.fields(owner):
        if field.name == name:
            return field.metadata.get("help", "")
    raise KeyError(path)


class BoundField(QWidget):
    """A labelled editor of one config field with room for its validation message.

    Subclasses create ``self.editor``, call ``self._finish()``, and define ``_show(value)``
    (put a config value into the editor) and ``_read()`` (the editor's value, or
    ``ValueError`` with the reason it is not one).
    """

    editor: QWidget  # each subclass narrows this to its own editor's class

    def __init__(self, state: ConfigState, path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.path = path
        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()
        self._updating = False

    def _finish(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.editor)
        layout.addWidget(self.error_label)
        self.setToolTip(help_text(self.path))
        self.state.changed.connect(self._on_state_changed)
        self.state.field_error.connect(self._on_state_field_error)
        self._on_state_changed(self.state.config)

    def commit(self) -> bool:
        """Send the editor's value to the state; False (and a message at the field) if refused."""
        if self._updating:
            return True
        try:
            value = self._read()
        except ValueError as error:
            self._on_state_field_error(self.path, f"{self.path}: {error}")
            return False
        accepted = self.state.set_value(self.path, value)
        if accepted:
            self._on_state_field_error(self.path, "")  # a local parse error of an earlier attempt
        return accepted

    @property
    def error(self) -> str:
        """The message shown at the field, or ""."""
        return "" if self.error_label.isHidden() else self.error_label.text()

    def _on_state_changed(self, _config: RunConfig) -> None:
        if self.path in self.state.errors:
            return  # keep what the user typed beside its message
        self._updating = True
        try:
            self._show(self.state.value(self.path))
        finally:
            self._updating = False

    def _on_state_field_error(self, path: str, message: str) -> None:
        if path != self.path:
            return
        # The field's own name is redundant beside it; another field's name is the point.
        self.error_label.setText(message.removeprefix(f"{self.path}: "))
        self.error_label.setVisible(bool(message))

    def _show(self, value: Any) -> None:
        """Put the config's value into the editor (each field type implements it)."""
        raise NotImplementedError

    def _read(self) -> Any:
        """The editor's value as the config takes it (each field type implements it)."""
        raise NotImplementedError


class NumberField(BoundField):
    """A float typed as text, so ``3e-4`` and ``0.0003`` both work; optional fields accept an empty box."""

    editor: QLineEdit

    def __init__(self, state: ConfigState, path: str, *, optional: bool = False, parent: QWidget | None = None):
        super().__init__(state, path, parent)
        self.optional = optional
        self.editor = QLineEdit(self)
        self.editor.setPlaceholderText("preset / automatic" if optional else "")
        self.editor.editingFinished.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setText("" if value is None else f"{value:g}")

    def _read(self) -> float | None:
        text = self.editor.text().strip()
        if not text and self.optional:
            return None
        try:
            number = float(text)
        except ValueError as error:
            raise ValueError(f"must be a number, got {text!r}") from error
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {text!r}")
        return number


class IntegerField(BoundField):
    """A whole number in a spin box."""

    editor: QSpinBox

    def __init__(self, state: ConfigState, path: str, *, minimum: int = -1, maximum: int = 1_000_000,
                 parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QSpinBox(self)
        self.editor.setRange(minimum, maximum)
        self.editor.valueChanged.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setValue(int(value))

    def _read(self) -> int:
        return self.editor.value()


class FractionField(BoundField):
    """A probability or fraction in [0, 1] (or a wider range) in a spin box."""

    editor: QDoubleSpinBox

    def __init__(self, state: ConfigState, path: str, *, maximum: float = 1.0, step: float = 0.05,
                 decimals: int = 2, parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QDoubleSpinBox(self)
        self.editor.setRange(0.0, maximum)
        self.editor.setSingleStep(step)
        self.editor.setDecimals(decimals)
        self.editor.valueChanged.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setValue(float(value or 0.0))

    def _read(self) -> float:
        return self.editor.value()


class ChoiceField(BoundField):
    """One of fixed choices in a combo box; ``labels`` gives friendlier names; a None choice stands for null."""

    editor: QComboBox

    def __init__(self, state: ConfigState, path: str, choices: Collection[str | None], *,
                 labels: Sequence[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QComboBox(self)
        for choice, label in zip(choices, labels or [str(choice) for choice in choices], strict=True):
            self.editor.addItem(label, choice)
        self.editor.currentIndexChanged.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        index = self.editor.findData(value)
        self.editor.setCurrentIndex(max(index, 0))

    def _read(self) -> Any:
        return self.editor.currentData()


class CheckField(BoundField):
    """A true/false setting."""

    editor: QCheckBox

    def __init__(self, state: ConfigState, path: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QCheckBox(text, self)
        self.editor.toggled.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setChecked(bool(value))

    def _read(self) -> bool:
        return self.editor.isChecked()


class TextField(BoundField):
    """Free text (a backbone name, a weights path)."""

    editor: QLineEdit

    def __init__(self, state: ConfigState, path: str, parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QLineEdit(self)
        self.editor.editingFinished.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setText(str(value))

    def _read(self) -> str:
        return self.editor.text().strip()


class PairField(BoundField):
    """A [min, max] range in two boxes; both empty means the preset's range (null).

    With one box empty, that side takes the preset's value (see ``set_effective``).
    """

    def __init__(self, state: ConfigState, path: str, *, integer: bool = False, parent: QWidget | None = None):
        super().__init__(state, path, parent)
        self.integer = integer
        self._effective: Sequence[float] | None = None
        self.editor = QWidget(self)
        self.minimum_edit = QLineEdit(self.editor)
        self.maximum_edit = QLineEdit(self.editor)
        layout = QHBoxLayout(self.editor)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.minimum_edit, 1)
        layout.addWidget(QLabel("to", self.editor))
        layout.addWidget(self.maximum_edit, 1)
        for edit in (self.minimum_edit, self.maximum_edit):
            edit.editingFinished.connect(self.commit)
        self._finish()

    def set_effective(self, pair: Sequence[float] | None) -> None:
        """Show the range in force while the boxes are empty; None shows that the step is off."""
        self._effective = pair
        texts = (OFF_TEXT, OFF_TEXT) if pair is None else (f"{pair[0]:.3g}", f"{pair[1]:.3g}")
        self.minimum_edit.setPlaceholderText(texts[0])
        self.maximum_edit.setPlaceholderText(texts[1])


    def _show(self, value: Any) -> None:
        low, high = ("", "") if value is None else (f"{value[0]:g}", f"{value[1]:g}")
        self.minimum_edit.setText(low)
        self.maximum_edit.setText(high)

    def _read(self) -> list[float] | None:
        texts = [self.minimum_edit.text().strip(), self.maximum_edit.text().strip()]
        if not any(texts):
            return None
        pair = []
        for side, text in enumerate(texts):
            if text:
                pair.append(self._number(text))
            elif self._effective is not None:
                pair.append(self._effective[side])
            else:
                raise ValueError("give both a min and a max, or neither for the preset's range")
        return pair

    def _number(self, text: str) -> float:
        try:
            return int(text) if self.integer else float(text)
        except ValueError:
            kind = "whole numbers" if self.integer else "numbers"
            raise ValueError(f"min and max must be {kind}, got {text!r}") from None


class WholeNumberField(NumberField):
    """An optional whole number typed as text; an empty box means null."""

    def _read(self) -> int | None:
        number = super()._read()
        if number is None:
            return None
        if not number.is_integer():
            raise ValueError(f"must be a whole number, got {self.editor.text().strip()!r}")
        return int(number)


class OptionalIntegerField(BoundField):
    """A whole number that may be unset (null): the spin box's lowest value reads ``off``."""

    editor: QSpinBox

    def __init__(self, state: ConfigState, path: str, *, maximum: int = 100_000, parent: QWidget | None = None):
        super().__init__(state, path, parent)
        self.editor = QSpinBox(self)
        self.editor.setRange(0, maximum)
        self.editor.setSpecialValueText("off")
        self.editor.valueChanged.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setValue(0 if value is None else int(value))

    def _read(self) -> int | None:
        return self.editor.value() or None


class IntegerOrAutoField(BoundField):
    """A whole number, or ``auto`` (the engine decides): the spin box's lowest value reads ``auto``."""

    editor: QSpinBox

    def __init__(self, state: ConfigState, path: str, *, maximum: int = 100_000, parent: QWidget | None = None):
        super().__init__(state, path, parent)
        self.editor = QSpinBox(self)
        self.editor.setRange(0, maximum)  # 0 stands for auto: no config field takes 0 here
        self.editor.setSpecialValueText(AUTO_TEXT)
        self.editor.valueChanged.connect(self.commit)
        self._finish()

    def _show(self, value: Any) -> None:
        self.editor.setValue(0 if value == AUTO_TEXT else int(value))

    def _read(self) -> int | str:
        return self.editor.value() or AUTO_TEXT


def field_form(rows: Sequence[tuple[str, QWidget]], parent: QWidget | None = None) -> QWidget:
    """A two-column form of (label, field) rows with labels aligned right, as Qt's guidelines suggest."""
    widget = QWidget(parent)
    layout = QFormLayout(widget)
    layout.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    for label, field in rows:
        caption = QLabel(label, widget)
        caption.setToolTip(field.toolTip())
        layout.addRow(caption, field)
    return widget


def form_layout(form: QWidget) -> QFormLayout:
    """The layout of a ``field_form``.

    Raises:
        TypeError: ``form`` was not made by ``field_form``.
    """
    layout = form.layout()
    if not isinstance(layout, QFormLayout):
        raise TypeError(f"{form!r} is not a field form")
    return layout

"""The Export page's format check boxes: each with who uses it; one the model cannot have is disabled with why."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QGridLayout, QGroupBox, QLabel, QWidget

from engine.export.formats import EXPORT_FORMATS, get_export_format
from gui.style import secondary_label


class FormatPicker(QGroupBox):
    """The format check boxes, each with who uses it; a format the model cannot have is disabled with why.

    Signals:
        changed: the ticked formats changed.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Formats", parent)
        self._refusals: dict[str, str] | None = None  # None until the chosen model's formats are known
        # The user's ticks, kept while a model lacks a format; opt-in formats start unticked.
        self._wanted = {name: get_export_format(name).by_default for name in EXPORT_FORMATS}
        self.boxes: dict[str, QCheckBox] = {}
        self.labels: dict[str, QLabel] = {}
        grid = QGridLayout(self)
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(8)
        for row, name in enumerate(EXPORT_FORMATS):
            self.boxes[name] = QCheckBox(get_export_format(name).title, self)
            self.boxes[name].setChecked(self._wanted[name])
            self.boxes[name].toggled.connect(self._on_box_toggled)
            self.labels[name] = secondary_label(self)
            grid.addWidget(self.boxes[name], row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(self.labels[name], row, 1)
        self.set_refusals(None)

    @property
    def known(self) -> bool:
        """Whether the chosen model's formats are known."""
        return self._refusals is not None

    def chosen(self) -> list[str]:
        """The ticked formats the model can have, in CLI order."""
        refused = self._refusals or {}
        return [name for name, box in self.boxes.items() if box.isChecked() and name not in refused]

    def set_refusals(self, refusals: dict[str, str] | None) -> None:
        """Offer every format but these (format: reason); None while they are being found out."""
        self._refusals = refusals
        for name, box in self.boxes.items():
            reason = (refusals or {}).get(name, "")
            box.blockSignals(True)  # not the user's choice: keep self._wanted
            box.setChecked(self._wanted[name] and not reason)
            box.blockSignals(False)
            box.setEnabled(not reason)
            text = f"Not available for this model: {reason}" if reason else get_export_format(name).use
            box.setToolTip(text)
            self.labels[name].setText(text)
            self.labels[name].setToolTip(text)
        self.changed.emit()

    def set_locked(self, locked: bool) -> None:
        """Freeze the choice while an export runs."""
        for name, box in self.boxes.items():
            box.setEnabled(not locked and name not in (self._refusals or {}))

    def _on_box_toggled(self, checked: bool) -> None:
        name = next(name for name, box in self.boxes.items() if box is self.sender())
        self._wanted[name] = checked
        self.changed.emit()



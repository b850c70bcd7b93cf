"""The Evaluate page's form: which model, which images, TTA, temperature fitting, and the project's earlier reports.

Splits a model has no images in (no test fraction, no test/ folder) are greyed out with the
reason, found on a pool thread when the model changes; showing a report sets the form to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStyle,
    QWidget,
)

from engine.evaluation.catalog import ModelEntry
from engine.evaluation.report_folders import missing_splits
from gui.services.workers import Worker, run_in_thread_pool
from gui.widgets.model_chooser import KINDS_WITH_EXPORTS, ModelChooser

SPLITS = {"val": "validation images", "test": "test images", "all": "all images"}
TTA_MODES = {"none": "none", "flip": "flip (2 views)", "multicrop": "multi-crop (5 views)"}


class EvaluationControls(QGroupBox):
    """Model chooser, split, TTA, "Fit temperature", Evaluate, and the report list with "Open report".

    Signals:
        evaluate_clicked: the Evaluate button was pressed.
        report_chosen: a report folder (``Path``) chosen in the report list.
        open_report_clicked: "Open report" was pressed.
    """

    evaluate_clicked = Signal()
    report_chosen = Signal(Path)
    open_report_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._data_path: Path | None = None
        self._splits_worker: Worker | None = None
        self.chooser = ModelChooser(KINDS_WITH_EXPORTS, parent=self)
        self.chooser.model_changed.connect(self._on_chooser_model_changed)
        self.split_combo = QComboBox(self)
        for split, text in SPLITS.items():
            self.split_combo.addItem(text, split)
        self.split_combo.setToolTip("Which images to score, split as the model's own training run split them")
        self.tta_combo = QComboBox(self)
        for mode, text in TTA_MODES.items():
            self.tta_combo.addItem(text, mode)
        self.tta_combo.setToolTip("Test-time augmentation: average the predictions over flipped or cropped views")
        self.fit_temperature_check = QCheckBox("Fit temperature", self)
        self.fit_temperature_check.setToolTip(
            "Fit temperature scaling on the validation images so that confidences match accuracy; a checkpoint "
            "(evaluated without TTA) keeps it when it helps")
        self.evaluate_button = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay),
                                           "Evaluate", self)
        self.evaluate_button.setDefault(True)
        self.evaluate_button.clicked.connect(self.evaluate_clicked)
        self.reports_combo = QComboBox(self)
        self.reports_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.reports_combo.setPlaceholderText("no report yet")
        self.reports_combo.setToolTip("Reports of this project, newest first: choose one to show it again")
        self._export_tooltips = {widget: widget.toolTip() for widget in (self.tta_combo, self.fit_temperature_check)}
        self.reports_combo.activated.connect(self._on_reports_combo_activated)
        self.open_report_button = QPushButton("Open report", self)
        self.open_report_button.setToolTip("Open the report shown (index.html, plots included) in the web browser")
        self.open_report_button.clicked.connect(self.open_report_clicked)

        options = QHBoxLayout()
        options.addWidget(self.split_combo)
        options.addSpacing(12)
        options.addWidget(QLabel("Test-time augmentation:", self))
        options.addWidget(self.tta_combo)
        options.addSpacing(12)
        options.addWidget(self.fit_temperature_check)
        options.addStretch(1)
        options.addWidget(self.evaluate_button)
        report_row = QHBoxLayout()
        report_row.addWidget(self.reports_combo, 1)
        report_row.addWidget(self.open_report_button)
        grid = QGridLayout(self)
        grid.addWidget(QLabel("Model:", self), 0, 0)
        grid.addWidget(self.chooser, 0, 1)
        grid.addWidget(QLabel("Images:", self), 1, 0)
        grid.addLayout(options, 1, 1)
        grid.addWidget(QLabel("Report:", self), 2, 0)
        grid.addLayout(report_row, 2, 1)
        grid.setColumnStretch(1, 1)

    @property
    def split(self) -> str:
        """The chosen split: ``val``, ``test`` or ``all``."""
        return self.split_combo.currentData()

    @property
    def tta(self) -> str:
        """The chosen test-time augmentation: ``none``, ``flip`` or ``multicrop``."""
        return self.tta_combo.currentData()

    def set_data_path(self, data_path: Path | None) -> None:
        """The dataset the model will be evaluated on (its folders may hold splits)."""
        self._data_path = data_path
        self._on_chooser_model_changed(self.chooser.current())

    def reports(self) -> list[Path]:
        """The report folders listed, newest first."""
        return [self.reports_combo.itemData(index) for index in range(self.reports_combo.count())]

    def set_reports(self, folders: list[Path], current: Path | None) -> None:
        """List report folders (newest first), ``current`` chosen."""
        self.reports_combo.clear()
        for folder in folders:
            self.reports_combo.addItem(folder.name, folder)
            self.reports_combo.setItemData(self.reports_combo.count() - 1, str(folder), Qt.ItemDataRole.ToolTipRole)
        self.set_current_report(current)

    def set_current_report(self, folder: Path | None) -> None:
        """Show ``folder`` as the chosen report (none when it is None or not listed)."""
        # findData cannot compare Path objects (they travel as opaque Python objects): compare here.
        self.reports_combo.setCurrentIndex(next((index for index, listed in enumerate(self.reports())
                                                 if listed == folder), -1))

    def follow_report(self, source: Mapping[str, Any]) -> None:
        """Set model, split and TTA to a report's ``source``, so that Evaluate repeats it."""
        model = Path(source.get("model", ""))
        entry = next((entry for entry in self.chooser.entries() if entry.path == model), None)
        if entry is not None:
            self.chooser.select(entry)
        for combo, value in ((self.split_combo, source.get("split")), (self.tta_combo, source.get("tta"))):
            index = combo.findData(value)
            if index >= 0 and _item(combo, index).isEnabled():
                combo.setCurrentIndex(index)

    def set_enabled_for(self, *, project_open: bool, running: bool, report_shown: bool) -> None:
        """Enable what can be used: nothing but the report page's button while an evaluation runs."""
        for widget in (self.chooser, self.split_combo, self.tta_combo, self.fit_temperature_check,
                       self.reports_combo):
            widget.setEnabled(project_open and not running)
        self.evaluate_button.setEnabled(self.chooser.current() is not None and self._data_path is not None
                                        and not running)
        self._fit_export_options()
        self.open_report_button.setEnabled(report_shown and not running)

    def _show_missing_splits(self, missing: Mapping[str, str]) -> None:
        for index in range(self.split_combo.count()):
            split = self.split_combo.itemData(index)
            _item(self.split_combo, index).setEnabled(split not in missing)
            _item(self.split_combo, index).setToolTip(missing.get(split, ""))
        if self.split in missing:
            self.split_combo.setCurrentIndex(self.split_combo.findData("all"))

    def _fit_export_options(self) -> None:
        """An export is scored as deployed: no test-time augmentation, and no temperature to save into it."""
        entry = self.chooser.current()
        is_export = entry is not None and entry.kind == "export"
        if is_export:
            self.tta_combo.setCurrentIndex(self.tta_combo.findData("none"))
            self.fit_temperature_check.setChecked(False)
        for widget, tooltip in self._export_tooltips.items():
            widget.setEnabled(self.chooser.isEnabled() and not is_export)
            widget.setToolTip("An export is evaluated as it is deployed: without test-time augmentation, and its "
                              "probabilities are fixed once written." if is_export else tooltip)

    def _on_chooser_model_changed(self, entry: ModelEntry | None) -> None:
        self._fit_export_options()
        if self._splits_worker is not None:
            self._splits_worker.abort()
            self._splits_worker = None
        self._show_missing_splits({})
        if entry is None or self._data_path is None:
            return
        # A bound method, not a lambda: Qt drops the connection when the form is deleted first.
        self._splits_worker = run_in_thread_pool(_missing_splits_job, entry, self._data_path)
        self._splits_worker.signals.returned.connect(self._on_splits_worker_returned)

    def _on_splits_worker_returned(self, missing: dict[str, str]) -> None:
        # Only the latest request counts: an earlier model's answer may arrive after it.
        if self._splits_worker is not None and self.sender() is self._splits_worker.signals:
            self._splits_worker = None
            self._show_missing_splits(missing)

    def _on_reports_combo_activated(self, index: int) -> None:
        folder = self.reports_combo.itemData(index)
        if folder is not None:
            self.report_chosen.emit(folder)


def _item(combo: QComboBox, index: int) -> QStandardItem:
    model = combo.model()
    assert isinstance(model, QStandardItemModel)  # a plain QComboBox keeps its items in one
    return model.item(index)


def _missing_splits_job(entry: ModelEntry, data_path: Path, *, progress: Callable[[int, int], None],
                        should_abort: Callable[[], bool]) -> dict[str, str]:
    return missing_splits(entry, data_path)

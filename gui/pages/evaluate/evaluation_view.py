"""One evaluation report on screen: scores (an ensemble beside its members), confusion matrix, per-class table,
reliability diagram, top losses, and the Grad-CAM of any image chosen in a gallery.

It shows a parsed ``report.json`` (``engine.evaluation.report_folders.read_report``) and reads no file; clicking a
cell of the confusion matrix fills the gallery under it with that cell's images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtGui import QFont, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.export.export_folders import is_export, source_model_of
from gui.pages.evaluate.cam_panel import CamPanel
from gui.pages.evaluate.confusion_view import ConfusionView
from gui.pages.evaluate.reliability_plot import ReliabilityPlot
from gui.widgets.image_gallery import GalleryImage, ImageGallery
from gui.widgets.items import table_item

SORT_ROLE = Qt.ItemDataRole.UserRole + 1
_SCORE_COLUMNS = (("top1", "Top-1"), ("top5", "Top-5"), ("log_loss", "Log-loss"), ("ece", "ECE"),
                  ("macro_f1", "Macro F1"))
_PER_CLASS_COLUMNS = (("name", "Class"), ("precision", "Precision"), ("recall", "Recall"), ("f1", "F1"),
                      ("support", "Support"))
_CELL_HINT = "Click a cell of the confusion matrix to see its images here."


def image_caption(predicted: str, confidence: float, true_label: str) -> str:
    """Two caption lines: the prediction with its confidence, then the true class."""
    return f"{predicted} {confidence:.0%}\ntrue: {true_label}"


class EvaluationView(QWidget):
    """Everything a report says: the headline scores on top, the details in tabs, a Grad-CAM panel on the right.

    The tabs are the confusion matrix (with the gallery of the chosen cell), the top losses,
    the per-class table, the reliability diagram, and the scores of the model (an ensemble
    beside each member) with the report's notes.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._report: Mapping[str, Any] = {}
        self.title_label = QLabel(self)
        self.title_label.setWordWrap(True)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.numbers_label = QLabel(self)
        self.numbers_label.setWordWrap(True)
        self.numbers_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.scores_table = QTableWidget(self)
        self.scores_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.scores_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        # Member names share a long tail (backbone/checkpoint); their run stamps tell them apart.
        self.scores_table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.scores_table.setWordWrap(False)
        self.scores_table.verticalHeader().hide()
        self.notes_label = QLabel(self)
        self.notes_label.setWordWrap(True)
        self.notes_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.confusion_view = ConfusionView(self)
        self.confusion_view.setToolTip("Rows: the true class; columns: the predicted class. Colour: share of the row.")
        self.confusion_view.cell_selected.connect(self._on_confusion_view_cell_selected)
        self.cell_label = QLabel(_CELL_HINT, self)
        # Smaller thumbnails than the top losses': they share the tab with the matrix, and the CAM shows one big.
        self.cell_gallery = ImageGallery(side=72, parent=self)
        self.cell_gallery.set_empty_text(_CELL_HINT)
        self.top_losses_label = QLabel(self)
        self.top_losses_label.setWordWrap(True)
        self.top_losses_gallery = ImageGallery(parent=self)
        self.top_losses_gallery.set_empty_text("No image was misclassified.")
        self.per_class_model = QStandardItemModel(0, len(_PER_CLASS_COLUMNS), self)
        self.per_class_model.setHorizontalHeaderLabels([title for _key, title in _PER_CLASS_COLUMNS])
        self.per_class_proxy = QSortFilterProxyModel(self)
        self.per_class_proxy.setSourceModel(self.per_class_model)
        self.per_class_proxy.setSortRole(SORT_ROLE)
        self.per_class_table = QTableView(self)
        self.per_class_table.setModel(self.per_class_proxy)
        self.per_class_table.setSortingEnabled(True)
        self.per_class_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.per_class_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.per_class_table.setAlternatingRowColors(True)
        self.per_class_table.verticalHeader().hide()
        header = self.per_class_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.reliability_plot = ReliabilityPlot(self)
        self.cam_panel = CamPanel(self)
        for gallery in (self.cell_gallery, self.top_losses_gallery):
            gallery.image_chosen.connect(self._on_gallery_image_chosen)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._create_confusion_tab(), "Confusion")
        self.tabs.addTab(self._create_top_losses_tab(), "Top losses")
        self.tabs.addTab(self.per_class_table, "Per class")
        self.tabs.addTab(self.reliability_plot, "Calibration")
        self.tabs.addTab(self._create_scores_tab(), "Scores")
        cam = QGroupBox("Grad-CAM of the chosen image", self)
        cam_layout = QVBoxLayout(cam)
        cam_layout.addWidget(self.cam_panel)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.tabs)
        splitter.addWidget(cam)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title_label)
        layout.addWidget(self.numbers_label)
        layout.addWidget(splitter, 1)

    @property
    def report(self) -> Mapping[str, Any]:
        """The report shown (parsed ``report.json``); empty when none."""
        return self._report

    def show_report(self, report: Mapping[str, Any]) -> None:
        """Show a parsed ``report.json``."""
        self._report = report
        classes = list(report["classes"])
        summary = report["summary"]
        self.title_label.setText(_title_html(report))
        self.numbers_label.setText(_numbers_html(report))
        self._show_scores(report)
        self.notes_label.setText(_notes_html(report))
        self.confusion_view.set_matrix(classes, report["confusion"])
        self.cell_label.setText(_CELL_HINT)
        self.cell_gallery.clear()
        self.cell_gallery.set_empty_text(_CELL_HINT)
        worst = _most_confused_cell(report["confusion"])
        if worst is not None:
            self.confusion_view.select_cell(*worst)  # where the model fails most, before any click
        self._show_per_class(report["per_class"])
        self.reliability_plot.show_bins(report["reliability"]["bins"], summary.get("ece"))
        self._show_top_losses(report["top_losses"])
        model = Path(report.get("source", {}).get("model", ""))
        if model.name and is_export(model):  # an export has no gradients: explain the checkpoint it came from
            model = source_model_of(model) or Path()
        self.cam_panel.set_model(model if model.name and model.exists() else None)

    def cell_images(self, true_index: int, predicted_index: int) -> list[GalleryImage]:
        """The images of one confusion cell, most confident first."""
        classes = self._report.get("classes", [])
        true_label, predicted_label = classes[true_index], classes[predicted_index]
        rows = [row for row in self._report.get("images", [])
                if row["true"] == true_label and row["predicted"] == predicted_label]
        rows.sort(key=lambda row: row["confidence"], reverse=True)
        return [
            GalleryImage(
                path=Path(row["path"]),
                caption=image_caption(predicted_label, row["confidence"], true_label),
                tooltip=f"true {true_label}, predicted {predicted_label} ({row['confidence']:.1%}); "
                        f"probability of {true_label}: {row['true_probability']:.1%}",
                true_label=true_label,
                severity=None if true_index == predicted_index else "error",
            )
            for row in rows
        ]

    # Set-up --------------------------------------------------------------------------------------

    def _create_confusion_tab(self) -> QWidget:
        below = QWidget(self)
        below_layout = QVBoxLayout(below)
        below_layout.setContentsMargins(0, 0, 0, 0)
        below_layout.addWidget(self.cell_label)
        below_layout.addWidget(self.cell_gallery, 1)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self.confusion_view)
        splitter.addWidget(below)
        splitter.setSizes([330, 170])  # the matrix, then a row of thumbnails
        return splitter

    def _create_top_losses_tab(self) -> QWidget:
        tab = QWidget(self)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.top_losses_label)
        layout.addWidget(self.top_losses_gallery, 1)
        return tab

    def _create_scores_tab(self) -> QWidget:
        tab = QWidget(self)
        layout = QVBoxLayout(tab)
        layout.addWidget(self.scores_table)
        layout.addWidget(self.notes_label)
        layout.addStretch(1)
        return tab

    # Filling -------------------------------------------------------------------------------------

    def _show_scores(self, report: Mapping[str, Any]) -> None:
        rows = [(report.get("name", "model"), report["summary"])]
        rows += [(name, member["summary"]) for name, member in report.get("members", {}).items()]
        columns = [(key, title) for key, title in _SCORE_COLUMNS
                   if any(summary.get(key) is not None for _name, summary in rows)]
        table = self.scores_table
        table.clear()
        table.setRowCount(len(rows))
        table.setColumnCount(1 + len(columns))
        table.setHorizontalHeaderLabels(["Model", *(title for _key, title in columns)])
        bold = QFont(table.font())
        bold.setBold(True)
        for row, (name, summary) in enumerate(rows):
            label = QTableWidgetItem(name)
            label.setToolTip(name)
            table.setItem(row, 0, label)
            for column, (key, _title) in enumerate(columns, start=1):
                item = QTableWidgetItem(_format_score(key, summary.get(key)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(row, column, item)
            if row == 0 and len(rows) > 1:
                for column in range(table.columnCount()):
                    table_item(table, row, column).setFont(bold)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        height = header.height() + sum(table.rowHeight(row) for row in range(len(rows))) + 2 * table.frameWidth()
        table.setFixedHeight(height)

    def _show_per_class(self, per_class: Sequence[Mapping[str, Any]]) -> None:
        self.per_class_model.removeRows(0, self.per_class_model.rowCount())
        for entry in per_class:
            items = []
            for key, _title in _PER_CLASS_COLUMNS:
                value = entry.get(key)
                item = QStandardItem(str(value) if key == "name" else _format_score(key, value))
                # Undefined scores (0 / 0) sort below every defined one.
                item.setData(value if value is not None else -1.0, SORT_ROLE)
                if key != "name":
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                items.append(item)
            self.per_class_model.appendRow(items)
        # Worst classes first: where the model fails is what a reader looks for.
        self.per_class_table.sortByColumn(3, Qt.SortOrder.AscendingOrder)

    def _show_top_losses(self, top_losses: Sequence[Mapping[str, Any]]) -> None:
        images = [
            GalleryImage(
                path=Path(entry["path"]),
                caption=image_caption(entry["predicted_label"], entry["probability"], entry["true_label"]),
                tooltip=f"true {entry['true_label']}, predicted {entry['predicted_label']} "
                        f"({entry['probability']:.1%}); probability of {entry['true_label']}: "
                        f"{entry['true_probability']:.1%}; loss {entry['loss']:.3f}",
                true_label=entry["true_label"],
                severity="error",
            )
            for entry in top_losses
        ]
        self.top_losses_gallery.set_images(images)
        self.top_losses_label.setText(
            f"The {len(images)} most confidently wrong images, worst first. Often a label is wrong, or the "
            f"picture shows something else as well." if images else "")
        self.tabs.setTabText(1, f"Top losses ({len(images)})")

    # Slots ---------------------------------------------------------------------------------------

    def _on_confusion_view_cell_selected(self, true_index: int, predicted_index: int) -> None:
        images = self.cell_images(true_index, predicted_index)
        self.cell_gallery.set_images(images)
        self.cell_gallery.set_empty_text("No image in this cell.")
        self.cell_label.setText(self.confusion_view.cell_text(true_index, predicted_index).capitalize())

    def _on_gallery_image_chosen(self, image: GalleryImage) -> None:
        self.cam_panel.show_image(image.path, image.true_label)


def _most_confused_cell(confusion: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """The off-diagonal cell with the most images, or None when every image is right."""
    count, row, column = max(((count, row, column) for row, counts in enumerate(confusion)
                              for column, count in enumerate(counts) if row != column), default=(0, 0, 0))
    return (row, column) if count else None


def _format_score(key: str, value: float | int | None) -> str:
    if value is None:
        return "—"
    if key == "support":
        return str(value)
    if key in ("top1", "top5"):
        return f"{value:.1%}"
    return f"{value:.3f}" if key != "log_loss" else f"{value:.4f}"


def _title_html(report: Mapping[str, Any]) -> str:
    summary, source = report["summary"], report.get("source", {})
    facts = [f"{summary['images']} images"]
    if source.get("tta") not in (None, "none"):
        facts.append(f"TTA {source['tta']}")
    evaluated = source.get("evaluated")
    if evaluated:
        try:
            facts.append(f"evaluated {datetime.fromisoformat(evaluated):%Y-%m-%d %H:%M}")
        except ValueError:
            facts.append(f"evaluated {evaluated}")
    title = report.get("title") or report.get("name", "model")
    return f"<b>{escape(title)}</b> · {escape(' · '.join(facts))}"


def _numbers_html(report: Mapping[str, Any]) -> str:
    """The headline scores on one line; for an ensemble, its members' range of top-1 and log-loss after them."""
    summary = report["summary"]
    parts = [f"{title} <b>{_format_score(key, summary[key])}</b>" for key, title in _SCORE_COLUMNS
             if summary.get(key) is not None]
    if summary.get("temperature") is not None:
        parts.append(f"temperature {summary['temperature']:.3g}")
    members = [member["summary"] for member in report.get("members", {}).values()]
    ranges = []
    for key, title in (("top1", "top-1"), ("log_loss", "log-loss")):
        values = sorted(member[key] for member in members if member.get(key) is not None)
        if values:
            ranges.append(f"{title} {_format_score(key, values[0])} to {_format_score(key, values[-1])}")
    if ranges:
        parts.append(f"{len(members)} members: {', '.join(ranges)}")
    return " · ".join(parts)


def _notes_html(report: Mapping[str, Any]) -> str:
    summary = report["summary"]
    fit = report.get("temperature_fit")
    temperature = summary.get("temperature")
    if fit is not None:
        applied = bool(fit.get("worth_applying"))
        line = f"Temperature {fit['temperature']:.4g} fitted on validation" + ("" if applied else ", not applied")
    elif temperature is not None:
        line = f"Temperature {temperature:.4g}, saved with the model"
    else:
        line = "No temperature scaling (tick “Fit temperature” to calibrate on validation)"
    paragraphs = [f"<b>{escape(line)}.</b>"]
    unreadable = summary.get("unreadable") or 0
    if unreadable:
        paragraphs.append(f"{unreadable} {'image' if unreadable == 1 else 'images'} could not be read "
                          f"and {'was' if unreadable == 1 else 'were'} left out.")
    paragraphs += [escape(note) for note in report.get("notes", [])]
    return "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs)

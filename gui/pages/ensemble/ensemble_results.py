"""The Ensemble page's evaluation panel: an ensemble beside each of its members, from an evaluation report.

It reads only the headline numbers of ``report.json`` (top-1, log-loss, ECE) and says in
one line whether averaging paid off: the ensemble's log-loss against its members' mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from statistics import fmean
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFont, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import TransferStudioError
from gui.widgets.items import table_item

HEADERS = ("Model", "Top-1", "Log-loss", "ECE")
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
_ROWS_SHOWN = 4  # the ensemble and three members before the table scrolls
_EMPTY_TEXT = "Evaluate the checked checkpoints or a saved ensemble to see it beside each of its members."


def read_report(folder: str | Path) -> dict[str, Any]:
    """The headline numbers of an evaluation report folder.

    Returns:
        ``{"title": str, "model": Path, "summary": {...}, "members": {name: summary}}``,
        summaries as in ``report.json`` (``top1``, ``log_loss``, ``ece``, ``images``...).

    Raises:
        TransferStudioError: no readable ``report.json`` in the folder.
    """
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return {"title": str(report.get("title", "")), "model": Path(report["source"]["model"]),
                "summary": dict(report["summary"]),
                "members": {name: dict(member["summary"]) for name, member in report.get("members", {}).items()}}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise TransferStudioError(f"{path}: not a readable evaluation report ({error})") from error


def comparison_text(report: Mapping[str, Any]) -> str:
    """One line: the ensemble's log-loss and top-1 against its members' mean (or a single model's scores)."""
    summary, members = report["summary"], list(report["members"].values())
    if not members:
        return (f"{report['model'].stem}: log-loss {summary['log_loss']:.4f}, top-1 {summary['top1']:.1%} "
                f"on {summary['images']} images")
    mean_loss = fmean(member["log_loss"] for member in members)
    mean_top1 = fmean(member["top1"] for member in members)
    return (f"Ensemble log-loss {summary['log_loss']:.4f} vs members' mean {mean_loss:.4f} (lower is better) · "
            f"top-1 {summary['top1']:.1%} vs members' mean {mean_top1:.1%}")


class EnsembleResults(QGroupBox):
    """A headline comparison and a table: the evaluated model first (bold), then its members by log-loss."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Evaluation", parent)
        self._folder: Path | None = None
        self.headline_label = QLabel(self)
        self.headline_label.setWordWrap(True)
        self.headline_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(HEADERS), self)
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # As tall as its rows, up to _ROWS_SHOWN of them: the page's space goes to the checkpoints first.
        self.table.setSizeAdjustPolicy(QTableWidget.SizeAdjustPolicy.AdjustToContents)
        self.table.setMaximumHeight(header.sizeHint().height() + 2 * self.table.frameWidth()
                                    + _ROWS_SHOWN * self.table.verticalHeader().defaultSectionSize())
        self.open_button = QPushButton("Open report", self)
        self.open_button.setToolTip("The full report (confusion matrix, calibration, top losses) in a browser")
        self.open_button.clicked.connect(self.open_report)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.clear()

    @property
    def folder(self) -> Path | None:
        """The report folder shown, if any."""
        return self._folder

    def clear(self) -> None:
        """Show the empty state."""
        self._folder = None
        self.setTitle("Evaluation")
        self.headline_label.setText(_EMPTY_TEXT)
        self.headline_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.headline_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.table.setRowCount(0)
        self.table.hide()
        self.open_button.hide()

    def show_report(self, folder: Path, report: Mapping[str, Any]) -> None:
        """Show a report read by ``read_report``."""
        self._folder = folder
        self.setTitle(f"Evaluation: {report['title']}" if report["title"] else "Evaluation")
        self.headline_label.setText(comparison_text(report))
        self.headline_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.headline_label.setForegroundRole(QPalette.ColorRole.WindowText)
        members = sorted(report["members"].items(), key=lambda item: item[1]["log_loss"])
        first = "Ensemble" if members else report["model"].stem
        rows = [(first, report["summary"]), *members]
        self.table.setRowCount(len(rows))
        for row, (name, summary) in enumerate(rows):
            texts = (name, f"{summary['top1']:.1%}", f"{summary['log_loss']:.4f}", f"{summary['ece']:.4f}")
            for column, text in enumerate(texts):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(_RIGHT)
                if row == 0:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, column, item)
        self.table.show()
        self.open_button.show()

    def rows(self) -> list[list[str]]:
        """The table's texts, row by row (the evaluated model first)."""
        return [[table_item(self.table, row, column).text() for column in range(len(HEADERS))]
                for row in range(self.table.rowCount())]

    def open_report(self) -> None:
        """Open the report's ``index.html`` in the default browser."""
        if self._folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._folder / "index.html")))

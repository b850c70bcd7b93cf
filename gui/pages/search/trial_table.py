"""The trials of a search as a sortable table: number, stage, state, score, time, values and why it ended.

Refilled from the page's ``TrialRecord`` list as events arrive; the best trial is bold,
states are coloured, and the selection follows the trial (not the row) across refills.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from engine.search.progress import short_name
from engine.search.records import TrialRecord
from engine.search.space import format_value
from gui.style import ok_color, severity_color
from gui.widgets.items import header_item, table_item

_FIXED_HEADERS = ("#", "Stage", "State")
_STATE_TONES = {"complete": "ok", "pruned": "warning", "failed": "error", "running": "info"}


class _Item(QTableWidgetItem):
    """A cell that sorts by a key (numbers as numbers, empty cells last), not by its text."""

    def __init__(self, text: str, key: Any = None) -> None:
        super().__init__(text)
        self.key = (1, "") if key is None else (0, key)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.key, getattr(other, "key", (1, ""))
        try:
            return mine < theirs
        except TypeError:  # a choice column mixing numbers and words
            return str(mine) < str(theirs)


class TrialTable(QTableWidget):
    """One row per trial, columns for the metric and each searched parameter."""

    NUMBER_ROLE = Qt.ItemDataRole.UserRole

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 0, parent)
        self._records: list[TrialRecord] = []
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setSortingEnabled(True)
        self.sortByColumn(0, Qt.SortOrder.AscendingOrder)

    def set_trials(self, records: Sequence[TrialRecord], *, metric: str, parameters: Sequence[str],
                   best: int | None) -> None:
        """Show these trials; ``parameters`` orders the value columns, ``best`` is the trial to bold."""
        selected = self.selected_trial()
        paths = list(dict.fromkeys([*parameters, *(path for record in records for path in record.params)]))
        headers = [*_FIXED_HEADERS, metric, "Seconds", *(short_name(path) for path in paths), "Reason"]
        header = self.horizontalHeader()
        sort_column, sort_order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        self.setSortingEnabled(False)
        self.clearContents()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        for column, path in enumerate(paths, start=len(_FIXED_HEADERS) + 2):
            header_item(self, column).setToolTip(path)
        self.setRowCount(len(records))
        palette = self.palette()
        for row, record in enumerate(records):
            cells = [_Item(str(record.number), record.number), _Item(record.stage or "", record.stage),
                     _Item(record.state, record.state), _number_item(record.value, "{:.4g}"),
                     _number_item(record.seconds, "{:.1f}")]
            for path in paths:
                value = record.params.get(path)
                cells.append(_Item("" if value is None else format_value(value), value))
            reason = _Item(record.reason or "", record.reason)
            reason.setToolTip(record.reason or "")
            cells.append(reason)
            tone = _STATE_TONES.get(record.state)
            for column, cell in enumerate(cells):
                cell.setData(self.NUMBER_ROLE, record.number)
                if record.number == best:
                    font = QFont(self.font())
                    font.setBold(True)
                    cell.setFont(font)
                    cell.setToolTip(cell.toolTip() or "The best trial so far")
                self.setItem(row, column, cell)
            if tone is not None:
                table_item(self, row, 2).setForeground(_tone_color(tone, palette))
        self._records = list(records)
        self.setSortingEnabled(True)
        self.sortByColumn(sort_column, sort_order)
        if selected is not None:
            self.select_trial(selected)

    def selected_trial(self) -> int | None:
        """The number of the selected trial, or None."""
        rows = self.selectionModel().selectedRows()
        if not rows:
            return None
        return table_item(self, rows[0].row(), 0).data(self.NUMBER_ROLE)

    def select_trial(self, number: int) -> bool:
        """Select (and scroll to) the row of trial ``number``; False when it is not in the table."""
        for row in range(self.rowCount()):
            item = self.item(row, 0)
            if item is not None and item.data(self.NUMBER_ROLE) == number:
                self.selectRow(row)
                self.scrollToItem(item)
                return True
        return False

    def row_texts(self) -> list[list[str]]:
        """Every row's cell texts, in display order."""
        return [[table_item(self, row, column).text() for column in range(self.columnCount())]
                for row in range(self.rowCount())]


def _number_item(value: float | None, pattern: str) -> _Item:
    if value is None or not math.isfinite(value):
        return _Item("")
    return _Item(pattern.format(value), float(value))


def _tone_color(tone: str, palette: QPalette) -> QColor:
    if tone == "ok":
        return ok_color(palette)
    if tone == "info":
        return palette.color(QPalette.ColorRole.Highlight)
    return severity_color(tone, palette)

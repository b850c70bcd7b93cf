"""The search space as an editable table: one row per searched config field, with its range or choices.

While ``search.space`` is empty the table shows the default space of ``model.mode``;
the first edit writes the whole table into ``search.space``, where the engine's own
validation accepts it or names the bad entry, which the table then marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig, SearchParameter
from engine.search.fields import (
    entry_of,
    format_choices,
    format_number,
    parse_choices,
    searchable_fields,
    starting_parameter,
)
from engine.search.space import resolve_space
from gui.services.config_state import ConfigState
from gui.widgets.fields import ERROR_STYLE, help_text
from gui.widgets.items import header_item, table_item

SPACE_PATH = "search.space"
COLUMN_PATH, COLUMN_SCALE, COLUMN_LOW, COLUMN_HIGH = range(4)
CHOICES = "choices"
_ERROR_BACKGROUND = QColor(198, 40, 40, 70)


class SearchSpaceEditor(QWidget):
    """A table of search parameters bound to ``search.space``, with Add, Remove and Reset to default.

    Args:
        state: the config being edited.
        parent: the parent widget.
    """

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._fields = searchable_fields()
        self._updating = False
        self._local_error = ""  # a cell that is not a number: never reaches the state

        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["Parameter", "Scale", "Low", "High"])
        header_item(self.table, COLUMN_SCALE).setToolTip(
            "log: drawn evenly in the logarithm (rates, decays) · linear · choices: a list of values to pick from")
        header_item(self.table, COLUMN_LOW).setToolTip(
            "The range's smallest value; for choices, the values separated by commas")
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.AllEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(COLUMN_PATH, QHeaderView.ResizeMode.Stretch)
        for column, width in ((COLUMN_SCALE, 82), (COLUMN_LOW, 72), (COLUMN_HIGH, 72)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(column, width)
        self.table.setToolTip(help_text(SPACE_PATH))
        # Four rows and the header stay visible however little room the page gets.
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height() + 4 * 31)
        self.table.itemChanged.connect(self._on_table_item_changed)
        self.table.itemSelectionChanged.connect(self._update_buttons)

        self.add_button = QPushButton("Add", self)
        self.add_button.setToolTip("Search one more config field")
        self.add_button.clicked.connect(self._on_add_button_clicked)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.setToolTip("Stop searching the selected field")
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.reset_button = QPushButton("Reset to default", self)
        self.reset_button.setToolTip("Search the default space of the chosen model.mode again")
        self.reset_button.clicked.connect(self._on_reset_button_clicked)
        self.note_label = QLabel(self)
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: palette(placeholder-text);")
        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        buttons.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.error_label)
        layout.addLayout(buttons)
        layout.addWidget(self.note_label)

        state.changed.connect(self._on_state_changed)
        state.field_error.connect(self._on_state_field_error)
        self._on_state_changed(state.config)

    @property
    def error(self) -> str:
        """The message shown at the table, or ""."""
        return "" if self.error_label.isHidden() else self.error_label.text()

    def entries(self) -> list[dict[str, Any]]:
        """The table as ``search.space`` entries (``{path, low, high, scale}`` or ``{path, choices}``).

        Raises:
            ValueError: a range end or a choice that is not a value; the message names the entry.
        """
        return [self._entry(row) for row in range(self.table.rowCount())]

    def add_parameter(self, path: str | None = None) -> int:
        """Append a row for ``path`` (default: the first field not searched yet) and commit; returns the row."""
        shown = {self._path(row) for row in range(self.table.rowCount())}
        path = path or next((name for name in self._fields if name not in shown), next(iter(self._fields)))
        row = self.table.rowCount()
        self._with_updates_paused(lambda: self._insert_row(row, self._new_parameter(path)))
        self.table.selectRow(row)
        self.commit()
        return row

    def remove_parameter(self, row: int) -> None:
        """Drop one row and commit."""
        if 0 <= row < self.table.rowCount():
            self.table.removeRow(row)
            self.commit()

    def reset_to_default(self) -> None:
        """Empty ``search.space``: the search (and the table) follow the default space of ``model.mode``."""
        self._local_error = ""
        if self.state.set_value(SPACE_PATH, []):
            self._show_error("")

    def set_cell(self, row: int, column: int, value: str) -> None:
        """Type ``value`` into a cell, as a person would (a combo takes the matching choice); commits."""
        widget = self.table.cellWidget(row, column)
        if isinstance(widget, QComboBox):
            widget.setCurrentText(value)
        else:
            table_item(self.table, row, column).setText(value)

    def commit(self) -> bool:
        """Send the table to ``search.space``; False (and a message at the table) if refused."""
        if self._updating:
            return True
        try:
            entries = self.entries()
        except ValueError as error:
            self._local_error = str(error)
            self._show_error(self._local_error)
            return False
        self._local_error = ""
        accepted = self.state.set_value(SPACE_PATH, entries)
        self._update_buttons()
        if accepted:
            self._show_error("")
        return accepted

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, config: RunConfig) -> None:
        self._update_note(config)
        if SPACE_PATH in self.state.errors or self._local_error:
            return  # keep what the user typed beside its message
        space = resolve_space(config)
        try:
            shown = self._parameters()
        except ValueError:
            shown = None
        if shown != space:
            self._show(space)

    def _on_state_field_error(self, path: str, message: str) -> None:
        if path == SPACE_PATH:
            self._show_error(message)

    def _on_table_item_changed(self, _item: QTableWidgetItem) -> None:
        self.commit()

    def _on_path_combo_changed(self, combo: QComboBox) -> None:
        row = self._row_of(combo)
        if row is None or self._updating:
            return
        self._with_updates_paused(lambda: self._fill_row(row, self._new_parameter(combo.currentText())))
        self.commit()

    def _on_scale_combo_changed(self, combo: QComboBox) -> None:
        row = self._row_of(combo)
        if row is None or self._updating:
            return
        self._with_updates_paused(lambda: self._switch_kind(row, combo.currentText()))
        self.commit()

    def _on_add_button_clicked(self) -> None:
        self.add_parameter()

    def _on_remove_button_clicked(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.remove_parameter(rows[0].row())

    def _on_reset_button_clicked(self) -> None:
        self.reset_to_default()

    # Rows ----------------------------------------------------------------------------------------

    def _show(self, space: Sequence[SearchParameter]) -> None:
        def fill() -> None:
            self.table.setRowCount(0)
            for row, parameter in enumerate(space):
                self._insert_row(row, parameter)

        self._with_updates_paused(fill)
        # No current cell: focus arriving at the table would otherwise select its first row.
        self.table.setCurrentIndex(self.table.model().index(-1, -1))
        self._mark_entry(None)
        self._update_buttons()

    def _insert_row(self, row: int, parameter: SearchParameter) -> None:
        self.table.insertRow(row)
        path_combo = QComboBox(self.table)
        path_combo.setMaxVisibleItems(20)
        for path in self._fields:
            path_combo.addItem(path)
            path_combo.setItemData(path_combo.count() - 1, help_text(path), Qt.ItemDataRole.ToolTipRole)
        if parameter.path not in self._fields:  # a field typed into a YAML file: keep it, validation judges it
            path_combo.addItem(parameter.path)
        path_combo.currentTextChanged.connect(lambda _text, combo=path_combo: self._on_path_combo_changed(combo))
        self.table.setCellWidget(row, COLUMN_PATH, path_combo)
        scale_combo = QComboBox(self.table)
        scale_combo.currentTextChanged.connect(lambda _text, combo=scale_combo: self._on_scale_combo_changed(combo))
        self.table.setCellWidget(row, COLUMN_SCALE, scale_combo)
        self._fill_row(row, parameter)

    def _fill_row(self, row: int, parameter: SearchParameter) -> None:
        """Show ``parameter`` in an existing row (its path, scales offered, and range or choices)."""
        path_combo = self._combo(row, COLUMN_PATH)
        path_combo.setCurrentText(parameter.path)
        path_combo.setToolTip(help_text(parameter.path) if parameter.path in self._fields else "")
        scale_combo = self._combo(row, COLUMN_SCALE)
        scale_combo.clear()
        numeric = self._fields.get(parameter.path, ()) is None
        scale_combo.addItems(["log", "linear", CHOICES] if numeric else [CHOICES])
        kind = CHOICES if parameter.choices is not None else parameter.scale
        scale_combo.setCurrentText(kind)
        if parameter.choices is not None:
            self._set_choices(row, format_choices(parameter.choices))
        else:
            self._set_range(row, format_number(parameter.low), format_number(parameter.high))

    def _switch_kind(self, row: int, kind: str) -> None:
        """Turn a range into choices (its ends) or choices into a range (their smallest and largest)."""
        was_choices = self.table.columnSpan(row, COLUMN_LOW) > 1
        if kind == CHOICES and not was_choices:
            ends = [self._text(row, COLUMN_LOW), self._text(row, COLUMN_HIGH)]
            self._set_choices(row, ", ".join(end for end in ends if end))
        elif kind != CHOICES and was_choices:
            numbers = sorted(value for value in parse_choices(self._text(row, COLUMN_LOW))
                             if isinstance(value, (int, float)) and not isinstance(value, bool))
            low, high = (numbers[0], numbers[-1]) if numbers else (None, None)
            self._set_range(row, format_number(low), format_number(high))

    def _set_range(self, row: int, low: str, high: str) -> None:
        if self.table.columnSpan(row, COLUMN_LOW) > 1:
            self.table.setSpan(row, COLUMN_LOW, 1, 1)
        self.table.setItem(row, COLUMN_LOW, QTableWidgetItem(low))
        self.table.setItem(row, COLUMN_HIGH, QTableWidgetItem(high))

    def _set_choices(self, row: int, text: str) -> None:
        self.table.setItem(row, COLUMN_HIGH, QTableWidgetItem(""))
        self.table.setSpan(row, COLUMN_LOW, 1, 2)
        item = QTableWidgetItem(text)
        item.setToolTip("The values to pick from, separated by commas")
        self.table.setItem(row, COLUMN_LOW, item)

    def _new_parameter(self, path: str) -> SearchParameter:
        return starting_parameter(path, self.state.value(path) if path in self._fields else None,
                                  self._fields.get(path))

    def _entry(self, row: int) -> dict[str, Any]:
        path = self._path(row)
        kind = self._combo(row, COLUMN_SCALE).currentText()
        if kind == CHOICES:
            return {"path": path, "choices": parse_choices(self._text(row, COLUMN_LOW))}
        ends = {}
        for column, name in ((COLUMN_LOW, "low"), (COLUMN_HIGH, "high")):
            text = self._text(row, column)
            try:
                ends[name] = float(text) if text else None
            except ValueError:
                raise ValueError(f"search.space[{row}].{name}: must be a number, got {text!r}") from None
        return {"path": path, **ends, "scale": kind}

    def _parameters(self) -> tuple[SearchParameter, ...]:
        """The table as the config would hold it (for comparing with the config's space)."""
        return tuple(
            SearchParameter(entry["path"], low=entry.get("low"), high=entry.get("high"),
                            scale=entry.get("scale", "linear"),
                            choices=None if entry.get("choices") is None else tuple(entry["choices"]))
            for entry in self.entries())

    # Helpers -------------------------------------------------------------------------------------

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))
        self._mark_entry(entry_of(message) if message else None)
        self._update_buttons()

    def _mark_entry(self, marked: int | None) -> None:
        for row in range(self.table.rowCount()):
            brush = QBrush(_ERROR_BACKGROUND) if row == marked else QBrush()
            for column in (COLUMN_LOW, COLUMN_HIGH):
                item = self.table.item(row, column)
                if item is not None:
                    self._with_updates_paused(lambda item=item, brush=brush: item.setBackground(brush))

    def _update_note(self, config: RunConfig) -> None:
        if config.search.space:
            count = len(config.search.space)
            self.note_label.setText(f"Your own space of {count} parameter{'s' if count != 1 else ''};"
                                    " Reset to default follows model.mode again.")
        else:
            mode = config.model.mode.replace("_", " ")
            self.note_label.setText(f"The default space for {mode} (it follows model.mode);"
                                    " edit a row to make it your own.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        refused = bool(self._local_error) or SPACE_PATH in self.state.errors
        self.reset_button.setEnabled(bool(self.state.config.search.space) or refused)
        self.remove_button.setEnabled(bool(self.table.selectionModel().selectedRows())
                                      and self.table.rowCount() > 1)
        self.add_button.setEnabled(self.table.rowCount() < len(self._fields))

    def _with_updates_paused(self, change: Any) -> None:
        was, self._updating = self._updating, True
        try:
            change()
        finally:
            self._updating = was

    def _combo(self, row: int, column: int) -> QComboBox:
        return cast(QComboBox, self.table.cellWidget(row, column))

    def _path(self, row: int) -> str:
        return self._combo(row, COLUMN_PATH).currentText()

    def _text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text().strip() if item is not None else ""

    def _row_of(self, combo: QComboBox) -> int | None:
        for row in range(self.table.rowCount()):
            if combo in (self.table.cellWidget(row, COLUMN_PATH), self.table.cellWidget(row, COLUMN_SCALE)):
                return row
        return None

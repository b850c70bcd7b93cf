"""The backbone picker: a searchable table of timm backbones and the weights they start from.

Names come from ``engine.models.backbones.list_backbones`` when the picker is first shown
(it needs timm, which loads in a few seconds: the window does not wait for it); parameter
counts, input sizes and weight sources need a model built on the meta device (~0.1 s each),
so they are filled in a pool thread for the rows on screen only, and a new search cancels that work.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
)
from PySide6.QtGui import QFont, QGuiApplication, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig
from engine.core.errors import TransferStudioError
from engine.models.backbone_info import BackboneInfo
from gui.pages.model.weights_field import WeightsField, weights_hint, weights_is_file
from gui.services.config_state import ConfigState
from gui.services.workers import Worker
from gui.style import ok_color

DESCRIBE_CHUNK = 6  # names per worker job: small, so that a new search is answered quickly
PENDING_TEXT = "…"
_ModelIndex = QModelIndex | QPersistentModelIndex


def offline_backbones() -> set[str]:
    """Backbones whose weights an installed package provides (no network needed)."""
    from engine.models.weights import list_weights_providers  # torch: loaded on first use

    return {provider.backbone for provider in list_weights_providers() if provider.is_available()}


def describe_backbones(
    names: Sequence[str], *, progress: Callable[[int, int], None], should_abort: Callable[[], bool]
) -> dict[str, BackboneInfo | str]:
    """Describe backbones one by one (a worker job); stops early, keeping what it has, when aborted.

    Returns:
        name -> its ``BackboneInfo``, or the reason it cannot be described.
    """
    from engine.models.backbones import describe_backbone  # torch and timm: loaded on first use

    described: dict[str, BackboneInfo | str] = {}
    for done, name in enumerate(names, start=1):
        if should_abort():
            break
        try:
            described[name] = describe_backbone(name)
        except (TransferStudioError, RuntimeError, TypeError, ValueError, AssertionError) as error:
            # A few timm entries cannot be built without extra arguments; they stay listed, marked.
            described[name] = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        progress(done, len(names))
    return described


class BackboneTableModel(QAbstractTableModel):
    """Rows of (name, parameters, input size, weight sources); details arrive later by ``add_details``."""

    COLUMN_NAME, COLUMN_PARAMS, COLUMN_INPUT, COLUMN_WEIGHTS = range(4)
    _HEADERS = ("Backbone", "Params (M)", "Input", "Weights")
    _HEADER_TIPS = (
        "timm model name. First, in bold: weights installed on this computer; then those with pretrained"
        " weights; last, those without",
        "Millions of parameters: more is usually more accurate, and slower and hungrier",
        "Image side the backbone was pretrained at, in pixels",
        "Where pretrained weights come from: an offline package (installed), the hub (downloaded once),"
        " a file you chose, or none",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._names: list[str] = []
        self._details: dict[str, BackboneInfo | str] = {}
        self._offline: set[str] = set()
        self._chosen = ""
        self._chosen_file = ""

    def set_names(self, names: Sequence[str], with_weights: set[str], offline: set[str]) -> None:
        """Show these backbones: installed weights (``offline``) first, then any pretrained weights, then by name."""
        self.beginResetModel()
        self._offline = offline
        self._names = sorted(names, key=lambda name: (name not in self._offline, name not in with_weights, name))
        self.endResetModel()

    def add_details(self, details: dict[str, BackboneInfo | str]) -> None:
        """Fill in described backbones (kept across searches)."""
        self._details.update(details)
        rows = [row for row, name in enumerate(self._names) if name in details]
        if rows:
            self.dataChanged.emit(self.index(min(rows), 1), self.index(max(rows), self.columnCount() - 1))

    def set_chosen(self, name: str, weights: str) -> None:
        """Mark the configured backbone, and the weights file it uses if any."""
        chosen_file = Path(weights).name if weights_is_file(weights) else ""
        if (name, chosen_file) == (self._chosen, self._chosen_file):
            return
        self._chosen, self._chosen_file = name, chosen_file
        if self._names:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._names) - 1, self.columnCount() - 1))

    def is_offline(self, name: str) -> bool:
        """Whether an installed package provides this backbone's weights."""
        return name in self._offline

    def details(self, name: str) -> BackboneInfo | str | None:
        """What is known about a backbone: its info, why it cannot be described, or None (not yet)."""
        return self._details.get(name)

    def name_at(self, row: int) -> str:
        """The backbone name shown in ``row``."""
        return self._names[row]

    def row_of(self, name: str) -> int:
        """The row showing ``name``, or -1 when the search hides it."""
        try:
            return self._names.index(name)
        except ValueError:
            return -1

    def undescribed(self, rows: range) -> list[str]:
        """Names in ``rows`` whose details are not known yet."""
        shown = self._names[rows.start:rows.stop]
        return [name for name in shown if name not in self._details]

    def rowCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._names)

    def columnCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._HEADER_TIPS[section]
        return None

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        name, column = self._names[index.row()], index.column()
        details = self._details.get(name)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(name, column, details)
        if role == Qt.ItemDataRole.FontRole and column == self.COLUMN_NAME and name in self._offline:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and column == self.COLUMN_WEIGHTS and name in self._offline:
            return ok_color(QGuiApplication.palette())
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (self.COLUMN_PARAMS, self.COLUMN_INPUT):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and isinstance(details, str):
            return f"{name} cannot be described: {details}"
        return None

    def _text(self, name: str, column: int, details: BackboneInfo | str | None) -> str:
        if column == self.COLUMN_NAME:
            return name
        if column == self.COLUMN_WEIGHTS and name == self._chosen and self._chosen_file:
            return f"file ({self._chosen_file})"
        if details is None:
            return PENDING_TEXT
        if isinstance(details, str):
            return "?" if column != self.COLUMN_WEIGHTS else "unavailable"
        if column == self.COLUMN_PARAMS:
            return f"{details.num_params / 1e6:.1f}"
        if column == self.COLUMN_INPUT:
            return f"{details.input_size[1]}×{details.input_size[2]}"
        return ", ".join(details.weight_sources) or "none"


def search_pattern(text: str) -> str:
    """The timm wildcard for what was typed: words match anywhere, in order; ``*?[`` are kept as typed."""
    text = text.strip().lower()
    if not text:
        return "*"
    if any(character in text for character in "*?["):
        return text
    return "*" + "*".join(text.split()) + "*"


class BackbonePicker(QWidget):
    """Search timm's backbones, pick one (``model.backbone``) and where its weights come from.

    Args:
        state: the config being edited.
        parent: the parent widget.
    """

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._worker: Worker | None = None
        self._syncing = False
        self._offline: set[str] | None = None  # known once the backbones are first listed

        self.filter_edit = QLineEdit(self)
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setPlaceholderText("Search backbones: resnet, efficientnet lite, vit small…")
        self.filter_edit.setToolTip("Words match anywhere in the name, in order; * and ? work as wildcards")
        self.model = BackboneTableModel(self)
        self.table = QTableView(self)
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.verticalHeader().hide()
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(BackboneTableModel.COLUMN_NAME, QHeaderView.ResizeMode.Stretch)
        for column, width in ((BackboneTableModel.COLUMN_PARAMS, 78), (BackboneTableModel.COLUMN_INPUT, 72),
                              (BackboneTableModel.COLUMN_WEIGHTS, 92)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        self.count_label = QLabel(self)
        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.weights_field = WeightsField(state, self)
        weights_row = QHBoxLayout()
        weights_caption = QLabel("Weights:", self)
        weights_caption.setToolTip(self.weights_field.toolTip())
        weights_row.addWidget(weights_caption, 0, Qt.AlignmentFlag.AlignTop)
        weights_row.addWidget(self.weights_field, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.count_label)
        layout.addWidget(self.summary_label)
        layout.addLayout(weights_row)

        self._filter_timer = _single_shot(self, 150, self._apply_filter)  # one search per pause in typing
        self._fill_timer = _single_shot(self, 60, self._fill_visible)  # one fill per burst of scrolling
        self.filter_edit.textChanged.connect(self._filter_timer.start)
        self.table.verticalScrollBar().valueChanged.connect(self._fill_timer.start)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current_row_changed)
        state.changed.connect(self._on_state_changed)
        self._on_state_changed(state.config)  # the list itself comes when the picker is first shown

    def set_filter(self, text: str) -> None:
        """Search for ``text`` now (as if typed and paused)."""
        self.filter_edit.setText(text)
        self._filter_timer.stop()
        self._apply_filter()

    def visible_names(self) -> list[str]:
        """The backbones in the rows on screen."""
        return [self.model.name_at(row) for row in self._visible_rows()]

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802  Qt's name
        super().showEvent(event)
        if self._offline is None:
            self._apply_filter()
        self._fill_timer.start()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802  Qt's name
        super().resizeEvent(event)
        self._fill_timer.start()

    def _apply_filter(self) -> None:
        if self._worker is not None:
            self._worker.abort()  # what it already described is kept; the rest is for rows now hidden
        from engine.models.backbones import list_backbones  # timm: loaded on first use

        if self._offline is None:
            self._offline = offline_backbones()
        pattern = search_pattern(self.filter_edit.text())
        names = list_backbones(pattern)
        self.model.set_names(names, set(list_backbones(pattern, pretrained_only=True)), self._offline)
        offline = sum(1 for name in names if self.model.is_offline(name))
        if not names:
            self.count_label.setText("No backbone matches; try fewer letters, or * as a wildcard")
        elif offline:
            self.count_label.setText(f"{len(names):,} backbones, {offline} with weights installed (bold)")
        else:
            self.count_label.setText(f"{len(names):,} backbones")
        self._select_chosen()
        self._fill_timer.start()

    def _visible_rows(self) -> range:
        first = self.table.rowAt(0)
        if first < 0:
            return range(0)
        last = self.table.rowAt(self.table.viewport().height() - 1)
        return range(first, (self.model.rowCount() - 1 if last < 0 else last) + 1)

    def _fill_visible(self) -> None:
        if self._worker is not None or self._offline is None:
            return  # the worker calls again when it finishes; showing the picker lists the backbones
        chosen = self.state.config.model.backbone
        # The chosen backbone alone first: the summary below the table waits for it.
        names = [chosen] if self.model.details(chosen) is None else self.model.undescribed(self._visible_rows())
        names = names[:DESCRIBE_CHUNK]
        if not names:
            return
        worker = Worker(describe_backbones, names)
        worker.signals.returned.connect(self._on_describer_returned)
        worker.signals.finished.connect(self._on_describer_finished)
        self._worker = worker
        worker.start()

    def _select_chosen(self) -> None:
        row = self.model.row_of(self.state.config.model.backbone)
        self._syncing = True
        try:
            if row < 0:
                self.table.selectionModel().clearSelection()
            elif self.table.currentIndex().row() != row:
                self.table.selectionModel().setCurrentIndex(
                    self.model.index(row, 0),
                    QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
                )
                self.table.scrollTo(self.model.index(row, 0))
        finally:
            self._syncing = False

    def _update_summary(self) -> None:
        model_config = self.state.config.model
        details = self.model.details(model_config.backbone)
        name = f"<b>{html.escape(model_config.backbone)}</b>"
        if details is None:
            text = f"Chosen: {name} {PENDING_TEXT}"
        elif isinstance(details, str):
            text = f"Chosen: {name}, which cannot be used: {html.escape(details)}"
        else:
            hint = weights_hint(model_config.weights, details.weight_sources)
            text = (f"Chosen: {name}, {details.num_params / 1e6:.1f} M parameters, "
                    f"pretrained at {details.input_size[1]}×{details.input_size[2]} px. {html.escape(hint)}")
        self.summary_label.setText(text)

    def _on_state_changed(self, config: RunConfig) -> None:
        self.model.set_chosen(config.model.backbone, config.model.weights)
        self._select_chosen()
        self._update_summary()
        self._fill_timer.start()

    def _on_table_current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if self._syncing or not current.isValid():
            return
        self.state.set_value("model.backbone", self.model.name_at(current.row()))

    def _on_describer_returned(self, details: dict[str, BackboneInfo | str]) -> None:
        self.model.add_details(details)
        if self.state.config.model.backbone in details:
            self._update_summary()

    def _on_describer_finished(self) -> None:
        self._worker = None
        self._fill_timer.start()


def _single_shot(parent: QWidget, interval_ms: int, slot: Callable[[], None]) -> QTimer:
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(interval_ms)
    timer.timeout.connect(slot)
    return timer

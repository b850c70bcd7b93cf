"""The class list of a dataset: class name, usable image count and share, with an inline bar.

A thin view over the class names and usable image counts of a dataset; it computes
nothing but percentages. Selecting a row announces the class, so that a page can
show its images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QRectF,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QGuiApplication, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from gui.style import bar_color, severity_color

SORT_ROLE = Qt.ItemDataRole.UserRole
SHARE_ROLE = Qt.ItemDataRole.UserRole + 1  # share of the largest class, 0..1, for the bar length

_ModelIndex = QModelIndex | QPersistentModelIndex


class ClassTableModel(QAbstractTableModel):
    """Rows of (class, usable images, share of all usable images)."""

    COLUMN_CLASS, COLUMN_IMAGES, COLUMN_SHARE = range(3)
    _HEADERS = ("Class", "Images", "Share")
    _HEADER_TIPS = (
        "Class folder name",
        "Usable images: files left out of training (damaged, duplicates…) are not counted",
        "Share of all usable images; the bar is scaled to the largest class",
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, int]] = []
        self._total = 0
        self._largest = 0

    def set_counts(self, classes: Sequence[str], counts: Mapping[str, int]) -> None:
        """Show ``classes`` in this order with their usable image counts (missing means 0).

        New counts for the same classes update the rows in place, so a selection survives.
        """
        rows = [(name, int(counts.get(name, 0))) for name in classes]
        same_classes = [name for name, _count in rows] == [name for name, _count in self._rows]
        if not same_classes:
            self.beginResetModel()
        self._rows = rows
        self._total = sum(count for _name, count in self._rows)
        self._largest = max((count for _name, count in self._rows), default=0)
        if not same_classes:
            self.endResetModel()
        elif rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self._HEADERS) - 1))

    def clear(self) -> None:
        """Show no classes."""
        self.set_counts((), {})

    def rowCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._HEADERS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self._HEADERS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.TextAlignmentRole:
            return self._alignment(section)
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return self._HEADER_TIPS[section]
        return None

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        name, count = self._rows[index.row()]
        column = index.column()
        share = count / self._total if self._total else 0.0
        if role == Qt.ItemDataRole.DisplayRole:
            return (name, f"{count:,}", f"{share:.1%}")[column]
        if role == SORT_ROLE:
            return (name.casefold(), count, share)[column]
        if role == SHARE_ROLE:
            return count / self._largest if self._largest else 0.0
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return self._alignment(column)
        if role == Qt.ItemDataRole.ForegroundRole and count == 0:
            return severity_color("error", QGuiApplication.palette())
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{name}: {count:,} usable images, {share:.1%} of {self._total:,}"
        return None

    @classmethod
    def _alignment(cls, column: int) -> Qt.AlignmentFlag:
        horizontal = Qt.AlignmentFlag.AlignLeft if column == cls.COLUMN_CLASS else Qt.AlignmentFlag.AlignRight
        return horizontal | Qt.AlignmentFlag.AlignVCenter


class ShareBarDelegate(QStyledItemDelegate):
    """Paints the share column as a bar (scaled to the largest class) followed by the percentage."""

    _TEXT_WIDTH = 56  # pixels kept for "100.0%" right of the bar
    _MARGIN = 6

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _ModelIndex) -> None:
        self.initStyleOption(option, index)
        text = option.text
        option.text = ""
        widget = option.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, widget)
        rect = option.rect.adjusted(self._MARGIN, 0, -self._MARGIN, 0)
        fraction = float(index.data(SHARE_ROLE) or 0.0)
        bar_width = max(0.0, rect.width() - self._TEXT_WIDTH - self._MARGIN) * fraction
        bar_height = min(12.0, rect.height() * 0.5)
        bar = QRectF(rect.left(), rect.center().y() - bar_height / 2 + 1, bar_width, bar_height)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        # On a selected row the accent colour is the background: draw the bar in its text colour.
        bar_fill = option.palette.color(QPalette.ColorRole.HighlightedText) if selected else bar_color(option.palette)
        painter.setBrush(bar_fill)
        painter.drawRoundedRect(bar, 2.5, 2.5)
        text_role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(option.palette.color(text_role))
        text_rect = rect.adjusted(rect.width() - self._TEXT_WIDTH, 0, 0, 0)
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
        painter.restore()


class ClassTable(QTableView):
    """A sortable table of the classes of a dataset; one class at a time is selected.

    Signals:
        class_selected: the name of the class just selected, or None when none is.
    """

    class_selected = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.class_model = ClassTableModel(self)
        proxy = QSortFilterProxyModel(self)
        proxy.setSourceModel(self.class_model)
        proxy.setSortRole(SORT_ROLE)
        self.setModel(proxy)
        self.setItemDelegateForColumn(ClassTableModel.COLUMN_SHARE, ShareBarDelegate(self))
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the report's order until a header is clicked
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        # Names and counts are never cut; the share bar takes whatever width is left.
        header.setMinimumSectionSize(64)
        header.setSectionResizeMode(ClassTableModel.COLUMN_CLASS, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(ClassTableModel.COLUMN_IMAGES, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(ClassTableModel.COLUMN_SHARE, QHeaderView.ResizeMode.Stretch)
        self._selected: str | None = None
        self.selectionModel().selectionChanged.connect(self._on_selection_changed)
        proxy.modelReset.connect(self._on_selection_changed)

    @property
    def selected_class(self) -> str | None:
        """The selected class, or None."""
        return self._selected

    def select_class(self, name: str) -> bool:
        """Select the row of class ``name``; False when there is no such class."""
        proxy = self.model()
        for row in range(proxy.rowCount()):
            if proxy.index(row, ClassTableModel.COLUMN_CLASS).data() == name:
                self.selectRow(row)
                self.scrollTo(proxy.index(row, ClassTableModel.COLUMN_CLASS))
                return True
        return False

    def set_counts(self, classes: Sequence[str], counts: Mapping[str, int]) -> None:
        """Show these classes and their usable image counts."""
        self.class_model.set_counts(classes, counts)

    def clear(self) -> None:
        """Show no classes."""
        self.class_model.clear()

    def _on_selection_changed(self, *_args: object) -> None:
        rows = self.selectionModel().selectedRows(ClassTableModel.COLUMN_CLASS)
        selected = rows[0].data() if rows else None
        if selected != self._selected:
            self._selected = selected
            self.class_selected.emit(selected)

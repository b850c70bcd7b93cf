"""The data page's grid of one class's thumbnails, badged where a file is left out of training.

Its context menu excludes the selected files from training, includes them again, or
shows one in the file manager (``FileActions``); decoding is ``ThumbnailModel``'s.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from gui.pages.data.file_actions import FileActions
from gui.widgets.icon_grid import IconGrid
from gui.widgets.thumbnails import (
    FAILED,
    LEFT_OUT_ROLE,
    PATH_ROLE,
    STATUS_ROLE,
    THUMBNAIL_SIDE,
    USER_EXCLUDED_ROLE,
    ThumbnailModel,
)

_ModelIndex = QModelIndex | QPersistentModelIndex


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws thumbnails with a badge on files left out of training."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _ModelIndex) -> None:
        super().paint(painter, option, index)
        left_out = index.data(LEFT_OUT_ROLE)
        user_excluded = bool(index.data(USER_EXCLUDED_ROLE))
        # A placeholder already says why its file cannot be used; a badge would hide that.
        if (not left_out and not user_excluded) or index.data(STATUS_ROLE) == FAILED:
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        icon_rect = style.subElementRect(QStyle.SubElement.SE_ItemViewItemDecoration, opt, opt.widget)
        palette = opt.palette
        painter.save()
        veil = QColor(palette.color(QPalette.ColorRole.Base))
        veil.setAlpha(110)
        painter.fillRect(icon_rect, veil)  # dimmed: it will not be trained on
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        height = painter.fontMetrics().height() + 4
        badge = QRect(icon_rect.left(), icon_rect.bottom() - height + 1, icon_rect.width(), height)
        # Window text on window colour, inverted: readable on light and dark palettes alike.
        painter.fillRect(badge, palette.color(QPalette.ColorRole.WindowText))
        painter.setPen(palette.color(QPalette.ColorRole.Window))
        text = "Left out" if left_out else "Excluded"
        painter.drawText(badge, int(Qt.AlignmentFlag.AlignCenter), text)
        painter.restore()


class ThumbnailGrid(IconGrid):
    """Thumbnails of the selected class in a grid; the context menu acts on the selected files.

    Signals:
        exclusion_requested: (paths, True to leave them out of training / False to include them again).
        reveal_requested: a file whose folder should open in the file manager.
    """

    exclusion_requested = Signal(object, bool)
    reveal_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.thumbnail_model = ThumbnailModel(parent=self)
        self.setModel(self.thumbnail_model)
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self._smallest_cell = QSize(THUMBNAIL_SIDE + 20, THUMBNAIL_SIDE + self.fontMetrics().height() + 14)
        self.setGridSize(self._smallest_cell)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)

        model = self.thumbnail_model
        self.file_actions = FileActions(self, self.selected_paths, model.is_trained_on, model.is_user_excluded)
        self.file_actions.exclusion_requested.connect(self.exclusion_requested)
        self.file_actions.reveal_requested.connect(self.reveal_requested)
        model.modelReset.connect(self.schedule_request)
        # What is selected, and whether it is trained on, decide which actions apply.
        model.dataChanged.connect(self.file_actions.update)
        self.selectionModel().selectionChanged.connect(self.file_actions.update)

    def selected_paths(self) -> tuple[Path, ...]:
        """The selected files, in grid order."""
        rows = sorted(index.row() for index in self.selectionModel().selectedIndexes())
        return tuple(self.thumbnail_model.index(row).data(PATH_ROLE) for row in rows)

    def smallest_cell(self) -> QSize:
        return self._smallest_cell

    def request_rows(self, rows: range) -> None:
        self.thumbnail_model.request_rows(rows)

"""The icon-mode list view under every grid of pictures: columns that share out the width, and requests for
the pictures of the rows on screen only.

The data page's thumbnails, the galleries of the evaluation report and the predict page's
cards are ``IconGrid`` subclasses that say how small a cell may be and what to decode.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QWidget

_VISIBLE_DELAY_MS = 30  # scrolling and resizing come in bursts; one request per burst


class IconGrid(QListView):
    """A grid of equal cells that fills the width; after a scroll or resize it asks for the rows on screen.

    Subclasses give ``smallest_cell`` and ``request_rows`` (decode the pictures of those rows);
    ``schedule_request`` asks again after other changes (new rows, a filter).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setMovement(QListView.Movement.Static)  # also turns off the drops IconMode allows
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._visible_timer = QTimer(self)
        self._visible_timer.setSingleShot(True)
        self._visible_timer.setInterval(_VISIBLE_DELAY_MS)
        self._visible_timer.timeout.connect(self._on_visible_timer_timeout)
        self.verticalScrollBar().valueChanged.connect(self._visible_timer.start)

    def smallest_cell(self) -> QSize:
        """The narrowest cell that fits a picture and its text; columns share out what is left over."""
        raise NotImplementedError

    def request_rows(self, rows: range) -> None:
        """Decode the pictures of ``rows`` (of the view's model), those on screen."""
        raise NotImplementedError

    def schedule_request(self) -> None:
        """Ask for the rows on screen once the current burst of changes is over."""
        self._visible_timer.start()

    def visible_rows(self) -> range:
        """Rows of the view's model whose cell is at least partly on screen.

        Rows are laid out in order, left to right and top to bottom, so a binary search
        finds the first one and a walk finds the last.
        """
        model = self.model()
        count = model.rowCount() if model is not None else 0
        viewport = self.viewport().rect()
        if count == 0 or viewport.isEmpty():
            return range(0)
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            if self.visualRect(model.index(middle, 0)).bottom() < viewport.top():
                low = middle + 1
            else:
                high = middle
        end = low
        while end < count and self.visualRect(model.index(end, 0)).top() <= viewport.bottom():
            end += 1
        return range(low, end)

    def update_grid(self) -> None:
        """Share the width out among the columns rather than leave a gap at the right.

        The scroll bar's width is always set aside, so that it appearing cannot change the columns.
        """
        cell = self.smallest_cell()
        scroll_bar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        width = self.contentsRect().width() - scroll_bar
        columns = max(1, width // cell.width())
        self.setGridSize(QSize(max(width // columns, cell.width()), cell.height()))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.update_grid()
        self._visible_timer.start()

    def _on_visible_timer_timeout(self) -> None:
        self.request_rows(self.visible_rows())

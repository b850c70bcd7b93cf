"""A confusion matrix drawn as a heatmap whose cells can be chosen with the mouse or the arrow keys.

Rows are the true classes and columns the predicted ones. Each cell is coloured by its
share of the row (so a rare class reads as clearly as a common one), blue on the
diagonal and red off it, with the count written inside when it fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QHelpEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from gui.style import bar_color, severity_color

_MAX_LABEL_PIXELS = 110  # longer class names are elided; the tooltip has them whole
_PADDING = 6
_SMALLEST_CELL = 14
_SMALLEST_COUNT_POINTS = 6.5  # counts in a smaller font than this are left to the tooltips


@dataclass(frozen=True)
class _Geometry:
    """Where everything goes for the widget's current size."""

    left: float  # x of the grid's left edge
    top: float  # y of the grid's top edge
    cell: float  # side of a cell
    label_width: float  # room for the row labels, left of the grid
    labels_height: float  # room for the column labels, under the grid
    rotated: bool  # column labels drawn vertically


class ConfusionView(QWidget):
    """A confusion matrix heatmap with class names on both axes.

    Signals:
        cell_selected: (true class index, predicted class index) of the chosen cell.
    """

    cell_selected = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._classes: tuple[str, ...] = ()
        self._counts: tuple[tuple[int, ...], ...] = ()
        self._selected: tuple[int, int] | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in row (and column) order."""
        return self._classes

    @property
    def counts(self) -> tuple[tuple[int, ...], ...]:
        """The matrix: ``counts[true][predicted]`` images."""
        return self._counts

    @property
    def total(self) -> int:
        """Images counted in the matrix."""
        return sum(sum(row) for row in self._counts)

    @property
    def selected_cell(self) -> tuple[int, int] | None:
        """The chosen (true, predicted) cell, if any."""
        return self._selected

    def set_matrix(self, classes: Sequence[str], counts: Sequence[Sequence[int]]) -> None:
        """Show a ``len(classes)`` × ``len(classes)`` matrix of counts; no cell is chosen.

        Raises:
            ValueError: the matrix is not square with one row per class.
        """
        rows = tuple(tuple(int(value) for value in row) for row in counts)
        if len(rows) != len(classes) or any(len(row) != len(classes) for row in rows):
            raise ValueError(f"confusion matrix: expected {len(classes)} × {len(classes)} counts")
        self._classes = tuple(classes)
        self._counts = rows
        self._selected = None
        self.updateGeometry()
        self.update()

    def clear(self) -> None:
        """Show nothing."""
        self.set_matrix((), ())

    def select_cell(self, true_index: int, predicted_index: int) -> None:
        """Choose a cell as a click would; ``cell_selected`` follows."""
        size = len(self._classes)
        if not (0 <= true_index < size and 0 <= predicted_index < size):
            return
        self._selected = (true_index, predicted_index)
        self.update()
        self.cell_selected.emit(true_index, predicted_index)

    def cell_rect(self, true_index: int, predicted_index: int) -> QRectF:
        """Where a cell is drawn, in widget coordinates."""
        geometry = self._geometry()
        return QRectF(geometry.left + predicted_index * geometry.cell, geometry.top + true_index * geometry.cell,
                      geometry.cell, geometry.cell)

    def cell_at(self, position: QPointF) -> tuple[int, int] | None:
        """The (true, predicted) cell under a point, or None."""
        if not self._classes:
            return None
        geometry = self._geometry()
        column = int((position.x() - geometry.left) // geometry.cell)
        row = int((position.y() - geometry.top) // geometry.cell)
        size = len(self._classes)
        return (row, column) if 0 <= row < size and 0 <= column < size else None

    def cell_text(self, true_index: int, predicted_index: int) -> str:
        """A sentence on one cell, for its tooltip."""
        count = self._counts[true_index][predicted_index]
        row_total = sum(self._counts[true_index])
        share = f" ({count / row_total:.0%} of the {row_total} {self._classes[true_index]} images)" if row_total else ""
        noun = "image" if count == 1 else "images"
        return (f"true {self._classes[true_index]}, predicted {self._classes[predicted_index]}: "
                f"{count} {noun}{share}")

    def sizeHint(self) -> QSize:
        return QSize(460, 420)

    def minimumSizeHint(self) -> QSize:
        return QSize(220, 200)

    # Qt event handlers ---------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        if not self._classes:
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), "No confusion matrix")
            painter.end()
            return
        geometry = self._geometry()
        self._paint_cells(painter, geometry, palette)
        self._paint_labels(painter, geometry, palette)
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        cell = self.cell_at(event.position())
        if event.button() == Qt.MouseButton.LeftButton and cell is not None:
            self.select_cell(*cell)
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        over_cell = self.cell_at(event.position()) is not None
        self.setCursor(Qt.CursorShape.PointingHandCursor if over_cell else Qt.CursorShape.ArrowCursor)
        super().mouseMoveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        steps = {Qt.Key.Key_Left: (0, -1), Qt.Key.Key_Right: (0, 1), Qt.Key.Key_Up: (-1, 0), Qt.Key.Key_Down: (1, 0)}
        step = steps.get(Qt.Key(event.key()))
        if step is None or not self._classes:
            super().keyPressEvent(event)
            return
        row, column = self._selected or (0, 0)
        if self._selected is not None:
            last = len(self._classes) - 1
            row, column = min(max(row + step[0], 0), last), min(max(column + step[1], 0), last)
        self.select_cell(row, column)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            cell = self.cell_at(QPointF(event.pos()))
            if cell is not None:
                QToolTip.showText(event.globalPos(), self.cell_text(*cell), self)
                return True
        return super().event(event)

    # Drawing -------------------------------------------------------------------------------------

    def _geometry(self) -> _Geometry:
        metrics = self.fontMetrics()
        bold = QFontMetrics(self._title_font())
        size = max(len(self._classes), 1)
        label_width = min(max((metrics.horizontalAdvance(name) for name in self._classes), default=0),
                          _MAX_LABEL_PIXELS)
        left = _PADDING + bold.height() + _PADDING + label_width + _PADDING
        top = _PADDING

        def cell_for(bottom_labels: float) -> float:
            bottom = _PADDING + bottom_labels + _PADDING + bold.height() + _PADDING
            return max(min((self.width() - left - _PADDING) / size, (self.height() - top - bottom) / size),
                       _SMALLEST_CELL)

        labels_height = metrics.height()
        cell = cell_for(labels_height)
        rotated = label_width + 4 > cell
        if rotated:
            labels_height = label_width
            cell = cell_for(labels_height)
        # Centre the grid and its labels in the width left over.
        spare = self.width() - left - _PADDING - cell * size
        return _Geometry(left=left + max(spare, 0) / 2, top=top, cell=cell, label_width=label_width,
                         labels_height=labels_height, rotated=rotated)

    def _paint_cells(self, painter: QPainter, geometry: _Geometry, palette: QPalette) -> None:
        base = palette.color(QPalette.ColorRole.Base)
        right, wrong = bar_color(palette), severity_color("error", palette)
        text_color = palette.color(QPalette.ColorRole.Text)
        faint = palette.color(QPalette.ColorRole.PlaceholderText)
        grid_pen = QPen(palette.color(QPalette.ColorRole.Mid), 1)
        count_font = self._count_font(geometry.cell)
        if count_font is not None:
            painter.setFont(count_font)
        for row, counts in enumerate(self._counts):
            row_total = sum(counts)
            for column, count in enumerate(counts):
                share = count / row_total if row_total else 0.0
                fill = _blend(base, right if row == column else wrong, share)
                rect = self.cell_rect(row, column)
                painter.fillRect(rect, fill)
                painter.setPen(grid_pen)
                painter.drawRect(rect)
                if count_font is None:
                    continue
                if count == 0:
                    painter.setPen(faint)
                else:
                    painter.setPen(QColor("white") if fill.lightness() < 128 else text_color)
                painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), str(count))
        painter.setFont(self.font())
        if self._selected is not None:
            painter.setPen(QPen(palette.color(QPalette.ColorRole.WindowText), 3))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRect(self.cell_rect(*self._selected).adjusted(1.5, 1.5, -1.5, -1.5))

    def _paint_labels(self, painter: QPainter, geometry: _Geometry, palette: QPalette) -> None:
        metrics = self.fontMetrics()
        size = len(self._classes)
        painter.setPen(palette.color(QPalette.ColorRole.WindowText))
        grid_bottom = geometry.top + size * geometry.cell
        label_right = geometry.left - _PADDING
        for index, name in enumerate(self._classes):
            text = metrics.elidedText(name, Qt.TextElideMode.ElideMiddle, _MAX_LABEL_PIXELS)
            row_rect = QRectF(label_right - geometry.label_width, geometry.top + index * geometry.cell,
                              geometry.label_width, geometry.cell)
            painter.drawText(row_rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
            x = geometry.left + index * geometry.cell
            if geometry.rotated:
                # Read bottom to top, right-aligned under the column it names.
                painter.save()
                painter.translate(x + geometry.cell / 2, grid_bottom + _PADDING)
                painter.rotate(-90)
                flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                painter.drawText(QRectF(-_MAX_LABEL_PIXELS, -geometry.cell / 2, _MAX_LABEL_PIXELS, geometry.cell),
                                 int(flags), text)
                painter.restore()
            else:
                column_rect = QRectF(x, grid_bottom + _PADDING, geometry.cell, metrics.height())
                painter.drawText(column_rect, int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), text)

        painter.setFont(self._title_font())
        title_height = QFontMetrics(painter.font()).height()
        grid_width = size * geometry.cell
        predicted_rect = QRectF(geometry.left, grid_bottom + 2 * _PADDING + geometry.labels_height, grid_width,
                                title_height)
        painter.drawText(predicted_rect, int(Qt.AlignmentFlag.AlignCenter), "predicted")
        painter.save()
        painter.translate(label_right - geometry.label_width - _PADDING - title_height, grid_bottom - grid_width / 2)
        painter.rotate(-90)
        true_rect = QRectF(-grid_width / 2, 0, grid_width, title_height)
        painter.drawText(true_rect, int(Qt.AlignmentFlag.AlignCenter), "true")
        painter.restore()

    def _count_font(self, cell: float) -> QFont | None:
        """The widget's font, or a smaller one, in which every count fits its cell; None when none does."""
        widest = str(max((max(row) for row in self._counts), default=0))
        font = QFont(self.font())
        smallest = min(font.pointSizeF(), _SMALLEST_COUNT_POINTS)
        while font.pointSizeF() >= smallest:
            metrics = QFontMetrics(font)
            if metrics.horizontalAdvance(widest) + 4 <= cell and metrics.height() <= cell:
                return font
            font.setPointSizeF(font.pointSizeF() - 0.5)
        return None

    def _title_font(self) -> QFont:
        font = QFont(self.font())
        font.setBold(True)
        return font


def _blend(start: QColor, end: QColor, amount: float) -> QColor:
    """The colour ``amount`` of the way from ``start`` to ``end`` (0 to 1)."""
    start_rgb = (start.redF(), start.greenF(), start.blueF())
    end_rgb = (end.redF(), end.greenF(), end.blueF())
    return QColor.fromRgbF(*(a + (b - a) * amount for a, b in zip(start_rgb, end_rgb, strict=True)))

"""The Predict page's results: one card per image with its thumbnail, top-k labels and confidence.

``PredictionModel`` holds the images in the order they were added and their
predictions as they arrive; thumbnails come from a ``ThumbnailModel`` that decodes
only the cards on screen. ``PredictionFilter`` filters and sorts the cards, and
``PredictionGrid`` draws them with ``PredictionDelegate``; doubtful predictions
(top-1 below 50 %) get a warning-coloured frame and bar, unreadable files their reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRectF,
    QSize,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont, QFontMetrics, QIcon, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from engine.data.health_report import FileRecord
from engine.evaluation.predictions import Prediction
from gui.style import bar_color, severity_color
from gui.widgets.icon_grid import IconGrid
from gui.widgets.thumbnails import THUMBNAIL_SIDE, ThumbnailModel

PATH_ROLE = Qt.ItemDataRole.UserRole
PREDICTION_ROLE = Qt.ItemDataRole.UserRole + 1  # the Prediction, or None while waiting
STATE_ROLE = Qt.ItemDataRole.UserRole + 2  # WAITING, PREDICTED or UNREADABLE
CONFIDENCE_ROLE = Qt.ItemDataRole.UserRole + 3  # top-1 probability in [0, 1], or None
ORDER_ROLE = Qt.ItemDataRole.UserRole + 4  # the row in the order the images were added

WAITING, PREDICTED, UNREADABLE = "waiting", "predicted", "unreadable"
LOW_CONFIDENCE = 0.5  # a top-1 probability below this marks the image as doubtful
MAX_TOP_K = 5

# Filters ("label:NAME" shows the images whose top-1 is NAME) and sort orders of PredictionFilter.
SHOW_ALL, SHOW_DOUBTFUL, SHOW_UNREADABLE, LABEL_PREFIX = "all", "doubtful", "unreadable", "label:"
SORT_ADDED, SORT_LEAST_CONFIDENT, SORT_MOST_CONFIDENT, SORT_LABEL, SORT_NAME = (
    "added", "least_confident", "most_confident", "label", "name")

_ModelIndex = QModelIndex | QPersistentModelIndex
_PADDING = 8  # inside a card, around the thumbnail and the text
_MARGIN = 4  # between cards
_CARD_WIDTH = 280  # the narrowest card; columns share out the rest of the width
_BAR_HEIGHT = 6


def is_doubtful(prediction: Prediction | None) -> bool:
    """Whether a prediction's top-1 probability is below ``LOW_CONFIDENCE``."""
    return prediction is not None and bool(prediction.probabilities) and prediction.probabilities[0] < LOW_CONFIDENCE


class PredictionModel(QAbstractListModel):
    """The images to predict, in the order added, each with its prediction once it came.

    Args:
        parent: the owner.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thumbnails = ThumbnailModel(THUMBNAIL_SIDE, self)
        self.thumbnails.dataChanged.connect(self._on_thumbnails_data_changed)
        self._records: list[FileRecord] = []
        self._predictions: list[Prediction | None] = []
        self._row_of: dict[Path, int] = {}

    def add_files(self, records: Sequence[FileRecord]) -> list[Path]:
        """Append the files not shown yet (waiting for a prediction); returns their paths."""
        new: list[FileRecord] = []
        for record in records:
            if record.path not in self._row_of:
                self._row_of[record.path] = len(self._records) + len(new)
                new.append(record)
        if new:
            self.beginInsertRows(QModelIndex(), len(self._records), len(self._records) + len(new) - 1)
            self._records.extend(new)
            self._predictions.extend([None] * len(new))
            self.endInsertRows()
            self.thumbnails.show_class("", self._records, {})  # decoded pictures stay cached
        return [record.path for record in new]

    def clear(self) -> None:
        """Remove every image."""
        self.beginResetModel()
        self._records, self._predictions, self._row_of = [], [], {}
        self.thumbnails.clear()
        self.endResetModel()

    def paths(self) -> list[Path]:
        """Every image, in the order added."""
        return [record.path for record in self._records]

    def set_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Show these predictions on their images' cards (images not in the model are ignored)."""
        for prediction in predictions:
            row = self._row_of.get(prediction.path)
            if row is not None:
                self._predictions[row] = prediction
                index = self.index(row)
                self.dataChanged.emit(index, index)

    def forget_predictions(self) -> None:
        """Set every image back to waiting (another model or TTA is about to predict them)."""
        self._predictions = [None] * len(self._records)
        if self._records:
            self.dataChanged.emit(self.index(0), self.index(len(self._records) - 1))

    def predictions(self, top_k: int = MAX_TOP_K) -> list[Prediction]:
        """The predictions so far, in the order added, each cut to its ``top_k`` best labels."""
        return [dataclasses.replace(p, labels=p.labels[:top_k], probabilities=p.probabilities[:top_k])
                for p in self._predictions if p is not None]

    def waiting_paths(self) -> list[Path]:
        """The images without a prediction, in the order added."""
        return [record.path for record, p in zip(self._records, self._predictions, strict=True) if p is None]

    def count(self, state: str) -> int:
        """How many images are ``WAITING``, ``PREDICTED`` or ``UNREADABLE``."""
        return sum(1 for prediction in self._predictions if _state(prediction) == state)

    def doubtful_count(self) -> int:
        """Predicted images whose top-1 probability is below ``LOW_CONFIDENCE``."""
        return sum(1 for prediction in self._predictions if is_doubtful(prediction))

    def rowCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._records)

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        row = index.row()
        prediction = self._predictions[row]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._records[row].path.name
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnails.index(row).data(Qt.ItemDataRole.DecorationRole)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(self._records[row].path, prediction)
        if role == PATH_ROLE:
            return self._records[row].path
        if role == PREDICTION_ROLE:
            return prediction
        if role == STATE_ROLE:
            return _state(prediction)
        if role == CONFIDENCE_ROLE:
            return prediction.probabilities[0] if prediction and prediction.probabilities else None
        if role == ORDER_ROLE:
            return row
        return None

    def _on_thumbnails_data_changed(self, top_left: QModelIndex, bottom_right: QModelIndex) -> None:
        if bottom_right.row() < len(self._records):
            self.dataChanged.emit(self.index(top_left.row()), self.index(bottom_right.row()),
                                  [Qt.ItemDataRole.DecorationRole])


def _state(prediction: Prediction | None) -> str:
    if prediction is None:
        return WAITING
    return UNREADABLE if prediction.error else PREDICTED


def _tooltip(path: Path, prediction: Prediction | None) -> str:
    lines = [str(path)]
    if prediction is None:
        lines.append("Not predicted yet")
    elif prediction.error:
        lines.append(f"Cannot be read: {prediction.error}")
    else:
        lines.extend(f"{label}: {probability:.1%}"
                     for label, probability in zip(prediction.labels, prediction.probabilities, strict=True))
    return "\n".join(lines)


class PredictionFilter(QSortFilterProxyModel):
    """Shows all images, the doubtful, the unreadable or one predicted label, in a chosen order."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._show = SHOW_ALL
        self._order = SORT_ADDED
        self.setDynamicSortFilter(True)  # cards move to their place as predictions arrive
        self.sort(0)

    @property
    def show(self) -> str:
        """``SHOW_ALL``, ``SHOW_DOUBTFUL``, ``SHOW_UNREADABLE`` or ``LABEL_PREFIX`` + a label."""
        return self._show

    def set_show(self, show: str) -> None:
        """Show only the images that ``show`` names (see ``show``)."""
        self.beginFilterChange()
        self._show = show
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_order(self, order: str) -> None:
        """Sort by ``order``: one of the ``SORT_*`` names (added, confidence either way, label, file name)."""
        self._order = order
        self.invalidate()  # lessThan changed; re-sort every row
        self.sort(0)

    def filterAcceptsRow(self, source_row: int, source_parent: _ModelIndex) -> bool:
        index = self.sourceModel().index(source_row, 0, source_parent)
        prediction: Prediction | None = index.data(PREDICTION_ROLE)
        if self._show == SHOW_DOUBTFUL:
            return is_doubtful(prediction)
        if self._show == SHOW_UNREADABLE:
            return index.data(STATE_ROLE) == UNREADABLE
        if self._show.startswith(LABEL_PREFIX):
            wanted = self._show[len(LABEL_PREFIX):]
            return prediction is not None and bool(prediction.labels) and prediction.labels[0] == wanted
        return True

    def lessThan(self, left: _ModelIndex, right: _ModelIndex) -> bool:
        return self._sort_key(left) < self._sort_key(right)

    def _sort_key(self, index: _ModelIndex) -> tuple:
        order = index.data(ORDER_ROLE)
        confidence = index.data(CONFIDENCE_ROLE)
        # Images without a confidence (waiting, unreadable) come last in either confidence order.
        if self._order == SORT_LEAST_CONFIDENT:
            return (confidence is None, confidence or 0.0, order)
        if self._order == SORT_MOST_CONFIDENT:
            return (confidence is None, -(confidence or 0.0), order)
        if self._order == SORT_LABEL:
            prediction: Prediction | None = index.data(PREDICTION_ROLE)
            label = prediction.labels[0] if prediction and prediction.labels else None
            return (label is None, (label or "").casefold(), -(confidence or 0.0), order)
        if self._order == SORT_NAME:
            return (str(index.data(Qt.ItemDataRole.DisplayRole)).casefold(), order)
        return (order,)


class PredictionDelegate(QStyledItemDelegate):
    """Draws one card: thumbnail, file name, top-1 label with a confidence bar, the other top-k below.

    Args:
        parent: the view.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.top_k = 3

    def card_size(self, font: QFont) -> QSize:
        """The smallest card that fits the thumbnail and ``top_k`` labels in ``font``."""
        small = QFontMetrics(_small_font(font)).height()
        bold = QFontMetrics(_bold_font(font)).height()
        # File name, top-1 label, bar, then the other labels: the spacing _paint_text uses.
        text_height = small + 2 + bold + 3 + _BAR_HEIGHT + 5 + (self.top_k - 1) * small
        return QSize(_CARD_WIDTH, max(THUMBNAIL_SIDE, text_height) + 2 * _PADDING + 2 * _MARGIN)

    def sizeHint(self, option: QStyleOptionViewItem, index: _ModelIndex) -> QSize:
        return self.card_size(option.font)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _ModelIndex) -> None:
        palette = option.palette
        prediction: Prediction | None = index.data(PREDICTION_ROLE)
        doubtful = is_doubtful(prediction)
        warning = severity_color("warning", palette)
        card = QRectF(option.rect.adjusted(_MARGIN, _MARGIN, -_MARGIN, -_MARGIN))
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        background = palette.color(QPalette.ColorRole.Base)
        if doubtful:
            background = _blend(background, warning, 0.10)
        border = warning if doubtful else palette.color(QPalette.ColorRole.Mid)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            border = palette.color(QPalette.ColorRole.Highlight)
        painter.setPen(QPen(border, 2.0 if selected or doubtful else 1.0))
        painter.setBrush(background)
        painter.drawRoundedRect(card.adjusted(0.5, 0.5, -0.5, -0.5), 6, 6)

        inner = card.toRect().adjusted(_PADDING, _PADDING, -_PADDING, -_PADDING)
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            size = pixmap.deviceIndependentSize().toSize()
            painter.drawPixmap(inner.left() + (THUMBNAIL_SIDE - size.width()) // 2,
                               inner.top() + (THUMBNAIL_SIDE - size.height()) // 2, pixmap)
        text = inner.adjusted(THUMBNAIL_SIDE + _PADDING + 2, 0, 0, 0)
        self._paint_text(painter, text, option.font, palette, index, prediction, doubtful)
        painter.restore()

    def _paint_text(self, painter: QPainter, rect: QRect, font: QFont, palette: QPalette, index: _ModelIndex,
                    prediction: Prediction | None, doubtful: bool) -> None:
        small, bold = _small_font(font), _bold_font(font)
        secondary = palette.color(QPalette.ColorRole.PlaceholderText)
        text_color = palette.color(QPalette.ColorRole.Text)
        warning = severity_color("warning", palette)
        top = rect.top()
        top = _draw_line(painter, small, secondary, rect, top, str(index.data(Qt.ItemDataRole.DisplayRole)),
                         elide=Qt.TextElideMode.ElideMiddle)
        if prediction is None:
            _draw_line(painter, font, secondary, rect, top + 2, "Not predicted yet")
            return
        if prediction.error:
            top = _draw_line(painter, bold, severity_color("error", palette), rect, top + 2, "Cannot be read")
            painter.setFont(small)
            painter.setPen(text_color)
            flags = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
            # The card already names the file; the engine's message starts with its whole path.
            reason = prediction.error.removeprefix(f"{prediction.path}: ")
            painter.drawText(QRect(rect.left(), top + 2, rect.width(), rect.bottom() - top - 2), int(flags), reason)
            return
        probability = prediction.probabilities[0]
        # Doubtful is said with a sign as well as with colour, for eyes that do not tell the colours apart.
        sign = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning) if doubtful else None
        top = _draw_line(painter, bold, warning if doubtful else text_color, rect, top + 2, prediction.labels[0],
                         right=f"{probability:.0%}", right_icon=sign)
        track = QRectF(rect.left(), top + 3, rect.width(), _BAR_HEIGHT)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(palette.color(QPalette.ColorRole.Midlight))
        painter.drawRoundedRect(track, 3, 3)
        painter.setBrush(warning if doubtful else bar_color(palette))
        painter.drawRoundedRect(QRectF(track.left(), track.top(), max(track.width() * probability, _BAR_HEIGHT),
                                       track.height()), 3, 3)
        top = int(track.bottom()) + 5
        for label, other in list(zip(prediction.labels, prediction.probabilities, strict=True))[1:self.top_k]:
            top = _draw_line(painter, small, secondary, rect, top, label, right=f"{other:.0%}")


def _draw_line(painter: QPainter, font: QFont, color: QColor, rect: QRect, top: int, text: str, *,
               right: str = "", right_icon: QIcon | None = None,
               elide: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> int:
    """Draw ``text`` (and ``right``, right-aligned, after ``right_icon``) on one line at ``top``.

    Returns:
        The top of the next line.
    """
    metrics = QFontMetrics(font)
    painter.setFont(font)
    painter.setPen(color)
    right_width = metrics.horizontalAdvance(right) + 8 if right else 0
    line = QRect(rect.left(), top, rect.width(), metrics.height())
    if right_icon is not None:
        side = metrics.height() - 2
        right_icon.paint(painter, QRect(rect.right() - right_width - side + 5, top + 1, side, side))
        right_width += side + 2
    left_align = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    painter.drawText(line, left_align, metrics.elidedText(text, elide, rect.width() - right_width))
    if right:
        painter.drawText(line, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), right)
    return top + metrics.height()


def _small_font(font: QFont) -> QFont:
    small = QFont(font)
    small.setPointSizeF(font.pointSizeF() * 0.88)
    return small


def _bold_font(font: QFont) -> QFont:
    bold = QFont(font)
    bold.setBold(True)
    return bold


def _blend(base: QColor, tint: QColor, amount: float) -> QColor:
    base_rgb = (base.redF(), base.greenF(), base.blueF())
    tint_rgb = (tint.redF(), tint.greenF(), tint.blueF())
    return QColor.fromRgbF(*(b + (t - b) * amount for b, t in zip(base_rgb, tint_rgb, strict=True)))


class PredictionGrid(IconGrid):
    """Cards in a grid that fills the width; asks for the thumbnails of the cards on screen.

    Args:
        model: the images and their predictions.
        parent: the parent widget.
    """

    def __init__(self, model: PredictionModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.prediction_model = model
        self.filter = PredictionFilter(self)
        self.filter.setSourceModel(model)
        self.setModel(self.filter)
        self.card_delegate = PredictionDelegate(self)
        self.setItemDelegate(self.card_delegate)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.update_grid()
        # Filtering and new rows change what is on screen too.
        for signal in (self.filter.rowsInserted, self.filter.modelReset, self.filter.layoutChanged,
                       self.filter.rowsRemoved):
            signal.connect(self.schedule_request)

    def set_top_k(self, top_k: int) -> None:
        """Show ``top_k`` labels per card."""
        self.card_delegate.top_k = top_k
        self.update_grid()
        self.scheduleDelayedItemsLayout()
        self.viewport().update()

    def visible_source_rows(self) -> list[int]:
        """The model rows of the cards at least partly on screen."""
        return [self.filter.mapToSource(self.filter.index(row, 0)).row() for row in self.visible_rows()]

    def smallest_cell(self) -> QSize:
        return self.card_delegate.card_size(self.font())

    def request_rows(self, rows: range) -> None:
        self.prediction_model.thumbnails.request_rows(
            [self.filter.mapToSource(self.filter.index(row, 0)).row() for row in rows])

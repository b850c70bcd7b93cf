"""The live picture: the newest frame, fitted on a dark ground, with the top-k labels and confidence bars over it.

The overlay sits in the picture's top-left corner on a translucent panel, so that it
reads on any footage; a doubtful top-1 (below ``LOW_CONFIDENCE``) gets a warning-coloured
bar, as on the image cards. A centred badge says "Paused", "Loading …" and the like.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from gui.pages.predict.live_predictor import FramePrediction
from gui.pages.predict.prediction_view import LOW_CONFIDENCE
from gui.style import bar_color, create_palette, severity_color

_GROUND = QColor("#101113")  # around the picture, as in a video player, whatever the palette
_PANEL = QColor(0, 0, 0, 165)  # the overlay's translucent panel
_TRACK = QColor(255, 255, 255, 60)  # the empty part of a bar
_TEXT = QColor("#f2f3f5")
_MUTED = QColor("#c3c7cd")
_MARGIN = 10  # between the picture's corner and the panel
_PADDING = 10  # inside the panel
_BAR_HEIGHT = 5
_PANEL_WIDTH = 250  # at most; narrower on a small picture


class LivePicture(QWidget):
    """Paints a frame as large as fits, centred, and the prediction shown for it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image = QImage()
        self._prediction: FramePrediction | None = None
        self._badge = ""
        self.top_k = 3
        self.setMinimumSize(320, 240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    @property
    def prediction(self) -> FramePrediction | None:
        """The prediction drawn over the picture."""
        return self._prediction

    @property
    def badge(self) -> str:
        """The centred note ("Paused", "Loading model…"), or ""."""
        return self._badge

    def shown_labels(self) -> list[tuple[str, float]]:
        """The (label, probability) lines of the overlay, most likely first."""
        if self._prediction is None:
            return []
        pairs = zip(self._prediction.labels, self._prediction.probabilities, strict=True)
        return list(pairs)[:self.top_k]

    def set_image(self, image: QImage) -> None:
        """Show ``image`` (the newest frame)."""
        self._image = image
        self.update()

    def set_prediction(self, prediction: FramePrediction | None) -> None:
        """Draw ``prediction``'s top-k over the picture; None removes the overlay."""
        self._prediction = prediction
        self.update()

    def set_top_k(self, top_k: int) -> None:
        """Draw ``top_k`` labels."""
        self.top_k = top_k
        self.update()

    def set_badge(self, text: str) -> None:
        """Show ``text`` in the middle of the picture; "" hides it."""
        self._badge = text
        self.update()

    def clear(self) -> None:
        """No picture, no prediction, no badge."""
        self._image, self._prediction, self._badge = QImage(), None, ""
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(640, 420)

    def picture_rect(self) -> QRectF:
        """Where the picture is drawn: as large as fits, centred."""
        if self._image.isNull():
            return QRectF(self.rect())
        scale = min(self.width() / self._image.width(), self.height() / self._image.height())
        width, height = self._image.width() * scale, self._image.height() * scale
        return QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), _GROUND)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        picture = self.picture_rect()
        if not self._image.isNull():
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(picture, self._image)
        if self.shown_labels():
            self._paint_overlay(painter, picture)
        if self._badge:
            self._paint_badge(painter)
        painter.end()

    def _paint_overlay(self, painter: QPainter, picture: QRectF) -> None:
        lines = self.shown_labels()
        font, bold = QFont(self.font()), QFont(self.font())
        bold.setBold(True)
        line_height = QFontMetrics(bold).height()
        row_height = line_height + 2 + _BAR_HEIGHT + 6
        width = min(_PANEL_WIDTH, picture.width() - 2 * _MARGIN)
        panel = QRectF(picture.left() + _MARGIN, picture.top() + _MARGIN, width,
                       2 * _PADDING + len(lines) * row_height - 6)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(_PANEL)
        painter.drawRoundedRect(panel, 6, 6)
        inner = panel.adjusted(_PADDING, _PADDING, -_PADDING, -_PADDING)
        doubtful = lines[0][1] < LOW_CONFIDENCE
        # The dark palette's colours whatever the app's: the overlay is always light on dark.
        dark = create_palette(Qt.ColorScheme.Dark)
        accent, warning = bar_color(dark), severity_color("warning", dark)
        top = inner.top()
        for rank, (label, probability) in enumerate(lines):
            painter.setFont(bold if rank == 0 else font)
            painter.setPen(_TEXT if rank == 0 else _MUTED)
            percent = f"{probability:.0%}"
            metrics = QFontMetrics(painter.font())
            percent_width = metrics.horizontalAdvance(percent) + 8
            text = QRectF(inner.left(), top, inner.width(), line_height)
            left_align = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            painter.drawText(text, left_align, metrics.elidedText(label, Qt.TextElideMode.ElideRight,
                                                                 int(inner.width() - percent_width)))
            painter.drawText(text, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), percent)
            bar = QRectF(inner.left(), top + line_height + 2, inner.width(), _BAR_HEIGHT)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(_TRACK)
            painter.drawRoundedRect(bar, 2, 2)
            if probability > 0:
                fill = QColor(warning if rank == 0 and doubtful else accent)
                if rank > 0:
                    fill.setAlpha(170)
                painter.setBrush(fill)
                painter.drawRoundedRect(QRectF(bar.left(), bar.top(), max(bar.width() * probability, 3),
                                               bar.height()), 2, 2)
            top += row_height

    def _paint_badge(self, painter: QPainter) -> None:
        font = QFont(self.font())
        font.setBold(True)
        metrics = QFontMetrics(font)
        width, height = metrics.horizontalAdvance(self._badge) + 28, metrics.height() + 14
        badge = QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(_PANEL)
        painter.drawRoundedRect(badge, height / 2, height / 2)
        painter.setFont(font)
        painter.setPen(_TEXT)
        painter.drawText(badge, int(Qt.AlignmentFlag.AlignCenter), self._badge)

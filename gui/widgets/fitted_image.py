"""A picture that fills its widget without distortion, and the conversion of Pillow images for Qt.

The augmentation preview, the Grad-CAM panel and the Review page show ``FittedImage``s; thumbnails
and all of those convert their Pillow images with ``pil_to_qimage``. ``decode_preview`` is the job a
pool thread runs to decode a photo for one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QRectF, QSize
from PySide6.QtGui import QImage, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.data.images import load_rgb

PREVIEW_SIDE = 480  # photos are decoded no larger than a panel shows them


def pil_to_qimage(image: Image.Image) -> QImage:
    """A deep copy of a Pillow image as an RGB888 ``QImage`` (safe to hand from a worker thread to the GUI)."""
    rgb = image.convert("RGB")
    data = rgb.tobytes()
    # copy(): the QImage must own its pixels, not borrow ``data``.
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


class FittedImage(QWidget):
    """Paints an image as large as fits while keeping its aspect ratio, centred at the top."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image = QImage()
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: QImage) -> None:
        """Show ``image``."""
        self._image = image
        self.updateGeometry()
        self.update()

    def sizeHint(self) -> QSize:
        return self._image.size() if not self._image.isNull() else QSize(480, 360)

    def paintEvent(self, _event: QPaintEvent) -> None:
        if self._image.isNull():
            return
        scale = min(self.width() / self._image.width(), self.height() / self._image.height())
        width, height = self._image.width() * scale, self._image.height() * scale
        target = QRectF((self.width() - width) / 2, 0, width, height)  # top-aligned: a legend may sit below
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(target, self._image)


def decode_preview(path: Path, *, progress: Callable[[int, int], None],
                   should_abort: Callable[[], bool]) -> Image.Image:
    """A ``Worker`` job: ``path`` decoded for a ``FittedImage`` (its shorter side about ``PREVIEW_SIDE``)."""
    image = load_rgb(path, min_side=PREVIEW_SIDE)
    image.thumbnail((PREVIEW_SIDE * 2, PREVIEW_SIDE * 2))
    return image

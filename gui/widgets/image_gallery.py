"""A reusable gallery: image files as thumbnails in a grid, each with a caption, decoded lazily on worker threads.

``GalleryModel`` is a ``ThumbnailModel`` (same decoding, cache and placeholders) whose
rows carry a caption, a tooltip and an optional severity colour; ``ImageGallery`` is
the icon-mode view that asks for the rows on screen and says which image was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QAbstractItemView, QWidget

from engine.data.health import FileRecord
from gui.style import severity_color
from gui.widgets.icon_grid import IconGrid
from gui.widgets.thumbnails import FAILED, REASON_ROLE, STATUS_ROLE, THUMBNAIL_SIDE, ThumbnailModel

_ModelIndex = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class GalleryImage:
    """One picture of a gallery.

    Attributes:
        path: the image file.
        caption: the text under the thumbnail; one line per ``\\n``.
        tooltip: more about the image (the path is always shown too).
        true_label: the image's known class, where there is one.
        severity: colours the caption (``error``, ``warning``, ``info``), or None for plain text.
    """

    path: Path
    caption: str
    tooltip: str = ""
    true_label: str | None = None
    severity: str | None = None


class GalleryModel(ThumbnailModel):
    """Thumbnails of any image files, each with its own caption (``set_images``)."""

    def __init__(self, side: int = THUMBNAIL_SIDE, parent: QObject | None = None) -> None:
        super().__init__(side, parent)
        self._images: list[GalleryImage] = []

    def set_images(self, images: Sequence[GalleryImage]) -> None:
        """Show ``images`` in this order; decoding waits for ``request_rows``."""
        self._images = list(images)
        # Without a modification time the cache keys on the path: a report's images do not change under it.
        self.show_class("", [FileRecord(path=image.path, label=image.true_label or "") for image in images], {})

    def clear(self) -> None:
        """Show nothing and stop decoding."""
        self._images = []
        super().clear()

    def images(self) -> list[GalleryImage]:
        """The images shown, in order."""
        return list(self._images)

    def image_at(self, row: int) -> GalleryImage:
        """The image of ``row``."""
        return self._images[row]

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid() or not 0 <= index.row() < len(self._images):
            return super().data(index, role)
        image = self._images[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return image.caption
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [str(image.path)]
            if image.tooltip:
                lines.append(image.tooltip)
            if super().data(index, STATUS_ROLE) == FAILED:
                lines.append(f"Cannot be shown: {super().data(index, REASON_ROLE)}")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.ForegroundRole and image.severity is not None:
            return severity_color(image.severity, QGuiApplication.palette())
        return super().data(index, role)


class ImageGallery(IconGrid):
    """A grid of captioned thumbnails; clicking one (or moving to it with the keys) chooses it.

    Signals:
        image_chosen: the ``GalleryImage`` chosen.

    Args:
        caption_lines: lines of caption room under each thumbnail.
        side: thumbnail side in logical pixels.
        parent: the parent widget.
    """

    image_chosen = Signal(object)

    def __init__(self, caption_lines: int = 2, side: int = THUMBNAIL_SIDE, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.gallery_model = GalleryModel(side, self)
        self.setModel(self.gallery_model)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setIconSize(QSize(side, side))
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._smallest_cell = QSize(side + 24, side + caption_lines * self.fontMetrics().lineSpacing() + 14)
        self.setGridSize(self._smallest_cell)
        self._empty_text = ""
        self.gallery_model.modelReset.connect(self.schedule_request)
        self.selectionModel().currentChanged.connect(self._on_selection_current_changed)

    def set_images(self, images: Sequence[GalleryImage]) -> None:
        """Show ``images``, scrolled to the top, none chosen."""
        self.gallery_model.set_images(images)
        self.scrollToTop()

    def clear(self) -> None:
        """Show no image."""
        self.gallery_model.clear()

    def images(self) -> list[GalleryImage]:
        """The images shown, in order."""
        return self.gallery_model.images()

    def set_empty_text(self, text: str) -> None:
        """What the empty gallery says, e.g. how to fill it."""
        self._empty_text = text
        self.viewport().update()

    def choose(self, row: int) -> None:
        """Choose the image of ``row`` as a click would (``image_chosen`` follows)."""
        self.setCurrentIndex(self.gallery_model.index(row))

    def smallest_cell(self) -> QSize:
        return self._smallest_cell

    def request_rows(self, rows: range) -> None:
        self.gallery_model.request_rows(rows)

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.gallery_model.rowCount() == 0 and self._empty_text:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
            painter.drawText(self.viewport().rect().adjusted(12, 12, -12, -12), int(flags), self._empty_text)
            painter.end()

    def _on_selection_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.image_chosen.emit(self.gallery_model.image_at(current.row()))

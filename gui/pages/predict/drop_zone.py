"""The Predict page's empty results area: a dashed frame that says what to drop, lit while a drag is over the page."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QFrame, QStyle, QVBoxLayout, QWidget

from gui.widgets.message_panel import MessagePanel


class DropZone(QFrame):
    """The empty results area: a dashed frame that says what to drop, highlighted while a drag is over the page."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.highlighted = False
        self.message_panel = MessagePanel(self)
        self.message_panel.show_message(
            "Drop images or folders here",
            "or use “Add images…” and “Add folder…” above. Folders are searched with their subfolders; "
            "files that cannot be read are listed with the reason.",
            icon=self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon))
        layout = QVBoxLayout(self)
        layout.addWidget(self.message_panel)

    def set_highlighted(self, highlighted: bool) -> None:
        """Draw the frame in the highlight colour (a drag that can be dropped is over the page)."""
        self.highlighted = highlighted
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        role = self.palette().ColorRole.Highlight if self.highlighted else self.palette().ColorRole.Mid
        pen = QPen(self.palette().color(role), 2, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(self.palette().color(self.palette().ColorRole.Base))
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(2, 2, -2, -2), 10, 10)
        painter.end()

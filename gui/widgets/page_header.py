"""The header row of a page: its title in large bold type, an optional one-line summary and a Refresh button."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStyle, QWidget

TITLE_SCALE = 1.35  # page titles, and the message panel's, against the body text


def title_font(font: QFont) -> QFont:
    """``font`` at title size, bold."""
    title = QFont(font)
    title.setPointSizeF(font.pointSizeF() * TITLE_SCALE)
    title.setBold(True)
    return title


class PageHeader(QWidget):
    """A page's title; with ``refresh_tip``, a summary beside it and a Refresh button at the right.

    Signals:
        refresh_clicked: the Refresh button was pressed.

    Args:
        title: the page's title.
        refresh_tip: the Refresh button's tooltip; None for a header with the title alone.
        parent: the parent widget.
    """

    refresh_clicked = Signal()

    def __init__(self, title: str, refresh_tip: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title_label = QLabel(title, self)
        self.title_label.setFont(title_font(self.title_label.font()))
        self.summary_label = QLabel(self)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title_label)
        layout.addSpacing(12)
        layout.addWidget(self.summary_label, 1)
        self.refresh_button: QPushButton | None = None
        if refresh_tip is not None:
            self.refresh_button = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_BrowserReload),
                                              "Refresh", self)
            self.refresh_button.setToolTip(refresh_tip)
            self.refresh_button.clicked.connect(self.refresh_clicked)
            layout.addWidget(self.refresh_button)

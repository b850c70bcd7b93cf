"""A centred panel that stands in for a page's content: nothing open yet, busy, or an error.

It shows an icon, a title, a readable explanation, an optional progress bar and
an optional action button; pages reconfigure one panel for each state.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QIcon
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class MessagePanel(QWidget):
    """Icon, title, detail text, progress bar and button, centred in the available space."""

    action_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # A column of at most 540 px between two stretches. Word-wrapped labels inside it get
        # their height from heightForWidth, which a layout *alignment* flag would bypass (cutting lines).
        column = QWidget(self)
        column.setMaximumWidth(540)
        self.icon_label = QLabel(column)
        self.icon_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title_label = QLabel(column)
        self.title_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title_label.setWordWrap(True)
        title_font = QFont(self.title_label.font())
        title_font.setPointSizeF(title_font.pointSizeF() * 1.35)
        title_font.setBold(True)
        self.title_label.setFont(title_font)
        self.detail_label = QLabel(column)
        self.detail_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress_bar = QProgressBar(column)
        self.progress_bar.setFixedWidth(320)
        self.progress_bar.setTextVisible(False)
        self.action_button = QPushButton(column)
        self.action_button.clicked.connect(self.action_clicked)

        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.addStretch(2)
        column_layout.addWidget(self.icon_label)
        column_layout.addWidget(self.title_label)
        column_layout.addWidget(self.detail_label)
        column_layout.addSpacing(8)
        column_layout.addWidget(self.progress_bar, 0, Qt.AlignmentFlag.AlignHCenter)
        column_layout.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignHCenter)
        column_layout.addStretch(3)
        layout = QHBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(column, 100)  # grows to its maximum width before the stretches get any
        layout.addStretch(1)

    def show_message(
        self,
        title: str,
        detail: str = "",
        *,
        icon: QIcon | None = None,
        action: str | None = None,
        busy: bool = False,
    ) -> None:
        """Show ``title`` and ``detail``; ``action`` labels the button, ``busy`` shows the progress bar."""
        self.title_label.setText(title)
        self.detail_label.setText(detail)
        self.detail_label.setVisible(bool(detail))
        self.icon_label.setVisible(icon is not None)
        if icon is not None:
            self.icon_label.setPixmap(icon.pixmap(48, 48))
        self.progress_bar.setVisible(busy)
        self.progress_bar.setRange(0, 0)  # busy indicator until the first progress report
        self.action_button.setVisible(action is not None)
        self.action_button.setText(action or "")

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` out of ``total`` on the progress bar."""
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))

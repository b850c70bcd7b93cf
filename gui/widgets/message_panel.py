"""A centred panel that stands in for a page's content: nothing open yet, busy, or an error.

It shows an icon, a title, a readable explanation, an optional progress bar and
an optional action button; pages reconfigure one panel for each state. ``MessageStack``
holds a page's content and its panel, one in front of the other.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from gui.widgets.page_header import title_font


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
        self.title_label.setFont(title_font(self.title_label.font()))
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


class MessageStack(QStackedWidget):
    """A page's content, or a ``MessagePanel`` in its place: nothing open yet, busy, or an error.

    Args:
        content: what the page shows once there is something to show.
        parent: the parent widget.
    """

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_panel = MessagePanel(self)
        self.content = content
        self.addWidget(self.message_panel)
        self.addWidget(content)

    @property
    def showing_content(self) -> bool:
        """Whether the content is on screen rather than a message."""
        return self.currentWidget() is self.content

    def show_message(self, title: str, detail: str = "", *, icon: QStyle.StandardPixmap | None = None,
                     action: str | None = None, busy: bool = False) -> None:
        """Put the message panel in front with ``title`` and ``detail`` (see ``MessagePanel.show_message``)."""
        qicon = self.style().standardIcon(icon) if icon is not None else None
        self.message_panel.show_message(title, detail, icon=qicon, action=action, busy=busy)
        self.setCurrentWidget(self.message_panel)

    def show_content(self) -> None:
        """Put the content in front."""
        self.setCurrentWidget(self.content)

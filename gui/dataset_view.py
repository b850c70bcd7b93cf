"""The "Data" page: the class table beside the health report of the open dataset.

Until a report is in, a message panel stands in for them (nothing open,
scanning, or why the folder cannot be used). The page only displays; the
main window decides what to scan.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLabel, QSplitter, QStackedWidget, QStyle, QVBoxLayout, QWidget

from engine.health import HealthReport
from gui.class_table import ClassTable
from gui.health_view import HealthView
from gui.message_panel import MessagePanel

OPEN_ACTION_TEXT = "Open data folder…"
LAYOUT_HINT = (
    "A data folder holds one sub-folder per class, each with that class's images "
    "(for example dogs/ and cats/), optionally inside train/ and val/ folders."
)


class DataPage(QWidget):
    """Shows one dataset: its classes and their sizes, and its health report."""

    open_requested = Signal()  # the user asked to open another folder

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message_panel = MessagePanel(self)
        self.message_panel.action_clicked.connect(self.open_requested)
        self.class_table = ClassTable(self)
        self.health_view = HealthView(self)
        self.balance_label = QLabel(self)
        self.balance_label.setWordWrap(True)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(_titled("Classes", self.balance_label, self.class_table))
        self.splitter.addWidget(_titled("Health report", self.health_view.summary_label, self.health_view))
        # The class table needs little width; the report's sentences are better for more.
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([400, 680])

        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.message_panel)
        self._stack.addWidget(self.splitter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self._stack)
        self._shown_root: Path | None = None
        self.show_nothing_open()

    @property
    def showing_report(self) -> bool:
        """Whether the class table and health report are on screen (rather than a message)."""
        return self._stack.currentWidget() is self.splitter

    def show_nothing_open(self) -> None:
        """Invite the user to open a folder."""
        self._show_message(
            "No data folder open",
            LAYOUT_HINT,
            icon=QStyle.StandardPixmap.SP_DirOpenIcon,
            action=OPEN_ACTION_TEXT,
        )

    def show_scanning(self, path: Path) -> None:
        """Say that ``path`` is being scanned; a rescan of the folder on screen keeps its report up."""
        if self.showing_report and self._shown_root is not None and self._shown_root.resolve() == path.resolve():
            return
        self._show_message(f"Scanning {path.name or path}…", str(path), busy=True)

    def show_progress(self, done: int, total: int) -> None:
        """Advance the scanning progress bar."""
        self.message_panel.set_progress(done, total)

    def show_report(self, report: HealthReport) -> None:
        """Show the classes and health report of a finished scan."""
        self._shown_root = report.root
        self.class_table.set_counts(report.classes, report.class_counts)
        self.balance_label.setText(_balance_text(report))
        self.health_view.set_report(report)
        self._stack.setCurrentWidget(self.splitter)

    def show_error(self, path: Path, message: str) -> None:
        """Explain why ``path`` cannot be used, with a way to open another folder."""
        self._show_message(
            f"Cannot use “{path.name or path}”",
            message,
            icon=QStyle.StandardPixmap.SP_MessageBoxCritical,
            action=OPEN_ACTION_TEXT,
        )

    def save_state(self) -> QByteArray:
        """The splitter position, for ``QSettings``."""
        return self.splitter.saveState()

    def restore_state(self, state: QByteArray) -> None:
        """Restore a splitter position saved by ``save_state``."""
        self.splitter.restoreState(state)

    def _show_message(
        self,
        title: str,
        detail: str,
        *,
        icon: QStyle.StandardPixmap | None = None,
        action: str | None = None,
        busy: bool = False,
    ) -> None:
        self._shown_root = None
        self.class_table.clear()
        self.health_view.clear()
        self.balance_label.clear()
        qicon = self.style().standardIcon(icon) if icon is not None else None
        self.message_panel.show_message(title, detail, icon=qicon, action=action, busy=busy)
        self._stack.setCurrentWidget(self.message_panel)


def _titled(title: str, subtitle: QLabel, body: QWidget) -> QWidget:
    """A pane with a bold heading, a one-line subtitle and a body that takes the rest."""
    pane = QWidget()
    heading = QLabel(title, pane)
    font = QFont(heading.font())
    font.setPointSizeF(font.pointSizeF() * 1.15)
    font.setBold(True)
    heading.setFont(font)
    layout = QVBoxLayout(pane)
    layout.setContentsMargins(4, 0, 4, 0)
    layout.setSpacing(4)
    layout.addWidget(heading)
    layout.addWidget(subtitle)
    layout.addWidget(body, 1)
    return pane


def _balance_text(report: HealthReport) -> str:
    counts = [report.class_counts.get(name, 0) for name in report.classes]
    if not counts:
        return "No classes."
    if min(counts) == 0:
        empty = sum(1 for count in counts if count == 0)
        return f"{len(counts)} classes; {empty} without usable images."
    if report.imbalance_ratio <= 1.0:
        return f"{len(counts)} classes, all of the same size."
    return f"{len(counts)} classes; the largest is {report.imbalance_ratio:.1f}× the smallest."

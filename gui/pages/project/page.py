"""The "Project" page, Transfer Studio's start screen: open a project, reopen a recent one, or try the demo.

A project is a data folder (or a CSV of labels); choosing one, by button, file
dialog, drag and drop or the recent list, emits ``project_chosen`` and puts it first
in the recent projects kept in ``QSettings``. The page opens nothing itself. Its
``ProjectFolderPanel`` shows, and moves, the open project's folder of runs.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QElapsedTimer, QSettings, QSize, Qt, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDragLeaveEvent, QDropEvent, QFont, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.pages.base import Page, PageContext
from gui.pages.project.location import ProjectFolderPanel
from gui.services import settings as ui_settings
from gui.services.run_controller import RunController
from gui.style import severity_color

DEMO_PROJECT = Path(__file__).resolve().parents[3] / "resources" / "demo"
DEMO_SAMPLE_CLASSES = ("ankle_boot", "bag", "dress", "sneaker", "trouser", "shirt")
CARD_STYLE = (
    "QFrame#project_card { background: palette(base); border: 1px solid palette(mid); border-radius: 8px; }"
)
HOW_IT_WORKS = (
    "<ol style='margin-left: 14px; -qt-list-indent: 0;'>"
    "<li><b>Point at your photos.</b> A folder with one sub-folder per class (cats/, dogs/, …), "
    "or a CSV of <i>path,label</i> rows.</li>"
    "<li><b>Check the data.</b> The health report finds broken files, duplicates, tiny images "
    "and unbalanced classes before they cost you a run.</li>"
    "<li><b>Train and compare.</b> A network pretrained on millions of photos learns your classes "
    "from a few dozen examples each; every run is kept, so you can compare and resume them.</li>"
    "</ol>"
    "<p>A project is just its data folder: runs, health report and caches go in "
    "<code>DATA/.transfer-studio</code> (or a folder you choose); your images are never changed.</p>"
)


class ProjectPage(Page):
    """The start screen: three ways in, the recent projects, and what a project is.

    Args:
        settings: where the recent projects are kept; tests pass a private file.
        parent: the parent widget.
        controller: the window's training runs; the project folder is not moved under a running one.
    """

    title = "Project"
    icon = QStyle.StandardPixmap.SP_DirHomeIcon

    project_chosen = Signal(object)  # Path of the data folder or CSV the user chose
    project_folder_changed = Signal()  # the open project's folder of runs is now another one

    def __init__(self, settings: QSettings, parent: QWidget | None = None,
                 controller: RunController | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._dialog: QFileDialog | None = None
        self.setAcceptDrops(True)
        self.setStyleSheet(CARD_STYLE)

        title = QLabel("Welcome to Transfer Studio", self)
        title.setFont(_scaled_font(title.font(), 1.8, bold=True))
        subtitle = QLabel(
            "Teach a computer to tell your pictures apart: start from a folder of labelled photos, "
            "or drop one anywhere on this page.", self)
        subtitle.setWordWrap(True)
        self.folder_button = QPushButton("Choose folder…", self)
        self.folder_button.setDefault(True)
        self.folder_button.clicked.connect(self.choose_folder)
        self.csv_button = QPushButton("Choose CSV…", self)
        self.csv_button.clicked.connect(self.choose_csv)
        self.demo_button = QPushButton("Open the demo", self)
        self.demo_button.clicked.connect(self.open_demo)
        style = self.style()
        cards = QHBoxLayout()
        cards.setSpacing(12)
        cards.addWidget(_card(
            _icon_label(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon)), "Open a data folder",
            "One sub-folder of images per class, e.g. cats/ and dogs/, optionally inside train/ and val/. "
            "A new folder becomes a new project.", self.folder_button), 1)
        cards.addWidget(_card(
            _icon_label(style.standardIcon(QStyle.StandardPixmap.SP_FileDialogDetailedView)), "Open a CSV of labels",
            "A CSV with path,label rows, for images that are not sorted into class folders.", self.csv_button), 1)
        cards.addWidget(_card(
            _demo_strip(), "Try the demo",
            "Ten kinds of clothing, 50 small photos each (Fashion-MNIST). A first model trains in about a minute.",
            self.demo_button), 1)

        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        self.folder_panel = ProjectFolderPanel(controller, self)
        self.folder_panel.folder_changed.connect(self.project_folder_changed)
        recent_title = QLabel("Recent projects", self)
        recent_title.setFont(_scaled_font(recent_title.font(), 1.15, bold=True))
        self.recent_list = QListWidget(self)
        self.recent_list.setObjectName("recent_projects")
        self.recent_list.setSpacing(1)
        # One click opens, as on a start screen; Return opens the current row from the keyboard.
        self.recent_list.itemClicked.connect(self._on_recent_list_item_clicked)
        open_current = QAction(self.recent_list)
        open_current.setShortcuts([QKeySequence(Qt.Key.Key_Return), QKeySequence(Qt.Key.Key_Enter)])
        open_current.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        open_current.triggered.connect(self._on_open_current_triggered)
        self.recent_list.addAction(open_current)
        self._last_click = QElapsedTimer()
        self.recent_empty_label = QLabel("No recent projects yet: open a data folder above, or try the demo.", self)
        self.recent_empty_label.setEnabled(False)  # the palette's quieter text colour
        self.recent_empty_label.setWordWrap(True)
        # It stands in for the list, so it takes the list's height and keeps the heading at the top.
        self.recent_empty_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.recent_empty_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        how_title = QLabel("How it works", self)
        how_title.setFont(recent_title.font())
        how = QLabel(HOW_IT_WORKS, self)
        how.setWordWrap(True)
        how.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        how.setTextFormat(Qt.TextFormat.RichText)

        recent_column = QVBoxLayout()
        recent_column.addWidget(recent_title)
        recent_column.addWidget(self.recent_empty_label)
        recent_column.addWidget(self.recent_list, 1)
        how_column = QVBoxLayout()
        how_column.addWidget(how_title)
        how_column.addWidget(_frame(how))
        how_column.addStretch(1)
        bottom = QHBoxLayout()
        bottom.setSpacing(16)
        bottom.addLayout(recent_column, 1)
        bottom.addLayout(how_column, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(10)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addSpacing(6)
        layout.addLayout(cards)
        layout.addWidget(self.message_label)
        layout.addWidget(self.folder_panel)
        layout.addSpacing(6)
        layout.addLayout(bottom, 1)
        self.refresh_recent()

    def recent_projects(self) -> list[Path]:
        """The recent projects, most recent first."""
        return ui_settings.read_recent_projects(self._settings)

    def open_project(self, path: str | Path) -> bool:
        """Choose a data folder or CSV: emit ``project_chosen`` and remember it; False (and why, on the page) if not."""
        project = Path(path).expanduser().resolve()
        if not project.exists():
            self.show_message(f"“{project}” is not there any more: it was moved, renamed or deleted.")
            return False
        if project.is_file() and project.suffix.lower() != ".csv":
            self.show_message(f"“{project.name}” is a file: choose a folder of class folders, or a CSV of labels.")
            return False
        self.show_message("")
        self.set_project(project)
        self.project_chosen.emit(project)
        return True

    @classmethod
    def create(cls, context: PageContext, parent: QWidget | None = None) -> ProjectPage:  # type: ignore[override]
        return cls(context.settings, parent, context.controller)

    def set_project(self, folder: str | Path) -> None:
        """Show the project just opened (here, by the File menu, a drop on the window), first in the recent list."""
        project = Path(folder).expanduser().resolve()
        self.show_message("")  # what it said was about the project before
        self.folder_panel.set_data_path(project)
        if project != DEMO_PROJECT:  # the demo has its own button; the list is for the user's projects
            ui_settings.add_recent_project(self._settings, project)
            self.refresh_recent()

    def open_demo(self) -> None:
        """Choose the bundled demo project."""
        self.open_project(DEMO_PROJECT)

    def choose_folder(self) -> None:
        """Ask for a data folder in a file dialog that does not block the event loop."""
        self._open_dialog("Choose a data folder", QFileDialog.FileMode.Directory, "")

    def choose_csv(self) -> None:
        """Ask for a CSV of labels in a file dialog that does not block the event loop."""
        self._open_dialog("Choose a CSV of labels", QFileDialog.FileMode.ExistingFile, "CSV files (*.csv)")

    def remove_recent(self, path: Path) -> None:
        """Forget a recent project (its folder is left alone)."""
        ui_settings.remove_recent_project(self._settings, path)
        self.refresh_recent()

    def refresh_recent(self) -> None:
        """Rebuild the recent list from the settings, marking projects whose folder is gone."""
        self.recent_list.clear()
        projects = self.recent_projects()
        for project in projects:
            item = QListWidgetItem(self.recent_list)
            item.setData(Qt.ItemDataRole.UserRole, str(project))
            row = _RecentRow(project, self.recent_list)
            row.remove_button.clicked.connect(lambda _checked=False, gone=project: self.remove_recent(gone))
            item.setSizeHint(row.sizeHint())
            item.setToolTip(str(project) if row.exists else f"{project}\nnot found: remove it, or open its new place")
            self.recent_list.setItemWidget(item, row)
        self.recent_list.setVisible(bool(projects))
        self.recent_empty_label.setVisible(not projects)

    def show_message(self, text: str, severity: str = "warning") -> None:
        """One line under the ways in (why a project did not open); empty hides it."""
        self.message_label.setText(text)
        self.message_label.setStyleSheet(f"color: {severity_color(severity, self.palette()).name()};")
        self.message_label.setVisible(bool(text))

    # Qt event handlers ---------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        dropped = dropped_project(event)
        if dropped is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.show_message(f"Drop to open “{dropped.name}”.", severity="info")

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self.show_message("")
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        dropped = dropped_project(event)
        if dropped is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_project(dropped)

    # Helpers and slots ---------------------------------------------------------------------------

    def _open_dialog(self, caption: str, mode: QFileDialog.FileMode, name_filter: str) -> None:
        if self._dialog is not None:
            self._dialog.close()
        recent = self.recent_projects()
        start = str(recent[0].parent) if recent else str(Path.home())
        dialog = QFileDialog(self, caption, start, name_filter)
        dialog.setFileMode(mode)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.open_project)
        dialog.destroyed.connect(self._on_dialog_destroyed)
        self._dialog = dialog
        dialog.open()  # window-modal, but returns at once: no nested event loop

    def _on_recent_list_item_clicked(self, item: QListWidgetItem) -> None:
        # A double click also ends in a second click; one click already opened the project.
        if self._last_click.isValid() and self._last_click.elapsed() < QApplication.doubleClickInterval():
            return
        self._last_click.start()
        self.open_project(item.data(Qt.ItemDataRole.UserRole))

    def _on_open_current_triggered(self) -> None:
        item = self.recent_list.currentItem()
        if item is not None:
            self.open_project(item.data(Qt.ItemDataRole.UserRole))

    def _on_dialog_destroyed(self) -> None:
        self._dialog = None


class _RecentRow(QWidget):
    """One recent project: its name, its folder, "not found" if it is gone, and a remove button."""

    def __init__(self, project: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.exists = project.exists()
        is_csv = project.suffix.lower() == ".csv"
        icon = QStyle.StandardPixmap.SP_FileIcon if is_csv else QStyle.StandardPixmap.SP_DirIcon
        self.icon_label = QLabel(self)
        self.icon_label.setPixmap(self.style().standardIcon(icon).pixmap(24, 24))
        self.icon_label.setEnabled(self.exists)
        self.name_label = QLabel(project.name or str(project), self)
        self.name_label.setFont(_scaled_font(self.name_label.font(), 1.0, bold=True))
        self.name_label.setEnabled(self.exists)
        self.path_label = QLabel(str(project.parent), self)
        self.path_label.setEnabled(False)  # the palette's quieter text colour
        self.path_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.missing_label = QLabel("not found", self)
        self.missing_label.setStyleSheet(f"color: {severity_color('warning', self.palette()).name()};")
        self.missing_label.setVisible(not self.exists)
        self.remove_button = QToolButton(self)
        self.remove_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DialogCloseButton))
        self.remove_button.setAutoRaise(True)
        self.remove_button.setToolTip("Remove from the recent projects (the folder is not touched)")
        self.remove_button.setAccessibleName(f"Remove {project.name} from the recent projects")
        text = QVBoxLayout()
        text.setSpacing(0)
        text.addWidget(self.name_label)
        text.addWidget(self.path_label)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 4, 4, 4)
        layout.addWidget(self.icon_label)
        layout.addLayout(text, 1)
        layout.addWidget(self.missing_label)
        layout.addWidget(self.remove_button)


def _card(picture: QWidget, title: str, text: str, button: QPushButton) -> QFrame:
    """A rounded panel with a picture, a bold title, a sentence and a button at the bottom."""
    heading = QLabel(title)
    heading.setFont(_scaled_font(heading.font(), 1.15, bold=True))
    body = QLabel(text)
    body.setWordWrap(True)
    body.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    button.setMinimumHeight(30)
    return _frame(picture, heading, body, footer=button)


def _frame(*widgets: QWidget, footer: QWidget | None = None) -> QFrame:
    """A rounded panel of ``widgets`` top to bottom, and ``footer`` at its bottom."""
    frame = QFrame()
    frame.setObjectName("project_card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 14, 16, 14)
    layout.setSpacing(6)
    for widget in widgets:
        layout.addWidget(widget)
    if footer is not None:
        layout.addStretch(1)
        layout.addWidget(footer)
    return frame


def _icon_label(icon: QIcon) -> QLabel:
    label = QLabel()
    label.setPixmap(icon.pixmap(40, 40))
    label.setFixedHeight(44)
    return label


def _demo_strip() -> QWidget:
    """A row of demo photos, one per class, so the card shows what the demo is."""
    strip = QWidget()
    layout = QHBoxLayout(strip)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(4)
    for name in DEMO_SAMPLE_CLASSES:
        first = next(iter(sorted((DEMO_PROJECT / name).glob("*.png"))), None)
        if first is None:
            continue
        label = QLabel(strip)
        label.setPixmap(QPixmap(str(first)).scaled(QSize(40, 40), Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.SmoothTransformation))
        label.setToolTip(name.replace("_", " "))
        layout.addWidget(label)
    layout.addStretch(1)
    strip.setFixedHeight(44)
    return strip


def _scaled_font(font: QFont, factor: float, *, bold: bool) -> QFont:
    scaled = QFont(font)
    scaled.setPointSizeF(font.pointSizeF() * factor)
    scaled.setBold(bold)
    return scaled


def dropped_project(event: QDragEnterEvent | QDropEvent) -> Path | None:
    """The single local folder or CSV being dragged onto the window, if that is what it is."""
    mime = event.mimeData()
    if mime is None or not mime.hasUrls() or len(mime.urls()) != 1 or not mime.urls()[0].isLocalFile():
        return None
    path = Path(mime.urls()[0].toLocalFile())
    return path if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv") else None

"""The "Data" page: classes, the images of the selected class, the split, and the health report.

Until a report is in, a message panel stands in for them (nothing open, scanning,
or why the folder cannot be used). The page keeps the user's exclusions (images
left out of training, saved in the project's ``exclusions.json``) and shows them
everywhere; the main window decides what to scan.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from PySide6.QtCore import QByteArray, QDataStream, QIODevice, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont
from PySide6.QtWidgets import QLabel, QSplitter, QStyle, QVBoxLayout, QWidget

from engine.core.errors import DatasetError
from engine.core.paths import project_dir_for
from engine.data.exclusions import apply_exclusions, load_exclusions, save_exclusions
from engine.data.health import FileRecord, HealthReport
from gui.pages.base import Page
from gui.pages.data.class_table import ClassTable
from gui.pages.data.decoded_cache_panel import DecodedCachePanel
from gui.pages.data.health_view import HealthView
from gui.pages.data.split_settings import SplitSettings
from gui.pages.data.thumbnail_grid import ThumbnailGrid
from gui.services.config_state import ConfigState
from gui.widgets.fields import ERROR_STYLE
from gui.widgets.message_panel import MessageStack

OPEN_ACTION_TEXT = "Open data folder…"
LAYOUT_HINT = (
    "A data folder holds one sub-folder per class, each with that class's images "
    "(for example dogs/ and cats/), optionally inside train/ and val/ folders."
)
IMAGES_HINT = "Right-click images to exclude them from training or to show them in the file manager."
_SECTION_GAP = 10  # pixels above a heading that starts a second section in a pane
_STATE_VERSION = 2  # of save_state(); version 1 was the bare state of the class/report splitter


def folder_url(path: Path) -> QUrl:
    """The URL that opens the folder holding ``path`` in the platform's file manager."""
    return QUrl.fromLocalFile(str(Path(path).parent))


class DataPage(Page):
    """Shows one dataset: its classes and their sizes, a class's images, the split and the health report.

    Args:
        state: the run configuration whose split settings the page edits; a private one when None.
        parent: the parent widget.

    Signals:
        open_requested: the user asked to open another folder.
        exclusions_changed: the images the user left out of training (a frozenset of paths) changed.
    """

    title = "Data"
    icon = QStyle.StandardPixmap.SP_DirIcon

    open_requested = Signal()
    exclusions_changed = Signal(object)

    def __init__(self, state: ConfigState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state if state is not None else ConfigState(parent=self)
        self.class_table = ClassTable(self)
        self.class_table.class_selected.connect(self._on_class_table_class_selected)
        self.health_view = HealthView(self)
        self.health_view.exclusion_requested.connect(self._on_exclusion_requested)
        self.health_view.reveal_requested.connect(self.reveal)
        self.thumbnail_grid = ThumbnailGrid(self)
        self.thumbnail_grid.exclusion_requested.connect(self._on_exclusion_requested)
        self.thumbnail_grid.reveal_requested.connect(self.reveal)
        self.split_settings = SplitSettings(self.state, self)
        self.cache_panel = DecodedCachePanel(self)
        self.balance_label = QLabel(self)
        self.balance_label.setWordWrap(True)
        self.images_title = _heading("Images")
        self.images_label = QLabel(self)
        self.images_label.setWordWrap(True)
        self.notice_label = QLabel(self)  # why the exclusions could not be read or saved
        self.notice_label.setWordWrap(True)
        self.notice_label.setStyleSheet(ERROR_STYLE)
        self.notice_label.hide()

        classes = _pane(_heading("Classes"), self.balance_label, (self.class_table, 1),
                        _SECTION_GAP, _heading("Training split"), self.split_settings, self.cache_panel)
        images = _pane(self.images_title, self.images_label, (self.thumbnail_grid, 1))
        report = _pane(_heading("Health report"), self.health_view.summary_label, (self.health_view, 1))
        self.right_splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.right_splitter.setChildrenCollapsible(False)
        self.right_splitter.addWidget(images)
        self.right_splitter.addWidget(report)
        self.right_splitter.setSizes([360, 300])
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(classes)
        self.splitter.addWidget(self.right_splitter)
        # The class table needs little width; thumbnails and the report's sentences are better for more.
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([340, 620])

        self._stack = MessageStack(self.splitter, self)
        self.message_panel = self._stack.message_panel
        self.message_panel.action_clicked.connect(self.open_requested)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.notice_label)
        layout.addWidget(self._stack)
        self._report: HealthReport | None = None
        self._records_by_class: dict[str, list[FileRecord]] = {}
        self._left_out: dict[Path, str] = {}
        self._excluded: frozenset[Path] = frozenset()
        self.show_nothing_open()

    @property
    def showing_report(self) -> bool:
        """Whether the class table and health report are on screen (rather than a message)."""
        return self._stack.showing_content

    @property
    def excluded_paths(self) -> frozenset[Path]:
        """The images of the shown dataset that the user left out of training."""
        return self._excluded

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
        shown = self._report.root if self._report is not None else None
        if self.showing_report and shown is not None and shown.resolve() == path.resolve():
            return
        self._show_message(f"Scanning {path.name or path}…", str(path), busy=True)

    def show_progress(self, done: int, total: int) -> None:
        """Advance the scanning progress bar."""
        self.message_panel.set_progress(done, total)

    def set_report(self, report: HealthReport) -> None:
        """Show the classes, images, split and health report of a finished scan.

        The user's exclusions are read from the dataset's project folder; a rescan of the
        folder on screen keeps the selected class.
        """
        same_folder = self._report is not None and self._report.root == report.root
        previous = self.class_table.selected_class if same_folder else None
        self._report = report
        self._records_by_class = defaultdict(list)
        for record in report.records:
            self._records_by_class[record.label].append(record)
        self._left_out = {path: problem.message for problem in report.problems if problem.excluded
                          for path in problem.paths}
        self._excluded = self._read_exclusions(report)
        self.health_view.set_report(report, self._excluded)
        self.cache_panel.set_dataset(report.root)
        self._show_counts()
        if not self.showing_report:
            self._stack.show_content()
            # Qt would give the focus to the first widget of the focus chain, the thumbnail grid.
            self.class_table.setFocus()
        selected_before = self.class_table.selected_class
        if (previous is None or not self.class_table.select_class(previous)) and report.classes:
            self.class_table.selectRow(0)
        if self.class_table.selected_class == selected_before:
            self._show_class(selected_before)  # no selection signal came, but the files may have changed

    def show_error(self, path: Path, message: str) -> None:
        """Explain why ``path`` cannot be used, with a way to open another folder."""
        self._show_message(
            f"Cannot use “{path.name or path}”",
            message,
            icon=QStyle.StandardPixmap.SP_MessageBoxCritical,
            action=OPEN_ACTION_TEXT,
        )

    def set_excluded(self, paths: frozenset[Path]) -> bool:
        """Make ``paths`` the images left out of training, and save them in the project folder.

        Returns:
            False (with the reason shown on the page) when the project folder is not writable.
        """
        if self._report is None or paths == self._excluded:
            return True
        try:
            save_exclusions(project_dir_for(self._report.root), paths)
        except OSError as error:
            self._show_notice(f"Cannot save the excluded images: {error}")
            return False
        self._show_notice("")
        self._excluded = frozenset(paths)
        self.health_view.set_user_excluded(self._excluded)
        self.thumbnail_grid.thumbnail_model.set_user_excluded(self._excluded)
        self._show_counts()
        self.exclusions_changed.emit(self._excluded)
        return True

    def refresh(self) -> None:
        """Read the exclusions again: another page (Review) may have changed them."""
        if self._report is None:
            return
        excluded = self._read_exclusions(self._report)
        if excluded != self._excluded:
            self._excluded = excluded
            self.health_view.set_user_excluded(excluded)
            self.thumbnail_grid.thumbnail_model.set_user_excluded(excluded)
            self._show_counts()
            self.exclusions_changed.emit(excluded)

    def reveal(self, path: Path) -> None:
        """Open the folder of ``path`` in the platform's file manager."""
        QDesktopServices.openUrl(folder_url(path))

    def save_state(self) -> QByteArray:
        """The splitter positions, for ``QSettings``."""
        state = QByteArray()
        stream = QDataStream(state, QIODevice.OpenModeFlag.WriteOnly)
        stream.writeInt32(_STATE_VERSION)
        stream << self.splitter.saveState() << self.right_splitter.saveState()
        return state

    def restore_state(self, state: QByteArray) -> None:
        """Restore splitter positions saved by ``save_state``; anything else is ignored."""
        stream = QDataStream(state, QIODevice.OpenModeFlag.ReadOnly)
        if stream.readInt32() != _STATE_VERSION:
            return
        outer, inner = QByteArray(), QByteArray()
        stream >> outer >> inner
        if stream.status() == QDataStream.Status.Ok:
            self.splitter.restoreState(outer)
            self.right_splitter.restoreState(inner)

    def _read_exclusions(self, report: HealthReport) -> frozenset[Path]:
        try:
            excluded = load_exclusions(project_dir_for(report.root))
        except DatasetError as error:
            self._show_notice(f"{error}. No image is excluded until the list is saved again.")
            return frozenset()
        self._show_notice("")
        return excluded

    def _show_counts(self) -> None:
        """Class sizes, balance and split counts, net of the user's exclusions."""
        assert self._report is not None
        usable, _dropped = apply_exclusions(self._report.usable_records(), self._excluded)
        counts = Counter(record.label for record in usable)
        self.class_table.set_counts(self._report.classes, counts)
        self.balance_label.setText(_balance_text(self._report.classes, counts))
        self.split_settings.set_records(usable, presplit=self._report.layout == "presplit")

    def _show_class(self, label: str | None) -> None:
        model = self.thumbnail_grid.thumbnail_model
        if label is None or self._report is None:
            model.clear()
            self.images_title.setText("Images")
            self.images_label.setText("Select a class to see its images.")
            return
        records = self._records_by_class.get(label, [])
        model.set_user_excluded(self._excluded)
        model.show_class(label, records, self._left_out)
        self.images_title.setText(f"Images of “{label}”")
        files = f"{len(records):,} {'file' if len(records) == 1 else 'files'}"
        self.images_label.setText(f"{files}. {IMAGES_HINT}" if records else "This class folder holds no files.")

    def _show_notice(self, text: str) -> None:
        self.notice_label.setText(text)
        self.notice_label.setVisible(bool(text))

    def _show_message(
        self,
        title: str,
        detail: str,
        *,
        icon: QStyle.StandardPixmap | None = None,
        action: str | None = None,
        busy: bool = False,
    ) -> None:
        self._report = None
        self._excluded = frozenset()
        self._show_notice("")
        self.class_table.clear()
        self._show_class(None)
        self.health_view.clear()
        self.balance_label.clear()
        self.split_settings.set_records((), presplit=False)
        self._stack.show_message(title, detail, icon=icon, action=action, busy=busy)

    def _on_class_table_class_selected(self, label: str | None) -> None:
        self._show_class(label)

    def _on_exclusion_requested(self, paths: tuple[Path, ...], exclude: bool) -> None:
        chosen = frozenset(paths)
        self.set_excluded(self._excluded | chosen if exclude else self._excluded - chosen)


def _heading(text: str) -> QLabel:
    heading = QLabel(text)
    font = QFont(heading.font())
    font.setPointSizeF(font.pointSizeF() * 1.15)
    font.setBold(True)
    heading.setFont(font)
    return heading


def _pane(*parts: QWidget | tuple[QWidget, int] | int) -> QWidget:
    """A column of widgets; ``(widget, stretch)`` gives a widget the room left, a number is a gap in pixels."""
    pane = QWidget()
    layout = QVBoxLayout(pane)
    layout.setContentsMargins(4, 0, 4, 0)
    layout.setSpacing(4)
    for part in parts:
        if isinstance(part, int):
            layout.addSpacing(part)
        elif isinstance(part, tuple):
            layout.addWidget(*part)
        else:
            layout.addWidget(part)
    return pane


def _balance_text(classes: tuple[str, ...], class_counts: Counter[str]) -> str:
    counts = [class_counts.get(name, 0) for name in classes]
    if not counts:
        return "No classes."
    if min(counts) == 0:
        empty = sum(1 for count in counts if count == 0)
        return f"{len(counts)} classes; {empty} without usable images."
    ratio = max(counts) / min(counts)
    if ratio <= 1.0:
        return f"{len(counts)} classes, all of the same size."
    return f"{len(counts)} classes; the largest is {ratio:.1f}× the smallest."

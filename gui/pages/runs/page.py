"""The "Runs" page: every run of the open project in a sortable table, their curves overlaid.

The project's run folders are read on a pool thread (``engine.training.run_summary``); selecting
runs overlays their validation accuracy and loss per epoch. One selected run can be
opened in the file manager, resumed through the ``RunController``, or have its
config loaded into the forms. A run another process writes shows as running and is
re-read every few seconds until it ends; resuming it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import ConfigError, RunLocked
from engine.core.events import EpochFinished, RunStarted
from engine.core.paths import project_dir_for
from engine.training.run_lock import check_unlocked
from engine.training.run_summary import RunSummary, list_runs, runs_folder
from engine.training.runfolder import RunFolder
from gui.pages.base import Page, PageContext
from gui.pages.runs.run_curves import RunCurves
from gui.pages.runs.run_table import RESUMABLE_STATES, RunTableModel
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.services.workers import Worker, run_in_thread_pool
from gui.widgets.message_panel import MessageStack
from gui.widgets.page_header import PageHeader

_REFRESH_DELAY_MS = 500  # progress events of a run arrive in bursts; one re-read per burst is enough
_POLL_INTERVAL_MS = 5000  # how often a run another process writes is re-read; it sends this window no events


class RunsPage(Page):
    """The runs of the open project: a table, the selected runs' curves, and what to do with one run.

    Args:
        state: the config being edited; its ``data.path`` names the project, and
            "Load config into forms" replaces it.
        controller: runs the "Resume" child; the page follows it to show which run is running.
        parent: the parent widget.
    """

    title = "Runs"
    icon = QStyle.StandardPixmap.SP_FileDialogDetailedView

    runs_listed = Signal(list)  # the RunSummary list now in the table, after each refresh
    config_loaded = Signal(object)  # Path of the run whose config was put into the forms

    @classmethod
    def create(cls, context: PageContext, parent: QWidget | None = None) -> RunsPage:  # type: ignore[override]
        return cls(context.state, context.controller, parent)

    def __init__(self, state: ConfigState, controller: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._controller = controller
        self._project_dir: Path | None = None
        self._worker: Worker | None = None
        self._select_newest = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(_REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(_POLL_INTERVAL_MS)
        self._poll_timer.timeout.connect(self._on_poll_timer_timeout)

        self.header = PageHeader(self.title, "Read the project's run folders again", self)
        self.header.refresh_clicked.connect(self.refresh)

        self.model = RunTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(RunTableModel.SORT_ROLE)
        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(RunTableModel.COLUMN_STARTED, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(RunTableModel.COLUMN_STATUS, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)

        self.detail_label = QLabel(self)
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_folder_button = QPushButton("Open run folder", self)
        self.open_folder_button.setToolTip("Show the run's files (config, metrics, checkpoints) in the file manager")
        self.open_folder_button.clicked.connect(self.open_run_folder)
        self.resume_button = QPushButton("Resume", self)
        self.resume_button.setToolTip("Continue a stopped, failed or interrupted run from its last checkpoint, "
                                      "with its own config (one stopped before its first checkpoint starts again)")
        self.resume_button.clicked.connect(self.resume_selected)
        self.load_config_button = QPushButton("Load config into forms", self)
        self.load_config_button.setToolTip("Put this run's settings into the training forms, to repeat or vary it")
        self.load_config_button.clicked.connect(self.load_selected_config)
        self.curves = RunCurves(self)

        self._stack = MessageStack(self._create_content(), self)
        self.message_panel = self._stack.message_panel
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.header)
        layout.addWidget(self._stack, 1)

        controller.run_started.connect(self._on_controller_run_started)
        controller.event_received.connect(self._on_controller_event_received)
        controller.run_ended.connect(self._on_controller_run_ended)
        self.model.set_palette(self.palette())
        self._update_actions()
        self.refresh()

    @property
    def project_dir(self) -> Path | None:
        """The project whose runs are listed; None when no data folder is open."""
        return self._project_dir

    def set_project(self, folder: Path) -> None:
        """List the runs of the project just opened."""
        self.refresh()

    def refresh(self) -> None:
        """Read the project's run folders again (on a pool thread); ``runs_listed`` follows."""
        self._refresh_timer.stop()
        data_path = self._state.config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        if project_dir != self._project_dir:
            self._project_dir = project_dir
            self._select_newest = True
            self.model.set_runs([])
            self._on_table_selection_changed()  # no curves of the previous project meanwhile
        if project_dir is None:
            self._poll_timer.stop()
            self.header.summary_label.clear()
            self._stack.show_message("No project open", "Open a data folder on the Project page; its runs appear here.")
            self.runs_listed.emit([])
            return
        if self._worker is not None:
            self._worker.abort()
        self._worker = run_in_thread_pool(_list_runs_job, project_dir)
        self._worker.signals.returned.connect(self._on_worker_returned)
        self._worker.signals.errored.connect(self._on_worker_errored)

    def selected_runs(self) -> list[RunSummary]:
        """The selected runs, in table order."""
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.model.run_at(self.proxy.mapToSource(self.proxy.index(row, 0)).row()) for row in rows]

    def select_runs(self, paths: list[Path]) -> None:
        """Select the runs in these folders (others are deselected)."""
        wanted = {str(path) for path in paths}
        selection = QItemSelection()
        for row in range(self.proxy.rowCount()):
            if self.proxy.index(row, 0).data(RunTableModel.PATH_ROLE) in wanted:
                selection.select(self.proxy.index(row, 0), self.proxy.index(row, self.proxy.columnCount() - 1))
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self.table.selectionModel().select(selection, flags)

    def run_folder_url(self) -> QUrl | None:
        """The ``file:`` URL of the one selected run's folder, or None."""
        run = self._single_selected()
        return QUrl.fromLocalFile(str(run.path)) if run is not None else None

    def open_run_folder(self) -> None:
        """Show the selected run's folder in the platform's file manager."""
        url = self.run_folder_url()
        if url is not None:
            QDesktopServices.openUrl(url)

    def resume_selected(self) -> None:
        """Continue the selected cancelled, failed or interrupted run from its last checkpoint.

        A run that another process has started writing since the listing is refused, with
        a line naming that process, and the runs are read again.
        """
        run = self._single_selected()
        if run is None or not self._can_resume(run):
            return
        try:
            check_unlocked(run.path)
        except RunLocked as error:
            self.detail_label.setText(f"{run.path}\nNot resumed: {str(error).removeprefix(f'{run.path}: ')}")
            self.refresh()
            return
        self._controller.start("train", ["--resume", str(run.path)], run.path)

    def load_selected_config(self) -> None:
        """Replace the config in the forms with the selected run's."""
        run = self._single_selected()
        if run is None:
            return
        try:
            config = RunFolder(run.path).load_config()
        except ConfigError as error:
            self.detail_label.setText(f"Cannot load this run's config: {error}")
            return
        self._state.replace(config)
        self.detail_label.setText(f"The settings of {run.name} are now in the forms.")
        self.config_loaded.emit(run.path)

    # Qt event handlers ---------------------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._worker is None:  # runs may have ended, or been resumed elsewhere, while the page was hidden
            self.refresh()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.model.set_palette(self.palette())
            self.curves.apply_palette(self.palette())
        super().changeEvent(event)

    # Set-up and helpers --------------------------------------------------------------------------

    def _create_content(self) -> QWidget:
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_folder_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.load_config_button)
        buttons.addStretch(1)
        top = QWidget(self)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table, 1)
        top_layout.addWidget(self.detail_label)
        top_layout.addLayout(buttons)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(top)
        splitter.addWidget(self.curves)
        splitter.setSizes([240, 400])  # the curves need the height more than a few rows do
        return splitter

    def _single_selected(self) -> RunSummary | None:
        runs = self.selected_runs()
        return runs[0] if len(runs) == 1 else None

    def _can_resume(self, run: RunSummary) -> bool:
        # A run without a checkpoint resumes too: it starts again from its own config.
        return not self._controller.is_running and self.model.state_of(run) in RESUMABLE_STATES

    def _update_actions(self) -> None:
        runs = self.selected_runs()
        run = runs[0] if len(runs) == 1 else None
        self.open_folder_button.setEnabled(run is not None)
        self.load_config_button.setEnabled(run is not None and run.readable)
        self.resume_button.setEnabled(run is not None and self._can_resume(run))
        if run is None:
            self.detail_label.setText(
                f"{len(runs)} runs selected: their validation curves are overlaid below." if runs
                else "Select a run to see its curves; select several (Ctrl or Shift) to compare them.")
            return
        state = self.model.state_of(run)
        why = self.model.detail_of(run)
        self.detail_label.setText(f"{run.path}\n{state.capitalize()}" + (f": {why}" if why else "."))

    def _refresh_soon(self) -> None:
        # Not restarted by later events: a run with quick epochs still gets a refresh every half second.
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _is_project_run(self, path: Path | None) -> bool:
        return path is not None and self._project_dir is not None and path.parent == runs_folder(self._project_dir)

    # Slots ---------------------------------------------------------------------------------------

    def _on_worker_returned(self, runs: list[RunSummary]) -> None:
        if self._worker is None or self.sender() is not self._worker.signals:
            return  # a listing that a newer refresh replaced
        self._worker = None
        if self._project_dir is None:
            return  # the project was closed while its runs were listed
        selected = [run.path for run in self.selected_runs()]
        self.model.set_runs(runs)
        newest = next((run for run in runs if run.readable), None)  # runs come newest first
        if self._select_newest and newest is not None:
            selected = [newest.path]  # a newly opened project shows its latest run's curves
        self._select_newest = False
        self.select_runs(selected)
        if self.model.runs_elsewhere():
            self._poll_timer.start()
        else:
            self._poll_timer.stop()
        self.header.summary_label.setText(_summary_text(runs, self._project_dir))
        self.header.summary_label.setToolTip(str(runs_folder(self._project_dir)))
        if runs:
            self._stack.show_content()
        else:
            self._stack.show_message("No runs yet", "Runs appear here once you train a model on this project.",
                                     icon=QStyle.StandardPixmap.SP_FileDialogInfoView)
        self._on_table_selection_changed()
        self.runs_listed.emit(runs)

    def _on_worker_errored(self, error: Exception) -> None:
        if self._worker is None or self.sender() is not self._worker.signals:
            return
        self._worker = None
        self._stack.show_message("Cannot read the runs", str(error), icon=QStyle.StandardPixmap.SP_MessageBoxCritical)
        self.runs_listed.emit([])

    def _on_poll_timer_timeout(self) -> None:
        if self.isVisible():
            self.refresh()

    def _on_table_selection_changed(self) -> None:
        self.model.set_curve_colors(self.curves.show_runs(self.selected_runs()))
        self._update_actions()

    def _on_controller_run_started(self, run_dir: Path) -> None:
        self.model.set_active_run(Path(run_dir))
        self._update_actions()
        if self._is_project_run(Path(run_dir)):
            self._refresh_soon()

    def _on_controller_event_received(self, event: dict) -> None:
        progressed = event.get("event") in (RunStarted.event, EpochFinished.event)
        if progressed and self._is_project_run(self._controller.run_dir):
            self._refresh_soon()

    def _on_controller_run_ended(self, _state: str, _message: str) -> None:
        self.model.set_active_run(None)
        self._update_actions()
        if self._is_project_run(self._controller.run_dir):
            self.refresh()


def _summary_text(runs: list[RunSummary], project_dir: Path) -> str:
    """E.g. "3 runs of clothes · 1 unreadable folder"."""
    readable = sum(1 for run in runs if run.readable)
    text = f"{readable} {'run' if readable == 1 else 'runs'} of {project_dir.parent.name}"
    unreadable = len(runs) - readable
    if unreadable:
        text += f" · {unreadable} unreadable {'folder' if unreadable == 1 else 'folders'}"
    return text


def _list_runs_job(project_dir: Path, *, progress: Callable[[int, int], None],
                   should_abort: Callable[[], bool]) -> list[RunSummary]:
    """``list_runs`` in the shape a ``Worker`` calls (the listing is too quick to report or abort)."""
    return list_runs(project_dir)

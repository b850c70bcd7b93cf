"""The "Evaluate" page: score a checkpoint or an ensemble on the project's images and explore the report.

``main.py evaluate`` runs as a child process (``CommandRunner``) and writes a report
folder into the project's ``evaluations`` folder; the page reads its ``report.json`` on
a pool thread and shows it (``EvaluationView``). Earlier reports reopen without running again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QStyle, QVBoxLayout, QWidget

from engine.core.config import RunConfig
from engine.core.paths import project_dir_for
from engine.evaluation.catalog import ModelEntry
from engine.evaluation.report_folders import list_reports, read_report, report_folder_for
from gui.pages.base import Page
from gui.pages.evaluate.evaluation_controls import SPLITS, EvaluationControls
from gui.pages.evaluate.evaluation_view import EvaluationView
from gui.services.command_runner import CommandRunner
from gui.services.config_state import ConfigState
from gui.services.workers import Worker, run_in_thread_pool
from gui.widgets.message_panel import MessageStack
from gui.widgets.page_header import PageHeader

_PanelAction = tuple[str, Callable[[], None]]  # a button's text and what it does


class EvaluatePage(Page):
    """Choose a model, evaluate it, and see where it fails.

    Signals:
        evaluation_finished: the report folder of an evaluation that just finished and is shown.
        report_shown: the report folder now on screen (a new evaluation or an earlier one).

    Args:
        state: the config being edited; its ``data.path`` names the dataset and the project.
        parent: the parent widget.
    """

    title = "Evaluate"
    icon = QStyle.StandardPixmap.SP_DialogApplyButton

    evaluation_finished = Signal(Path)
    report_shown = Signal(Path)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._data_path: Path | None = None
        self._project_dir: Path | None = None
        self._report_folder: Path | None = None
        self._running_folder: Path | None = None
        self._cancelling = False
        self._reports_worker: Worker | None = None
        self._report_worker: Worker | None = None
        self._loading_folder: Path | None = None  # the folder ``_report_worker`` reads
        self._finished_folder: Path | None = None  # a new report: ``evaluation_finished`` once it is shown
        self._panel_action: Callable[[], None] | None = None
        self._showing_idle = False  # the message panel says what to do next (nothing failed)
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)

        self.header = PageHeader(self.title, parent=self)
        self.controls = EvaluationControls(self)
        self.controls.evaluate_clicked.connect(self.evaluate)
        self.controls.report_chosen.connect(self._on_controls_report_chosen)
        self.controls.open_report_clicked.connect(self.open_report_in_browser)
        self.chooser = self.controls.chooser
        self.chooser.model_changed.connect(self._on_chooser_model_changed)
        self.chooser.models_listed.connect(self._on_chooser_models_listed)
        self.chooser.browse_failed.connect(self._on_chooser_browse_failed)
        self.view = EvaluationView(self)
        self._stack = MessageStack(self.view, self)
        self.message_panel = self._stack.message_panel
        self.message_panel.action_clicked.connect(self._on_message_panel_action_clicked)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.header)
        layout.addWidget(self.controls)
        layout.addWidget(self._stack, 1)
        state.changed.connect(self._on_state_changed)
        self._show_idle_message()
        self.refresh()

    @property
    def project_dir(self) -> Path | None:
        """The open project; None when no data folder is open."""
        return self._project_dir

    @property
    def report_folder(self) -> Path | None:
        """The report folder on screen, if any."""
        return self._report_folder

    @property
    def is_running(self) -> bool:
        """Whether an evaluation is running."""
        return self.runner.is_running

    def refresh(self) -> None:
        """List the project's models and reports again (after a run ends or a manifest is saved)."""
        data_path = self._state.config.data.path
        self._data_path = Path(data_path) if data_path else None
        project_dir = project_dir_for(data_path) if data_path else None
        self.controls.set_data_path(self._data_path)
        if project_dir != self._project_dir:
            self._project_dir = project_dir
            self._report_folder = None
            if self._report_worker is not None:
                self._report_worker.abort()
                self._report_worker = None
            self.chooser.set_project(project_dir)
            if not self.is_running:
                self._show_idle_message()
        else:
            self.chooser.refresh()
        self._list_reports()
        self._update_controls()

    def reports(self) -> list[Path]:
        """The project's report folders, newest first."""
        return self.controls.reports()

    def evaluate(self) -> None:
        """Evaluate the chosen model with the chosen split, TTA and temperature option."""
        entry = self.chooser.current()
        if entry is None or self.is_running or self._project_dir is None or self._data_path is None:
            return
        split, tta = self.controls.split, self.controls.tta
        folder = report_folder_for(self._project_dir, entry, split, datetime.now())
        arguments = [str(entry.path), str(self._data_path), "--split", split, "--out", str(folder), "--tta", tta]
        if self.controls.fit_temperature_check.isChecked():
            arguments.append("--fit-temperature")
        self._running_folder = folder
        self._cancelling = False
        self.runner.start("evaluate", arguments)
        self._show_message(f"Evaluating {entry.label}…", f"On the {SPLITS[split]}; the report goes to {folder}.",
                           busy=True, action=("Cancel", self.cancel))
        self._update_controls()

    def evaluate_model(self, path: Path) -> None:
        """Choose the model at ``path`` (a checkpoint or an ensemble manifest) and evaluate it."""
        if not self.is_running and self.chooser.choose_file(path):
            self.evaluate()

    def cancel(self) -> None:
        """Stop the running evaluation; what was on screen before comes back."""
        if self.is_running:
            self._cancelling = True
            self.runner.stop()

    def open_report(self, folder: Path) -> None:
        """Show a report folder, e.g. an earlier one (read on a pool thread; ``report_shown`` follows)."""
        if self._report_worker is not None:
            self._report_worker.abort()
        # Bound methods, not lambdas: Qt drops the connections when the page is deleted first.
        self._loading_folder = Path(folder)
        if self._loading_folder != self._finished_folder:
            self._finished_folder = None  # another report was asked for before the new one showed
        self._report_worker = run_in_thread_pool(_read_report_job, self._loading_folder)
        self._report_worker.signals.returned.connect(self._on_report_worker_returned)
        self._report_worker.signals.errored.connect(self._on_report_worker_errored)

    def report_url(self) -> QUrl | None:
        """The ``file:`` URL of the shown report's page, or None."""
        return QUrl.fromLocalFile(str(self._report_folder / "index.html")) if self._report_folder else None

    def open_report_in_browser(self) -> None:
        """Open the shown report's ``index.html`` in the web browser."""
        url = self.report_url()
        if url is not None:
            QDesktopServices.openUrl(url)

    # Helpers -------------------------------------------------------------------------------------

    def _show_message(self, title: str, detail: str = "", *, icon: QStyle.StandardPixmap | None = None,
                      busy: bool = False, action: _PanelAction | None = None) -> None:
        self._showing_idle = False
        self._panel_action = action[1] if action else None
        self._stack.show_message(title, detail, icon=icon, action=action[0] if action else None, busy=busy)

    def _show_idle_message(self) -> None:
        """Say what to do next: open a project, train a model, or evaluate one."""
        info = QStyle.StandardPixmap.SP_FileDialogInfoView
        if self._project_dir is None:
            self._show_message("No project open", "Open a data folder on the Project page, train a model, then "
                               "evaluate it here.", icon=info)
        elif not self.chooser.entries():
            self._show_message("Train a model first", "There are no checkpoints in this project yet.", icon=info)
        else:
            self._show_message(
                "Evaluate a model", "Choose a checkpoint or an ensemble and press Evaluate: you get its scores, "
                "the confusion matrix with the images of every cell, calibration and the most confidently wrong "
                "images. Earlier reports of this project can be reopened from the Report list.",
                icon=info, action=("Evaluate", self.evaluate))
        self._showing_idle = True

    def _update_controls(self) -> None:
        self.controls.set_enabled_for(project_open=self._project_dir is not None, running=self.is_running,
                                      report_shown=self._report_folder is not None)
        self.controls.set_current_report(self._report_folder)

    def _list_reports(self) -> None:
        if self._reports_worker is not None:
            self._reports_worker.abort()
            self._reports_worker = None
        if self._project_dir is None:
            self.controls.set_reports([], None)
            return
        self._reports_worker = run_in_thread_pool(_list_reports_job, self._project_dir)
        self._reports_worker.signals.returned.connect(self._on_reports_worker_returned)

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, config: RunConfig) -> None:
        data_path = config.data.path
        if (project_dir_for(data_path) if data_path else None) != self._project_dir:
            self.refresh()

    def _on_chooser_models_listed(self, _entries: list[ModelEntry]) -> None:
        self._update_controls()
        if self._showing_idle:
            self._show_idle_message()  # "train a model first" may no longer hold, or hold now

    def _on_chooser_model_changed(self, _entry: ModelEntry | None) -> None:
        self._update_controls()

    def _on_chooser_browse_failed(self, message: str) -> None:
        self._show_message("Cannot use this model", message, icon=QStyle.StandardPixmap.SP_MessageBoxWarning)

    def _is_sender(self, worker: Worker | None) -> bool:
        """Whether the signal being handled comes from ``worker`` (not from one a newer request replaced)."""
        return worker is not None and self.sender() is worker.signals

    def _on_reports_worker_returned(self, folders: list[Path]) -> None:
        if not self._is_sender(self._reports_worker):
            return
        self._reports_worker = None
        self.controls.set_reports(folders, self._report_folder)
        if folders and self._showing_idle and self._report_worker is None:
            self.open_report(folders[0])  # the project's latest findings, without running anything

    def _on_controls_report_chosen(self, folder: Path) -> None:
        if folder != self._report_folder or not self._stack.showing_content:
            self.open_report(folder)

    def _on_message_panel_action_clicked(self) -> None:
        if self._panel_action is not None:
            self._panel_action()

    def _on_runner_line_printed(self, line: str) -> None:
        if self.is_running:
            self.message_panel.detail_label.setText(line)

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        folder, self._running_folder = self._running_folder, None
        cancelled, self._cancelling = self._cancelling, False
        self._update_controls()
        if succeeded and folder is not None:
            self._list_reports()
            self._finished_folder = folder
            self.open_report(folder)
        elif cancelled and self._report_folder is not None:
            self._stack.show_content()  # back to the report that was on screen
        elif cancelled:
            self._show_idle_message()
        else:
            self._report_folder = None  # the report list then offers the earlier ones to go back to
            self._update_controls()
            self._show_message("The evaluation failed", message, icon=QStyle.StandardPixmap.SP_MessageBoxCritical)

    def _on_report_worker_returned(self, report: dict[str, Any]) -> None:
        if not self._is_sender(self._report_worker):
            return
        self._report_worker = None
        folder = self._loading_folder
        self._report_folder = folder
        self.view.show_report(report)
        self.controls.follow_report(report.get("source", {}))
        self._showing_idle = False
        self._stack.show_content()
        self._update_controls()
        self.report_shown.emit(folder)
        if folder == self._finished_folder:
            self._finished_folder = None
            self.evaluation_finished.emit(folder)

    def _on_report_worker_errored(self, error: Exception) -> None:
        if not self._is_sender(self._report_worker) or self._loading_folder is None:
            return
        self._report_worker = None
        self._finished_folder = None
        self._show_message(f"Cannot open the report {self._loading_folder.name}", str(error),
                           icon=QStyle.StandardPixmap.SP_MessageBoxCritical)


def _list_reports_job(project_dir: Path, *, progress: Callable[[int, int], None],
                      should_abort: Callable[[], bool]) -> list[Path]:
    return list_reports(project_dir)


def _read_report_job(folder: Path, *, progress: Callable[[int, int], None],
                     should_abort: Callable[[], bool]) -> dict[str, Any]:
    return read_report(folder)

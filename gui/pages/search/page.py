"""The "Search" page: define a hyperparameter search, run it as a child process, and watch its trials.

The search is ``main.py search`` (coarse-to-fine random search on Optuna) started through
the page's own ``RunController``, so it may run beside a training run. Its events fill a
live scatter and a table of trials; when it ends, "Train with best" puts the best config
into the forms. Earlier studies of the project can be shown again from their report.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig, load_config, save_config
from engine.core.errors import ConfigError
from engine.search.folders import check_study_name, searches_dir
from engine.search.progress import TRIALS_FILE, SearchProgress, describe_trial, load_study
from engine.search.space import resolve_space
from engine.training.runfolder import RunFolder
from gui.pages.base import Page
from gui.pages.search.search_settings import StageSettings, StudySettings
from gui.pages.search.search_space_editor import SearchSpaceEditor
from gui.pages.search.trial_plot import TrialPlot
from gui.pages.search.trial_table import TrialTable
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import ok_color, severity_color

CONFIG_FILE = "config.yaml"  # the config a search was started with, in its folder
PENDING_CONFIG_FILE = ".config-pending.yaml"  # until the study accepts it (a resumed study may refuse it)
# A stop lets the running trials finish, which may take many minutes; "Stop now" interrupts them sooner.
STOP_GRACE_MS = 60 * 60 * 1000


class SearchPage(Page):
    """Defines, runs and shows hyperparameter searches of the edited config.

    Signals:
        best_config_applied: the best config of the search on screen is now in the forms.

    Args:
        state: the config being edited; a search starts from it as it is when Start is pressed.
        parent: the parent widget.
    """

    title = "Search"
    icon = QStyle.StandardPixmap.SP_FileDialogContentsView

    best_config_applied = Signal()

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = RunController(self, stop_grace_ms=STOP_GRACE_MS)
        self.progress = SearchProgress()
        self._following = False
        self._stop_requested = False  # the search stops once its running trials end
        self._interrupting = False  # ... and they were asked to stop at once
        self._listed_data = state.config.data.path  # the dataset whose studies the combo lists
        self._cli_error = ""  # the CLI's one-line refusal (a study created with other settings...)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self._show_progress)

        style = self.style()
        self.start_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Start search", self)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "Stop", self)
        self.stop_button.clicked.connect(self.stop)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setFixedWidth(220)
        self.progress_bar.setFormat("%v/%m trials")
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.outcome_label = QLabel(self)
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outcome_label.hide()

        self.space_editor = SearchSpaceEditor(state, self)
        self.stage_settings = StageSettings(state, self)
        self.study_settings = StudySettings(self)
        self.study_settings.study_chosen.connect(self.show_study)

        self.trial_plot = TrialPlot(self)
        self.trial_plot.trial_clicked.connect(self._on_trial_plot_trial_clicked)
        self.trial_table = TrialTable(self)
        self.trial_table.itemSelectionChanged.connect(self._on_trial_table_selection_changed)
        self.train_best_button = QPushButton("Train with best", self)
        self.train_best_button.setToolTip("Put the best trial's config into the forms (your dataset is kept)")
        self.train_best_button.clicked.connect(self.apply_best_config)
        self.open_report_button = QPushButton("Open report folder", self)
        self.open_report_button.setToolTip("The report: trials.csv, best.yaml, report.txt and plots")
        self.open_report_button.clicked.connect(self._on_open_report_button_clicked)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._create_setup())
        splitter.addWidget(self._create_results())
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([400, 530])
        top = QHBoxLayout()
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(self.status_label, 1)
        top.addWidget(self.progress_bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addLayout(top)
        layout.addWidget(self.outcome_label)
        layout.addWidget(splitter, 1)

        self.controller.event_received.connect(self._on_controller_event_received)
        self.controller.output_received.connect(self._on_controller_output_received)
        self.controller.run_ended.connect(self._on_controller_run_ended)
        state.changed.connect(self._on_state_changed)
        state.validity_changed.connect(self._on_state_validity_changed)
        self.study_settings.name_edit.textChanged.connect(self._update_actions)
        self.refresh()

    @property
    def study_folder(self) -> Path | None:
        """The folder of the study on screen (running, ended or reopened)."""
        return self.progress.folder

    def refresh(self) -> None:
        """List the project's earlier studies again, and bring the buttons up to date."""
        data = self.state.config.data.path
        self.study_settings.list_studies(searches_dir(data) if data else None)
        self._show_progress()

    def start_blocker(self) -> str:
        """Why Start is disabled, or "" when a search can start."""
        if self.controller.is_running:
            return "A search is running: stop it first."
        config = self.state.config
        if not config.data.path:
            return "Open a dataset first: the search trains on it (data.path is empty)."
        if not Path(config.data.path).exists():
            return f"The dataset {config.data.path} does not exist any more: open another one."
        if not self.state.is_valid:
            return "Fix the settings marked in red first: " + "; ".join(self.state.errors.values())
        if self.space_editor.error:
            return "Fix the search space first: " + self.space_editor.error
        from engine.search.run import check_search_settings  # torch and timm: loaded on first use

        try:
            check_study_name(self.study_settings.study_name())
            check_search_settings(config, resolve_space(config))
        except ConfigError as error:
            return str(error)
        return ""

    def start(self) -> Path | None:
        """Save the config into a study folder and start ``main.py search`` there; returns the folder."""
        if self.start_blocker():
            return None
        config, name = self.state.config, self.study_settings.study_name()
        folder = searches_dir(config.data.path) / name
        folder.mkdir(parents=True, exist_ok=True)
        config_file = save_config(config, folder / PENDING_CONFIG_FILE)
        arguments = [config.data.path, "--config", str(config_file), "--study", name,
                     "--jobs", str(self.study_settings.jobs())]
        storage = self.study_settings.storage()
        if storage is not None:
            arguments += ["--storage", storage]
        self.progress = SearchProgress(folder=folder, study=name)
        self._following, self._stop_requested, self._interrupting, self._cli_error = True, False, False, ""
        self.trial_plot.clear()
        self.outcome_label.hide()
        self.controller.start("search", arguments, folder)
        self._show_progress()
        self.status_label.setText(f"Starting study {name}: loading the model and reading the images…")
        return folder

    def stop(self) -> None:
        """First press: stop once the running trials finish. Second press: interrupt them too.

        Interrupted trials are not counted: they run again when the study is resumed.
        """
        if not self._following:
            return
        if not self._stop_requested:
            self._stop_requested = True
            self.controller.stop()
            self.status_label.setText("Stopping once the running trials finish. Press Stop now to interrupt them"
                                      " (they run again when you continue the study).")
        else:
            for record in self.progress.records:
                if record.state == "running" and record.run_dir and Path(record.run_dir).is_dir():
                    RunFolder(record.run_dir).request_stop()
            self._interrupting = True
            self.status_label.setText("Interrupting the running trials…")
        self._update_actions()

    def apply_best_config(self) -> bool:
        """Replace the forms' config with the search's best one, keeping the dataset and the search settings."""
        path = self.progress.best_config_path
        if path is None:
            return False
        try:
            best = load_config(path)
        except ConfigError as error:
            self._show_outcome(f"Cannot read the best config: {error}", "error")
            return False
        current = self.state.config
        self.state.replace(best.with_changes(**{"data.path": current.data.path,
                                                "search": current.to_dict()["search"]}))
        trial = self.progress.best
        self._show_outcome(f"The config of trial {trial.number if trial else '?'} is in the forms: review it on"
                           " the Model page, then train.", "ok")
        self.best_config_applied.emit()
        return True

    def show_study(self, folder: Path) -> bool:
        """Show an earlier study's trials (from its report, or its events); False if it cannot be read."""
        if self._following:
            return False
        try:
            progress = load_study(Path(folder))
        except (OSError, ValueError, KeyError, TypeError) as error:
            self._show_outcome(f"Cannot read the study in {folder}: {error}", "error")
            return False
        self.progress = progress
        self.trial_plot.clear()
        self._show_progress()
        self._show_outcome(f"Study {progress.study}. {progress.outcome_text()}", "info")
        return True

    def report_folder_url(self) -> QUrl | None:
        """The ``file:`` URL of the study folder on screen, or None."""
        folder = self.study_folder
        return QUrl.fromLocalFile(str(folder)) if folder is not None and folder.is_dir() else None

    # Set-up --------------------------------------------------------------------------------------

    def _create_setup(self) -> QWidget:
        space = QGroupBox("Search space", self)
        QVBoxLayout(space).addWidget(self.space_editor)
        column = QWidget(self)
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 4, 0)
        layout.addWidget(space, 1)
        layout.addWidget(self.stage_settings)
        layout.addWidget(self.study_settings)
        return column

    def _create_results(self) -> QWidget:
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_best_button)
        buttons.addWidget(self.open_report_button)
        buttons.addStretch(1)
        table_pane = QWidget(self)
        table_layout = QVBoxLayout(table_pane)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.trial_table, 1)
        table_layout.addLayout(buttons)
        results = QSplitter(Qt.Orientation.Vertical, self)
        results.setChildrenCollapsible(False)
        results.addWidget(self.trial_plot)
        results.addWidget(table_pane)
        results.setSizes([340, 220])
        return results

    # Slots ---------------------------------------------------------------------------------------

    def _on_controller_event_received(self, event: dict) -> None:
        if not self._following:
            return
        self.progress.add_event(event)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start(0)  # one redraw per burst of events

    def _on_controller_output_received(self, line: str) -> None:
        if line.startswith("error: "):
            self._cli_error = line.removeprefix("error: ")

    def _on_controller_run_ended(self, _outcome: str, message: str) -> None:
        self._following = False
        folder = self.progress.folder
        if folder is not None:
            self._keep_config(folder, accepted=bool(self.progress.planned))
        if self.progress.finished is not None and folder is not None and (folder / TRIALS_FILE).is_file():
            live = self.progress
            try:
                self.progress = load_study(folder)  # the study's own record: every worker's trials
            except (OSError, ValueError, KeyError, TypeError):
                self.progress = live  # the events said the same for this machine's trials
            self.progress.finished = live.finished
        if self.progress.finished is not None:
            tone = "ok" if self.progress.finished.get("state") == "finished" else "info"
            self._show_outcome(self.progress.outcome_text(), tone, tooltip=f"Saved in {folder}")
        else:
            self._show_outcome(f"The search failed: {self._cli_error or message}", "error")
        self.refresh()

    def _on_state_changed(self, config: RunConfig) -> None:
        if config.data.path != self._listed_data and not self._following:
            self._listed_data = config.data.path
            self.progress = SearchProgress()  # another project: its studies, not the last one's trials
            self.outcome_label.hide()
            self.refresh()
        elif not self._following and not self.progress.trials:
            self._show_progress()  # the space and budget Start would use
        else:
            self._update_actions()

    def _on_state_validity_changed(self, _valid: bool) -> None:
        self._update_actions()

    def _on_open_report_button_clicked(self) -> None:
        url = self.report_folder_url()
        if url is not None:
            QDesktopServices.openUrl(url)

    def _on_trial_plot_trial_clicked(self, number: int) -> None:
        self.trial_table.select_trial(number)

    def _on_trial_table_selection_changed(self) -> None:
        number = self.trial_table.selected_trial()
        record = self.progress.trials.get(number) if number is not None else None
        if record is not None:
            self.trial_plot.show_detail(describe_trial(record, self.progress.metric))

    # Helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _keep_config(folder: Path, *, accepted: bool) -> None:
        """Keep the config a search started with as its folder's ``config.yaml`` once the study took it."""
        pending = folder / PENDING_CONFIG_FILE
        if not pending.is_file():
            return
        if accepted:
            pending.replace(folder / CONFIG_FILE)
        else:
            pending.unlink()

    def _show_progress(self) -> None:
        progress = self.progress
        self.trial_plot.set_parameters(progress.parameters or resolve_space(self.state.config))
        self.trial_plot.set_ranges(progress.spaces)
        best = progress.best
        records = progress.records
        self.trial_plot.set_trials(records, metric=progress.metric, best=best.number if best else None)
        self.trial_table.set_trials(records, metric=progress.metric,
                                    parameters=[parameter.path for parameter in progress.parameters],
                                    best=best.number if best else None)
        # Before any search, the bar counts the trials Start would run.
        search = self.state.config.search
        total = progress.total or search.coarse_trials + search.fine_trials
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(progress.done(), max(total, 1)))
        self._update_actions()

    def _show_outcome(self, text: str, tone: str, *, tooltip: str = "") -> None:
        palette = self.palette()
        color = ok_color(palette) if tone == "ok" else (
            palette.color(QPalette.ColorRole.Highlight) if tone == "info" else severity_color(tone, palette))
        self.outcome_label.setStyleSheet(
            f"QLabel {{ color: {color.name()}; background: palette(base); border: 1px solid {color.name()};"
            f" border-left: 5px solid {color.name()}; border-radius: 4px; padding: 6px 8px; }}")
        self.outcome_label.setText(text)
        self.outcome_label.setToolTip(tooltip)
        self.outcome_label.show()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._update_actions()

    def _update_actions(self) -> None:
        if not self.isVisible():
            return  # brought up to date when shown: checking the settings loads torch, which need not delay the window
        blocker = self.start_blocker()
        self.start_button.setEnabled(not blocker)
        self.start_button.setToolTip(blocker or "Run the search in the background; trials appear as they finish")
        stopping = self._following and self._stop_requested
        self.stop_button.setEnabled(self._following and not self._interrupting)
        self.stop_button.setText("Stop now" if stopping else "Stop")
        self.stop_button.setToolTip("Interrupt the running trials (they run again when you continue the study)"
                                    if stopping else "Stop once the running trials finish")
        self.train_best_button.setEnabled(not self._following and self.progress.best_config_path is not None)
        self.open_report_button.setEnabled(self.report_folder_url() is not None)
        self.study_settings.set_busy(self._following)
        if self._following:
            if not self._stop_requested and self.progress.planned:
                self.status_label.setText(self.progress.status_text())
        else:
            self.status_label.setText(blocker or _ready_text(self.state.config))


def _ready_text(config: RunConfig) -> str:
    """What Start will search, in one line."""
    search = config.search
    fine = (f", then {_count(search.fine_trials, 'fine trial')} × {_count(search.fine_epochs, 'epoch')}"
            if search.fine_trials else "")
    return (f"Ready: {_count(len(resolve_space(config)), 'parameter')},"
            f" {_count(search.coarse_trials, 'coarse trial')} × {_count(search.coarse_epochs, 'epoch')}{fine},"
            f" on {Path(config.data.path).name}.")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"

"""The main window: a sidebar of pages built from one table, the menus and shortcuts, and the status bar.

It owns the shared objects the pages work on: the ``ConfigState`` every form edits, the
``RunController`` that runs training in a child process, and the ``DatasetScanner``. It
opens projects (menu, Ctrl+O, the Project page, drag and drop), tells every page about
them (``Page.set_project``, ``set_report``, ``refresh``), carries what one page asks of
another, keeps its geometry in ``QSettings``, and asks before closing while a run is going.
Pages are built when first needed (``gui.pages.stack``): the window paints before most exist.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSizePolicy,
    QStyle,
    QWidget,
)

from engine.core.errors import ConfigError
from engine.data.health import HealthReport
from gui.pages import (
    PAGES,
    DataPage,
    EnsemblePage,
    EvaluatePage,
    ModelPage,
    Page,
    PageContext,
    ProjectPage,
    ReviewPage,
    RunsPage,
    SearchPage,
    TrainPage,
)
from gui.pages.project.page import dropped_project
from gui.pages.stack import PageStack, PageT
from gui.services import settings as ui_settings
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.services.scanner import DatasetScanner, ScanResult

APPLICATION_TITLE = "Transfer Studio"
DEFAULT_SIZE = QSize(1100, 700)


class MainWindow(QMainWindow):
    """Transfer Studio's window: a page per step, from the project to the exported model.

    Args:
        settings: where UI state is saved and restored; tests pass a private file.
        parent: the parent widget, normally None.
        page_classes: the sidebar's pages, top to bottom; it must hold those of ``gui.pages.PAGES``,
            between which the window carries requests.
    """

    scan_started = Signal(object)  # Path of the folder whose scan (or rescan) just started
    scan_finished = Signal(object)  # HealthReport of the folder on screen
    scan_failed = Signal(str)  # the message shown in the window

    def __init__(self, settings: QSettings, parent: QWidget | None = None,
                 page_classes: tuple[type[Page], ...] = PAGES) -> None:
        super().__init__(parent)
        self._settings = settings
        self._dataset_path: Path | None = None
        self._report: HealthReport | None = None
        self._close_when_stopped = False
        self.setWindowTitle(APPLICATION_TITLE)
        self.setAcceptDrops(True)

        self.state = ConfigState(parent=self)
        self.controller = RunController(self)
        self.controller.run_ended.connect(self._on_controller_run_ended)
        self.scanner = DatasetScanner(self)
        self.scanner.scan_started.connect(self._on_scanner_scan_started)
        self.scanner.scan_progressed.connect(self._on_scanner_scan_progressed)
        self.scanner.scan_finished.connect(self._on_scanner_scan_finished)
        self.scanner.scan_failed.connect(self._on_scanner_scan_failed)

        self.page_stack = PageStack(page_classes, PageContext(self.state, self.controller, settings), self)
        self.page_stack.page_created.connect(self._on_page_stack_page_created)
        self.sidebar = self.page_stack.sidebar
        self.pages = self.page_stack.stack
        self.sidebar.setCurrentRow(0)
        self.page(DataPage)  # it shows the scan, and its splitter is part of the saved layout

        central = QWidget(self)
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.pages, 1)
        self.setCentralWidget(central)

        self._create_actions()
        self._create_status_bar()
        self._restore_ui_state()

    @property
    def dataset_path(self) -> Path | None:
        """The folder opened last (being scanned, shown, or failed)."""
        return self._dataset_path

    @property
    def report(self) -> HealthReport | None:
        """The health report on screen, if any."""
        return self._report

    def page(self, page_class: type[PageT]) -> PageT:
        """The sidebar's page of class ``page_class``, built now if it was not yet."""
        return self.page_stack.page(page_class)

    def show_page(self, page: Page) -> None:
        """Bring one of the sidebar's pages to the front."""
        self.page_stack.show(page)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        # The first page paints first; the others are built right after, so the window appears sooner.
        QTimer.singleShot(0, self.page_stack, self.page_stack.build_remaining)

    def open_dataset(self, path: str | Path) -> None:
        """Open a data folder: scan it in the background and show the result when it comes."""
        self._load_dataset(Path(path).expanduser().resolve())
        self.show_page(self.page(DataPage))

    def reload_dataset(self) -> None:
        """Open the open data folder again, staying on the page shown: its project folder moved."""
        if self._dataset_path is not None:
            self._load_dataset(self._dataset_path)

    def show_project_message(self, text: str) -> None:
        """Bring the Project page to the front with one line on it (e.g. why the last project did not open)."""
        page = self.page(ProjectPage)
        page.show_message(text)
        self.show_page(page)

    def _load_dataset(self, folder: Path) -> None:
        self._dataset_path = folder
        self._report = None
        self.setWindowTitle(f"{APPLICATION_TITLE} — {folder.name or folder}")
        self._settings.setValue(ui_settings.KEY_LAST_PROJECT, str(folder))
        # Pages work out the project folder from data.path whenever it is set, even to the same path (reload_dataset).
        self.state.set_value("data.path", str(folder))
        for page in self.page_stack.built():  # a page built later is told when it is built
            page.set_project(folder)
        self.rescan_action.setEnabled(True)
        self.scanner.scan(folder)

    def rescan(self) -> None:
        """Scan the open folder again (files changed on disk)."""
        if self._dataset_path is not None:
            self.scanner.scan(self._dataset_path)

    def choose_dataset(self) -> None:
        """Ask for a data folder with the platform's folder dialog and open it."""
        start = ui_settings.read_text(self._settings, ui_settings.KEY_LAST_PROJECT) or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open data folder", start)
        if folder:
            self.open_dataset(folder)

    # Qt event handlers ---------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_project(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        folder = dropped_project(event)
        if folder is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_dataset(folder)

    def closeEvent(self, event: QCloseEvent) -> None:
        search = self.page_stack.built_page(SearchPage)
        train = self.page_stack.built_page(TrainPage)
        if self.controller.is_running or (search is not None and search.controller.is_running) \
                or (train is not None and train.auto_panel.is_running):
            # Never close under a running child: ask, and close once it has stopped cleanly.
            event.ignore()
            if not self._close_when_stopped:  # else: stopping already; the last one to end closes the window
                self._ask_to_stop_before_closing()
            return
        self.scanner.abort()
        model = self.page_stack.built_page(ModelPage)
        if model is not None:
            model.lr_finder.controller.stop()
        self._save_ui_state()
        super().closeEvent(event)

    def _ask_to_stop_before_closing(self) -> None:
        train = self.page_stack.built_page(TrainPage)
        auto = train is not None and train.auto_panel.is_running
        what = "Training is" if self.controller.is_running else "Auto is" if auto else "A search is"
        box = QMessageBox(QMessageBox.Icon.Question, "A run is in progress",
                          f"{what} still running. Stop it (a checkpoint is saved) and close?",
                          QMessageBox.StandardButton.NoButton, self)
        stop = box.addButton("Stop and close", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep running", QMessageBox.ButtonRole.RejectRole)
        box.setObjectName("close_during_run")

        def on_finished(_result: int) -> None:
            if box.clickedButton() is stop:
                self._close_when_stopped = True
                self.controller.stop()
                if train is not None:
                    train.auto_panel.stop()  # the running step checkpoints; the best model so far is named
                search = self.page_stack.built_page(SearchPage)
                if search is not None:
                    # A search's first stop waits for its trials; the second interrupts them (they resume later).
                    search.stop()
                    search.stop()

        box.finished.connect(on_finished)
        box.open()  # window-modal without a nested event loop

    def load_config(self, path: str | Path) -> bool:
        """Load a YAML config into every form; a bad file is reported in the status bar."""
        try:
            self.state.load(path)
        except ConfigError as error:
            self._set_status(f"Config not loaded: {error}")
            return False
        if self.state.config.data.path and Path(self.state.config.data.path) != self._dataset_path:
            self.open_dataset(self.state.config.data.path)
        self._set_status(f"Config loaded from {path}")
        return True

    def save_config(self, path: str | Path) -> Path:
        """Save the forms' config as commented YAML (``python main.py train --config FILE``)."""
        saved = self.state.save(path)
        self._set_status(f"Config saved to {saved}")
        return saved

    def _choose_config_to_load(self) -> None:
        dialog = QFileDialog(self, "Load config", str(self._dataset_path or Path.home()), "YAML (*.yaml *.yml)")
        dialog.fileSelected.connect(self.load_config)
        dialog.open()

    def _choose_config_to_save(self) -> None:
        dialog = QFileDialog(self, "Save config", str(self._dataset_path or Path.home()), "YAML (*.yaml *.yml)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("yaml")
        dialog.fileSelected.connect(self.save_config)
        dialog.open()

    def _on_controller_run_ended(self, state: str, message: str) -> None:
        self.stop_action.setEnabled(False)
        self._set_status(f"Run {state}" + (f": {message}" if message else ""))
        self._refresh_pages()
        if self._close_when_stopped:
            self.close()

    def _on_search_run_ended(self, _state: str, _message: str) -> None:
        self._refresh_pages()
        if self._close_when_stopped:
            self.close()

    def _on_train_page_auto_finished(self, _folder: Path | None) -> None:
        self._refresh_pages()  # its runs and ensemble are new models for every page
        if self._close_when_stopped:
            self.close()

    def _on_ensemble_page_evaluate_requested(self, manifest: Path) -> None:
        evaluate = self.page(EvaluatePage)
        self.show_page(evaluate)
        evaluate.evaluate_model(manifest)

    def _refresh_pages(self) -> None:
        for page in self.page_stack.built():  # a page built later reads the disk when it is built
            page.refresh()

    def _refresh_built(self, page_class: type[Page]) -> None:
        """Let the page of ``page_class`` read the disk again, if it was built."""
        page = self.page_stack.built_page(page_class)
        if page is not None:
            page.refresh()

    def _on_page_stack_page_created(self, page: Page) -> None:
        """Tell a new page what the others were told, and carry its requests to the pages they concern."""
        if self._dataset_path is not None:
            page.set_project(self._dataset_path)
        if self._report is not None:
            page.set_report(self._report)
        if isinstance(page, ProjectPage):
            page.project_chosen.connect(self.open_dataset)
            page.project_folder_changed.connect(self.reload_dataset)
        elif isinstance(page, DataPage):
            page.open_requested.connect(self.choose_dataset)
            page.exclusions_changed.connect(lambda _paths: self._refresh_built(ReviewPage))
        elif isinstance(page, ReviewPage):
            page.decisions_changed.connect(lambda: self._refresh_built(DataPage))
            page.files_changed.connect(self.reload_dataset)
        elif isinstance(page, TrainPage):
            page.auto_finished.connect(self._on_train_page_auto_finished)
        elif isinstance(page, RunsPage):
            page.config_loaded.connect(lambda _run: self.show_page(self.page(ModelPage)))
        elif isinstance(page, SearchPage):
            page.best_config_applied.connect(lambda: self.show_page(self.page(ModelPage)))
            page.controller.run_ended.connect(self._on_search_run_ended)
        elif isinstance(page, EnsemblePage):
            page.manifest_saved.connect(lambda _path: self._refresh_pages())
            page.evaluate_requested.connect(self._on_ensemble_page_evaluate_requested)

    # Set-up --------------------------------------------------------------------------------------

    def _create_actions(self) -> None:
        style = self.style()
        self.open_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "&Open data folder…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.setStatusTip("Open a folder with one sub-folder of images per class")
        self.open_action.triggered.connect(self.choose_dataset)
        self.rescan_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "&Rescan", self)
        self.rescan_action.setShortcuts([QKeySequence(QKeySequence.StandardKey.Refresh), QKeySequence("Ctrl+R")])
        self.rescan_action.setStatusTip("Scan the open folder again")
        self.rescan_action.setEnabled(False)
        self.rescan_action.triggered.connect(self.rescan)
        self.load_config_action = QAction("&Load config…", self)
        self.load_config_action.setShortcut(QKeySequence("Ctrl+Shift+O"))
        self.load_config_action.triggered.connect(self._choose_config_to_load)
        self.save_config_action = QAction("&Save config…", self)
        self.save_config_action.setShortcut(QKeySequence.StandardKey.Save)
        self.save_config_action.triggered.connect(self._choose_config_to_save)
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        self.start_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "&Start training", self)
        self.start_action.setShortcut(QKeySequence("Ctrl+Return"))
        self.start_action.triggered.connect(self._on_start_action_triggered)
        self.stop_action = QAction(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "S&top training", self)
        self.stop_action.setShortcut(QKeySequence("Ctrl+."))
        self.stop_action.triggered.connect(lambda: self.page(TrainPage).stop())
        self.stop_action.setEnabled(False)
        self.controller.run_started.connect(lambda _run: self.stop_action.setEnabled(True))

        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.rescan_action)
        file_menu.addSeparator()
        file_menu.addAction(self.load_config_action)
        file_menu.addAction(self.save_config_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        run_menu = self.menuBar().addMenu("&Run")
        run_menu.addAction(self.start_action)
        run_menu.addAction(self.stop_action)
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("main_toolbar")  # restoreState() needs a name
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.addAction(self.open_action)
        toolbar.addAction(self.rescan_action)
        toolbar.addSeparator()
        toolbar.addAction(self.start_action)
        toolbar.addAction(self.stop_action)

    def _create_status_bar(self) -> None:
        # A label rather than showMessage(): status tips of hovered actions would overwrite it.
        self.status_label = QLabel("Ready", self)
        # Ignored: a long message must be clipped, never widen the window.
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_progress = QProgressBar(self)
        self.status_progress.setFixedWidth(160)
        self.status_progress.setTextVisible(False)
        self.status_progress.hide()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.status_progress)

    def _restore_ui_state(self) -> None:
        if not ui_settings.layout_is_current(self._settings):
            self._resize_to_default()
            return
        geometry = ui_settings.read_bytes(self._settings, ui_settings.KEY_WINDOW_GEOMETRY)
        if geometry is None or not self.restoreGeometry(geometry):
            self._resize_to_default()
        state = ui_settings.read_bytes(self._settings, ui_settings.KEY_WINDOW_STATE)
        if state is not None:
            self.restoreState(state, ui_settings.LAYOUT_VERSION)
        splitter = ui_settings.read_bytes(self._settings, ui_settings.KEY_DATA_SPLITTER)
        if splitter is not None:
            self.page(DataPage).restore_state(splitter)

    def _resize_to_default(self) -> None:
        screen = self.screen()
        available = screen.availableSize() * 0.9 if screen is not None else DEFAULT_SIZE
        self.resize(DEFAULT_SIZE.boundedTo(available))

    def _save_ui_state(self) -> None:
        self._settings.setValue(ui_settings.KEY_LAYOUT_VERSION, ui_settings.LAYOUT_VERSION)
        self._settings.setValue(ui_settings.KEY_WINDOW_GEOMETRY, self.saveGeometry())
        self._settings.setValue(ui_settings.KEY_WINDOW_STATE, self.saveState(ui_settings.LAYOUT_VERSION))
        self._settings.setValue(ui_settings.KEY_DATA_SPLITTER, self.page(DataPage).save_state())
        self._settings.sync()

    def _on_start_action_triggered(self) -> None:
        train = self.page(TrainPage)
        self.show_page(train)
        train.start()

    # Scanner slots -------------------------------------------------------------------------------

    def _on_scanner_scan_started(self, path: Path) -> None:
        self.page(DataPage).show_scanning(path)
        self._set_status(f"Scanning {path}…")
        self.status_progress.setRange(0, 0)
        self.status_progress.show()
        self.scan_started.emit(path)

    def _on_scanner_scan_progressed(self, done: int, total: int) -> None:
        self.page(DataPage).show_progress(done, total)
        self.status_label.setText(f"Scanning {done:,}/{total:,}…")
        self.status_progress.setRange(0, max(total, 1))
        self.status_progress.setValue(done)

    def _on_scanner_scan_finished(self, result: ScanResult) -> None:
        report = result.report
        self._report = report
        self.status_progress.hide()
        for page in self.page_stack.built():  # a page built later is told when it is built
            page.set_report(report)
        problems = len(report.problems)
        message = (
            f"Scanned {len(report.records):,} files in {len(report.classes)} classes: "
            f"{problems} {'problem' if problems == 1 else 'problems'}."
        )
        if result.report_path is not None:
            message += f" Report saved to {result.report_path}"
        elif result.save_error is not None:
            message += f" Report not saved: {result.save_error}"
        self._set_status(message)
        self.scan_finished.emit(report)

    def _on_scanner_scan_failed(self, message: str) -> None:
        self.status_progress.hide()
        path = self.scanner.path or Path()
        self.page(DataPage).show_error(path, message)
        self._set_status(f"Cannot use {path.name or path}: see the message above.")
        self.scan_failed.emit(message)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setToolTip(text)

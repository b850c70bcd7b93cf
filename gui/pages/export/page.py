"""The "Export" page: write a checkpoint or an ensemble as ONNX, TorchScript or a timm folder for deployment.

The export is ``main.py export`` in a child process (``CommandRunner``), its log and results shown live in an
``ExportResults`` box; the formats to write are ticked in a ``FormatPicker``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import TransferStudioError
from engine.core.paths import project_dir_for
from engine.evaluation.catalog import ModelEntry
from engine.export.formats import MIN_OPSET, get_export_format, require_onnx_packages, timm_head_problem
from engine.export.listing import exports_folder
from engine.models.checkpoint_metadata import read_checkpoint_metadata
from gui.pages.base import Page
from gui.pages.export.benchmark_panel import BenchmarkPanel
from gui.pages.export.export_formats_picker import FormatPicker
from gui.pages.export.export_results import ExportedFormat, ExportResults, read_export, tolerance_text
from gui.services.command_runner import CommandRunner
from gui.services.config_state import ConfigState
from gui.services.workers import Worker, bound_to, run_in_thread_pool
from gui.style import secondary_label, severity_color
from gui.widgets.message_panel import MessageStack
from gui.widgets.model_chooser import ModelChooser
from gui.widgets.page_header import PageHeader

# The engine's rule (engine.export.exporter refuses a timm folder for any manifest), in the page's words.
ENSEMBLE_TIMM_REASON = ("an ensemble has no timm form: a timm folder holds one model, while ONNX and TorchScript "
                        "hold the whole ensemble as one graph")
# The newest opset torch 2.13's ONNX exporter writes (MIN_OPSET is the oldest).
MAX_OPSET = 23


def default_export_dir(project_dir: Path, entry: ModelEntry, now: datetime | None = None) -> Path:
    """``PROJECT/exports/<model>-<stamp>``, e.g. ``exports/20261124-101500-resnet18-best-20261201-093000``."""
    if entry.kind == "ensemble":
        name = f"ensemble-{entry.name}"
    else:
        name = f"{entry.run_dir.name}-{entry.name}" if entry.run_dir is not None else entry.path.stem
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return exports_folder(project_dir) / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{stamp}"


def format_refusals(entry: ModelEntry) -> dict[str, str]:
    """The formats ``entry`` cannot be exported in, with the reason (reads the checkpoint's header).

    Raises:
        TransferStudioError: the checkpoint's metadata cannot be read.
    """
    refusals: dict[str, str] = {}
    try:
        require_onnx_packages()
    except TransferStudioError as error:
        refusals["onnx"] = str(error)
    if entry.kind == "ensemble":
        refusals["timm"] = ENSEMBLE_TIMM_REASON
    else:
        problem = timm_head_problem(read_checkpoint_metadata(entry.path).get("head"))
        if problem is not None:
            refusals["timm"] = problem
    return refusals


class ExportPage(Page):
    """Exports the chosen model in the chosen formats and shows each export's parity with PyTorch.

    Signals:
        export_finished: the export folder (Path), after a successful export's results are shown.

    Args:
        state: the config being edited; its ``data.path`` names the project whose models are offered.
        parent: the parent widget.
    """

    title = "Export"
    icon = QStyle.StandardPixmap.SP_DialogSaveButton

    export_finished = Signal(object)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._project_dir: Path | None = None
        self._refusal_worker: Worker | None = None
        self._folder_chosen = False  # the user picked the output folder: model changes keep it
        self._out_dir: Path | None = None
        self._formats: list[str] = []
        self._refused: dict[str, str] = {}  # format: why, as the export printed it
        self._cancelled = False
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)

        self.chooser = ModelChooser(parent=self)
        self.chooser.model_changed.connect(self._on_chooser_model_changed)
        self.chooser.models_listed.connect(self._on_chooser_models_listed)
        self.chooser.browse_failed.connect(self._on_chooser_browse_failed)
        self.model_label = secondary_label(self)
        self.formats = FormatPicker(self)
        self.formats.changed.connect(self._update_actions)
        self.opset_spin = QSpinBox(self)
        self.opset_spin.setRange(MIN_OPSET, MAX_OPSET)
        self.opset_spin.setValue(MIN_OPSET)
        self.opset_spin.setToolTip(f"ONNX operator set. {MIN_OPSET}, the oldest torch writes, runs on the most "
                                   "onnxruntime versions; newer ones need a newer runtime where the model runs.")
        self.folder_edit = QLineEdit(self)
        self.folder_edit.textEdited.connect(self._on_folder_edit_text_edited)
        self.folder_edit.textChanged.connect(self._on_folder_edit_text_changed)
        self.folder_button = QPushButton("Change…", self)
        self.folder_button.clicked.connect(self._on_folder_button_clicked)
        self.training_images_radio = QRadioButton("8 images of the training data", self)
        self.training_images_radio.setToolTip("Spread over the classes of the data the model was trained on, "
                                              "as the CLI takes them")
        self.training_images_radio.setChecked(True)
        self.folder_images_radio = QRadioButton("A folder:", self)
        self.folder_images_radio.toggled.connect(self._update_actions)
        self.check_folder_edit = QLineEdit(self)
        self.check_folder_edit.setPlaceholderText("images the model should handle")
        self.check_folder_edit.textChanged.connect(self._on_check_folder_edit_text_changed)
        self.check_folder_button = QPushButton("Choose…", self)
        self.check_folder_button.clicked.connect(self._on_check_folder_button_clicked)
        style = self.style()
        self.export_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_DialogSaveButton), "Export", self)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.cancel_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "Cancel", self)
        self.cancel_button.setToolTip("End the export now; formats already checked stay in the folder")
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setFixedWidth(160)
        self.results = ExportResults(self)
        self.benchmark = BenchmarkPanel(self)

        self._stack = MessageStack(self._create_content(), self)
        self.message_panel = self._stack.message_panel
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self._stack)
        state.changed.connect(self._on_state_changed)
        self._on_state_changed()
        self._update_actions()

    @property
    def export_dir(self) -> Path | None:
        """The folder of the last export started here (going or ended)."""
        return self._out_dir

    def refresh(self) -> None:
        """List the project's models again (after a run ends or a manifest is saved), keeping the choice."""
        self.chooser.refresh()

    def export_model(self, out_dir: Path | None = None) -> bool:
        """Start exporting the chosen model in the ticked formats (``main.py export`` in a child process).

        Args:
            out_dir: the export folder; None: the Output folder field's (a fresh
                ``PROJECT/exports/<model>-<stamp>`` unless the user chose one).

        Returns:
            Whether the export started (not while one runs, nor without a model or a format).
        """
        entry = self.chooser.current()
        if self.start_blocker() or entry is None:
            return False
        if out_dir is not None:
            self.folder_edit.setText(str(out_dir))
        elif not self._folder_chosen and self._project_dir is not None:
            self.folder_edit.setText(str(default_export_dir(self._project_dir, entry)))  # stamped now
        self._out_dir = Path(self.folder_edit.text().strip()).expanduser()
        self._formats = self.formats.chosen()
        arguments = [str(entry.path), str(self._out_dir)]
        for name in self._formats:
            arguments += ["--format", name]
        if "onnx" in self._formats:
            arguments += ["--opset", str(self.opset_spin.value())]
        if self.folder_images_radio.isChecked():
            arguments += ["--check-images", self.check_folder_edit.text().strip()]
        self._cancelled = False
        self._refused = {}
        titles = ", ".join(get_export_format(name).title for name in self._formats)
        self.results.start(f"python main.py export {shlex.join(arguments)}",
                           f"Exporting {entry.label} as {titles}; each export is checked against PyTorch before "
                           "it is kept (ONNX takes 10–30 s)…")
        self.runner.start("export", arguments)
        self._update_actions()
        return True

    def start_blocker(self) -> str:
        """Why Export is disabled, or "" when an export can start."""
        entry = self.chooser.current()
        if self.runner.is_running:
            return "An export is running."
        if entry is None or not entry.is_usable:
            return "Choose a model first."
        if not self.formats.known:
            return "Finding out which formats this model has…"
        if not self.formats.chosen():
            return "Tick at least one format."
        if not self.folder_edit.text().strip():
            return "Choose an output folder."
        if self.folder_images_radio.isChecked() and not self.check_folder_edit.text().strip():
            return "Choose the folder of images for the parity check."
        return ""

    # Set-up and helpers --------------------------------------------------------------------------

    def _create_content(self) -> QWidget:
        model_box = QGroupBox("Model", self)
        model_layout = QVBoxLayout(model_box)
        model_layout.addWidget(self.chooser)
        model_layout.addWidget(self.model_label)
        options_box = QGroupBox("Options", self)
        form = QFormLayout(options_box)
        form.addRow("ONNX opset", self.opset_spin)
        form.addRow("Output folder", _row(self.folder_edit, self.folder_button))
        checks = QVBoxLayout()
        checks.addWidget(self.training_images_radio)
        checks.addLayout(_row(self.folder_images_radio, self.check_folder_edit, self.check_folder_button))
        form.addRow("Parity check on", checks)
        settings = QHBoxLayout()
        settings.addWidget(self.formats, 1)
        settings.addWidget(options_box, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.export_button)
        actions.addWidget(self.cancel_button)
        actions.addWidget(self.progress_bar)
        actions.addStretch(1)

        content = QWidget(self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(PageHeader(self.title, parent=content))
        layout.addWidget(model_box)
        layout.addLayout(settings)
        layout.addLayout(actions)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.benchmark)
        return content

    def _update_actions(self) -> None:
        running = self.runner.is_running
        blocker = self.start_blocker()
        self.export_button.setEnabled(not blocker)
        self.export_button.setToolTip(blocker or "Export the model, then check every export against PyTorch")
        self.cancel_button.setEnabled(running)
        self.progress_bar.setVisible(running)
        self.formats.set_locked(running)
        for widget in (self.chooser, self.folder_edit, self.folder_button, self.training_images_radio,
                       self.folder_images_radio):
            widget.setEnabled(not running)
        self.opset_spin.setEnabled(not running and "onnx" in self.formats.chosen())
        picking_folder = not running and self.folder_images_radio.isChecked()
        self.check_folder_edit.setEnabled(picking_folder)
        self.check_folder_button.setEnabled(picking_folder)

    def _show_model_problem(self, message: str) -> None:
        self.model_label.setText(message)
        self.model_label.setStyleSheet(f"color: {severity_color('error', self.palette()).name()};")

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, *_config: object) -> None:
        data_path = self._state.config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        if project_dir is None:
            self._stack.show_message(
                "No project open", "Open a data folder on the Project page; the models trained on it can be "
                "exported here.", icon=QStyle.StandardPixmap.SP_FileDialogInfoView)
        else:
            self._stack.show_content()
        if project_dir != self._project_dir:
            self._project_dir = project_dir
            self.chooser.set_project(project_dir)

    def _on_chooser_models_listed(self, entries: list[ModelEntry]) -> None:
        if not entries:
            self.model_label.setText("Train a model first: no checkpoints in this project yet. Or use Browse… for "
                                     "a checkpoint, run folder or ensemble manifest from elsewhere.")

    def _on_chooser_model_changed(self, entry: ModelEntry | None) -> None:
        self.model_label.setStyleSheet("color: palette(placeholder-text);")
        if entry is not None and entry.kind == "checkpoint":
            self.model_label.setText(f"{entry.backbone} · {entry.mode} · epoch {entry.epoch} · "
                                     f"{len(entry.classes)} classes · {entry.path}")
        elif entry is not None:
            self.model_label.setText(f"Ensemble of {len(entry.members)} checkpoints · {len(entry.classes)} classes "
                                     f"· {entry.path}")
        if not self._folder_chosen:
            folder = ""
            if entry is not None and self._project_dir is not None:
                folder = str(default_export_dir(self._project_dir, entry))
            self.folder_edit.setText(folder)
        self._refusal_worker = None  # a listing for the previous choice is ignored when it returns
        self.formats.set_refusals(None)
        if entry is None or not entry.is_usable:
            return
        worker = run_in_thread_pool(_refusals_job, entry)
        worker.signals.returned.connect(bound_to(self, lambda refusals: self._on_refusal_worker_done(worker, refusals)))
        worker.signals.errored.connect(bound_to(self, lambda error: self._on_refusal_worker_done(worker, None, error)))
        self._refusal_worker = worker

    def _on_refusal_worker_done(self, worker: Worker, refusals: dict[str, str] | None,
                                error: Exception | None = None) -> None:
        if worker is not self._refusal_worker:
            return  # the choice moved on
        self._refusal_worker = None
        if error is not None:
            self._show_model_problem(f"Cannot read this model: {error}")
        else:
            self.formats.set_refusals(refusals)

    def _on_chooser_browse_failed(self, message: str) -> None:
        self._show_model_problem(message)

    def _on_folder_edit_text_edited(self, _text: str) -> None:
        self._folder_chosen = True

    def _on_folder_edit_text_changed(self, text: str) -> None:
        self.folder_edit.setToolTip(f"The export folder, one subfolder per format:\n{text}")
        self._update_actions()

    def _on_folder_button_clicked(self) -> None:
        start = self.folder_edit.text() or str(self._project_dir or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Export into", start)
        if folder:
            self._folder_chosen = True
            self.folder_edit.setText(folder)

    def _on_check_folder_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Images for the parity check", self.check_folder_edit.text())
        if folder:
            self.check_folder_edit.setText(folder)

    def _on_check_folder_edit_text_changed(self, text: str) -> None:
        if text.strip():
            self.folder_images_radio.setChecked(True)
        self._update_actions()

    def _on_export_button_clicked(self) -> None:
        self.export_model()

    def _on_cancel_button_clicked(self) -> None:
        self._cancelled = True
        self.runner.stop()

    def _on_runner_line_printed(self, line: str) -> None:
        self.results.append_line(line)
        name, refused, reason = line.partition(": refused: ")
        if refused and name in self._formats:
            self._refused[name] = reason

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        self._update_actions()
        if self._cancelled:
            self.results.set_status("Export cancelled. Formats checked before the stop stay in the folder.")
        elif not succeeded and not 0 < len(self._refused) < len(self._formats):
            self.results.set_status(f"Export failed: {message}", "error")
        else:  # every format written, or some of them (the others refused, with why)
            worker = run_in_thread_pool(_read_export_job, self._out_dir, list(self._formats))
            worker.signals.returned.connect(self._on_results_worker_returned)
            worker.signals.errored.connect(self._on_results_worker_errored)

    def _on_results_worker_returned(self, exported: list[ExportedFormat]) -> None:
        self.results.show_exported(self._out_dir, exported)
        self.benchmark.set_export_dir(self._out_dir)
        refused = [f"{get_export_format(name).title}: {reason}" for name, reason in self._refused.items()]
        unchecked = [get_export_format(item.format).title for item in exported if item.unchecked]
        checked = [item for item in exported if not item.unchecked]
        if refused:
            self.results.set_status(f"Exported to {self._out_dir}, but not every format: "
                                    + "; ".join(refused), "error")
        elif unchecked and all(item.passed for item in checked):
            self.results.set_status(f"Exported to {self._out_dir}. {', '.join(unchecked)} could not be run on this "
                                    "machine, so it was converted but not checked; the others passed their "
                                    "checks.", "ok")
        elif all(item.passed for item in exported):
            # The one the CLI checked against; a quantized format is judged on accuracy instead.
            tolerances = [item.tolerance for item in exported if item.tolerance is not None]
            judged = " (int8: within its accuracy limit)" if len(tolerances) < len(exported) else ""
            exact = (f"Each export computes what PyTorch computes (largest difference ≤ "
                     f"{tolerance_text(max(tolerances))}){judged}." if tolerances else "It passed its accuracy check.")
            self.results.set_status(f"Exported to {self._out_dir}. {exact}", "ok")
        else:
            self.results.set_status(f"Exported to {self._out_dir}, but an export differs from PyTorch: see the "
                                    "Parity column.", "error")
        self.export_finished.emit(self._out_dir)

    def _on_results_worker_errored(self, error: Exception) -> None:
        self.results.set_status(f"The export finished, but its results cannot be read: {error}", "error")


def _row(*widgets: QWidget) -> QHBoxLayout:
    layout = QHBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, QLineEdit) else 0)
    return layout


def _refusals_job(entry: ModelEntry, *, progress: Callable[[int, int], None],
                  should_abort: Callable[[], bool]) -> dict[str, str]:
    return format_refusals(entry)


def _read_export_job(out_dir: Path, formats: list[str], *, progress: Callable[[int, int], None],
                     should_abort: Callable[[], bool]) -> list[ExportedFormat]:
    return read_export(out_dir, formats)

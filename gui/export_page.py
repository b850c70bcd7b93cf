"""The "Export" page: write a checkpoint or an ensemble as ONNX, TorchScript or a timm folder for deployment.

The export is ``main.py export`` in a child process (``CommandRunner``), its log shown
live. The results table is read from the ``metadata.json`` the CLI writes into each
format folder: the file, its size and its largest probability difference to PyTorch
on real images.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.catalog import ModelEntry
from engine.checkpoint import read_checkpoint_metadata
from engine.errors import TransferStudioError
from engine.export import EXPORT_FORMATS, PARITY_TOLERANCE, PREDICT_SCRIPT
from engine.export_formats import MIN_OPSET, ONNX_FILE, TORCHSCRIPT_FILE, require_onnx_packages, timm_head_problem
from engine.paths import project_dir_for
from gui.command_runner import CommandRunner
from gui.config_state import ConfigState
from gui.message_panel import MessagePanel
from gui.model_chooser import ModelChooser
from gui.style import ok_color, severity_color
from gui.train_page import ElidedLabel
from gui.workers import Worker, bound_to, run_in_thread_pool

FORMAT_TITLES = {"onnx": "ONNX", "torchscript": "TorchScript", "timm": "timm folder"}
FORMAT_USES = {
    "onnx": "Runs anywhere with onnxruntime (C++, C#, JS, mobile); a predict.py is written beside it.",
    "torchscript": "For PyTorch without our code: torch.jit.load in Python, or LibTorch in a C++ server.",
    "timm": "For timm users who fine-tune further: timm.create_model(\"local-dir:FOLDER\") rebuilds it.",
}
# The engine's rule (engine.export refuses a timm folder for any manifest), in the page's words.
ENSEMBLE_TIMM_REASON = ("an ensemble has no timm form: a timm folder holds one model, while ONNX and TorchScript "
                        "hold the whole ensemble as one graph")
# The newest opset torch 2.13's ONNX exporter writes (MIN_OPSET is the oldest).
MAX_OPSET = 23
EXPORTS_FOLDER = "exports"
# What engine.export_formats.write_metadata names the metadata inside each format folder.
METADATA_FILE = "metadata.json"
PASSED, FAILED = "✓", "✗"


@dataclass(frozen=True)
class ExportedFormat:
    """One format folder of a finished export, as its ``metadata.json`` describes it.

    Attributes:
        format: ``onnx``, ``torchscript`` or ``timm``.
        path: the model file, or the folder for timm.
        size: bytes on disk (the whole folder for timm).
        max_difference: largest absolute probability difference to PyTorch in the parity check.
        tolerance: the largest difference the check accepts.
        images: names of the real images checked; empty when random inputs were used.
        opset: the ONNX opset written; None for other formats.
    """

    format: str
    path: Path
    size: int
    max_difference: float
    tolerance: float
    images: tuple[str, ...]
    opset: int | None

    @property
    def passed(self) -> bool:
        """Whether the export computes what PyTorch computes, within the tolerance."""
        return self.max_difference <= self.tolerance


def default_export_dir(project_dir: Path, entry: ModelEntry, now: datetime | None = None) -> Path:
    """``PROJECT/exports/<model>-<stamp>``, e.g. ``exports/20261124-101500-resnet18-best-20261201-093000``."""
    if entry.kind == "ensemble":
        name = f"ensemble-{entry.name}"
    else:
        name = f"{entry.run_dir.name}-{entry.name}" if entry.run_dir is not None else entry.path.stem
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return project_dir / EXPORTS_FOLDER / f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{stamp}"


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


def read_export(out_dir: Path, formats: Sequence[str]) -> list[ExportedFormat]:
    """What the CLI wrote into ``out_dir`` for ``formats``, from each folder's ``metadata.json``.

    Raises:
        OSError, ValueError, KeyError: a format folder or its metadata is missing or damaged.
    """
    exported = []
    for name in formats:
        folder = out_dir / name
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        path = {"onnx": folder / ONNX_FILE, "torchscript": folder / TORCHSCRIPT_FILE}.get(name, folder)
        size = sum(file.stat().st_size for file in folder.iterdir()) if path.is_dir() else path.stat().st_size
        parity = metadata["parity"]
        exported.append(ExportedFormat(name, path, size, float(parity["max_difference"]), float(parity["tolerance"]),
                                       tuple(parity.get("images") or ()), metadata.get("opset")))
    return exported


def predict_command(onnx_folder: Path) -> str:
    """The terminal command that classifies an image with the exported ``predict.py``, quoted for this platform."""
    arguments = ["python", str(onnx_folder / PREDICT_SCRIPT), str(onnx_folder / ONNX_FILE), "IMAGE"]
    return subprocess.list2cmdline(arguments) if os.name == "nt" else shlex.join(arguments)


class FormatPicker(QGroupBox):
    """The format check boxes, each with who uses it; a format the model cannot have is disabled with why.

    Signals:
        changed: the ticked formats changed.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Formats", parent)
        self._refusals: dict[str, str] | None = None  # None until the chosen model's formats are known
        self._wanted = dict.fromkeys(EXPORT_FORMATS, True)  # the user's ticks, kept while a model lacks a format
        self.boxes: dict[str, QCheckBox] = {}
        self.labels: dict[str, QLabel] = {}
        grid = QGridLayout(self)
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(8)
        for row, name in enumerate(EXPORT_FORMATS):
            self.boxes[name] = QCheckBox(FORMAT_TITLES[name], self)
            self.boxes[name].setChecked(True)
            self.boxes[name].toggled.connect(self._on_box_toggled)
            self.labels[name] = _secondary_label(self)
            grid.addWidget(self.boxes[name], row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(self.labels[name], row, 1)
        self.set_refusals(None)

    @property
    def known(self) -> bool:
        """Whether the chosen model's formats are known."""
        return self._refusals is not None

    def chosen(self) -> list[str]:
        """The ticked formats the model can have, in CLI order."""
        refused = self._refusals or {}
        return [name for name, box in self.boxes.items() if box.isChecked() and name not in refused]

    def set_refusals(self, refusals: dict[str, str] | None) -> None:
        """Offer every format but these (format: reason); None while they are being found out."""
        self._refusals = refusals
        for name, box in self.boxes.items():
            reason = (refusals or {}).get(name, "")
            box.blockSignals(True)  # not the user's choice: keep self._wanted
            box.setChecked(self._wanted[name] and not reason)
            box.blockSignals(False)
            box.setEnabled(not reason)
            text = f"Not available for this model: {reason}" if reason else FORMAT_USES[name]
            box.setToolTip(text)
            self.labels[name].setText(text)
            self.labels[name].setToolTip(text)
        self.changed.emit()

    def set_locked(self, locked: bool) -> None:
        """Freeze the choice while an export runs."""
        for name, box in self.boxes.items():
            box.setEnabled(not locked and name not in (self._refusals or {}))

    def _on_box_toggled(self, checked: bool) -> None:
        name = next(name for name, box in self.boxes.items() if box is self.sender())
        self._wanted[name] = checked
        self.changed.emit()


class ExportResults(QGroupBox):
    """The outcome of an export: a status line, a row per format with its parity, the actions and the log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Result", parent)
        self._out_dir: Path | None = None
        self._exported: list[ExportedFormat] = []
        self.status_label = QLabel("Choose a model and formats, then Export.", self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["Format", "File", "Size", "Parity: max |Δ| vs PyTorch"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        style = self.style()
        self.open_folder_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon),
                                              "Open folder", self)
        self.open_folder_button.setToolTip("Show the export folder in the file manager")
        self.open_folder_button.clicked.connect(self.open_folder)
        self.copy_command_button = QPushButton("Copy predict command", self)
        self.copy_command_button.setToolTip("Copy the command that classifies images with the ONNX export's "
                                            "predict.py (it needs only onnxruntime, numpy and Pillow)")
        self.copy_command_button.clicked.connect(self.copy_predict_command)
        self.command_label = ElidedLabel(self)
        self.command_label.setStyleSheet("color: palette(placeholder-text);")
        self.log_view = QPlainTextEdit(self)
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setPlaceholderText("What the export prints appears here.")
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_folder_button)
        buttons.addWidget(self.copy_command_button)
        buttons.addWidget(self.command_label, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.log_view, 1)
        self.show_exported(None, [])

    def start(self, command: str, status: str) -> None:
        """Forget the last outcome: show the command being run and what it does."""
        self.show_exported(None, [])
        self.log_view.clear()
        self.log_view.appendPlainText(f"$ {command}")
        self.set_status(status)

    def append_line(self, line: str) -> None:
        """Add a line the export printed to the log."""
        self.log_view.appendPlainText(line)

    def set_status(self, text: str, tone: str = "") -> None:
        """Show ``text``, coloured by ``tone``: "ok", "error" or "" (plain)."""
        color = {"ok": ok_color(self.palette()), "error": severity_color("error", self.palette())}.get(tone)
        self.status_label.setStyleSheet(f"color: {color.name()};" if color is not None else "")
        self.status_label.setText(text)

    def show_exported(self, out_dir: Path | None, exported: list[ExportedFormat]) -> None:
        """Show the formats written into ``out_dir`` (nothing: clear the table and the actions)."""
        self._out_dir, self._exported = out_dir, exported
        self.table.setRowCount(len(exported))
        for row, item in enumerate(exported):
            for column, cell in enumerate(self._cells(item)):
                self.table.setItem(row, column, cell)
        self.table.setVisible(bool(exported))
        # As tall as its rows: the log below gets the rest of the height.
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
                                  + sum(self.table.rowHeight(row) for row in range(len(exported))))
        onnx = out_dir is not None and any(item.format == "onnx" for item in exported)
        self.open_folder_button.setEnabled(bool(exported))
        self.copy_command_button.setEnabled(onnx)
        self.command_label.setText(predict_command(out_dir / "onnx") if onnx else "")

    def open_folder(self) -> None:
        """Show the export folder in the platform's file manager."""
        if self._out_dir is not None and self._out_dir.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._out_dir)))

    def copy_predict_command(self) -> str:
        """Put the command running the ONNX export's ``predict.py`` on the clipboard; returns it ("" if none)."""
        if not self.copy_command_button.isEnabled():
            return ""
        command = predict_command(self._out_dir / "onnx")
        QGuiApplication.clipboard().setText(command)
        self.command_label.setText(f"Copied (replace IMAGE with image files): {command}")
        return command

    def _cells(self, item: ExportedFormat) -> list[QTableWidgetItem]:
        title = FORMAT_TITLES[item.format] + (f" (opset {item.opset})" if item.opset else "")
        inputs = f"{len(item.images)} real images" if item.images else "random inputs (no images found)"
        parity = QTableWidgetItem(f"{PASSED if item.passed else FAILED} {item.max_difference:.1e} on {inputs}")
        parity.setForeground(ok_color(self.palette()) if item.passed else severity_color("error", self.palette()))
        checked = ":\n" + "\n".join(item.images) if item.images else ""
        parity.setToolTip(f"Largest difference of any probability to PyTorch (tolerance "
                          f"{_tolerance_text(item.tolerance)}){checked}")
        parity.setData(Qt.ItemDataRole.UserRole, item.max_difference)
        file = QTableWidgetItem(str(item.path.relative_to(self._out_dir)) + ("/" if item.path.is_dir() else ""))
        file.setToolTip(str(item.path))
        size = QTableWidgetItem(_size_text(item.size))
        size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return [QTableWidgetItem(title), file, size, parity]


class ExportPage(QWidget):
    """Exports the chosen model in the chosen formats and shows each export's parity with PyTorch.

    Signals:
        export_finished: the export folder (Path), after a successful export's results are shown.

    Args:
        state: the config being edited; its ``data.path`` names the project whose models are offered.
        parent: the parent widget.
    """

    export_finished = Signal(object)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._project_dir: Path | None = None
        self._refusal_worker: Worker | None = None
        self._folder_chosen = False  # the user picked the output folder: model changes keep it
        self._out_dir: Path | None = None
        self._formats: list[str] = []
        self._cancelled = False
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)

        self.chooser = ModelChooser(parent=self)
        self.chooser.model_changed.connect(self._on_chooser_model_changed)
        self.chooser.models_listed.connect(self._on_chooser_models_listed)
        self.chooser.browse_failed.connect(self._on_chooser_browse_failed)
        self.model_label = _secondary_label(self)
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

        self.message_panel = MessagePanel(self)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.message_panel)
        self._stack.addWidget(self._create_content())
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
        if self.start_blocker():
            return False
        entry = self.chooser.current()
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
        titles = ", ".join(FORMAT_TITLES[name] for name in self._formats)
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
        title = QLabel("Export", self)
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        title.setFont(font)
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
        layout.addWidget(title)
        layout.addWidget(model_box)
        layout.addLayout(settings)
        layout.addLayout(actions)
        layout.addWidget(self.results, 1)
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
            icon = self.style().standardIcon(QStyle.StandardPixmap.SP_FileDialogInfoView)
            self.message_panel.show_message(
                "No project open", "Open a data folder on the Project page; the models trained on it can be "
                "exported here.", icon=icon)
            self._stack.setCurrentWidget(self.message_panel)
        else:
            self._stack.setCurrentIndex(1)
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
            usable = entry is not None and self._project_dir is not None
            self.folder_edit.setText(str(default_export_dir(self._project_dir, entry)) if usable else "")
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

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        self._update_actions()
        if self._cancelled:
            self.results.set_status("Export cancelled. Formats checked before the stop stay in the folder.")
        elif not succeeded:
            self.results.set_status(f"Export failed: {message}", "error")
        else:
            worker = run_in_thread_pool(_read_export_job, self._out_dir, list(self._formats))
            worker.signals.returned.connect(self._on_results_worker_returned)
            worker.signals.errored.connect(self._on_results_worker_errored)

    def _on_results_worker_returned(self, exported: list[ExportedFormat]) -> None:
        self.results.show_exported(self._out_dir, exported)
        if all(item.passed for item in exported):
            self.results.set_status(f"Exported to {self._out_dir}. Each export computes what PyTorch computes "
                                    f"(largest difference ≤ {_tolerance_text(PARITY_TOLERANCE)}).", "ok")
        else:
            self.results.set_status(f"Exported to {self._out_dir}, but an export differs from PyTorch: see the "
                                    "Parity column.", "error")
        self.export_finished.emit(self._out_dir)

    def _on_results_worker_errored(self, error: Exception) -> None:
        self.results.set_status(f"The export finished, but its results cannot be read: {error}", "error")


def _secondary_label(parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


def _row(*widgets: QWidget) -> QHBoxLayout:
    layout = QHBoxLayout()
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget, 1 if isinstance(widget, QLineEdit) else 0)
    return layout


def _size_text(size: float) -> str:
    """E.g. "13.7 MB"."""
    for unit in ("bytes", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def _refusals_job(entry: ModelEntry, *, progress: Callable[[int, int], None],
                  should_abort: Callable[[], bool]) -> dict[str, str]:
    return format_refusals(entry)


def _read_export_job(out_dir: Path, formats: list[str], *, progress: Callable[[int, int], None],
                     should_abort: Callable[[], bool]) -> list[ExportedFormat]:
    return read_export(out_dir, formats)


def _tolerance_text(value: float) -> str:
    """E.g. "1e-4" (Python's "1e-04" pads the exponent)."""
    return f"{value:.0e}".replace("e-0", "e-")

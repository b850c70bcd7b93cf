"""The Export page's result box: a row per written format with its file, size and parity with PyTorch.

The rows come from the ``metadata.json`` the CLI writes into each format folder (``read_export``); the box also
offers the folder and the command that runs the ONNX export's ``predict.py``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.export.formats import ONNX_FILE, PREDICT_SCRIPT, get_export_format
from gui.style import ok_color, severity_color
from gui.widgets.elided_label import ElidedLabel

# What engine.export.formats.write_metadata names the metadata inside each format folder.
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
        tolerance: the largest difference the check accepts; None for a format judged instead (int8).
        images: names of the real images checked; empty when random inputs were used.
        opset: the ONNX opset written; None for other formats.
        judgement: of a format judged instead of parity-checked: top-1 agreement and accuracies.
        unchecked: why this machine could not run the export to check it (Core ML off macOS); "" when checked.
    """

    format: str
    path: Path
    size: int
    max_difference: float
    tolerance: float | None
    images: tuple[str, ...]
    opset: int | None
    judgement: dict | None = None
    unchecked: str = ""

    @property
    def passed(self) -> bool:
        """Whether the export was checked and computes what PyTorch computes within the tolerance, or passed its
        judgement; an export that could not be run here has not passed anything."""
        return not self.unchecked and (self.tolerance is None or self.max_difference <= self.tolerance)


def read_export(out_dir: Path, formats: Sequence[str]) -> list[ExportedFormat]:
    """What the CLI wrote into ``out_dir`` for ``formats``, from each folder's ``metadata.json``.

    Raises:
        OSError, ValueError, KeyError: a format folder or its metadata is missing or damaged.
    """
    exported = []
    for name in formats:
        folder = out_dir / name
        if not folder.is_dir():  # refused: the export says why in its output
            continue
        metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        path = get_export_format(name).model_path(folder)
        size = sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.is_dir() \
            else path.stat().st_size
        parity = metadata["parity"]
        unchecked = "" if parity.get("executed", True) else str(parity.get("reason") or "not executed")
        tolerance = None if parity.get("tolerance") is None or unchecked else float(parity["tolerance"])
        exported.append(ExportedFormat(name, path, size, float(parity.get("max_difference", "nan")), tolerance,
                                       tuple(parity.get("images") or ()), metadata.get("opset"),
                                       metadata.get("judgement"), unchecked))
    return exported


def predict_command(onnx_folder: Path) -> str:
    """The terminal command that classifies an image with the exported ``predict.py``, quoted for this platform."""
    arguments = ["python", str(onnx_folder / PREDICT_SCRIPT), str(onnx_folder / ONNX_FILE), "IMAGE"]
    return subprocess.list2cmdline(arguments) if os.name == "nt" else shlex.join(arguments)


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
        onnx = any(item.format == "onnx" for item in exported)
        onnx_dir = out_dir / "onnx" if out_dir is not None and onnx else None
        self.open_folder_button.setEnabled(bool(exported))
        self.copy_command_button.setEnabled(onnx_dir is not None)
        self.command_label.setText(predict_command(onnx_dir) if onnx_dir is not None else "")

    def open_folder(self) -> None:
        """Show the export folder in the platform's file manager."""
        if self._out_dir is not None and self._out_dir.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._out_dir)))

    def copy_predict_command(self) -> str:
        """Put the command running the ONNX export's ``predict.py`` on the clipboard; returns it ("" if none)."""
        if not self.copy_command_button.isEnabled() or self._out_dir is None:
            return ""
        command = predict_command(self._out_dir / "onnx")
        QGuiApplication.clipboard().setText(command)
        self.command_label.setText(f"Copied (replace IMAGE with image files): {command}")
        return command

    def _cells(self, item: ExportedFormat) -> list[QTableWidgetItem]:
        title = get_export_format(item.format).title + (f" (opset {item.opset})" if item.opset else "")
        inputs = f"{len(item.images)} real images" if item.images else "random inputs (no images found)"
        parity = QTableWidgetItem(f"{PASSED if item.passed else FAILED} {item.max_difference:.1e} on {inputs}")
        parity.setForeground(ok_color(self.palette()) if item.passed else severity_color("error", self.palette()))
        checked = ":\n" + "\n".join(item.images) if item.images else ""
        parity.setToolTip(f"Largest difference of any probability to PyTorch (tolerance "
                          f"{tolerance_text(item.tolerance)}){checked}" if item.tolerance is not None else "")
        if item.judgement:
            judged = item.judgement
            parity.setText(f"{PASSED} {judged['top1_agreement']:.1%} top-1 agreement, accuracy "
                           f"{judged['accuracy_int8']:.1%} (float {judged['accuracy_float']:.1%})")
            parity.setToolTip(f"Judged on {judged['images']}; refused when accuracy drops more than "
                              f"{judged['max_accuracy_drop']:.1%}")
        if item.unchecked:
            parity.setText(f"– {item.unchecked}")
            parity.setForeground(self.palette().placeholderText())
            parity.setToolTip("Converted and published, but this machine cannot run it, so it was not compared "
                              "with PyTorch here")
        parity.setData(Qt.ItemDataRole.UserRole, item.max_difference)
        shown = item.path.relative_to(self._out_dir) if self._out_dir is not None else item.path
        file = QTableWidgetItem(str(shown) + ("/" if item.path.is_dir() else ""))
        file.setToolTip(str(item.path))
        size = QTableWidgetItem(_size_text(item.size))
        size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return [QTableWidgetItem(title), file, size, parity]


def _size_text(size: float) -> str:
    """E.g. "13.7 MB"."""
    for unit in ("bytes", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def tolerance_text(value: float) -> str:
    """E.g. "1e-4" (Python's "1e-04" pads the exponent)."""
    return f"{value:.0e}".replace("e-0", "e-")

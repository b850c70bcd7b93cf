"""The Export page's benchmark: each format of the export measured on this machine, side by side, as a table.

``main.py benchmark`` runs as a child process (``CommandRunner``); its progress lines move the bar, and
the ``benchmark.json`` it writes into the export folder fills the table, the fastest format and the
most accurate one marked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.services.command_runner import CommandRunner

BENCHMARK_JSON = "benchmark.json"  # engine.export.benchmark.BENCHMARK_JSON, named without importing torch
_COLUMNS = ("Format", "Size", "Latency p50", "Latency p95", "Throughput", "Top-1", "")
_PROGRESS = re.compile(r"benchmark: (\d+)/(\d+) models measured")


class BenchmarkPanel(QGroupBox):
    """"Benchmark" for the export folder shown: latency, throughput, size and top-1 of each format."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Benchmark on this machine", parent)
        self._export_dir: Path | None = None
        self.runs = 30  # timed calls per format, after warm-up
        self.throughput_batch = 32
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)
        self.run_button = QPushButton("Benchmark", self)
        self.run_button.setToolTip("Time every format of this export (and the PyTorch model) on this computer, "
                                   "and score each on the validation images")
        self.run_button.clicked.connect(self.benchmark)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setVisible(False)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.table = QTableWidget(0, len(_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setVisible(False)
        top = QHBoxLayout()
        top.addWidget(self.run_button)
        top.addWidget(self.progress_bar, 1)
        top.addWidget(self.status_label, 3)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.table)
        self.set_export_dir(None)

    @property
    def is_running(self) -> bool:
        """Whether a benchmark is running."""
        return self.runner.is_running

    def set_export_dir(self, export_dir: Path | None) -> None:
        """Offer the benchmark of ``export_dir`` (None: nothing exported yet); shows its last one if any."""
        self._export_dir = export_dir
        self.run_button.setEnabled(export_dir is not None and not self.is_running)
        self.table.setVisible(False)
        self.status_label.setText("" if export_dir is not None else "Export a model first.")
        if export_dir is not None and (export_dir / BENCHMARK_JSON).is_file():
            self._show(export_dir / BENCHMARK_JSON)

    def benchmark(self) -> None:
        """Start ``main.py benchmark`` on the export folder."""
        if self._export_dir is None or self.is_running:
            return
        self.runner.start("benchmark", [str(self._export_dir), "--runs", str(self.runs),
                                        "--throughput-batch", str(self.throughput_batch)])
        self.run_button.setEnabled(False)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setVisible(True)
        self.status_label.setText("Loading the models…")

    def _show(self, file: Path) -> None:
        try:
            report = json.loads(file.read_text(encoding="utf-8"))
            rows = report["rows"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            self.status_label.setText(f"{file}: cannot be read ({error})")
            return
        self.table.setRowCount(len(rows))
        for row, item in enumerate(rows):
            marks = [word for word, key in (("fastest", "fastest"), ("most accurate", "most_accurate"))
                     if report.get(key) == item["format"]]
            top1 = item.get("top1")
            cells = [item["format"], f"{item['size_bytes'] / 1e6:.1f} MB", f"{item['latency_p50_ms']:.1f} ms",
                     f"{item['latency_p95_ms']:.1f} ms", f"{item['throughput_images_per_s']:.0f} images/s",
                     f"{top1:.1%}" if top1 is not None else "n/a", ", ".join(marks)]
            for column, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                if column:
                    cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if marks:
                    font = QFont(cell.font())
                    font.setBold(True)
                    cell.setFont(font)
                self.table.setItem(row, column, cell)
        self.table.setVisible(True)
        self.table.setFixedHeight(self.table.horizontalHeader().height() + 4
                                  + sum(self.table.rowHeight(row) for row in range(len(rows))))
        self.status_label.setText(f"Batch {report.get('batch')} for latency, {report.get('threads')} threads; "
                                  f"top-1 on {report.get('images') or 'no labelled images'}.")

    def _on_runner_line_printed(self, line: str) -> None:
        match = _PROGRESS.search(line)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)
            self.status_label.setText(f"Measured {done} of {total} models…")

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        self.progress_bar.setVisible(False)
        self.run_button.setEnabled(self._export_dir is not None)
        if succeeded and self._export_dir is not None:
            self._show(self._export_dir / BENCHMARK_JSON)
        elif not succeeded:
            self.status_label.setText(f"The benchmark failed: {message}")

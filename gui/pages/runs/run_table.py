"""The runs table's model: one row per run folder, with state, progress and best accuracy.

Rows show a colour swatch matching the run's curves (``gui.pages.runs.run_curves``). A run
that another process writes (a command line, another window) shows as running, with that
process's pid and host.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QWidget,
)

from engine.training.run_summary import RunSummary
from engine.training.runfolder import RunFolder
from gui.style import ok_color, severity_color
from gui.widgets.model_chooser import MODE_NAMES

RESUMABLE_STATES = ("cancelled", "failed", "interrupted")


def displayed_state(run: RunSummary, active_run: Path | None) -> str:
    """The state the table shows: the summary's, and ``running`` for the controller's run from its start on."""
    if active_run is not None and run.path == active_run:
        return "running"  # before its child takes the writer lock, the folder may still read as stopped
    return run.state


def writer_of(run_dir: Path) -> str:
    """Who writes a running run, as its ``status.json`` says: "process 4242 on gpu-box", or "another process"."""
    status = RunFolder(run_dir).read_status()
    pid, host = status.get("pid"), status.get("host")
    return f"process {pid} on {host}" if pid and host else "another process"


class RunTableModel(QAbstractTableModel):
    """One row per run; ``SORT_ROLE`` gives each cell a value that sorts (dates, numbers)."""

    HEADERS = ("Started", "Backbone", "Mode", "Epochs", "Best val. accuracy", "Status")
    COLUMN_STARTED, COLUMN_BACKBONE, COLUMN_MODE, COLUMN_EPOCHS, COLUMN_BEST, COLUMN_STATUS = range(6)
    SORT_ROLE = Qt.ItemDataRole.UserRole
    PATH_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runs: list[RunSummary] = []
        self._writers: dict[Path, str] = {}  # writer_of each running run, read once per listing, not per paint
        self._active_run: Path | None = None
        self._colors: dict[Path, QColor] = {}
        self._palette = QPalette()

    def set_runs(self, runs: list[RunSummary]) -> None:
        """Show these runs."""
        self.beginResetModel()
        self._runs = list(runs)
        self._writers = {run.path: writer_of(run.path) for run in runs if run.state == "running"}
        self.endResetModel()

    def set_active_run(self, path: Path | None) -> None:
        """The run folder the controller is running now, if any."""
        self._active_run = path
        self._changed(self.COLUMN_STATUS)

    def set_curve_colors(self, colors: dict[Path, QColor]) -> None:
        """The colour of each run's curves, shown as a swatch beside its date."""
        self._colors = colors
        self._changed(self.COLUMN_STARTED)

    def set_palette(self, palette: QPalette) -> None:
        """The palette that status colours must stay readable on."""
        self._palette = palette
        self._changed(self.COLUMN_STATUS)

    def run_at(self, row: int) -> RunSummary:
        """The run shown in ``row`` (of this model, not of a proxy)."""
        return self._runs[row]

    def state_of(self, run: RunSummary) -> str:
        """The state shown for ``run``."""
        return displayed_state(run, self._active_run)

    def runs_elsewhere(self) -> bool:
        """Whether a listed run is running in a process other than the controller's."""
        return any(self.state_of(run) == "running" and run.path != self._active_run for run in self._runs)

    def detail_of(self, run: RunSummary) -> str:
        """Why ``run`` is in the state shown: who writes a running run, else the summary's reason."""
        if self.state_of(run) != "running":
            return run.reason
        if run.path == self._active_run:
            return "this window is training it"
        return f"{self._writers.get(run.path, 'another process')} is writing this run, outside this window"

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._runs)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        run, column = self._runs[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(run, column)
        if role == self.SORT_ROLE:
            return self._sort_key(run, column)
        if role == self.PATH_ROLE:
            return str(run.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(run, column)
        if role == Qt.ItemDataRole.ForegroundRole and column == self.COLUMN_STATUS:
            return self._status_color(self.state_of(run))
        if role == Qt.ItemDataRole.DecorationRole and column == self.COLUMN_STARTED:
            return self._colors.get(run.path)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (self.COLUMN_EPOCHS, self.COLUMN_BEST):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _text(self, run: RunSummary, column: int) -> str:
        if column == self.COLUMN_STARTED:
            return run.started.strftime("%Y-%m-%d %H:%M") if run.started else run.name
        if column == self.COLUMN_BACKBONE:
            return run.backbone or "—"
        if column == self.COLUMN_MODE:
            return MODE_NAMES.get(run.mode or "", run.mode or "—")
        if column == self.COLUMN_EPOCHS:
            return f"{run.epochs_done} / {run.epochs_planned}" if run.epochs_planned else "—"
        if column == self.COLUMN_BEST:
            return f"{run.best_val_top1:.1%}" if run.best_val_top1 is not None else "—"
        state = self.state_of(run)
        if state == "running" and run.path != self._active_run:
            return f"running: {self._writers.get(run.path, 'another process')}"
        return f"{state}: {run.reason}" if run.reason and state in ("cancelled", "failed", "unreadable") else state

    def _sort_key(self, run: RunSummary, column: int) -> object:
        if column == self.COLUMN_STARTED:
            return run.started.timestamp() if run.started else 0.0
        if column == self.COLUMN_EPOCHS:
            return run.epochs_done
        if column == self.COLUMN_BEST:
            return run.best_val_top1 if run.best_val_top1 is not None else -1.0
        return self._text(run, column).casefold()

    def _tooltip(self, run: RunSummary, column: int) -> str:
        if column != self.COLUMN_STATUS:
            return str(run.path)
        return self.detail_of(run) or self.state_of(run)

    def _status_color(self, state: str) -> QColor | None:
        if state == "finished":
            return ok_color(self._palette)
        severity = {
            "failed": "error",
            "unreadable": "error",
            "cancelled": "warning",
            "interrupted": "warning",
            "running": "info",
        }.get(state)
        return severity_color(severity, self._palette) if severity else None

    def _changed(self, column: int) -> None:
        if self._runs:
            self.dataChanged.emit(self.index(0, column), self.index(len(self._runs) - 1, column))

"""The Ensemble page's table: one row per checkpoint of the project, checkable, with a weight and greedy picks.

The model keeps which checkpoints are checked, their weights and how often greedy
selection picked each, by file path, so a re-listing of the project keeps them. A
sort proxy orders rows best first (validation top-1, then loss) by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QPalette

from engine.evaluation.catalog import ModelEntry
from gui.style import severity_color
from gui.widgets.model_chooser import MODE_NAMES

_Role = Qt.ItemDataRole
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def run_name(entry: ModelEntry) -> str:
    """The run a checkpoint belongs to: its folder name, with the search's name for a search trial."""
    if entry.run_dir is None:
        return entry.path.parent.name
    if entry.run_dir.parent.name == "runs":
        return entry.run_dir.name
    return f"{entry.run_dir.parent.name}/{entry.run_dir.name}"


class CheckpointTableModel(QAbstractTableModel):
    """Checkpoints with their validation scores; a check box per row, an editable weight when weighted.

    Signals:
        checks_changed: the checked rows or their weights changed (by the user or a call).
    """

    checks_changed = Signal()

    HEADERS = ("Run", "Checkpoint", "Backbone", "Mode", "Epoch", "Val top-1", "Val loss", "Weight", "Picked")
    (COLUMN_RUN, COLUMN_NAME, COLUMN_BACKBONE, COLUMN_MODE, COLUMN_EPOCH, COLUMN_TOP1, COLUMN_LOSS, COLUMN_WEIGHT,
     COLUMN_PICKED) = range(9)
    SORT_ROLE = _Role.UserRole
    PATH_ROLE = _Role.UserRole + 1
    _TIPS = {
        COLUMN_TOP1: "validation top-1 accuracy when the checkpoint was saved",
        COLUMN_LOSS: "validation loss when the checkpoint was saved",
        COLUMN_WEIGHT: "the member's share of the average; edit it with \"Weighted average\" on",
        COLUMN_PICKED: "how many times greedy selection added the checkpoint (the count is its weight)",
    }

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._entries: list[ModelEntry] = []
        self._checked: set[Path] = set()
        self._weights: dict[Path, float] = {}
        self._picks: dict[Path, int] = {}
        self._weighted = False
        self._palette = QPalette()

    # Public API ----------------------------------------------------------------------------------

    def set_entries(self, entries: list[ModelEntry]) -> None:
        """Show these checkpoints; checks, weights and picks of paths still listed are kept.

        ``checks_changed`` is emitted only when a checked checkpoint is no longer listed.
        """
        self.beginResetModel()
        self._entries = list(entries)
        listed = {entry.path for entry in self._entries if entry.is_usable}
        kept = self._checked & listed
        self._picks = {path: count for path, count in self._picks.items() if path in listed}
        self.endResetModel()
        if kept != self._checked:
            self._checked = kept
            self.checks_changed.emit()

    def checked_entries(self) -> list[ModelEntry]:
        """The checked checkpoints, in listing order."""
        return [entry for entry in self._entries if entry.path in self._checked]

    def usable_entries(self) -> list[ModelEntry]:
        """The readable checkpoints (those that can be checked), in listing order."""
        return [entry for entry in self._entries if entry.is_usable]

    def weight(self, path: Path) -> float:
        """The weight of a checkpoint (1 unless edited or set from a manifest)."""
        return self._weights.get(path, 1.0)

    @property
    def weighted(self) -> bool:
        """Whether weights are in use (else every member counts the same)."""
        return self._weighted

    def set_weighted(self, weighted: bool) -> None:
        """Use the weights (the Weight column becomes editable) or the plain mean."""
        if weighted != self._weighted:
            self._weighted = weighted
            self._changed(self.COLUMN_WEIGHT)
            self.checks_changed.emit()

    def set_checked(self, weights: Mapping[Path, float]) -> list[Path]:
        """Check exactly these checkpoints, with these weights (e.g. an ensemble's members).

        Returns:
            The paths that are not listed checkpoints (left unchecked).
        """
        listed = {entry.path.resolve(): entry.path for entry in self._entries if entry.is_usable}
        self._checked = set()
        missing = []
        for path, weight in weights.items():
            shown = listed.get(Path(path).resolve())
            if shown is None:
                missing.append(Path(path))
                continue
            self._checked.add(shown)
            self._weights[shown] = float(weight)
        self._changed(self.COLUMN_RUN, self.COLUMN_WEIGHT)
        self.checks_changed.emit()
        return missing

    def set_picks(self, picks: Mapping[Path, int]) -> None:
        """Greedy selection's counts by checkpoint; the candidates it did not pick have 0."""
        listed = {entry.path.resolve(): entry.path for entry in self._entries}
        self._picks = {listed[Path(path).resolve()]: count for path, count in picks.items()
                       if Path(path).resolve() in listed}
        self._changed(self.COLUMN_PICKED)

    def set_palette(self, palette: QPalette) -> None:
        """The palette that muted and error colours must stay readable on."""
        self._palette = palette
        self._changed(*range(len(self.HEADERS)))

    # Qt model interface --------------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._entries)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _Role.DisplayRole) -> object:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == _Role.DisplayRole:
            return self.HEADERS[section]
        if role == _Role.ToolTipRole:
            return self._TIPS.get(section)
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        flags = super().flags(index)
        if not index.isValid() or not self._entries[index.row()].is_usable:
            return flags
        entry = self._entries[index.row()]
        if index.column() == self.COLUMN_RUN:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        if index.column() == self.COLUMN_WEIGHT and self._weighted and entry.path in self._checked:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = _Role.DisplayRole) -> object:
        if not index.isValid():
            return None
        entry, column = self._entries[index.row()], index.column()
        if role == _Role.DisplayRole:
            return self._text(entry, column)
        if role == _Role.EditRole and column == self.COLUMN_WEIGHT:
            return self.weight(entry.path)
        if role == _Role.CheckStateRole and column == self.COLUMN_RUN and entry.is_usable:
            return Qt.CheckState.Checked if entry.path in self._checked else Qt.CheckState.Unchecked
        if role == self.SORT_ROLE:
            return self._sort_key(entry, column)
        if role == self.PATH_ROLE:
            return str(entry.path)
        if role == _Role.ToolTipRole:
            return entry.problem if not entry.is_usable else str(entry.path)
        if role == _Role.ForegroundRole:
            return self._foreground(entry, column)
        if role == _Role.TextAlignmentRole and column >= self.COLUMN_EPOCH:
            return _RIGHT
        return None

    def setData(self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = _Role.EditRole) -> bool:
        if not index.isValid() or not self._entries[index.row()].is_usable:
            return False
        path, column = self._entries[index.row()].path, index.column()
        if role == _Role.CheckStateRole and column == self.COLUMN_RUN:
            if Qt.CheckState(value) == Qt.CheckState.Checked:
                self._checked.add(path)
            else:
                self._checked.discard(path)
            self._changed(self.COLUMN_RUN, self.COLUMN_WEIGHT, row=index.row())
            self.checks_changed.emit()
            return True
        if role == _Role.EditRole and column == self.COLUMN_WEIGHT:
            try:
                weight = float(value)
            except (TypeError, ValueError):
                return False
            if not (math.isfinite(weight) and weight > 0):
                return False  # a member is left out by unchecking it, not by a weight of 0
            self._weights[path] = weight
            self._changed(self.COLUMN_WEIGHT, row=index.row())
            self.checks_changed.emit()
            return True
        return False

    # Helpers -------------------------------------------------------------------------------------

    def _text(self, entry: ModelEntry, column: int) -> str:
        if column == self.COLUMN_RUN:
            return run_name(entry)
        if column == self.COLUMN_NAME:
            return entry.name if entry.is_usable else f"{entry.name} (unreadable)"
        if column == self.COLUMN_BACKBONE:
            return entry.backbone or "—"
        if column == self.COLUMN_MODE:
            return MODE_NAMES.get(entry.mode or "", entry.mode or "—")
        if column == self.COLUMN_EPOCH:
            return "—" if entry.epoch is None else str(entry.epoch)
        if column == self.COLUMN_TOP1:
            return "—" if entry.val_top1 is None else f"{entry.val_top1:.1%}"
        if column == self.COLUMN_LOSS:
            return "—" if entry.val_loss is None else f"{entry.val_loss:.4f}"
        if column == self.COLUMN_WEIGHT:
            return f"{self.weight(entry.path):g}" if entry.path in self._checked else ""
        picks = self._picks.get(entry.path)
        return "" if picks is None else f"{picks}×"

    def _sort_key(self, entry: ModelEntry, column: int) -> object:
        if column == self.COLUMN_TOP1:
            # Best first when descending: higher accuracy, then lower loss.
            return (-1.0 if entry.val_top1 is None else entry.val_top1,
                    -math.inf if entry.val_loss is None else -entry.val_loss)
        if column == self.COLUMN_LOSS:
            return math.inf if entry.val_loss is None else entry.val_loss
        if column == self.COLUMN_EPOCH:
            return -1 if entry.epoch is None else entry.epoch
        if column == self.COLUMN_WEIGHT:
            return self.weight(entry.path) if entry.path in self._checked else 0.0
        if column == self.COLUMN_PICKED:
            return self._picks.get(entry.path, -1)
        return self._text(entry, column).casefold()

    def _foreground(self, entry: ModelEntry, column: int) -> object:
        if not entry.is_usable:
            return severity_color("error", self._palette)
        muted = (column == self.COLUMN_WEIGHT and not self._weighted) or (
            column == self.COLUMN_PICKED and self._picks.get(entry.path) == 0)
        return self._palette.color(QPalette.ColorRole.PlaceholderText) if muted else None

    def _changed(self, *columns: int, row: int | None = None) -> None:
        if not self._entries:
            return
        first, last = (0, len(self._entries) - 1) if row is None else (row, row)
        for column in columns:
            self.dataChanged.emit(self.index(first, column), self.index(last, column))


class CheckpointSortProxy(QSortFilterProxyModel):
    """Sorts by ``CheckpointTableModel.SORT_ROLE``, comparing the Python values (tuples included)."""

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        return left.data(CheckpointTableModel.SORT_ROLE) < right.data(CheckpointTableModel.SORT_ROLE)

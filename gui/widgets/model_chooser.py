"""A combo box of the project's models (checkpoints, ensembles, and exports where a page can use them) with a Browse
button, and how models are named.

The list comes from ``engine.evaluation.catalog.list_models`` (and ``engine.export.listing`` for
exports) on a pool thread, so opening a project with many runs never stalls the window. Each
item shows the run, the checkpoint's name and its validation accuracy; Browse adds any
checkpoint, run folder, manifest or export's ``metadata.json`` from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QSizePolicy, QWidget

from engine.core.errors import TransferStudioError
from engine.evaluation.catalog import ModelEntry, describe_checkpoint, describe_manifest, list_models
from engine.export.export_folders import export_folder_of
from engine.export.listing import describe_export, list_models_and_exports
from engine.models.checkpoint_metadata import resolve_checkpoint_path
from gui.services.workers import Worker, bound_to, run_in_thread_pool

KINDS = ("checkpoint", "ensemble")
# Pages that predict or evaluate can run an export too: the very file a user deploys.
KINDS_WITH_EXPORTS = (*KINDS, "export")
# How lists and tables name a run's or a checkpoint's training mode.
MODE_NAMES = {"feature_extraction": "feature extraction", "fine_tune": "fine-tune", "two_stage": "two-stage"}


def entry_text(entry: ModelEntry) -> str:
    """How a model is named in lists: run · checkpoint, with its validation accuracy."""
    if entry.kind == "unreadable":
        return f"{entry.label} (unreadable)"
    if entry.val_top1 is None:
        return entry.label
    return f"{entry.label} · val {entry.val_top1:.1%}"


def entry_tooltip(entry: ModelEntry) -> str:
    """Details of a model for a tooltip."""
    if entry.kind == "unreadable":
        return entry.problem
    lines = [str(entry.path)]
    if entry.kind == "checkpoint":
        lines.append(f"{entry.backbone} · {entry.mode} · epoch {entry.epoch}")
        if entry.val_loss is not None:
            lines.append(f"val loss {entry.val_loss:.4f}")
    elif entry.kind == "export":
        lines.append(f"the exported {entry.name} file, run in its own runtime" +
                     (f" · {entry.backbone}" if entry.backbone else ""))
    else:
        lines.extend(str(member) for member in entry.members)
    lines.append(f"{len(entry.classes)} classes")
    return "\n".join(lines)


def load_entry(path: str | Path) -> ModelEntry:
    """The entry of a file the user chose: a checkpoint, a run folder (its best), a manifest or an export.

    Raises:
        TransferStudioError: nothing loadable is there.
    """
    candidate = Path(path)
    export = export_folder_of(candidate)
    if export is not None:
        entry = describe_export(export)
    elif candidate.suffix.lower() == ".json" and not candidate.with_suffix(".safetensors").exists():
        entry = describe_manifest(candidate)
    else:
        entry = describe_checkpoint(resolve_checkpoint_path(candidate))
    if not entry.is_usable:
        raise TransferStudioError(entry.problem)
    return entry


class ModelChooser(QWidget):
    """Pick a model of the project, or browse for one.

    Signals:
        model_changed: the chosen ``ModelEntry``, or None when there is none to choose.
        models_listed: the entries just listed (after ``set_project`` or ``refresh``).
        browse_failed: the message when a browsed file cannot be used.

    Args:
        kinds: which kinds to offer: ``checkpoint``, ``ensemble`` or both.
        parent: the parent widget.
    """

    model_changed = Signal(object)
    models_listed = Signal(list)
    browse_failed = Signal(str)

    def __init__(self, kinds: tuple[str, ...] = KINDS, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._kinds = kinds
        self._project_dir: Path | None = None
        self._worker: Worker | None = None
        self._wanted: Path | None = None
        self.combo = QComboBox(self)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(30)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setPlaceholderText("no trained model in this project yet")
        self.combo.currentIndexChanged.connect(self._on_combo_index_changed)
        self.browse_button = QPushButton("Browse…", self)
        self.browse_button.setToolTip("use a checkpoint, run folder or ensemble manifest from elsewhere")
        self.browse_button.clicked.connect(self._on_browse_button_clicked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.browse_button)

    @property
    def project_dir(self) -> Path | None:
        """The project whose models are listed."""
        return self._project_dir

    def current(self) -> ModelEntry | None:
        """The chosen model, if any."""
        entry = self.combo.currentData()
        return entry if isinstance(entry, ModelEntry) else None

    def entries(self) -> list[ModelEntry]:
        """Every model in the list, in order."""
        return [self.combo.itemData(index) for index in range(self.combo.count())]

    def set_project(self, project_dir: Path | None) -> None:
        """List the models of another project (or none)."""
        self._project_dir = project_dir
        self.refresh()

    def refresh(self, select: Path | None = None) -> None:
        """List the project's models again, keeping (or moving to) the chosen one.

        Args:
            select: the model to choose once listed (e.g. a manifest just saved).
        """
        current = self.current()
        self._wanted = select or (current.path if current else None)
        if self._worker is not None:
            self._worker.abort()
        if self._project_dir is None:
            self._show([])
            return
        self._worker = run_in_thread_pool(_list_job, self._project_dir, "export" in self._kinds)
        worker = self._worker
        worker.signals.returned.connect(bound_to(self, lambda entries: self._on_worker_returned(worker, entries)))

    def select(self, entry: ModelEntry) -> None:
        """Choose ``entry``, adding it to the list if it is not there."""
        for index in range(self.combo.count()):
            if self.combo.itemData(index).path == entry.path:
                self.combo.setCurrentIndex(index)
                return
        self._add(entry)
        self.combo.setCurrentIndex(self.combo.count() - 1)

    def _on_worker_returned(self, worker: Worker, entries: list[ModelEntry]) -> None:
        if worker is self._worker and not worker.abort_requested:
            self._worker = None
            self._show([entry for entry in entries if entry.kind in self._kinds])

    def _show(self, entries: list[ModelEntry]) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        for entry in entries:
            self._add(entry)
        chosen = next((index for index, entry in enumerate(entries) if entry.path == self._wanted), 0)
        self.combo.setCurrentIndex(chosen if entries else -1)
        self.combo.blockSignals(False)
        self.models_listed.emit(entries)
        self.model_changed.emit(self.current())

    def _add(self, entry: ModelEntry) -> None:
        self.combo.addItem(entry_text(entry), entry)
        self.combo.setItemData(self.combo.count() - 1, entry_tooltip(entry), Qt.ItemDataRole.ToolTipRole)

    def _on_combo_index_changed(self, _index: int) -> None:
        entry = self.current()
        self.combo.setToolTip(entry_tooltip(entry) if entry is not None else "")
        self.model_changed.emit(self.current())

    def _on_browse_button_clicked(self) -> None:
        kinds = "Models (*.safetensors *.json)" if "ensemble" in self._kinds else "Checkpoints (*.safetensors)"
        if "export" in self._kinds:
            kinds = "Models and exports (*.safetensors *.json)"
        start = str(self._project_dir or Path.home())
        path, _filter = QFileDialog.getOpenFileName(self, "Choose a model", start, kinds)
        if path:
            self.choose_file(path)

    def choose_file(self, path: str | Path) -> bool:
        """Use a model file from anywhere; False (and ``browse_failed``) when it cannot be used."""
        try:
            entry = load_entry(path)
        except TransferStudioError as error:
            self.browse_failed.emit(str(error))
            return False
        if entry.kind not in self._kinds:
            self.browse_failed.emit(f"{path}: a {entry.kind} cannot be used here")
            return False
        self.select(entry)
        return True


def _list_job(project_dir: Path, with_exports: bool, *, progress: Callable[[int, int], None],
              should_abort: Callable[[], bool]) -> list[ModelEntry]:
    return list_models_and_exports(project_dir) if with_exports else list_models(project_dir)

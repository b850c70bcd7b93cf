"""The "Ensemble" page: combine the project's checkpoints, by hand or greedily, save, soup and evaluate them.

Listing the project and reading manifests or reports run on pool threads; everything
that writes files runs as a CLI child in the "Combine" box (``gui.pages.ensemble.ensemble_builder``),
so the page does exactly what the command line would, refusals included.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig
from engine.core.paths import project_dir_for
from engine.evaluation.catalog import ModelEntry, list_models
from engine.evaluation.manifest import EnsembleManifest, load_manifest
from gui.pages.base import Page
from gui.pages.ensemble.checkpoint_table import CheckpointSortProxy, CheckpointTableModel
from gui.pages.ensemble.ensemble_builder import EnsembleBuilder
from gui.pages.ensemble.ensemble_results import EnsembleResults, read_report
from gui.services.config_state import ConfigState
from gui.services.workers import Worker, run_in_thread_pool
from gui.style import severity_color
from gui.widgets.message_panel import MessageStack
from gui.widgets.model_chooser import entry_tooltip
from gui.widgets.page_header import PageHeader


class EnsemblePage(Page):
    """Every checkpoint of the open project, to combine into an ensemble or a soup and evaluate.

    Args:
        state: the config being edited; its ``data.path`` names the project and the images
            that greedy selection and evaluation score on.
        parent: the parent widget.
    """

    title = "Ensemble"
    icon = QStyle.StandardPixmap.SP_FileDialogListView

    manifest_saved = Signal(object)  # Path of a manifest or soup just written into the project
    evaluate_requested = Signal(object)  # Path of a saved ensemble to open on the Evaluate page
    models_listed = Signal(list)  # the project's ModelEntry list (checkpoints, then ensembles) after a refresh
    manifest_applied = Signal(object)  # Path of the manifest whose members the table now checks
    report_shown = Signal(object)  # Path of the evaluation report folder now shown

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._project_dir: Path | None = None
        self._workers: dict[str, Worker] = {}  # the latest pool job of each kind: list, manifest, report
        self._newly_saved: Path | None = None  # to select in the saved list once it is listed

        self.header = PageHeader(self.title, "List the project's checkpoints and ensembles again", self)
        self.header.refresh_clicked.connect(self.refresh)

        self.model = CheckpointTableModel(self)
        self.model.checks_changed.connect(self._on_model_checks_changed)
        self.proxy = CheckpointSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(CheckpointTableModel.COLUMN_TOP1, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(CheckpointTableModel.COLUMN_RUN, QHeaderView.ResizeMode.Stretch)
        self.selection_label = QLabel(self)
        self.weighted_check = QCheckBox("Weighted average", self)
        self.weighted_check.setToolTip("Give members different weights (double-click a weight to edit it); "
                                       "off: every member counts the same")
        self.weighted_check.toggled.connect(self.model.set_weighted)

        self.builder = EnsembleBuilder(self.model, self)
        self.builder.manifest_saved.connect(self._on_builder_manifest_saved)
        self.builder.greedy_finished.connect(self._on_builder_greedy_finished)
        self.builder.evaluated.connect(self._on_builder_evaluated)
        self.builder.busy_changed.connect(self._update_actions)
        self.results = EnsembleResults(self)
        self.saved_list = QListWidget(self)
        self.saved_list.setMinimumHeight(60)
        self.saved_list.setSizeAdjustPolicy(QListWidget.SizeAdjustPolicy.AdjustToContents)
        self.saved_list.currentItemChanged.connect(self._update_actions)
        self.saved_list.itemDoubleClicked.connect(self.load_selected)
        self.load_button = QPushButton("Load", self)
        self.load_button.setToolTip("Check this ensemble's members in the table, with its weights")
        self.load_button.clicked.connect(self.load_selected)
        self.detail_button = QPushButton("Evaluate in detail", self)
        self.detail_button.setToolTip("Open the Evaluate page on this ensemble")
        self.detail_button.clicked.connect(self.request_detail)

        self._stack = MessageStack(self._create_content(), self)
        self.message_panel = self._stack.message_panel
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.header)
        layout.addWidget(self._stack, 1)

        self.model.set_palette(self.palette())
        state.changed.connect(self._on_state_changed)
        self.refresh()

    @property
    def project_dir(self) -> Path | None:
        """The project whose checkpoints are listed; None when no data folder is open."""
        return self._project_dir

    def refresh(self) -> None:
        """List the project's checkpoints and ensembles again (on a pool thread); ``models_listed`` follows."""
        data_path = self._state.config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        if project_dir != self._project_dir:
            self._project_dir = project_dir
            self.model.set_entries([])
            self.saved_list.clear()
            self.results.clear()
        self.builder.set_project(project_dir, data_path)
        if project_dir is None:
            self._workers.pop("list", None)
            self.header.summary_label.clear()
            self._stack.show_message("No project open",
                                     "Open a data folder on the Project page; its checkpoints can be combined here.")
            self.models_listed.emit([])
            return
        self._start_job("list", self._on_list_worker_returned, _list_job, project_dir)

    def load_selected(self) -> None:
        """Check the members of the selected saved ensemble, with its weights."""
        entry = self._selected_ensemble()
        if entry is not None and entry.is_usable and not self.builder.is_running:
            self._apply_manifest(entry.path)

    def request_detail(self) -> None:
        """Ask the window to open the Evaluate page on the selected saved ensemble."""
        entry = self._selected_ensemble()
        if entry is not None and entry.is_usable:
            self.evaluate_requested.emit(entry.path)

    # Qt event handlers ---------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.model.set_palette(self.palette())
        super().changeEvent(event)

    # Set-up and helpers --------------------------------------------------------------------------

    def _create_content(self) -> QWidget:
        checks_row = QHBoxLayout()
        checks_row.addWidget(self.selection_label, 1)
        checks_row.addWidget(self.weighted_check)
        checkpoints = QGroupBox("Checkpoints of this project", self)
        checkpoints_layout = QVBoxLayout(checkpoints)
        checkpoints_layout.addWidget(self.table, 1)
        checkpoints_layout.addLayout(checks_row)

        saved = QGroupBox("Saved ensembles", self)
        saved_layout = QVBoxLayout(saved)
        saved_layout.addWidget(self.saved_list, 1)
        saved_buttons = QHBoxLayout()
        saved_buttons.addWidget(self.load_button)
        saved_buttons.addWidget(self.detail_button)
        saved_buttons.addStretch(1)
        saved_layout.addLayout(saved_buttons)
        bottom = QHBoxLayout()
        bottom.addWidget(self.results, 3)
        bottom.addWidget(saved, 2)
        content = QWidget(self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(checkpoints, 1)  # the rest keeps its natural height: a taller window shows more rows
        layout.addWidget(self.builder)
        layout.addLayout(bottom)
        return content

    def _selected_ensemble(self) -> ModelEntry | None:
        item = self.saved_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _show_ensembles(self, ensembles: list[ModelEntry]) -> None:
        current = self._selected_ensemble()
        selected = self._newly_saved or (current.path if current is not None else None)
        self._newly_saved = None
        self.saved_list.clear()
        for entry in ensembles:
            count = len(entry.members)
            text = (f"{entry.name} · {count} {'member' if count == 1 else 'members'}" if entry.is_usable
                    else f"{entry.name} (unreadable)")
            item = QListWidgetItem(text, self.saved_list)
            item.setData(Qt.ItemDataRole.UserRole, entry)
            item.setToolTip(entry_tooltip(entry))
            if not entry.is_usable:
                item.setForeground(severity_color("error", self.palette()))
            if entry.path == selected:
                self.saved_list.setCurrentItem(item)
        if self.saved_list.currentItem() is None and self.saved_list.count():
            self.saved_list.setCurrentRow(0)

    def _apply_manifest(self, path: Path, candidates: list[Path] | None = None) -> None:
        """Check a manifest's members (read and verified on a pool thread); with ``candidates``, greedy's picks."""
        self._start_job("manifest", self._on_manifest_worker_returned, _manifest_job, path, candidates)

    def _start_job(self, kind: str, returned: Callable[[Any], None], job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` on the pool; ``returned`` gets its result unless a newer job of ``kind`` started."""
        previous = self._workers.get(kind)
        if previous is not None:
            previous.abort()
        worker = run_in_thread_pool(job, *args)
        worker.signals.returned.connect(returned)
        worker.signals.errored.connect(self._on_worker_errored)
        self._workers[kind] = worker

    def _finished_job(self) -> str | None:
        """The kind of the job whose signal is being handled, if it is still the latest of its kind."""
        for kind, worker in self._workers.items():
            if worker.signals is self.sender():
                del self._workers[kind]
                return kind
        return None

    def _update_actions(self) -> None:
        checked, usable = len(self.model.checked_entries()), len(self.model.usable_entries())
        if checked:
            rule = "weighted mean" if self.model.weighted else "mean"
            self.selection_label.setText(f"{checked} checked: the ensemble is the {rule} of their predicted "
                                         "probabilities.")
        else:
            self.selection_label.setText(f"Check members by hand, or let greedy selection pick among all {usable}."
                                         if usable else "")
        ensemble = self._selected_ensemble()
        usable_ensemble = ensemble is not None and ensemble.is_usable
        self.load_button.setEnabled(usable_ensemble and not self.builder.is_running)
        self.detail_button.setEnabled(usable_ensemble)

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, config: RunConfig) -> None:
        data_path = config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        if project_dir != self._project_dir:
            self.refresh()
        else:
            self.builder.set_project(project_dir, data_path)  # e.g. a CSV beside the folder: the same project

    def _on_list_worker_returned(self, listing: tuple[list[ModelEntry], list[ModelEntry]]) -> None:
        if self._finished_job() is None or self._project_dir is None:
            return  # a listing that a newer refresh replaced
        checkpoints, ensembles = listing
        self.model.set_entries(checkpoints)
        self._show_ensembles(ensembles)
        self.header.summary_label.setText(_summary_text(checkpoints, ensembles, self._project_dir))
        if checkpoints:
            self._stack.show_content()
        else:
            self._stack.show_message("Train a model first", "No checkpoints in this project yet: every run you train "
                                     "leaves its best and last checkpoints here, to combine into an ensemble.",
                                     icon=QStyle.StandardPixmap.SP_FileDialogInfoView)
        self._update_actions()
        self.models_listed.emit([*checkpoints, *ensembles])

    def _on_worker_errored(self, error: Exception) -> None:
        kind = self._finished_job()
        if kind == "list":
            self._stack.show_message("Cannot list the models", str(error),
                                     icon=QStyle.StandardPixmap.SP_MessageBoxCritical)
        elif kind is not None:
            self.builder.show_status(str(error), "error")

    def _on_manifest_worker_returned(self, result: tuple[Path, EnsembleManifest, list[Path] | None]) -> None:
        if self._finished_job() is None:
            return
        path, manifest, candidates = result
        weights = {member.path: member.weight for member in manifest.members}
        missing = self.model.set_checked(weights)
        self.weighted_check.setChecked(manifest.combine == "weighted")
        if candidates is None:
            self.model.set_picks({})
            self.builder.show_status(f"Loaded {path.stem}: its {len(weights)} members are checked.")
        else:
            self.model.set_picks({candidate: round(weights.get(candidate.resolve(), 0)) for candidate in candidates})
            picks = round(sum(weights.values()))
            why = (": adding any other did not improve the validation score" if len(weights) == 1
                   else f" ({picks} picks in all)")
            self.builder.show_status(f"Greedy selection kept {len(weights)} of {len(candidates)} checkpoints{why}; "
                                     f"saved as {path.name}.")
        if missing:
            self.builder.show_status(f"{len(missing)} of the members of {path.stem} are not checkpoints of this "
                                     f"project ({missing[0]}), so they are not checked.", "warning")
        self.builder.set_current(path)  # after the checks, since changing them clears it
        self.manifest_applied.emit(path)

    def _on_model_checks_changed(self) -> None:
        self._update_actions()

    def _on_builder_manifest_saved(self, path: Path) -> None:
        self._newly_saved = path
        self.refresh()
        self.manifest_saved.emit(path)

    def _on_builder_greedy_finished(self, path: Path, candidates: list[Path]) -> None:
        self._apply_manifest(path, candidates)

    def _on_builder_evaluated(self, folder: Path) -> None:
        self._start_job("report", self._on_report_worker_returned, _report_job, folder)

    def _on_report_worker_returned(self, result: tuple[Path, dict[str, Any]]) -> None:
        if self._finished_job() is None:
            return
        folder, report = result
        self.results.show_report(folder, report)
        self.builder.show_status(f"Evaluated: the report is in {folder.name}.")
        self.report_shown.emit(folder)


def _summary_text(checkpoints: list[ModelEntry], ensembles: list[ModelEntry], project_dir: Path) -> str:
    """E.g. "4 checkpoints of photos · 1 saved ensemble"."""
    text = f"{len(checkpoints)} {'checkpoint' if len(checkpoints) == 1 else 'checkpoints'} of {project_dir.parent.name}"
    if ensembles:
        text += f" · {len(ensembles)} saved {'ensemble' if len(ensembles) == 1 else 'ensembles'}"
    return text


def _list_job(project_dir: Path, *, progress: Callable[[int, int], None],
              should_abort: Callable[[], bool]) -> tuple[list[ModelEntry], list[ModelEntry]]:
    """The project's checkpoints and its ensemble manifests, apart."""
    entries = list_models(project_dir)
    checkpoints = [entry for entry in entries if entry.path.suffix == ".safetensors"]
    ensembles = [entry for entry in entries if entry.path.suffix != ".safetensors"]
    return checkpoints, ensembles


def _manifest_job(path: Path, candidates: list[Path] | None, *, progress: Callable[[int, int], None],
                  should_abort: Callable[[], bool]) -> tuple[Path, EnsembleManifest, list[Path] | None]:
    """The manifest, its members verified (present, unchanged, same classes), with the request's details."""
    return path, load_manifest(path), candidates


def _report_job(folder: Path, *, progress: Callable[[int, int], None],
                should_abort: Callable[[], bool]) -> tuple[Path, dict[str, Any]]:
    return folder, read_report(folder)

"""The Ensemble page's "Combine" box: save, pick greedily, soup or evaluate the checked checkpoints.

Each action runs ``main.py ensemble build`` or ``main.py evaluate`` as a child process
through ``CommandRunner`` (they hash, read and write files); Evaluate first saves the
checked rows when they are not saved yet. Refusals are the CLI's own one-line messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette, QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.evaluation.catalog import ModelEntry, ensembles_folder
from gui.pages.ensemble.checkpoint_table import CheckpointTableModel
from gui.services.command_runner import CommandRunner
from gui.style import severity_color

EVALUATIONS_FOLDER = "evaluations"
_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_METRICS = (("log_loss", "log-loss"), ("accuracy", "accuracy"))
_SOUPS = (("uniform", "uniform soup"), ("greedy", "greedy soup"))
_HINT = ("Ensembles and soups are saved in the project's ensembles folder. Evaluate scores the ensemble and each "
         "member on the validation images, which none of them trained on.")


def default_name() -> str:
    """A fresh ensemble name, e.g. ``ensemble-20261124-101500``."""
    return f"ensemble-{_stamp()}"


@dataclass
class _Step:
    """One CLI command of a job and what to do once it succeeded."""

    command: str
    arguments: list[str]
    doing: str  # what the status line says while it runs
    output: Path  # the file or folder it writes
    succeeded: Callable[[], None] = field(default=lambda: None)


class EnsembleBuilder(QGroupBox):
    """The actions on the checked rows of a ``CheckpointTableModel``, with a name, options and a status line.

    Signals:
        manifest_saved: Path of a manifest or soup just written into the project.
        greedy_finished: (manifest Path, candidate checkpoint Paths) after greedy selection.
        evaluated: Path of the report folder an evaluation just wrote.
        busy_changed: True while a command runs.

    Args:
        model: the checkpoints, their checks and weights.
        parent: the parent widget.
    """

    manifest_saved = Signal(object)
    greedy_finished = Signal(object, list)
    evaluated = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, model: CheckpointTableModel, parent: QWidget | None = None) -> None:
        super().__init__("Combine the checked checkpoints", parent)
        self._model = model
        self._project_dir: Path | None = None
        self._data_path = ""
        self._current: Path | None = None
        self._steps: list[_Step] = []
        self._running: _Step | None = None
        self._stopping = False
        self.runner = CommandRunner(self)
        self.runner.finished.connect(self._on_runner_finished)
        model.checks_changed.connect(self._on_model_checks_changed)
        model.modelReset.connect(self._update_actions)

        self.name_edit = QLineEdit(default_name(), self)
        self.name_edit.setValidator(QRegularExpressionValidator(_NAME_PATTERN, self.name_edit))
        self.name_edit.setToolTip("File name in the project's ensembles folder (a soup gets \"-soup\" added)")
        self.save_button = self._button("Save ensemble", self.save_ensemble,
                                        "Write the checked checkpoints as an ensemble manifest")
        self.evaluate_button = self._button("Evaluate", self.evaluate_ensemble,
                                            "Score the ensemble and each member on the validation images "
                                            "(saving the checked checkpoints first if needed)")
        self.metric_combo = self._combo(_METRICS, "What greedy selection optimises on the validation images")
        self.max_members_spin = QSpinBox(self)
        self.max_members_spin.setRange(0, 99)
        self.max_members_spin.setSpecialValueText("any")
        self.max_members_spin.setToolTip("Most distinct members greedy selection may pick")
        self.greedy_button = self._button("Pick greedily", self.pick_greedily,
                                          "Caruana's forward selection on validation, among the checked checkpoints "
                                          "(all when none is checked); one may be picked more than once")
        self.soup_combo = self._combo(_SOUPS, "uniform: average all checked; greedy: add members best first while "
                                              "validation accuracy does not drop")
        self.soup_button = self._button("Weight soup", self.make_soup,
                                        "Average the checked checkpoints' weights into one checkpoint (they must "
                                        "share architecture and starting weights)")
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumWidth(120)
        self.cancel_button = self._button("Cancel", self.cancel, "Stop the running command")
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # Room for a refusal of three lines: a squeezed page would otherwise clip it to one.
        self.status_label.setMinimumHeight(3 * self.status_label.fontMetrics().lineSpacing())

        self.name_edit.setMinimumWidth(260)
        first = QHBoxLayout()
        for widget in (QLabel("Name", self), self.name_edit, self.save_button, self.evaluate_button):
            first.addWidget(widget)
        first.addStretch(1)
        second = QHBoxLayout()
        for control in (QLabel("Greedy selection by", self), self.metric_combo, QLabel("with at most", self),
                        self.max_members_spin, QLabel("members", self), self.greedy_button):
            second.addWidget(control)
        second.addStretch(1)
        second.addWidget(self.soup_combo)
        second.addWidget(self.soup_button)
        third = QHBoxLayout()
        third.addWidget(self.progress_bar, 0, Qt.AlignmentFlag.AlignTop)
        third.addWidget(self.status_label, 1)
        third.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        for row in (first, second, third):
            layout.addLayout(row)
        self.show_status("")
        self._set_busy(False)

    @property
    def is_running(self) -> bool:
        """Whether a command is running."""
        return self.runner.is_running

    @property
    def current(self) -> Path | None:
        """The saved manifest or soup the checked rows are, if any: what Evaluate scores as it is."""
        return self._current

    def set_current(self, path: Path | None) -> None:
        """Say that the checked rows are this saved manifest (after loading it), or none."""
        self._current = path
        self._update_actions()

    def set_project(self, project_dir: Path | None, data_path: str) -> None:
        """The project to write into and the dataset whose validation images score the models."""
        if project_dir != self._project_dir:
            self.cancel()
            self._current = None
            self.show_status("")
        self._project_dir, self._data_path = project_dir, data_path
        self._update_actions()

    def show_status(self, text: str, severity: str | None = None) -> None:
        """Show an outcome in the status line; ``severity`` ("error", "warning") colours it; "" shows a hint."""
        if severity:
            color = severity_color(severity, self.palette()).name()
        else:
            color = self.palette().color(QPalette.ColorRole.PlaceholderText).name() if not text else ""
        self.status_label.setStyleSheet(f"color: {color}" if color else "")
        self.status_label.setText(text or _HINT)

    def save_ensemble(self) -> None:
        """Write the checked checkpoints (with their weights, when weighted) as ``ensembles/NAME.json``."""
        step = self._save_step()
        if step is not None:
            self._start([step])

    def pick_greedily(self) -> None:
        """Greedy selection among the checked checkpoints (all when none is checked), saved as ``NAME.json``."""
        candidates = self._model.checked_entries() or self._model.usable_entries()
        target = self._new_file(".json")
        if target is None:
            return
        arguments = ["build", *_paths(candidates), "--greedy", "--metric", self.metric_combo.currentData(),
                     "--out", str(target), "--data", self._data_path]
        if self.max_members_spin.value():
            arguments += ["--max-members", str(self.max_members_spin.value())]

        def succeeded() -> None:
            self._after_write(target)
            self.greedy_finished.emit(target, [entry.path for entry in candidates])

        self._start([_Step("ensemble", arguments, f"Picking greedily among {len(candidates)} checkpoints on the "
                                                  "validation images…", target, succeeded)])

    def make_soup(self) -> None:
        """Average the checked checkpoints' weights into ``ensembles/NAME-soup.safetensors``."""
        target = self._new_file("-soup.safetensors")
        if target is None:
            return
        method = self.soup_combo.currentData()
        arguments = ["build", *_paths(self._model.checked_entries()), "--soup", method, "--out", str(target)]
        if method == "greedy":
            arguments += ["--data", self._data_path]

        def succeeded() -> None:
            self._after_write(target)
            self._current = target
            self.show_status(f"Soup written to {self._shown(target)}: Evaluate scores it.")

        self._start([_Step("ensemble", arguments, f"Averaging weights ({method} soup)…", target, succeeded)])

    def evaluate_ensemble(self) -> None:
        """Score the current ensemble or soup (saving the checked rows first if they are not saved) on validation."""
        if self._project_dir is None:
            return
        steps = []
        model = self._current
        if model is None:
            step = self._save_step()
            if step is None:
                return
            steps.append(step)
            model = step.output
        folder = self._project_dir / EVALUATIONS_FOLDER / f"{model.stem}-val-{_stamp()}"
        steps.append(_Step("evaluate", [str(model), self._data_path, "--out", str(folder)],
                           f"Evaluating {model.stem} on the validation images…", folder,
                           lambda: self.evaluated.emit(folder)))
        self._start(steps)

    def cancel(self) -> None:
        """Stop the running command; the steps after it are dropped."""
        self._steps = []
        if self.runner.is_running:
            self._stopping = True
            self.runner.stop()

    # Helpers -------------------------------------------------------------------------------------

    def _button(self, text: str, slot: Callable[[], None], tip: str) -> QPushButton:
        button = QPushButton(text, self)
        button.setToolTip(tip)
        button.clicked.connect(slot)
        return button

    def _combo(self, choices: tuple[tuple[str, str], ...], tip: str) -> QComboBox:
        combo = QComboBox(self)
        for value, label in choices:
            combo.addItem(label, value)
        combo.setToolTip(tip)
        return combo

    def _shown(self, path: Path) -> str:
        project = self._project_dir
        return str(path.relative_to(project)) if project is not None and path.is_relative_to(project) else str(path)

    def _new_file(self, suffix: str) -> Path | None:
        """``ensembles/NAME<suffix>`` for the name typed; None (and why, in the status line) if it cannot be."""
        name = self.name_edit.text().strip()
        if self._project_dir is None:
            return None
        if not name:
            self.show_status("Type a name for the ensemble first.", "error")
            return None
        target = ensembles_folder(self._project_dir) / f"{name}{suffix}"
        if target.exists():
            self.show_status(f"{self._shown(target)} exists already: choose another name.", "error")
            return None
        return target

    def _save_step(self) -> _Step | None:
        members = self._model.checked_entries()
        target = self._new_file(".json") if members else None
        if target is None:
            return None
        arguments = ["build", *_paths(members), "--out", str(target)]
        if self._model.weighted:
            arguments += ["--weights", *(f"{self._model.weight(entry.path):g}" for entry in members)]

        def succeeded() -> None:
            self._after_write(target)
            self._current = target
            self.show_status(f"Saved {self._shown(target)} with {len(members)} members.")

        return _Step("ensemble", arguments, f"Saving the ensemble of {len(members)} checkpoints…", target, succeeded)

    def _after_write(self, target: Path) -> None:
        self.name_edit.setText(default_name())
        self.manifest_saved.emit(target)

    def _start(self, steps: list[_Step]) -> None:
        if not self.runner.is_running and self._project_dir is not None:
            self._steps = list(steps)
            self._run_next()

    def _run_next(self) -> None:
        self._running = self._steps.pop(0)
        self._stopping = False
        self.show_status(self._running.doing)
        self.runner.start(self._running.command, self._running.arguments)
        self._set_busy(True)

    def _set_busy(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self._update_actions()
        self.busy_changed.emit(busy)

    def _update_actions(self) -> None:
        idle = not self.runner.is_running and self._project_dir is not None
        checked = len(self._model.checked_entries())
        self.save_button.setEnabled(idle and checked > 0)
        self.evaluate_button.setEnabled(idle and (checked > 0 or self._current is not None))
        self.greedy_button.setEnabled(idle and (checked or len(self._model.usable_entries())) > 1)
        self.soup_button.setEnabled(idle and checked > 1)

    # Slots ---------------------------------------------------------------------------------------

    def _on_model_checks_changed(self) -> None:
        self._current = None
        self._update_actions()

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        step, self._running = self._running, None
        if not succeeded:
            self._steps = []
            if self._stopping:
                self.show_status("Stopped.")
            else:
                # Paths inside the project, relative to it: the message stays readable in two or three lines.
                self.show_status(message.replace(f"{self._project_dir}{os.sep}", ""), "error")
        elif step is not None:
            step.succeeded()
        if self._steps:
            self._run_next()
        else:
            self._set_busy(False)


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _paths(entries: list[ModelEntry]) -> list[str]:
    return [str(entry.path) for entry in entries]

"""The "Train" page: start and stop a training run, and follow it live.

A run is ``main.py train`` in a child process (through ``RunController``); the page
shows its progress and ETA, the device it trains on and why, live curves, the doctor's
diagnoses with their fixes, and a log, all read from the run folder's events. The
command that reproduces the run can be copied for a terminal. The Auto box (``AutoPanel``)
runs ``main.py auto`` instead: one run of either kind at a time.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import OptimConfig, RunConfig, save_config
from engine.core.events import BatchSizeChanged, DiagnosisRaised, RunStarted, StageStarted
from engine.core.paths import project_dir_for
from engine.training.runfolder import RunFolder, new_run_dir
from gui.pages.base import Page, PageContext
from gui.pages.train.auto_panel import AutoPanel
from gui.pages.train.curves import TrainingCurves
from gui.pages.train.doctor_panel import DoctorPanel
from gui.pages.train.run_log import RunLog, RunProgress, describe_device, describe_event
from gui.services.config_state import ConfigState
from gui.services.run_controller import TERMINAL_EVENTS, RunController
from gui.style import ok_color, severity_color
from gui.widgets.elided_label import ElidedLabel

START_TOOLTIP = "Train with the current settings; the run is saved in the dataset's .transfer-studio/runs folder."
STOP_TOOLTIP = "Stop after the current batch and save a checkpoint you can resume from."


def cli_command(data_path: str, config_path: Path) -> str:
    """The terminal command that trains on ``data_path`` with the config file, quoted for this platform."""
    arguments = ["python", "main.py", "train", data_path, "--config", str(config_path)]
    return subprocess.list2cmdline(arguments) if os.name == "nt" else shlex.join(arguments)


class TrainPage(Page):
    """Starts training runs of the edited config and shows them as they go.

    Args:
        state: the config being edited; runs use it as it is when Start is pressed.
        controller: runs the child process; it may be shared with other pages, so the
            page follows only the runs it started itself.
        parent: the parent widget.
    """

    title = "Train"
    icon = QStyle.StandardPixmap.SP_MediaPlay

    run_finished = Signal(object)  # Path of the run folder, whatever the outcome
    auto_finished = Signal(object)  # Path of the Auto folder (None if it made none): new runs in the project

    @classmethod
    def create(cls, context: PageContext, parent: QWidget | None = None) -> TrainPage:  # type: ignore[override]
        return cls(context.state, context.controller, parent)

    def __init__(self, state: ConfigState, controller: RunController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.controller = controller
        self._run_dir: Path | None = None
        self._run_data: str = ""
        self._pending_config: Path | None = None
        self._following = False  # a run started here is going
        self._stop_requested = False
        self._progress = RunProgress()
        self._final_event: dict[str, Any] | None = None  # run_finished, run_cancelled or run_failed
        self._started_event: dict[str, Any] = {}  # the latest run_started or stage_started
        self._micro_batch_size: int | None = None  # images per forward pass after a batch split

        style = self.style()
        self.start_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Start training", self)
        self.start_button.clicked.connect(self._on_start_button_clicked)
        self.stop_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "Stop", self)
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.copy_command_button = QPushButton("Copy CLI command", self)
        self.copy_command_button.clicked.connect(self._on_copy_command_button_clicked)
        self.command_label = ElidedLabel(self)
        self.command_label.setStyleSheet("color: palette(placeholder-text);")
        self.outcome_label = QLabel(self)
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outcome_label.hide()
        self.status_label = QLabel(self)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setFixedWidth(260)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.device_label = QLabel(self)
        self.device_label.setWordWrap(True)
        self.device_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.device_label.setStyleSheet("color: palette(placeholder-text);")
        self.device_label.hide()

        self.auto_panel = AutoPanel(self)
        self.auto_panel.running_changed.connect(self._on_auto_panel_running_changed)
        self.auto_panel.auto_finished.connect(self.auto_finished)
        self.auto_panel.runner.line_printed.connect(self._on_auto_panel_line_printed)
        self.auto_panel.set_data_path(state.config.data.path)

        self.curves = TrainingCurves(self)
        self.doctor_panel = DoctorPanel(state, self)
        self.doctor_panel.fix_applied.connect(self._on_doctor_panel_fix_applied)
        self.log_view = RunLog(self)
        side = QSplitter(Qt.Orientation.Vertical, self)
        side.setChildrenCollapsible(False)
        side.addWidget(_titled("Training doctor", self.doctor_panel))
        side.addWidget(_titled("Log", self.log_view))
        side.setSizes([240, 360])
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.curves)
        self.splitter.addWidget(side)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([560, 370])

        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addSpacing(12)
        buttons.addWidget(self.copy_command_button)
        buttons.addWidget(self.command_label, 1)
        progress = QHBoxLayout()
        progress.addWidget(self.status_label, 1)
        progress.addWidget(self.progress_bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addLayout(buttons)
        layout.addWidget(self.outcome_label)
        layout.addLayout(progress)
        layout.addWidget(self.device_label)
        layout.addWidget(self.auto_panel)
        layout.addWidget(self.splitter, 1)

        state.changed.connect(self._on_state_changed)
        state.validity_changed.connect(self._on_state_validity_changed)
        controller.run_started.connect(self._on_controller_run_started)
        controller.event_received.connect(self._on_controller_event_received)
        controller.output_received.connect(self._on_controller_output_received)
        controller.run_ended.connect(self._on_controller_run_ended)
        self._update_actions()

    @property
    def run_dir(self) -> Path | None:
        """The folder of the run on screen (going or ended), if one was started here."""
        return self._run_dir

    @property
    def is_running(self) -> bool:
        """Whether a run started here is going."""
        return self._following

    def start_blocker(self) -> str:
        """Why Start is disabled, or "" when a run can start."""
        if self.controller.is_running:
            return ("A run is in progress: stop it first." if self._following
                    else "Another job (LR finder or sanity check) is running: wait for it to end.")
        if self.auto_panel.is_running:
            return "Auto is running: stop it first, or wait for it to end."
        data = self.state.config.data.path
        if not data:
            return "Open a dataset first: the run needs a data folder (data.path is empty)."
        if not Path(data).exists():
            return f"The dataset {data} does not exist any more: open another one."
        if not self.state.is_valid:
            return "Fix the settings marked in red first: " + "; ".join(self.state.errors.values())
        return ""

    def start(self) -> Path | None:
        """Start a run of the current config; returns its run folder, or None when Start is disabled."""
        if self.start_blocker():
            return None
        config = self.state.config
        self._run_data = config.data.path
        self._run_dir = new_run_dir(project_dir_for(config.data.path), config.model.backbone)
        self._pending_config = self._write_config(config, self._run_dir.name)
        self._reset_views(config)
        self._following, self._stop_requested = True, False
        self.controller.start(
            "train", [config.data.path, "--config", str(self._pending_config), "--run-dir", str(self._run_dir)],
            self._run_dir,
        )
        return self._run_dir

    def stop(self) -> None:
        """Ask the run to stop cleanly after its batch (it saves a checkpoint).

        The controller ends the process itself if the stop takes longer than its grace period.
        """
        if not self._following or self._stop_requested:
            return
        self._stop_requested = True
        self.controller.stop()
        self.status_label.setText("Stopping after this batch and saving a checkpoint…")
        self._update_actions()

    @property
    def command_text(self) -> str:
        """The CLI command of the run on screen, or of the current settings before any run ("" if none)."""
        if self._run_dir is not None:
            run_config = RunFolder(self._run_dir).config_path
            config_path = run_config if run_config.is_file() else self._pending_config
            return cli_command(self._run_data, config_path) if config_path is not None else ""
        return ""

    def copy_command(self) -> str:
        """Put the command that reproduces the run (or the current settings) on the clipboard; returns it.

        Before any run, the current settings are saved to ``configs/`` in the dataset's
        project folder so that the command has a config file to name.
        """
        command = self.command_text
        if not command and not self.start_blocker():
            config = self.state.config
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            path = self._write_config(config, f"{stamp}-{config.model.backbone}")
            command = cli_command(config.data.path, path)
        if command:
            QGuiApplication.clipboard().setText(command)
            self._show_command(command)
        return command

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, config: RunConfig) -> None:
        self.auto_panel.set_data_path(config.data.path)
        self._update_actions()

    def _on_state_validity_changed(self, _valid: bool) -> None:
        self._update_actions()

    def _on_start_button_clicked(self) -> None:
        self.start()

    def _on_stop_button_clicked(self) -> None:
        self.stop()

    def _on_copy_command_button_clicked(self) -> None:
        self.copy_command()

    def _on_controller_run_started(self, _run_dir: Path) -> None:
        self._update_actions()

    def _on_controller_event_received(self, event: dict) -> None:
        if not self._following:
            return
        self.curves.add_event(event)
        self.log_view.add_event(event)
        kind = event.get("event")
        if kind in TERMINAL_EVENTS:
            self._final_event = event
        if kind == DiagnosisRaised.event:
            self.doctor_panel.add_diagnosis(event)
        elif kind == BatchSizeChanged.event:
            self.doctor_panel.add_batch_change(event)
            self._micro_batch_size = event.get("micro_batch_size")
            self._show_device()
        elif kind in (RunStarted.event, StageStarted.event):
            self._started_event, self._micro_batch_size = event, None
            self._show_device()
            if kind == RunStarted.event:
                self._show_command(self.command_text)
        self._progress.add_event(event)
        self._show_progress()

    def _on_controller_output_received(self, line: str) -> None:
        if self._following:
            self.log_view.add_output(line)

    def _on_controller_run_ended(self, outcome: str, message: str) -> None:
        if not self._following:
            self._update_actions()  # another page's job ended: Start may be possible again
            return
        self._following = False
        run_dir = self._run_dir
        assert run_dir is not None
        if self._pending_config is not None and RunFolder(run_dir).config_path.is_file():
            self._pending_config.unlink(missing_ok=True)  # the run folder holds the same config now
            self._pending_config = None
        self._show_command(self.command_text)
        self._show_outcome(outcome, message)
        self.doctor_panel.mark_run_ended()
        self._update_actions()
        self.run_finished.emit(run_dir)

    def _on_auto_panel_running_changed(self, running: bool) -> None:
        if running:
            self.log_view.clear()
        self._update_actions()

    def _on_auto_panel_line_printed(self, line: str) -> None:
        self.log_view.add_output(line)

    def _on_doctor_panel_fix_applied(self, changes: dict) -> None:
        applied = ", ".join(f"{path} = {value}" for path, value in changes.items())
        self.log_view.add_line(f"Applied the doctor's fix: {applied}. The next run uses it.", "ok")

    # Internals -----------------------------------------------------------------------------------

    def _write_config(self, config: RunConfig, name: str) -> Path:
        folder = project_dir_for(config.data.path) / "configs"
        folder.mkdir(parents=True, exist_ok=True)
        return save_config(config, folder / f"{name}.yaml")

    def _reset_views(self, config: RunConfig) -> None:
        self.curves.clear()
        self.curves.set_update_ratio_band(config.doctor.update_ratio_low, config.doctor.update_ratio_high)
        self.doctor_panel.reset()
        self.log_view.clear()
        self.log_view.add_line(f"Starting a run in {self._run_dir}")
        self.outcome_label.hide()
        self.device_label.hide()
        self._final_event = None
        self._started_event, self._micro_batch_size = {}, None
        self._progress = RunProgress()
        self._show_progress()
        self._show_command(self.command_text)

    def _show_progress(self) -> None:
        progress = self._progress
        self.progress_bar.setRange(0, progress.total)  # 0..0 is Qt's busy indicator
        self.progress_bar.setValue(min(progress.done, progress.total))
        self.status_label.setText(progress.text)
        self.status_label.setToolTip(progress.text)

    def _show_device(self) -> None:
        text = describe_device(self._started_event, micro_batch_size=self._micro_batch_size)
        self.device_label.setText(text)
        self.device_label.show()

    def _show_outcome(self, outcome: str, message: str) -> None:
        final = self._final_event
        described = describe_event(final) if final is not None else None
        if outcome == "finished":
            text = f"{described[0] if described else 'Run finished'}. Saved in {self._run_dir}"
            tone = "ok"
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
        elif outcome == "cancelled" and described is not None:
            text, tone = described
        else:
            text, tone = f"The run failed: {message}", "error"
        if self.progress_bar.maximum() == 0:
            self.progress_bar.setRange(0, 1)  # end the busy animation
        if final is None:  # killed or crashed: no event said how it ended, so the log says it here
            self.log_view.add_line(text, tone)
        palette = self.palette()
        color = ok_color(palette) if tone == "ok" else (
            palette.color(QPalette.ColorRole.Highlight) if tone == "info" else severity_color(tone, palette))
        self.outcome_label.setStyleSheet(
            f"QLabel {{ color: {color.name()}; background: palette(base); border: 1px solid {color.name()};"
            f" border-left: 5px solid {color.name()}; border-radius: 4px; padding: 6px 8px; }}"
        )
        font = QFont(self.outcome_label.font())
        font.setBold(tone in ("warning", "error"))
        self.outcome_label.setFont(font)
        self.outcome_label.setText(text)
        self.outcome_label.show()

    def _show_command(self, command: str) -> None:
        self.command_label.setText(command)
        self.command_label.setToolTip(command)
        self.copy_command_button.setToolTip(
            f"Copy this command, which reproduces the run from a terminal:\n{command}" if command
            else "Copy a command that trains with the current settings from a terminal")

    def _update_actions(self) -> None:
        blocker = self.start_blocker()
        self.auto_panel.set_blocker(
            ("A training run is in progress: stop it first." if self._following
             else "Another job (LR finder or sanity check) is running: wait for it to end.")
            if self.controller.is_running else "")
        self.start_button.setEnabled(not blocker)
        self.start_button.setToolTip(blocker or START_TOOLTIP)
        self.stop_button.setEnabled(self._following and not self._stop_requested)
        self.stop_button.setToolTip(STOP_TOOLTIP)
        self.copy_command_button.setEnabled(bool(self.command_text) or not blocker)
        if not self._following:
            status = blocker or _ready_text(self.state.config)
            self.status_label.setText(status)
            self.status_label.setToolTip(status)


def _ready_text(config: RunConfig) -> str:
    """What Start will train, in one line."""
    mode = config.model.mode.replace("_", " ")
    return (f"Ready to train {config.model.backbone} ({mode}) on {Path(config.data.path).name}: "
            f"{config.optim.epochs} epochs, {_batch_text(config.optim)}, "
            f"learning rate {config.optim.learning_rate:g}.")


def _batch_text(optim: OptimConfig) -> str:
    """E.g. ``batch size 32``, ``batch size auto`` or ``batch size 32 x 4 accumulated``."""
    text = f"batch size {optim.batch_size}"
    if optim.batch_size == "auto":
        text += f" (the most that fits on a CUDA GPU, else {optim.fixed_batch_size()})"
    if optim.accumulate_steps > 1:
        text += f" \N{MULTIPLICATION SIGN} {optim.accumulate_steps} accumulated"
    return text


def _titled(title: str, body: QWidget) -> QWidget:
    """A pane with a bold heading over ``body``."""
    pane = QWidget()
    heading = QLabel(title, pane)
    font = QFont(heading.font())
    font.setPointSizeF(font.pointSizeF() * 1.1)
    font.setBold(True)
    heading.setFont(font)
    layout = QVBoxLayout(pane)
    layout.setContentsMargins(4, 4, 4, 0)
    layout.setSpacing(4)
    layout.addWidget(heading)
    layout.addWidget(body, 1)
    return pane

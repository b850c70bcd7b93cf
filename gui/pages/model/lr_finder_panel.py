"""The learning-rate finder: runs ``main.py lr-find`` as a child and draws its curve live.

The current config goes to a YAML file beside a new folder in the project's ``lr-find``
folder; the child's ``lr_find_step`` events draw the loss against the rate (log scale),
and ``lr_find_finished`` marks the suggestion, which one click copies into the config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from engine.core.config import RunConfig
from engine.core.events import FeaturesProgressed, LrFindFinished, LrFindStarted, LrFindStep
from engine.core.paths import project_dir_for
from engine.training.recommended import format_rate
from engine.training.runfolder import new_run_dir
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import is_dark
from gui.widgets.fields import ERROR_STYLE
from gui.widgets.plots import theme_plot

DEFAULT_STEPS = 100
START_RATE, END_RATE = 1e-7, 10.0  # the sweep's first and last head learning rates
_CURVE_COLORS = ("#2f6fb3", "#6aa7ea")  # (light, dark) palette
_SUGGESTION_COLORS = ("#c0392b", "#ff7b72")
_INTRO = (
    "The range test trains for a few dozen steps while the learning rate grows from 1e-7 to 10, and watches the"
    " loss: it suggests a rate a little below where the loss falls fastest. It uses the settings on this page;"
    " your model is not changed."
)


class LRFinderPanel(QWidget):
    """A "Find learning rate" button, its live curve, the suggestion and a button that applies it.

    Signals:
        suggestion_found: the learning-rate setting suggested by a finished sweep (float).

    Args:
        state: the config being edited; the sweep runs on it and "Use" writes into it.
        parent: the parent widget.
        num_steps: optimizer steps of the sweep (``lr-find --steps``); tests use fewer.
    """

    suggestion_found = Signal(float)

    def __init__(self, state: ConfigState, parent: QWidget | None = None, *, num_steps: int = DEFAULT_STEPS) -> None:
        super().__init__(parent)
        self.state = state
        self.num_steps = num_steps
        self.learning_rate_setting: float | None = None
        self._config_file: Path | None = None
        self._cli_error = ""  # the one-line error the CLI prints when it refuses its input
        self._rates: list[float] = []
        self._losses: list[float] = []
        self._smoothed: list[float] = []

        self.controller = RunController(self)
        self.controller.event_received.connect(self._on_controller_event_received)
        self.controller.output_received.connect(self._on_controller_output_received)
        self.controller.run_ended.connect(self._on_controller_run_ended)

        intro = QLabel(_INTRO, self)
        intro.setWordWrap(True)
        self.find_button = QPushButton("Find learning rate", self)
        self.find_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop the sweep; the curve so far stays on screen")
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.stop_button.hide()
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.use_button = QPushButton(self)
        self.use_button.clicked.connect(self.use_suggestion)
        self.use_button.hide()
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason_label = QLabel(self)
        self.reason_label.setWordWrap(True)
        self.reason_label.hide()

        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setLogMode(x=True, y=False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setLabel("bottom", "learning rate (log scale)")
        self.plot.setLabel("left", "training loss")
        self.plot.setMinimumHeight(220)
        self.placeholder = pg.TextItem("The curve appears here while the sweep runs.", anchor=(0.5, 0.5))
        self.plot.addItem(self.placeholder, ignoreBounds=True)
        self._reset_view()
        # Bottom left: a range-test curve starts high on the left and ends high on the right.
        self.legend = self.plot.addLegend(offset=(10, -10))
        self.loss_curve = self.plot.plot([], [], name="loss per step")
        self.smoothed_curve = self.plot.plot([], [], name="smoothed loss")
        self.suggestion_line = pg.InfiniteLine(angle=90, movable=False)
        self.suggestion_label = pg.TextItem(anchor=(0, 0))
        self.suggestion_line.hide()
        self.suggestion_label.hide()
        self.plot.addItem(self.suggestion_line, ignoreBounds=True)
        self.plot.addItem(self.suggestion_label, ignoreBounds=True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.find_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.progress, 1)
        buttons.addStretch()
        buttons.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.reason_label)
        self._apply_palette()
        state.changed.connect(self._on_state_changed)
        state.validity_changed.connect(self._on_state_validity_changed)
        self._update_enabled()

    @property
    def suggestion_rate(self) -> float | None:
        """Where the suggestion line stands (a head learning rate), or None before a sweep finished."""
        if not self.suggestion_line.isVisible():
            return None
        return 10 ** self.suggestion_line.value()

    def start(self) -> None:
        """Write the config beside a new ``lr-find`` folder and start the sweep in a child process."""
        config = self.state.config
        if self.controller.is_running or self._unavailable_reason(config):
            return
        run_dir = new_run_dir(project_dir_for(config.data.path), config.model.backbone, kind="lr-find")
        self._config_file = self.state.save(run_dir.with_name(run_dir.name + ".yaml"))
        self._clear_curve()
        self._cli_error = ""
        arguments = [config.data.path, "--config", str(self._config_file), "--out", str(run_dir),
                     "--start-lr", f"{START_RATE:g}", "--end-lr", f"{END_RATE:g}", "--steps", str(self.num_steps)]
        self.controller.start("lr-find", arguments, run_dir)
        self._set_running(True)
        self._show_status("Starting: loading the model and reading the images…")

    def use_suggestion(self) -> bool:
        """Set ``optim.learning_rate`` to the suggested setting; False if refused or none yet."""
        if self.learning_rate_setting is None:
            return False
        return self.state.set_value("optim.learning_rate", self.learning_rate_setting)

    # Controller slots ----------------------------------------------------------------------------

    def _on_controller_event_received(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == FeaturesProgressed.event:
            self.progress.setRange(0, max(int(event.get("total") or 1), 1))
            self.progress.setValue(int(event.get("done") or 0))
            self.progress.setFormat(f"features of {event.get('split', '')} images %v/%m")
        elif kind == LrFindStarted.event:
            self.progress.setRange(0, int(event.get("num_steps") or self.num_steps))
            self.progress.setValue(0)
            self.progress.setFormat("step %v/%m")
            self._show_status(f"Sweeping the rate on {event.get('train_images', '?')} training images "
                              f"({event.get('device', 'cpu')})…")
        elif kind == LrFindStep.event:
            if not self._rates:
                self.placeholder.hide()
                self.plot.enableAutoRange()
            self._rates.append(float(event["learning_rate"]))
            self._losses.append(float(event["loss"]))
            self._smoothed.append(float(event["smoothed_loss"]))
            self.progress.setValue(len(self._rates))
            self.loss_curve.setData(self._rates, self._losses)
            self.smoothed_curve.setData(self._rates, self._smoothed)
        elif kind == LrFindFinished.event:
            self._show_result(event)

    def _on_stop_button_clicked(self) -> None:
        self.controller.stop()
        self.stop_button.setEnabled(False)
        self._show_status("Stopping after the current step…")

    def _on_controller_output_received(self, line: str) -> None:
        if line.startswith("error: "):
            self._cli_error = line.removeprefix("error: ")

    def _on_controller_run_ended(self, state: str, message: str) -> None:
        self._set_running(False)
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)  # the run folder keeps its own config.yaml
            self._config_file = None
        if state == "cancelled":
            self._show_status("Stopped. The curve so far is kept; run it again for a suggestion.")
        elif state == "failed":
            # The CLI refuses bad input (an unknown backbone, no dataset) in one stderr line,
            # which says more than "exited with code 2" when no run_failed event was written.
            self._show_status(f"The learning-rate finder failed: {self._cli_error or message}", error=True)

    # State slots ---------------------------------------------------------------------------------

    def _on_state_changed(self, _config: RunConfig) -> None:
        self._update_enabled()

    def _on_state_validity_changed(self, _valid: bool) -> None:
        self._update_enabled()

    # Helpers -------------------------------------------------------------------------------------

    def _show_result(self, event: dict[str, Any]) -> None:
        suggestion, setting = event.get("suggestion"), event.get("learning_rate_setting")
        reason = str(event.get("reason") or "")
        self.reason_label.setText(reason[:1].upper() + reason[1:])
        self.reason_label.show()
        if suggestion is None or setting is None:
            self._show_status("No suggestion: see why below.", error=True)
            return
        self.learning_rate_setting = float(setting)
        self.suggestion_line.setValue(math.log10(float(suggestion)))
        self.suggestion_line.show()
        self.suggestion_label.setText(f"suggested {format_rate(float(suggestion))}")
        top = max(self._smoothed or [1.0])
        self.suggestion_label.setPos(math.log10(float(suggestion)), top)
        self.suggestion_label.show()
        text = format_rate(self.learning_rate_setting)
        self.use_button.setText(f"Use {text}")
        self.use_button.setToolTip(f"Set the learning rate (optim.learning_rate) to {text}")
        self.use_button.show()
        self._show_status(f"Suggested learning rate: {text}.")
        self.suggestion_found.emit(self.learning_rate_setting)

    def _clear_curve(self) -> None:
        self._rates, self._losses, self._smoothed = [], [], []
        self.loss_curve.setData([], [])
        self.smoothed_curve.setData([], [])
        self.suggestion_line.hide()
        self.suggestion_label.hide()
        self._reset_view()
        self.reason_label.hide()
        self.use_button.hide()
        self.learning_rate_setting = None

    def _reset_view(self) -> None:
        """The empty plot: the sweep's whole range, and a word on what will appear."""
        self.plot.setRange(xRange=(math.log10(START_RATE), math.log10(END_RATE)), yRange=(0, 3), padding=0)
        self.placeholder.setPos(math.log10(math.sqrt(START_RATE * END_RATE)), 1.5)
        self.placeholder.show()

    def _set_running(self, running: bool) -> None:
        self.stop_button.setVisible(running)
        self.stop_button.setEnabled(running)
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)
            self.progress.setFormat("")
        self._update_enabled()

    def _show_status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setStyleSheet(ERROR_STYLE if error else "")

    def _unavailable_reason(self, config: RunConfig) -> str:
        if not config.data.path or not Path(config.data.path).exists():
            return "Open a dataset first: the range test trains on your images."
        if not self.state.is_valid:
            return "Fix the settings marked in red first."
        return ""

    def _update_enabled(self) -> None:
        reason = self._unavailable_reason(self.state.config)
        running = self.controller.is_running
        self.find_button.setEnabled(not reason and not running)
        self.find_button.setToolTip(reason or ("Running…" if running else
                                               "Sweep the learning rate on your data and suggest one"))

    def _apply_palette(self) -> None:
        palette = self.palette()
        dark = is_dark(palette)
        theme_plot(self.plot, palette)
        self.legend.setLabelTextColor(palette.color(QPalette.ColorRole.Text))  # no box: it sits in a free corner
        curve = QColor(_CURVE_COLORS[dark])
        faint = QColor(curve)
        faint.setAlpha(110)
        self.loss_curve.setPen(pg.mkPen(faint, width=1))
        self.smoothed_curve.setPen(pg.mkPen(curve, width=2.5))
        suggestion = QColor(_SUGGESTION_COLORS[dark])
        self.suggestion_line.setPen(pg.mkPen(suggestion, width=1.5, style=Qt.PenStyle.DashLine))
        self.suggestion_label.setColor(suggestion)
        self.placeholder.setColor(palette.color(QPalette.ColorRole.PlaceholderText))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802  Qt's name
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

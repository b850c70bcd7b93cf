"""The Train page's Auto box: the best model a time budget allows, with its plan followed live.

``main.py auto DATA --budget B`` runs as a child process (a ``CommandRunner``). The box reads
the Auto folder the child names on its first line (``plan.json`` and ``progress.jsonl``, through
``engine.auto.report.build_report``) again on each line it prints, and shows every step's state,
the time used against the budget, and at the end the recommended model, why, and the report.
Stop asks for a clean stop (the best model so far is kept); Resume goes on with a stopped plan.
"""

from __future__ import annotations

import contextlib
import html
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.auto.budget import format_seconds, parse_budget
from engine.auto.report import build_report
from engine.auto.state import PLAN_FILE, REPORT_TEXT, AutoFolder, auto_root
from engine.core.errors import ConfigError, TransferStudioError
from engine.core.paths import project_dir_for
from engine.training.runfolder import RunFolder
from gui.services.command_runner import CommandRunner
from gui.style import ok_color, secondary_label, severity_color
from gui.widgets.elided_label import ElidedLabel

BUDGETS = ("5m", "10m", "30m", "1h")
DEFAULT_BUDGET = "10m"
STOP_GRACE_MS = 90_000  # scoring the candidates may take a while before Auto names the best model and exits
CLOCK_INTERVAL_MS = 500
MAX_VISIBLE_STEPS = 5
FOLDER_LINE = "auto: "  # the child's first line: "auto: FOLDER (budget 10m)" or "auto: resuming FOLDER"
RECOMMENDED_LINE = "recommended model: "  # the child's last line
HINT = ("Trains a baseline, fine-tunes as far as the budget allows, ensembles when that wins on validation, and "
        "writes a report; every step is an ordinary run.")
AUTO_TOOLTIP = "Train the best model this budget allows; each step is saved as an ordinary run in the project."
STOP_TOOLTIP = "Stop cleanly: the running step saves its checkpoint and Auto names the best model so far."
RESUME_TOOLTIP = "Go on with the stopped plan in the budget it has left; finished steps are not run again."
COLUMNS = ("Step", "State", "Val top-1", "Time")


def latest_auto_folder(project_dir: Path) -> Path | None:
    """The newest Auto folder of a project (their names are time stamps), or None."""
    try:
        folders = [path for path in auto_root(project_dir).iterdir() if (path / PLAN_FILE).is_file()]
    except OSError:  # no auto/ folder yet, or one that cannot be listed
        return None
    return max(folders, key=lambda path: path.name) if folders else None


class AutoPanel(QGroupBox):
    """Budget, Auto, Stop and Resume, the plan's steps with their states, and the recommended model.

    Signals:
        running_changed: True when an Auto child started, False when it ended.
        auto_finished: the Auto folder (Path, or None when the child made none), whatever the outcome.

    Attributes:
        extra_arguments: more ``main.py auto`` options for a new Auto (tests pick a tiny model); none by default.
    """

    running_changed = Signal(bool)
    auto_finished = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Auto: the best model a time budget allows", parent)
        self.extra_arguments: list[str] = []
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)
        self._data_path = ""
        self._folder: Path | None = None  # the Auto folder on screen
        self._report: dict[str, Any] | None = None  # build_report of that folder, as last read
        self._blocker = ""  # why Auto cannot start now (a training run of the page), "" when it can
        self._budget_seconds = 0.0
        self._spent_before = 0.0  # budget earlier sessions of a resumed plan used
        self._started_at: float | None = None
        self._stop_requested = False
        self._recommended: Path | None = None
        self._status_is_budget_error = False
        self.report_dialog: ReportDialog | None = None

        style = self.style()
        self.budget_box = QComboBox(self)
        self.budget_box.setEditable(True)
        self.budget_box.addItems(BUDGETS)
        self.budget_box.setCurrentText(DEFAULT_BUDGET)
        self.budget_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.budget_box.setMinimumContentsLength(6)
        self.budget_box.setToolTip("Wall-clock time Auto may use, e.g. 90s, 10m, 1h30m.")
        self.budget_box.editTextChanged.connect(self._on_budget_box_edit_text_changed)
        budget_label = QLabel("&Budget", self)
        budget_label.setBuddy(self.budget_box)
        self.auto_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaSeekForward), "Auto", self)
        self.auto_button.clicked.connect(self._on_auto_button_clicked)
        self.stop_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaStop), "Stop", self)
        self.stop_button.setToolTip(STOP_TOOLTIP)
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.resume_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), "Resume", self)
        self.resume_button.clicked.connect(self._on_resume_button_clicked)
        self.time_bar = QProgressBar(self)
        self.time_bar.setMinimumWidth(160)
        self.time_bar.setToolTip("Time used of the budget")
        self.status_label = ElidedLabel(self)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.steps_view = StepsView(self)
        self.notes_label = secondary_label(self)  # why the plan is what it is, e.g. no time left to fine-tune
        self.notes_label.hide()
        self.result_label = QLabel(self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.report_button = QPushButton(style.standardIcon(QStyle.StandardPixmap.SP_FileDialogDetailedView),
                                         "Open report", self)
        self.report_button.setToolTip("What Auto tried, how each step scored on validation, what won and why")
        self.report_button.clicked.connect(self._on_report_button_clicked)

        controls = QHBoxLayout()
        controls.addWidget(budget_label)
        controls.addWidget(self.budget_box)
        controls.addWidget(self.auto_button)
        controls.addWidget(self.stop_button)
        controls.addWidget(self.resume_button)
        controls.addSpacing(12)
        controls.addWidget(self.time_bar, 1)
        result = QHBoxLayout()
        result.addWidget(self.result_label, 1)
        result.addWidget(self.report_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(6)
        layout.addLayout(controls)
        layout.addWidget(self.status_label)
        layout.addWidget(self.steps_view)
        layout.addWidget(self.notes_label)
        layout.addLayout(result)

        self._clock = QTimer(self)
        self._clock.setInterval(CLOCK_INTERVAL_MS)
        self._clock.timeout.connect(self._show_time)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self.runner.stop)
        self._say(HINT)
        self._show_all()

    # Public ----------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether an Auto child started here is alive."""
        return self.runner.is_running

    @property
    def folder(self) -> Path | None:
        """The Auto folder on screen (the running one, or the project's latest)."""
        return self._folder

    @property
    def recommended_model(self) -> Path | None:
        """The model Auto recommended (or the best so far, after a stop), once it named one."""
        return self._recommended

    @property
    def can_resume(self) -> bool:
        """Whether the Auto folder on screen was stopped (or cut off) before its plan ended."""
        return (not self.is_running and self._report is not None and self._report["state"] != "finished"
                and not self._blocker)

    def set_data_path(self, data_path: str) -> None:
        """The dataset Auto trains on; shows the latest Auto folder of its project (if not running one)."""
        if data_path == self._data_path:
            return
        self._data_path = data_path
        if not self.is_running:
            folder = latest_auto_folder(project_dir_for(data_path)) if self._data_exists() else None
            self._folder, self._report, self._recommended = folder, None, None
            self._read_folder()
            self._say(HINT)
        self._show_all()

    def set_blocker(self, reason: str) -> None:
        """Why Auto may not start now (e.g. the page's own training run), or "" when it may."""
        if reason != self._blocker:
            self._blocker = reason
            self._update_actions()

    def budget_error(self) -> str:
        """Why the budget typed cannot be used, in one line, or ""."""
        try:
            parse_budget(self.budget_box.currentText())
        except ConfigError as error:
            return "Budget: " + str(error).removeprefix("--budget: ")
        return ""

    def start(self) -> bool:
        """Start ``main.py auto`` on the dataset with the budget typed; False when it cannot start (shown)."""
        if self.is_running or self._start_blocker():
            return False
        if error := self.budget_error():
            self._say(error, "error")
            self._status_is_budget_error = True
            return False
        text = self.budget_box.currentText().strip()
        project = project_dir_for(self._data_path)
        self._folder, self._report = None, None
        self._begin(["--budget", text, "--project-dir", str(project), *self.extra_arguments],
                    data=self._data_path, budget=parse_budget(text), spent=0.0)
        return True

    def resume(self) -> bool:
        """Go on with the stopped Auto folder on screen; False when there is none."""
        if not self.can_resume or self._folder is None or self._report is None:
            return False
        budget, spent = float(self._report["budget_seconds"] or 0), float(self._report["spent_seconds"])
        self._begin(["--resume", str(self._folder)], data=None, budget=budget, spent=spent)
        return True

    def stop(self) -> None:
        """Ask Auto to stop cleanly; it is killed only if it has not ended after a grace period."""
        if not self.is_running or self._stop_requested:
            return
        self._stop_requested = True
        if (run_dir := self._running_run_dir()) is not None:
            # A console child on Windows ignores terminate(); the running step's STOP file still ends the step.
            # Its folder may not exist yet: then SIGTERM alone asks for the stop.
            with contextlib.suppress(OSError):
                RunFolder(run_dir).request_stop()
        self.runner.terminate()
        self._kill_timer.start(STOP_GRACE_MS)
        self._say("Stopping: the running step saves its checkpoint, then Auto names the best model so far…")
        self._update_actions()

    def open_report(self) -> ReportDialog | None:
        """Show the Auto folder's ``report.md`` in a window; None (and a line saying why) when it cannot be read."""
        if self._folder is None:
            return None
        path = self._folder / REPORT_TEXT
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            self._say(f"Cannot read the report {path}: {error.strerror or error}", "error")
            return None
        if self.report_dialog is None:
            self.report_dialog = ReportDialog(self)
        self.report_dialog.show_report(path, text)
        self.report_dialog.raise_()
        return self.report_dialog

    # Slots -----------------------------------------------------------------------------------------

    def _on_auto_button_clicked(self) -> None:
        self.start()

    def _on_stop_button_clicked(self) -> None:
        self.stop()

    def _on_resume_button_clicked(self) -> None:
        self.resume()

    def _on_report_button_clicked(self) -> None:
        self.open_report()

    def _on_budget_box_edit_text_changed(self, _text: str) -> None:
        error = self.budget_error()
        if error:
            self._say(error, "error")
            self._status_is_budget_error = True
        elif self._status_is_budget_error:
            self._say(HINT)
        self._show_time()
        self._update_actions()

    def _on_runner_line_printed(self, line: str) -> None:
        if line.startswith(FOLDER_LINE) and self._folder is None:
            named = line.removeprefix(FOLDER_LINE).removeprefix("resuming ")
            self._folder = Path(named.rsplit(" (budget ", 1)[0])
        elif line.startswith(RECOMMENDED_LINE):
            self._recommended = Path(line.removeprefix(RECOMMENDED_LINE))
        if not self._stop_requested:
            self._say(_without_run_dir(line), "error" if line.startswith("error:") else "muted")
        self._read_folder()
        self._show_all()

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        self._clock.stop()
        self._kill_timer.stop()
        self._read_folder()
        report = self._report or {}
        if self._recommended is None and report.get("recommended"):
            self._recommended = Path(report["recommended"])
        spent = format_seconds(float(report.get("spent_seconds") or 0))
        if succeeded:
            self._say(f"Auto finished in {spent} of its {format_seconds(self._budget_seconds)}.", "ok")
        elif report.get("state") == "stopped":
            kept = "the best model so far is kept" if self._recommended else "no step had saved a model yet"
            self._say(f"Stopped during {report.get('stopped_at')}: {kept}. Resume goes on with the plan.", "warning")
        elif self._stop_requested and self._folder is None:
            self._say("Stopped before Auto had made its plan; nothing was trained.", "warning")
        else:
            resumable = " Resume goes on with the plan." if self._report is not None else ""
            self._say(f"Auto failed: {message.rstrip('.')}.{resumable}", "error")
        self._stop_requested = False
        self._show_all()
        self.running_changed.emit(False)
        self.auto_finished.emit(self._folder)

    # Internals -------------------------------------------------------------------------------------

    def _begin(self, options: list[str], *, data: str | None, budget: float, spent: float) -> None:
        self._budget_seconds, self._spent_before = budget, spent
        self._recommended = None
        self._stop_requested = False
        self._status_is_budget_error = False
        self._started_at = time.monotonic()
        self.runner.start("auto", [data, *options] if data is not None else options)
        self._clock.start()
        self._say("Starting Auto: scanning the data…")
        self._show_all()
        self.running_changed.emit(True)

    def _data_exists(self) -> bool:
        return bool(self._data_path) and Path(self._data_path).exists()

    def _start_blocker(self) -> str:
        if self._blocker:
            return self._blocker
        if not self._data_path:
            return "Open a dataset first: Auto needs a data folder."
        if not self._data_exists():
            return f"The dataset {self._data_path} does not exist any more: open another one."
        return ""

    def _read_folder(self) -> None:
        """Read the Auto folder's plan and progress again (small files, written atomically or line by line)."""
        if self._folder is None:
            self._report = None
            return
        try:
            self._report = build_report(AutoFolder(self._folder))
        except (TransferStudioError, OSError, ValueError, KeyError) as error:
            if self.is_running:  # the folder is being made: the next line reads it again
                return
            self._report = None
            self._say(f"Cannot read the Auto folder {self._folder}: {error}", "error")

    def _running_run_dir(self) -> Path | None:
        for step in (self._report or {}).get("steps", []):
            if step["status"] == "running" and step.get("run_dir"):
                return Path(step["run_dir"])
        return None

    def _say(self, text: str, tone: str = "muted") -> None:
        """One line under the buttons: a hint or the child's latest line (muted), an outcome, or an error."""
        self._status_is_budget_error = False
        self.status_label.setText(text)
        self.status_label.setToolTip(text)
        color = _tone_color(tone, self.palette())
        bold = "font-weight: bold;" if tone == "error" else ""
        self.status_label.setStyleSheet(f"QLabel {{ color: {color.name()}; {bold} }}")

    def _show_all(self) -> None:
        self._show_steps()
        self._show_result()
        self._show_time()
        self._update_actions()

    def _show_steps(self) -> None:
        report = self._report or {}
        self.steps_view.show_steps(report.get("steps", []), running=self.is_running)
        notes = [_sentence(note) for note in report.get("notes") or []]
        self.notes_label.setText("Plan: " + " ".join(notes))
        self.notes_label.setVisible(bool(notes))

    def _show_result(self) -> None:
        choice = (self._report or {}).get("choice")
        if not choice:
            self.result_label.hide()
            return
        path = Path(choice["path"])
        project = self._folder.parent.parent if self._folder is not None else None
        shown = path.relative_to(project) if project is not None and path.is_relative_to(project) else path
        accuracy = f", val top-1 {choice['val_accuracy']:.1%}" if choice.get("val_accuracy") is not None else ""
        finished = (self._report or {}).get("state") == "finished"
        heading = "Recommended model" if finished else "Best model so far"
        self.result_label.setText(
            f"<b>{heading}</b> ({html.escape(choice['kind'])}{accuracy}): <code>{html.escape(str(shown))}</code>"
            f"<br>{html.escape(_sentence(choice.get('reason') or ''))}")
        self.result_label.setToolTip(str(path))
        self.result_label.show()

    def _show_time(self) -> None:
        if self.is_running and self._started_at is not None:
            budget, used = self._budget_seconds, self._spent_before + time.monotonic() - self._started_at
        elif self._report is not None:
            budget, used = float(self._report["budget_seconds"] or 0), float(self._report["spent_seconds"])
        else:
            self.time_bar.setRange(0, 1)
            self.time_bar.setValue(0)
            self.time_bar.setFormat("Budget " + self.budget_box.currentText().strip())
            return
        self.time_bar.setRange(0, max(1, round(budget)))
        self.time_bar.setValue(min(round(used), self.time_bar.maximum()))
        self.time_bar.setFormat(f"{format_seconds(used)} of {format_seconds(budget)}")

    def _update_actions(self) -> None:
        running = self.is_running
        blocker = self._start_blocker() or self.budget_error()
        self.auto_button.setEnabled(not running and not blocker)
        self.auto_button.setToolTip(("An Auto is running." if running else blocker) or AUTO_TOOLTIP)
        self.stop_button.setEnabled(running and not self._stop_requested)
        self.resume_button.setEnabled(self.can_resume)
        self.resume_button.setToolTip(RESUME_TOOLTIP if self.can_resume else "Nothing to resume: the latest Auto "
                                      "of this project finished, or none was started.")
        self.budget_box.setEnabled(not running)
        report = self._folder / REPORT_TEXT if self._folder is not None else None
        self.report_button.setEnabled(not running and report is not None and report.is_file())
        self.report_button.setVisible(self.result_label.isVisibleTo(self) or self.report_button.isEnabled())


class StepsView(QTreeWidget):
    """The plan's steps, one row each: what it trains, its state, its validation top-1 and its time."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(len(COLUMNS))
        self.setHeaderLabels(COLUMNS)
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.header()
        header.setStretchLastSection(False)
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch if column < 2
                                        else QHeaderView.ResizeMode.ResizeToContents)
        self.hide()

    def show_steps(self, steps: list[dict[str, Any]], *, running: bool) -> None:
        """Show ``build_report``'s steps (hidden when there are none); ``running``: the Auto child is alive."""
        self.setVisible(bool(steps))
        self.clear()
        palette = self.palette()
        for step in steps:
            state, tone = _step_state(step, running=running)
            top1 = f"{step['val_top1']:.1%}" if step.get("val_top1") is not None else ""
            if step.get("seconds") is not None:
                took = format_seconds(step["seconds"])
            elif step["status"] == "running" and step.get("cap_seconds") is not None:
                took = f"≤ {format_seconds(step['cap_seconds'])}"
            else:
                took = ""
            title = str(step.get("title") or step["name"])
            item = QTreeWidgetItem([title[:1].upper() + title[1:], state, top1, took])
            item.setForeground(1, _tone_color(tone, palette))
            tip = f"{step['name']}: {step.get('reason') or ''}"
            if step.get("run_dir"):
                tip += f"\nRun: {step['run_dir']}"
            for column in range(len(COLUMNS)):
                item.setToolTip(column, state if column == 1 else tip)
            for column in (2, 3):
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.addTopLevelItem(item)
        rows = min(max(len(steps), 1), MAX_VISIBLE_STEPS)
        measured = self.sizeHintForRow(0) if steps else -1
        row_height = measured if measured > 0 else self.fontMetrics().height() + 6
        self.setFixedHeight(self.header().sizeHint().height() + rows * row_height + 2 * self.frameWidth())


class ReportDialog(QDialog):
    """An Auto folder's ``report.md``, rendered, in a window of its own."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.resize(760, 600)
        self.browser = QTextBrowser(self)
        self.browser.setOpenLinks(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser, 1)
        layout.addWidget(buttons)

    def show_report(self, path: Path, text: str) -> None:
        """Show ``text`` (Markdown), read from ``path``."""
        self.setWindowTitle(f"Auto report: {path}")
        self.browser.setMarkdown(text)
        self.show()


def _step_state(step: dict[str, Any], *, running: bool) -> tuple[str, str]:
    """A step's state in words and its tone, from its ``build_report`` status."""
    status, why = step["status"], step.get("why")
    if status == "not run":
        return ("waiting" if running else "not run"), "muted"
    if status == "running":
        return ("running…", "info") if running else ("cut off (Resume goes on)", "warning")
    if status == "skipped":
        return f"skipped: {why}", "muted"
    if status == "stopped":
        return "stopped (Resume goes on)", "warning"
    if status == "failed":
        return f"failed: {why}", "error"
    if status.startswith("cut by its time cap"):
        return "done (cut by its time cap)", "ok"
    if status.startswith("finished early"):
        return "done (stopped early: no more progress)", "ok"
    return ("done" if status == "finished" else f"done ({status})"), "ok"


def _tone_color(tone: str, palette: QPalette) -> QColor:
    if tone == "ok":
        return ok_color(palette)
    if tone in ("warning", "error"):
        return severity_color(tone, palette)
    if tone == "info":
        return palette.color(QPalette.ColorRole.Highlight)
    return palette.color(QPalette.ColorRole.PlaceholderText)


def _without_run_dir(line: str) -> str:
    """A step's line without the run folder it ends with (the steps' tooltips name it), for the one-line status."""
    head, _, last = line.rpartition(": ")
    return head if head and Path(last).is_absolute() else line


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") or not text else ".")

"""Runs a headless command (train, lr-find, sanity, search) as a child process and follows its run folder.

The child is ``python main.py COMMAND ... --events-only``, started with QProcess, so a
crash, an out-of-memory kill or a diverging run never touches the window. Progress
comes from the run folder's ``events.jsonl``, tailed by byte offset on a timer that
also caps how often the window redraws. Stop writes ``STOP`` into the run folder; the
child finishes its batch, saves a checkpoint and exits; ``kill()`` follows only if it
has not ended after a grace period.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, Qt, QTimer, Signal

from engine.core.events import (
    LrFindFinished,
    RunCancelled,
    RunFailed,
    RunFinished,
    SanityFinished,
    SearchFailed,
    SearchFinished,
)
from engine.training.runfolder import EventTail, RunFolder

MAIN_SCRIPT = Path(__file__).resolve().parents[2] / "main.py"
TERMINAL_EVENTS = {
    RunFinished.event: "finished", RunCancelled.event: "cancelled", RunFailed.event: "failed",
    LrFindFinished.event: "finished", SanityFinished.event: "finished", SearchFinished.event: "finished",
    SearchFailed.event: "failed",
}


class RunController(QObject):
    """Owns at most one child process and reports what its run folder says.

    Signals:
        run_started: the run folder (Path) of the child just started.
        event_received: each event (dict) appended to ``events.jsonl``, in order.
        output_received: a line the child printed on stderr (its log).
        run_ended: (state, message): ``finished``, ``cancelled`` or ``failed`` and why.

    Args:
        poll_interval_ms: how often the events file is read (and so the redraw rate).
        stop_grace_ms: how long a stop may take before the child is killed.
        executable: the Python that runs the child (default: this one).
        script: the script the child runs (default: ``main.py``); it gets ``COMMAND ARGUMENTS...
            --events-only`` and must write ``events.jsonl`` into the run folder as ``main.py`` does.
    """

    run_started = Signal(object)
    event_received = Signal(dict)
    output_received = Signal(str)
    run_ended = Signal(str, str)

    def __init__(self, parent: QObject | None = None, *, poll_interval_ms: int = 200,
                 stop_grace_ms: int = 30_000, executable: str | None = None, script: Path | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._tail: EventTail | None = None
        self._run_dir: Path | None = None
        self._last_event: dict | None = None
        self._killed_because: str | None = None  # why this controller killed the child, if it did
        self._last_error: str | None = None  # the child's "error: ..." line on stderr, if it printed one
        self._stop_grace_ms = stop_grace_ms
        self._executable = executable or sys.executable
        self._script = Path(script) if script is not None else MAIN_SCRIPT
        self._poll = QTimer(self)
        self._poll.setInterval(poll_interval_ms)
        self._poll.timeout.connect(self._read_events)
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse timer may fire 5% early
        self._kill_timer.timeout.connect(self._kill_after_grace)

    @property
    def is_running(self) -> bool:
        """True while a child process is alive."""
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    @property
    def run_dir(self) -> Path | None:
        """The run folder of the current (or last) child."""
        return self._run_dir

    def start(self, command: str, arguments: list[str], run_dir: Path) -> None:
        """Start ``main.py COMMAND ARGUMENTS... --events-only`` whose events land in ``run_dir``.

        Args:
            command: ``train``, ``lr-find`` or ``sanity``.
            arguments: the command's arguments, including the option that names ``run_dir``.
            run_dir: the folder the child writes (it must not exist yet, or be resumed).

        Raises:
            RuntimeError: a child is still running.
        """
        if self.is_running:
            raise RuntimeError("a run is already in progress; stop it first")
        self._run_dir = Path(run_dir)
        self._tail = EventTail(self._run_dir / "events.jsonl")
        self._last_event = None
        self._last_error = None
        self._killed_because = None
        process = QProcess(self)
        process.setProgram(self._executable)
        process.setArguments([str(self._script), command, *arguments, "--events-only"])
        process.setWorkingDirectory(str(self._script.parent))
        # stdout repeats the events we read from the file; only stderr is worth showing.
        process.setStandardOutputFile(QProcess.nullDevice())
        process.readyReadStandardError.connect(self._on_process_stderr)
        process.finished.connect(self._on_process_finished)
        process.errorOccurred.connect(self._on_process_error)
        self._process = process
        process.start()
        self._poll.start()
        self.run_started.emit(self._run_dir)

    def stop(self) -> None:
        """Ask for a clean stop (a checkpoint is saved); kill only after the grace period."""
        if not self.is_running or self._run_dir is None:
            return
        RunFolder(self._run_dir).request_stop()
        self._kill_timer.start(self._stop_grace_ms)

    def kill(self) -> None:
        """End the child at once (SIGKILL); its run is reported as failed."""
        self._kill("the run was killed on request (no final event); last checkpoint kept")

    def _kill_after_grace(self) -> None:
        self._kill(f"the run did not stop within {self._stop_grace_ms / 1000:g} s of the stop request and was "
                   "killed (no final event); last checkpoint kept")

    def _kill(self, because: str) -> None:
        if self._process is not None and self.is_running:
            self._killed_because = because
            self._process.kill()

    def _read_events(self) -> None:
        if self._tail is None:
            return
        for event in self._tail.read_new():
            self._last_event = event
            self.event_received.emit(event)

    def _on_process_stderr(self) -> None:
        assert self._process is not None
        text = str(self._process.readAllStandardError().data(), "utf-8", errors="replace")
        for line in text.splitlines():
            if line.strip():
                self.output_received.emit(line)
            if line.startswith("error: "):  # the child's one-line reason, when it could not write its events
                self._last_error = line.removeprefix("error: ")

    def _on_process_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._poll.stop()
        self._kill_timer.stop()
        self._read_events()  # the last lines written before the exit
        state, message = self._outcome(exit_code, exit_status)
        self.run_ended.emit(state, message)

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            assert self._process is not None
            self._poll.stop()
            self.run_ended.emit("failed", f"could not start {self._executable}: {self._process.errorString()}")

    def _outcome(self, exit_code: int, exit_status: QProcess.ExitStatus) -> tuple[str, str]:
        last = self._last_event or {}
        state = TERMINAL_EVENTS.get(last.get("event", ""))
        if state == "failed":
            return "failed", last.get("message") or "the run failed"
        if state is not None and exit_status == QProcess.ExitStatus.NormalExit:
            return state, last.get("message") or last.get("reason") or ""
        if exit_status == QProcess.ExitStatus.CrashExit:
            if self._killed_because is not None:
                return "failed", self._killed_because
            return "failed", "the training process was killed or crashed (no final event); last checkpoint kept"
        if self._last_error is not None:
            return "failed", self._last_error
        return "failed", f"the training process exited with code {exit_code} before it finished"

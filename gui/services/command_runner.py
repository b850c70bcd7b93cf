"""Runs a one-shot headless command (evaluate, export, ensemble build) as a child process.

Heavy jobs that write files (a report folder, exports, a manifest) run as
``python main.py COMMAND ...`` in a QProcess, like training: an out-of-memory kill
or a crash in torch never takes the window down, and the result is what the CLI
would have written. The runner relays the child's printed lines and ends with
whether it succeeded and, if not, the one-line error the CLI printed.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QProcess, Signal

from gui.services.run_controller import MAIN_SCRIPT


class CommandRunner(QObject):
    """Owns at most one ``main.py COMMAND ...`` child and relays what it prints.

    Signals:
        started: the command line (list of str) just started.
        line_printed: each non-empty line the child printed, stdout and stderr alike.
        finished: (succeeded, message): True and "" on exit code 0; otherwise False and
            the child's last error line (the CLI prints one ``error: ...`` line).
    """

    started = Signal(list)
    line_printed = Signal(str)
    finished = Signal(bool, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._process: QProcess | None = None
        self._last_error = ""
        self._buffer = b""

    @property
    def is_running(self) -> bool:
        """True while a child process is alive."""
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def start(self, command: str, arguments: list[str]) -> None:
        """Start ``python main.py COMMAND ARGUMENTS...``.

        Raises:
            RuntimeError: a command is still running.
        """
        if self.is_running:
            raise RuntimeError("a command is already running; wait for it or stop it first")
        self._last_error = ""
        self._buffer = b""
        process = QProcess(self)
        process.setProgram(sys.executable)
        arguments = [str(MAIN_SCRIPT), command, *arguments]
        process.setArguments(arguments)
        process.setWorkingDirectory(str(MAIN_SCRIPT.parent))
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        process.readyReadStandardOutput.connect(self._on_process_output)
        process.finished.connect(self._on_process_finished)
        process.errorOccurred.connect(self._on_process_error)
        self._process = process
        process.start()
        self.started.emit([sys.executable, *arguments])

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM): a command that stops cleanly keeps what it made; ``stop`` kills."""
        if self._process is not None and self.is_running:
            self._process.terminate()

    def stop(self) -> None:
        """End the child at once; what it wrote is left as it is (its writes are atomic)."""
        if self._process is not None and self.is_running:
            self._process.kill()

    def _on_process_output(self) -> None:
        assert self._process is not None
        self._buffer += self._process.readAllStandardOutput().data()
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._relay(raw)

    def _relay(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not line.strip():
            return
        if line.startswith("error:") or "Error" in line.split(":", 1)[0]:
            self._last_error = line.removeprefix("error:").strip()
        self.line_printed.emit(line)

    def _on_process_finished(self, exit_code: int, exit_status: QProcess.ExitStatus) -> None:
        self._on_process_output()
        if self._buffer:
            self._relay(self._buffer)
            self._buffer = b""
        if exit_status == QProcess.ExitStatus.NormalExit and exit_code == 0:
            self.finished.emit(True, "")
        elif exit_status == QProcess.ExitStatus.CrashExit:
            self.finished.emit(False, "the process was stopped or crashed before it finished")
        else:
            self.finished.emit(False, self._last_error or f"the command exited with code {exit_code}")

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            assert self._process is not None
            self.finished.emit(False, f"could not start {sys.executable}: {self._process.errorString()}")

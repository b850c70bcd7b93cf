"""One-shot CLI commands in a child process: printed lines relayed, failures reported in one line."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from gui.services.command_runner import CommandRunner


def test_relays_the_lines_of_a_successful_command(qtbot: QtBot) -> None:
    runner = CommandRunner()
    lines: list[str] = []
    runner.line_printed.connect(lines.append)
    with qtbot.waitSignal(runner.finished, timeout=60_000) as finished:
        runner.start("doctor", ["--list"])
    assert finished.args == [True, ""]
    assert any(line.startswith("divergence") for line in lines)
    assert not runner.is_running


def test_a_failing_command_reports_its_error_line(qtbot: QtBot, tmp_path: Path) -> None:
    runner = CommandRunner()
    with qtbot.waitSignal(runner.finished, timeout=60_000) as finished:
        runner.start("config", ["--check", str(tmp_path / "missing.yaml")])
    succeeded, message = finished.args
    assert not succeeded
    assert "missing.yaml" in message

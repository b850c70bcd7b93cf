"""RunController: a real training child, followed through its run folder, stopped and killed."""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_photos import copy_demo

from engine.checkpoint import load_checkpoint
from gui.run_controller import RunController

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "data", ("bag", "sneaker", "trouser"), 15)


def train_arguments(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [str(data), "--run-dir", str(run_dir), "--set", "data.num_workers=0", *extra]


def test_a_finished_run_streams_its_events(qtbot, small_data: Path, tmp_path: Path) -> None:
    controller = RunController(poll_interval_ms=50)
    received: list[str] = []
    controller.event_received.connect(lambda event: received.append(event["event"]))
    with qtbot.waitSignal(controller.run_ended, timeout=240_000) as ended:
        controller.start("train", train_arguments(small_data, tmp_path / "run", "--epochs", "2"), tmp_path / "run")
    assert ended.args[0] == "finished"
    assert received[0] == "dataset_scanned" and received[-1] == "run_finished"
    assert received.count("epoch_finished") == 2
    assert not controller.is_running


def test_stop_is_clean_and_kill_is_reported(qtbot, small_data: Path, tmp_path: Path) -> None:
    controller = RunController(poll_interval_ms=50)

    def stop_in_second_epoch(event: dict) -> None:
        if event["event"] == "batch_finished" and event["epoch"] == 2:
            controller.stop()

    controller.event_received.connect(stop_in_second_epoch)
    arguments = train_arguments(small_data, tmp_path / "stopped", "--epochs", "50", "--mode", "fine_tune",
                                "--batch-size", "4", "--set", "data.input_size=64")
    with qtbot.waitSignal(controller.run_ended, timeout=240_000) as ended:
        controller.start("train", arguments, tmp_path / "stopped")
    assert ended.args[0] == "cancelled"
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.safetensors").metadata["stopped"] == "stopped"

    controller.event_received.disconnect(stop_in_second_epoch)

    def kill_in_first_epoch(event: dict) -> None:
        if event["event"] == "batch_finished":
            controller.kill()

    controller.event_received.connect(kill_in_first_epoch)
    with qtbot.waitSignal(controller.run_ended, timeout=240_000) as ended:
        controller.start("train", train_arguments(small_data, tmp_path / "killed", "--epochs", "50", "--mode",
                                                  "fine_tune", "--batch-size", "4", "--set", "data.input_size=64"),
                         tmp_path / "killed")
    assert ended.args[0] == "failed" and "killed" in ended.args[1]

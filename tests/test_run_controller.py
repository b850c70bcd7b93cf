"""RunController: a real training child, followed through its run folder, stopped and killed.

Besides real ``main.py train`` children, a stand-in child script (``STAND_IN``, a real
Python process started by the controller's real QProcess) writes ``events.jsonl`` as
``main.py`` does and ends in one chosen way, fast, so every way a run can end is
checked by value, and races that a slow training child hides are hit on purpose.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from pytestqt.qtbot import QtBot

from engine.models.checkpoint import load_checkpoint
from gui.services.run_controller import RunController

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"

# Run as ``python stand_in.py BEHAVIOUR RUN_DIR --events-only`` (the controller's argument layout).
STAND_IN = textwrap.dedent('''
    import json, os, signal, sys, time
    from pathlib import Path

    behaviour, run_dir = sys.argv[1], Path(sys.argv[2])
    run_dir.mkdir(parents=True, exist_ok=True)
    events = open(run_dir / "events.jsonl", "a", encoding="utf-8")


    def write(event, **payload):
        record = {"schema": 1, "event": event, "time": time.time(), "epoch": None, "step": None, **payload}
        events.write(json.dumps(record) + "\\n")
        events.flush()


    ENDINGS = {  # behaviour: final event (None: none), its payload, exit code
        "finish": ("run_finished", {"message": "early stop: no gain in 5 epochs"}, 0),
        "cancel": ("run_cancelled", {"reason": "stopped", "message": "stop requested"}, 0),
        "fail": ("run_failed", {"error_type": "RuntimeError", "message": "CUDA error: out of memory"}, 1),
        "fail-exit-0": ("run_failed", {"error_type": "ValueError", "message": "bad batch"}, 0),
        "finish-exit-3": ("run_finished", {"message": ""}, 3),
        "lr-find": ("lr_find_finished", {"reason": "loss diverged at 0.3", "suggestion": 0.01}, 0),
        "sanity": ("sanity_finished", {"message": "memorised 20 images"}, 0),
        "search": ("search_finished", {"state": "finished"}, 0),
        "search-fail": ("search_failed", {"error_type": "OSError", "message": "study.db: database is locked"}, 1),
        "exit-1": (None, {}, 1),
        "exit-0": (None, {}, 0),
    }
    write("run_started")
    for epoch in (1, 2, 3):
        write("epoch_finished", epoch=epoch)
    if behaviour in ENDINGS:
        event, payload, code = ENDINGS[behaviour]
        if event is not None:
            write(event, **payload)
        os._exit(code)  # at once: nothing between the last line and the exit
    if behaviour == "disk-full":  # no room for run_failed in events.jsonl: the one line on stderr says why
        sys.stderr.write("error: cannot write last.safetensors: no space left on device (disk /: 0 bytes free)\\n")
        sys.stderr.flush()
        os._exit(2)
    if behaviour == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    deadline = time.monotonic() + 60  # never outlive a broken test by long
    if behaviour == "slow-finish":
        deadline = time.monotonic() + float(sys.argv[3])
    reported = False
    while time.monotonic() < deadline:
        if (run_dir / "STOP").exists() and not reported:
            if behaviour == "obey-stop":
                write("run_cancelled", reason="stopped", message="stop requested")
                os._exit(0)
            (run_dir / "stop_seen").touch()  # "ignore-stop" and the others: busy elsewhere, never act on it
            reported = True
        time.sleep(0.01)
    write("run_finished", message="")
    os._exit(0)
''')
KILLED_ON_REQUEST = "the run was killed on request (no final event); last checkpoint kept"


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")
    return script


@pytest.fixture
def make_controller(qtbot: QtBot) -> Iterator:
    """Builds RunControllers; any child still alive at the end is killed (and waited for)."""
    made: list[RunController] = []

    def make(**options) -> RunController:
        made.append(RunController(**options))
        return made[-1]

    yield make
    for controller in made:
        if controller.is_running:
            with qtbot.waitSignal(controller.run_ended, timeout=10_000):
                controller.kill()


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


def test_the_last_events_are_read_when_the_child_exits_right_after_writing_them(
    qtbot: QtBot, make_controller, stand_in: Path, tmp_path: Path
) -> None:
    # The stand-in writes its final line and exits at once: at the default 200 ms no poll
    # comes between, at faster rates one sometimes does. Only the read made when the exit is
    # reported sees that line every time, at any rate.
    endings = [("finish", "run_finished", "finished"), ("cancel", "run_cancelled", "cancelled"),
               ("fail", "run_failed", "failed")]
    for poll_interval_ms in (200, 50, 5):
        controller = make_controller(script=stand_in, poll_interval_ms=poll_interval_ms)
        seen: list[tuple[str, str]] = []
        controller.event_received.connect(lambda event, seen=seen: seen.append(("event", event["event"])))
        controller.run_ended.connect(lambda state, _message, seen=seen: seen.append(("ended", state)))
        for attempt in range(9):
            behaviour, final_event, state = endings[attempt % len(endings)]
            run_dir = tmp_path / f"run-{poll_interval_ms}-{attempt}"
            seen.clear()
            with qtbot.waitSignal(controller.run_ended, timeout=20_000):
                controller.start(behaviour, [str(run_dir)], run_dir)
            assert seen == [("event", "run_started"), *[("event", "epoch_finished")] * 3, ("event", final_event),
                            ("ended", state)], f"polling every {poll_interval_ms} ms, run {attempt}"
            assert not controller.is_running


@pytest.mark.parametrize(("behaviour", "expected"), [
    ("finish", ("finished", "early stop: no gain in 5 epochs")),
    ("cancel", ("cancelled", "stop requested")),
    ("fail", ("failed", "CUDA error: out of memory")),
    ("fail-exit-0", ("failed", "bad batch")),
    ("finish-exit-3", ("finished", "")),  # the run folder is complete; the exit code only backs it up
    ("lr-find", ("finished", "loss diverged at 0.3")),
    ("sanity", ("finished", "memorised 20 images")),
    ("search", ("finished", "")),
    ("search-fail", ("failed", "study.db: database is locked")),
    ("exit-1", ("failed", "the training process exited with code 1 before it finished")),
    ("exit-0", ("failed", "the training process exited with code 0 before it finished")),
    ("segfault", ("failed", "the training process was killed or crashed (no final event); last checkpoint kept")),
    ("disk-full", ("failed", "cannot write last.safetensors: no space left on device (disk /: 0 bytes free)")),
])
def test_how_a_run_ended_is_told_by_its_last_event_and_its_exit(
    qtbot: QtBot, make_controller, stand_in: Path, tmp_path: Path, behaviour: str, expected: tuple[str, str]
) -> None:
    controller = make_controller(script=stand_in)
    with qtbot.waitSignal(controller.run_ended, timeout=20_000) as ended:
        controller.start(behaviour, [str(tmp_path / "run")], tmp_path / "run")
    assert tuple(ended.args) == expected
    assert not controller.is_running


def test_a_kill_on_request_and_a_child_that_cannot_start_are_failures_that_say_so(
    qtbot: QtBot, make_controller, stand_in: Path, tmp_path: Path
) -> None:
    controller = make_controller(script=stand_in)
    controller.event_received.connect(lambda event: controller.kill() if event["event"] == "run_started" else None)
    with qtbot.waitSignal(controller.run_ended, timeout=20_000) as ended:
        controller.start("ignore-stop", [str(tmp_path / "killed")], tmp_path / "killed")
    assert tuple(ended.args) == ("failed", KILLED_ON_REQUEST)

    missing = tmp_path / "no-such-python"
    broken = make_controller(script=stand_in, executable=str(missing))
    with qtbot.waitSignal(broken.run_ended, timeout=20_000) as ended:
        broken.start("finish", [str(tmp_path / "never")], tmp_path / "never")
    assert ended.args[0] == "failed" and ended.args[1].startswith(f"could not start {missing}: ")
    assert not broken.is_running


def test_a_child_that_ignores_stop_is_killed_after_the_grace_period(
    qtbot: QtBot, make_controller, stand_in: Path, tmp_path: Path
) -> None:
    controller = make_controller(script=stand_in, poll_interval_ms=20, stop_grace_ms=1000)
    stopped_at: list[float] = []

    def stop_once_started(event: dict) -> None:
        if event["event"] == "run_started":
            stopped_at.append(time.monotonic())
            controller.stop()

    controller.event_received.connect(stop_once_started)
    with qtbot.waitSignal(controller.run_ended, timeout=20_000) as ended:
        controller.start("ignore-stop", [str(tmp_path / "stubborn")], tmp_path / "stubborn")
    waited = time.monotonic() - stopped_at[0]
    assert tuple(ended.args) == ("failed", "the run did not stop within 1 s of the stop request and was killed "
                                           "(no final event); last checkpoint kept")
    # It was asked (STOP written, and seen by the child) and given the whole grace period first.
    assert (tmp_path / "stubborn" / "STOP").is_file() and (tmp_path / "stubborn" / "stop_seen").is_file()
    assert waited >= 1.0
    assert not controller.is_running


def test_a_stop_obeyed_in_time_leaves_no_kill_pending_for_the_next_run(
    qtbot: QtBot, make_controller, stand_in: Path, tmp_path: Path
) -> None:
    controller = make_controller(script=stand_in, poll_interval_ms=20, stop_grace_ms=1000)

    def stop_once_started(event: dict) -> None:
        if event["event"] == "run_started":
            controller.stop()

    controller.event_received.connect(stop_once_started)
    with qtbot.waitSignal(controller.run_ended, timeout=20_000) as ended:
        controller.start("obey-stop", [str(tmp_path / "obeys")], tmp_path / "obeys")
    assert tuple(ended.args) == ("cancelled", "stop requested")
    controller.event_received.disconnect(stop_once_started)
    # The next run outlives the first one's grace period; nobody asked it to stop.
    with qtbot.waitSignal(controller.run_ended, timeout=20_000) as ended:
        controller.start("slow-finish", [str(tmp_path / "next"), "2.0"], tmp_path / "next")
    assert tuple(ended.args) == ("finished", "")

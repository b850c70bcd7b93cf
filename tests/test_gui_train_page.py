"""The Train page driving real training children on a small copy of the demo dataset.

Runs are ``main.py train`` processes started by the page through a real RunController;
tests wait on the page's and the controller's own signals.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig, load_config
from engine.core.paths import project_dir_for
from engine.models.checkpoint import load_checkpoint
from engine.training.doctor import DIAGNOSIS_EVENT, Diagnosis
from engine.training.runfolder import RunFolder, read_events
from gui.pages.train.doctor_panel import HEALTHY_END_TEXT, HEALTHY_TEXT
from gui.pages.train.page import TrainPage
from gui.pages.train.run_log import describe_device
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import apply_style

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
RUN_TIMEOUT_MS = 240_000
FINE_TUNE = {"model.mode": "fine_tune", "data.input_size": 64, "optim.batch_size": 4, "optim.epochs": 50}


# Any QSettings built from application names stays off the user's real ones (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """3 classes x 15 demo images."""
    return copy_demo(tmp_path / "data", ("bag", "sneaker", "trouser"), 15)


@pytest.fixture
def state(small_data: Path) -> ConfigState:
    """Feature extraction, 5 batches per epoch, 4 epochs: a few seconds, enough points to draw."""
    return ConfigState(RunConfig().with_changes(**{
        "data.path": str(small_data), "data.num_workers": 0, "optim.batch_size": 8, "optim.epochs": 4,
        "doctor.update_ratio_every": 5,
    }))


@pytest.fixture
def controller(qtbot) -> Iterator[RunController]:
    controller = RunController(poll_interval_ms=50)
    yield controller
    if controller.is_running:  # a failed test must not leave a training process behind
        with qtbot.waitSignal(controller.run_ended, timeout=RUN_TIMEOUT_MS):
            controller.kill()


@pytest.fixture
def page(qtbot, qapp, state: ConfigState, controller: RunController) -> TrainPage:
    apply_style(qapp)
    page = TrainPage(state, controller)
    qtbot.addWidget(page)
    page.resize(950, 680)
    page.show()
    qtbot.waitExposed(page)
    return page


def test_a_run_draws_its_curves_as_events_arrive_and_reports_its_end(
    qtbot, page: TrainPage, controller: RunController, small_data: Path
) -> None:
    drawn_losses: list[int] = []  # train-loss points after each event, seen after the page took it
    statuses: list[str] = []

    def watch(_event: dict) -> None:
        drawn_losses.append(len(page.curves.series("train_loss")[0]))
        statuses.append(page.status_label.text())

    controller.event_received.connect(watch)
    with qtbot.waitSignal(page.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        run_dir = page.start()
        assert run_dir is not None
        assert not page.start_button.isEnabled() and page.stop_button.isEnabled()
        assert "in progress" in page.start_button.toolTip()
    assert finished.args == [run_dir]

    events = read_events(run_dir)
    batches = [event for event in events if event["event"] == "batch_finished"]
    assert len(batches) == 4 * 5 and events[-1]["event"] == "run_finished"
    assert drawn_losses[0] == 0 and drawn_losses == sorted(drawn_losses) and drawn_losses[-1] == len(batches)
    assert "Epoch 1/4, batch 1/5" in statuses
    assert any(re.fullmatch(r"Epoch 4/4, batch 4/5, ETA \d+:\d\d", status) for status in statuses)
    xs, losses = page.curves.series("train_loss")
    assert xs[0] == pytest.approx(0.2) and xs[-1] == pytest.approx(4.0)
    assert losses == pytest.approx([event["train_loss"] for event in batches])
    assert len(page.curves.series("learning_rate")[1]) == len(batches)
    assert page.curves.series("val_loss")[0] == [1.0, 2.0, 3.0, 4.0]
    final_accuracy = page.curves.series("val_top1")[1][-1]
    assert 0.0 <= final_accuracy <= 100.0 and len(page.curves.series("val_top1")[1]) == 4
    assert page.curves.series("ema_val_loss") == ([], [])  # no EMA in this run, so no EMA curve
    ratios = [event["ratios"]["head"] for event in events if event["event"] == "update_ratio_measured"]
    assert len(ratios) == 4 and page.curves.series("update_ratio/head") == ([1.0, 2.0, 3.0, 4.0], ratios)

    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert page.progress_bar.value() == page.progress_bar.maximum() > 0
    assert page.outcome_label.isVisible() and page.outcome_label.text().startswith("Run finished: best val accuracy")
    log = page.log_view.text()
    assert "Run started on cpu" in log and "Checkpoint 'best' saved" in log and "Run finished" in log
    assert "Epoch 4: train loss" in log
    started = next(event for event in events if event["event"] == "run_started")
    assert page.device_label.isVisible() and page.device_label.text() == describe_device(started)
    assert page.device_label.text().startswith(f"Device: {started['device']}")
    if not page.doctor_panel.diagnoses:
        assert page.doctor_panel.summary_label.text() == HEALTHY_END_TEXT

    # The command names the run's own config.yaml; the temporary one is gone.
    qtbot.mouseClick(page.copy_command_button, Qt.MouseButton.LeftButton)
    command = QGuiApplication.clipboard().text()
    assert command == page.command_text == page.command_label.text() and command in page.copy_command_button.toolTip()
    assert shlex.split(command) == ["python", "main.py", "train", str(small_data), "--config",
                                    str(run_dir / "config.yaml")]
    assert load_config(run_dir / "config.yaml").optim.epochs == 4
    assert not list((project_dir_for(small_data) / "configs").glob("*.yaml"))

    qtbot.waitUntil(lambda: not page.curves.redraw_pending)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT_DIR / "train_page.png"))


def test_start_is_disabled_without_a_dataset_or_with_a_refused_setting(
    qtbot, controller: RunController, small_data: Path
) -> None:
    state = ConfigState()
    page = TrainPage(state, controller)
    qtbot.addWidget(page)
    assert not page.start_button.isEnabled() and "dataset" in page.start_button.toolTip()
    assert page.status_label.text() == page.start_button.toolTip()
    assert not page.copy_command_button.isEnabled()
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.start() is None and not controller.is_running and page.run_dir is None

    assert state.set_value("data.path", str(small_data))
    assert page.start_button.isEnabled()
    assert not state.set_value("optim.epochs", 0)
    assert not state.is_valid and not page.start_button.isEnabled()
    assert "optim.epochs: must be >= 1" in page.start_button.toolTip()
    assert page.start() is None and not controller.is_running
    assert state.set_value("optim.epochs", 2)
    assert page.start_button.isEnabled()

    # Before any run, the command trains with the current settings, saved for it.
    command = page.copy_command()
    assert QGuiApplication.clipboard().text() == command
    config_file = Path(shlex.split(command)[-1])
    assert load_config(config_file) == state.config


def test_a_killed_run_shows_its_failure_and_the_next_run_stops_cleanly(
    qtbot, page: TrainPage, controller: RunController, state: ConfigState
) -> None:
    assert state.apply(FINE_TUNE)

    def kill_at_first_batch(event: dict) -> None:
        if event["event"] == "batch_finished":
            controller.kill()

    controller.event_received.connect(kill_at_first_batch)
    with qtbot.waitSignal(page.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        killed = page.start()
    controller.event_received.disconnect(kill_at_first_batch)
    assert finished.args == [killed]
    assert page.outcome_label.isVisible()
    assert page.outcome_label.text().startswith("The run failed: the run was killed on request")
    assert "The run failed: the run was killed on request" in page.log_view.text()
    assert page.status_label.text().startswith("Ready to train tf_efficientnet_lite0 (fine tune)")
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()

    # The page still works: the next run starts afresh, and Stop ends it with a checkpoint.
    stops: list[int] = []

    def stop_in_second_epoch(event: dict) -> None:
        if event["event"] == "batch_finished" and event["epoch"] == 2 and not stops:
            stops.append(event["step"])
            qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
            assert not page.stop_button.isEnabled() and "Stopping" in page.status_label.text()

    controller.event_received.connect(stop_in_second_epoch)
    with qtbot.waitSignal(controller.run_ended, timeout=RUN_TIMEOUT_MS) as ended, \
            qtbot.waitSignal(page.run_finished, timeout=RUN_TIMEOUT_MS):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
        stopped = page.run_dir
        assert stopped != killed and page.outcome_label.isHidden()
        assert page.curves.series("train_loss") == ([], []) and "The run failed" not in page.log_view.text()
    assert ended.args[0] == "cancelled" and stops
    checkpoint = load_checkpoint(RunFolder(stopped).checkpoint_path("last"))
    assert checkpoint.metadata["stopped"] == "stopped" and checkpoint.metadata["epoch"] >= 1
    assert page.outcome_label.isVisible() and page.outcome_label.text().startswith("Run stopped (stop requested)")
    assert page.start_button.isEnabled()


def test_the_doctor_panel_shows_a_diagnosis_and_applies_its_fix(
    qtbot, page: TrainPage, state: ConfigState, tmp_path: Path
) -> None:
    assert state.set_value("optim.learning_rate", 10.0)
    events_folder = RunFolder(tmp_path)  # the events exactly as a run writes and the controller reads them
    diverged = Diagnosis(
        "divergence", "error", "Training diverged",
        "The training loss reached 8.873, 8x its starting value: lower the learning rate from 10 to 1.",
        evidence={"loss": 16.648, "initial_loss": 1.0986, "steps": 1}, fix={"optim.learning_rate": 1.0},
    )
    imbalance = Diagnosis("class_imbalance", "info", "Classes of different sizes", "The largest class is 3x ...")
    for diagnosis in (diverged, imbalance):
        events_folder.write_event(DIAGNOSIS_EVENT, epoch=1, step=1, **diagnosis.to_dict())
    first, second = read_events(tmp_path)

    panel = page.doctor_panel
    panel.reset()
    assert panel.summary_label.text() == HEALTHY_TEXT
    card = panel.add_diagnosis(first)
    note = panel.add_diagnosis(second)
    qtbot.waitUntil(note.isVisible)  # a widget added to a shown layout is shown on the next event-loop turn
    assert panel.summary_label.text() == "The doctor found 1 error, 1 note."
    assert card.title_label.text() == "Training diverged" and "initial loss: 1.099" in card.evidence_label.text()
    assert card.fix_button.isVisible() and card.fix_label.text() == "Suggested fix: optim.learning_rate 10 → 1"
    assert note.fix_button.isHidden()

    qtbot.mouseClick(card.fix_button, Qt.MouseButton.LeftButton)
    assert state.config.optim.learning_rate == 1.0
    assert card.fix_label.text() == "Changed optim.learning_rate from 10 to 1. The next run uses it."
    assert not card.fix_button.isEnabled()
    assert "Applied the doctor's fix: optim.learning_rate = 1.0" in page.log_view.text()


def test_a_diverging_run_is_stopped_by_the_doctor_whose_fix_applies(
    qtbot, page: TrainPage, controller: RunController, state: ConfigState
) -> None:
    assert state.apply({"optim.learning_rate": 10.0, "optim.batch_size": 4, "optim.epochs": 5})
    with qtbot.waitSignal(controller.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        page.start()
    assert ended.args[0] == "cancelled"
    cards = {card.diagnosis["check"]: card for card in page.doctor_panel.cards}
    divergence = cards["divergence"]
    assert divergence.severity == "error" and divergence.fix == {"optim.learning_rate": 1.0}
    assert page.doctor_panel.summary_label.text().startswith("The doctor found 1 error")
    assert page.outcome_label.text().startswith("Run stopped, diverged: The training loss reached")
    assert "Doctor: Training diverged" in page.log_view.text()
    qtbot.waitUntil(divergence.fix_button.isVisible)
    qtbot.mouseClick(divergence.fix_button, Qt.MouseButton.LeftButton)
    assert state.config.optim.learning_rate == 1.0 and page.start_button.isEnabled()

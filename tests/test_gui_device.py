"""Devices and batches in the GUI: the settings' fields, and the Train page's view of a run's device and batch splits.

The fields are real widgets bound to a real ``ConfigState``. The Train page follows a real
child process through a real ``RunController``: a stand-in for ``main.py train`` that writes,
with the engine's own event writer, the events a run writes, with this machine's real device
plan, and the ``batch_size_changed`` that a CUDA run writes when it runs out of memory (which
no CPU machine can cause).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.training.runfolder import read_events
from gui.pages.model.page import ModelPage
from gui.pages.train.doctor_panel import BATCH_SPLIT_TITLE
from gui.pages.train.page import TrainPage
from gui.pages.train.run_log import describe_batch_change, describe_device
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import apply_style
from gui.widgets.fields import BoundField, IntegerOrAutoField, help_text

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_MS = 120_000
SPLIT_MESSAGE = ("CUDA ran out of memory with 64 images per forward pass: each batch of 64 now goes through the"
                 " model in 2 pieces of 32, whose gradients add up, so a step still averages 64 images.")

# Run as ``python stand_in.py train DATA --config FILE --run-dir RUN_DIR --events-only`` (the page's layout).
STAND_IN = textwrap.dedent(f'''
    import sys
    sys.path.insert(0, {str(ROOT)!r})
    import engine  # before torch, as every entry point does
    from engine.core.config import RunConfig
    from engine.core.device import plan_device
    from engine.training.runfolder import RunFolder

    arguments = sys.argv[1:]
    folder = RunFolder.create(arguments[arguments.index("--run-dir") + 1], RunConfig())
    plan = plan_device("auto")
    folder.write_event(
        "run_started", config=RunConfig().to_dict(), classes=["bag", "shoe"], backbone="resnet18",
        mode="fine_tune", stage="fine_tune", weights_source="none", device=plan.describe(),
        device_reason=plan.reason, data_settings={{}}, trainable_parameters=1000, train_images=128,
        val_images=32, batches_per_epoch=2, last_epoch=1, resumed_from=None, batch_size=64, accumulate_steps=1)
    folder.write_event(
        "batch_size_changed", epoch=1, step=0, micro_batch_size=32, previous_micro_batch_size=64,
        batch_size=64, effective_batch_size=64, reason="CUDA out of memory", message={SPLIT_MESSAGE!r})
    folder.write_event("run_finished", epoch=1, step=2, best_checkpoint=None, best_value=None, best_epoch=None,
                       metric="val_top1", stopped_early=False, message=None)
''')


# Any QSettings built from application names stays off the user's real ones (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture
def controller(qtbot, tmp_path: Path) -> Iterator[RunController]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")
    controller = RunController(poll_interval_ms=50, script=script)
    yield controller
    if controller.is_running:
        with qtbot.waitSignal(controller.run_ended, timeout=RUN_TIMEOUT_MS):
            controller.kill()


def test_the_batch_size_field_takes_a_number_or_auto(qtbot) -> None:
    state = ConfigState()
    field = IntegerOrAutoField(state, "optim.batch_size", maximum=4096)
    qtbot.addWidget(field)
    assert field.editor.value() == 32 and field.toolTip() == help_text("optim.batch_size")
    field.editor.setValue(field.editor.minimum())
    assert state.config.optim.batch_size == "auto" and field.editor.text() == "auto"
    field.editor.setValue(128)
    assert state.config.optim.batch_size == 128
    assert state.set_value("optim.batch_size", "auto")
    assert field.editor.text() == "auto" and not field.error


def test_the_model_page_edits_the_device_and_step_settings(qtbot, qapp) -> None:
    apply_style(qapp)
    state = ConfigState()
    page = ModelPage(state)
    qtbot.addWidget(page)
    page.resize(1100, 720)
    page.show()
    qtbot.waitExposed(page)

    def editor(path: str, kind: type) -> Any:
        found = [field.editor for field in page.findChildren(BoundField) if field.path == path]
        assert len(found) == 1 and isinstance(found[0], kind), path
        assert found[0].parentWidget().toolTip() == help_text(path)
        return found[0]

    batch = editor("optim.batch_size", QSpinBox)
    accumulate = editor("optim.accumulate_steps", QSpinBox)
    clip = editor("optim.clip_grad_norm", QLineEdit)
    assert accumulate.text() == "off" and clip.text() == "" and clip.placeholderText() == "off"
    batch.setValue(0)
    accumulate.setValue(4)
    clip.setText("1.5")
    clip.editingFinished.emit()
    optim = state.config.optim
    assert (optim.batch_size, optim.accumulate_steps, optim.clip_grad_norm) == ("auto", 4, 1.5)
    clip.setText("")
    clip.editingFinished.emit()
    assert state.config.optim.clip_grad_norm is None

    device = editor("device", QComboBox)
    assert [device.itemData(index) for index in range(device.count())] == ["auto", "cpu", "cuda", "mps"]
    device.setCurrentIndex(device.findText("Apple GPU (MPS)"))
    assert state.config.device == "mps"
    compile_box = editor("model.compile", QCheckBox)
    qtbot.mouseClick(compile_box, Qt.MouseButton.LeftButton, pos=compile_box.rect().center())
    assert state.config.model.compile
    assert state.set_value("device", "cuda") and device.currentText() == "NVIDIA GPU (CUDA)"

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.tabs.setCurrentIndex(page.tabs.indexOf(page.device_form.parentWidget().parentWidget()))
    assert page.grab().save(str(SCREENSHOT_DIR / "model_page_device.png"))
    page.tabs.setCurrentIndex(0)
    assert page.grab().save(str(SCREENSHOT_DIR / "model_page_training.png"))


def test_the_train_page_shows_the_device_and_a_batch_split(
    qtbot, qapp, controller: RunController, tmp_path: Path
) -> None:
    apply_style(qapp)
    data = tmp_path / "data"
    data.mkdir()
    state = ConfigState(RunConfig().with_changes(**{"data.path": str(data), "optim.batch_size": 64}))
    page = TrainPage(state, controller)
    qtbot.addWidget(page)
    page.resize(950, 680)
    page.show()
    qtbot.waitExposed(page)
    assert "batch size 64," in page.status_label.text() and page.device_label.isHidden()
    assert state.set_value("optim.batch_size", "auto")
    assert "batch size auto (the most that fits on a CUDA GPU, else 32)" in page.status_label.text()
    assert state.set_value("optim.batch_size", 64)

    with qtbot.waitSignal(page.run_finished, timeout=RUN_TIMEOUT_MS):
        run_dir = page.start()
    started, split = (event for event in read_events(run_dir) if event["event"] != "run_finished")

    # Where it trains and why, with the batch as it is after the split.
    assert page.device_label.isVisible()
    text = page.device_label.text()
    assert text == describe_device(started, micro_batch_size=32)
    assert text.startswith(f"Device: {started['device']} \N{EM DASH} {started['device_reason']}. Batches of 64")
    assert text.endswith(", through the model 32 at a time to fit in memory")

    # The log says it in words, as a warning; the doctor shows it with a fix for the next run.
    assert SPLIT_MESSAGE in page.log_view.text()
    (card,) = page.doctor_panel.cards
    assert card.severity == "warning" and card.title_label.text() == BATCH_SPLIT_TITLE
    assert card.message_label.text() == SPLIT_MESSAGE
    assert card.evidence_label.text() == ("previous micro batch size: 64 · micro batch size: 32"
                                          " · effective batch size: 64")
    assert page.doctor_panel.summary_label.text() == "The doctor found 1 warning."
    qtbot.waitUntil(card.fix_button.isVisible)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT_DIR / "train_page_device.png"))
    qtbot.mouseClick(card.fix_button, Qt.MouseButton.LeftButton)
    assert (state.config.optim.batch_size, state.config.optim.accumulate_steps) == (32, 2)
    assert split["effective_batch_size"] == 32 * 2

    # A new run forgets the last one's device and split until its own events come.
    with qtbot.waitSignal(page.run_finished, timeout=RUN_TIMEOUT_MS):
        assert page.start() is not None
        assert page.device_label.isHidden() and not page.doctor_panel.cards


def test_a_batch_split_without_a_message_is_put_in_words() -> None:
    text = describe_batch_change({"event": "batch_size_changed", "micro_batch_size": 16,
                                  "previous_micro_batch_size": 32, "batch_size": 32, "effective_batch_size": 128,
                                  "reason": "CUDA out of memory", "message": ""})
    assert text == ("CUDA out of memory: each batch of 32 images now goes through the model 16 at a time (was 32);"
                    " a step still averages 128 images, so only speed and memory change")
    assert describe_device({"device": "cpu, fp32", "batch_size": 8, "accumulate_steps": 4}) == (
        "Device: cpu, fp32. Batches of 8 images, 4 per optimizer step (32 images)")

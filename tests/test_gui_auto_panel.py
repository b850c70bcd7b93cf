"""The Train page's Auto box driving real ``main.py auto`` children on a tiny copy of the demo photos.

The children train a small model from random weights on 64 px inputs (as ``test_auto.py`` does):
the plan, its live view, stop and resume are the point, not the accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import Qt
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.core.paths import project_dir_for
from gui.pages.train.auto_panel import HINT, AutoPanel
from gui.pages.train.page import TrainPage
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import apply_style

SMALL = ["--backbone", "mobilenetv3_small_050", "--set", "model.weights=none", "--set", "data.input_size=64",
         "--set", "data.num_workers=0"]
AUTO_TIMEOUT_MS = 120_000

# Any QSettings built from application names stays off the user's real ones (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    """3 classes x 10 demo photos."""
    return copy_demo(tmp_path / "photos", classes=3, per_class=10)


@pytest.fixture
def page(qtbot, qapp, small_data: Path) -> Iterator[TrainPage]:
    apply_style(qapp)
    controller = RunController(poll_interval_ms=50)
    state = ConfigState(RunConfig().with_changes(**{"data.path": str(small_data), "data.num_workers": 0}))
    page = TrainPage(state, controller)
    page.auto_panel.extra_arguments = list(SMALL)
    qtbot.addWidget(page)
    page.resize(1000, 780)
    page.show()
    qtbot.waitExposed(page)
    yield page
    runner = page.auto_panel.runner
    if runner.is_running:  # a failed test must not leave an Auto process behind
        with qtbot.waitSignal(runner.finished, timeout=AUTO_TIMEOUT_MS):
            runner.stop()


def step_states(panel: AutoPanel) -> dict[str, tuple[str, str]]:
    """Each row's step title: (state, val top-1) as the plan view shows them."""
    view = panel.steps_view
    items = [view.topLevelItem(row) for row in range(view.topLevelItemCount())]
    return {item.text(0): (item.text(1), item.text(2)) for item in items}


def test_auto_shows_its_plan_live_and_ends_with_the_recommended_model_and_its_report(
    qtbot, page: TrainPage, small_data: Path,
) -> None:
    panel = page.auto_panel
    seen: list[dict[str, tuple[str, str]]] = []
    panel.runner.line_printed.connect(lambda _line: seen.append(step_states(panel)))
    panel.budget_box.setCurrentText("25s")
    with qtbot.waitSignal(page.auto_finished, timeout=AUTO_TIMEOUT_MS) as finished:
        qtbot.mouseClick(panel.auto_button, Qt.MouseButton.LeftButton)
        assert panel.is_running and panel.stop_button.isEnabled() and not panel.auto_button.isEnabled()
        assert not page.start_button.isEnabled() and page.start_button.toolTip().startswith("Auto is running")
    folder = finished.args[0]
    assert folder is not None and folder.parent == project_dir_for(small_data) / "auto"

    assert any(state == "running…" for states in seen for state, _ in states.values())
    states = step_states(panel)
    baseline_state, baseline_top1 = states["Feature extraction (head on cached features)"]
    assert baseline_state.startswith("done") and baseline_top1.endswith("%")
    assert all(state.startswith(("done", "skipped")) for state, _ in states.values()), states
    report = json.loads((folder / "report.json").read_text())
    assert report["state"] == "finished" and len(states) == len(report["steps"])

    model = panel.recommended_model
    assert model is not None and model.is_file() and str(model) == report["recommended"]
    assert panel.result_label.isVisible() and "Recommended model" in panel.result_label.text()
    assert panel.status_label.text().startswith("Auto finished in ")
    assert panel.time_bar.maximum() == 25 and 0 < panel.time_bar.value() <= 25
    assert panel.auto_button.isEnabled() and not panel.stop_button.isEnabled() and not panel.resume_button.isEnabled()
    assert page.start_button.isEnabled()
    assert "auto: " in page.log_view.text()  # the child's lines are in the page's log

    assert panel.report_button.isEnabled()
    qtbot.mouseClick(panel.report_button, Qt.MouseButton.LeftButton)
    assert panel.report_dialog is not None and panel.report_dialog.isVisible()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.grab().save(str(SCREENSHOT_DIR / "auto_panel.png"))
    panel.report_dialog.close()


def test_a_budget_it_cannot_read_is_one_line_and_starts_nothing(page: TrainPage, small_data: Path) -> None:
    panel = page.auto_panel
    panel.budget_box.setCurrentText("ten minutes")
    assert panel.status_label.text() == "Budget: expected a duration such as 90s, 10m or 1h30m, got 'ten minutes'"
    assert not panel.auto_button.isEnabled() and panel.auto_button.toolTip() == panel.status_label.text()
    assert panel.start() is False and not panel.is_running
    panel.budget_box.setCurrentText("5s")
    assert panel.status_label.text().startswith("Budget: at least 10s is needed")
    assert not (project_dir_for(small_data) / "auto").exists()

    panel.budget_box.setCurrentText("1m30s")
    assert panel.auto_button.isEnabled() and panel.status_label.text() == HINT
    assert panel.time_bar.text() == "Budget 1m30s"


def test_stop_keeps_the_best_model_so_far_and_resume_goes_on_in_the_same_folder(qtbot, page: TrainPage) -> None:
    panel = page.auto_panel

    shots: list[Path] = []

    def stop_at_fine_tuning(line: str) -> None:
        if line.startswith("two_stage: "):  # the first fine-tuning run is starting
            if not shots:
                SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
                shots.append(SCREENSHOT_DIR / "auto_panel_running.png")
                page.grab().save(str(shots[0]))
            panel.stop()

    panel.runner.line_printed.connect(stop_at_fine_tuning)
    panel.budget_box.setCurrentText("60s")
    with qtbot.waitSignal(page.auto_finished, timeout=AUTO_TIMEOUT_MS) as finished:
        assert panel.start()
    folder = finished.args[0]
    assert panel.status_label.text().startswith("Stopped during two_stage: the best model so far is kept")
    assert panel.recommended_model is not None and panel.recommended_model.is_file()
    assert "Best model so far" in panel.result_label.text()
    baseline, fine_tuning = [state for state, _ in step_states(panel).values()][:2]
    assert baseline.startswith("done") and fine_tuning == "stopped (Resume goes on)"
    assert panel.can_resume and panel.resume_button.isEnabled() and panel.auto_button.isEnabled()
    assert page.start_button.isEnabled()

    with qtbot.waitSignal(page.auto_finished, timeout=AUTO_TIMEOUT_MS) as resumed:
        qtbot.mouseClick(panel.resume_button, Qt.MouseButton.LeftButton)
        assert panel.is_running and not panel.resume_button.isEnabled()
    assert resumed.args == [folder]  # the same plan went on, and was stopped again at its fine-tuning step
    report = json.loads((folder / "report.json").read_text())
    assert report["sessions"] == 2 and report["state"] == "stopped"
    assert panel.resume_button.isEnabled()

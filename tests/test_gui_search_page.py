"""The Search page driving a real ``main.py search`` child on a small copy of the demo dataset.

A tiny coarse-to-fine search (3 coarse trials and 1 fine trial of one epoch, feature
extraction) runs through the page's own RunController; the tests wait on its signals.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import Qt
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig, load_config
from engine.search.folders import searches_dir
from engine.search.space import default_space
from gui.pages.search.page import SearchPage
from gui.pages.search.search_space_editor import COLUMN_HIGH, COLUMN_LOW, COLUMN_PATH, COLUMN_SCALE
from gui.services.config_state import ConfigState
from gui.style import apply_style

SEARCH_TIMEOUT_MS = 180_000
TINY_SEARCH = {"data.num_workers": 0, "data.input_size": 64, "search.coarse_trials": 3, "search.coarse_epochs": 1,
               "search.fine_trials": 1, "search.fine_epochs": 1}


# Any QSettings built from application names stays off the user's real ones (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture
def state(tmp_path: Path) -> ConfigState:
    """Feature extraction on 3 demo classes x 20 photos at 64 px, with a tiny search budget."""
    data = copy_demo(tmp_path / "photos", classes=3, per_class=20)
    return ConfigState(RunConfig().with_changes(**{"data.path": str(data), **TINY_SEARCH}))


@pytest.fixture
def page(qtbot, qapp, state: ConfigState) -> Iterator[SearchPage]:
    apply_style(qapp)
    page = SearchPage(state)
    qtbot.addWidget(page)
    page.resize(950, 680)
    page.show()
    qtbot.waitExposed(page)
    yield page
    if page.controller.is_running:  # a failed test must not leave a search behind
        with qtbot.waitSignal(page.controller.run_ended, timeout=SEARCH_TIMEOUT_MS):
            page.controller.kill()


def test_a_search_fills_the_scatter_and_table_live_and_its_best_config_goes_into_the_forms(
    qtbot, page: SearchPage, state: ConfigState
) -> None:
    assert page.start_button.isEnabled() and page.status_label.text().startswith("Ready: 4 parameters, 3 coarse")
    assert page.trial_plot.x_parameter == "optim.learning_rate" and not page.trial_plot.points()
    assert not page.train_best_button.isEnabled() and not page.stop_button.isEnabled()

    seen_while_running: list[bool] = []
    with qtbot.waitSignal(page.controller.run_ended, timeout=SEARCH_TIMEOUT_MS) as ended:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
        assert page.controller.is_running and not page.start_button.isEnabled() and page.stop_button.isEnabled()
        qtbot.waitUntil(lambda: bool(page.trial_plot.points()), timeout=SEARCH_TIMEOUT_MS)
        seen_while_running.append(page.controller.is_running)
        assert page.status_label.text().startswith("Coarse stage: ")
        assert page.trial_table.rowCount() >= 1
    assert ended.args[0] == "finished" and seen_while_running == [True]

    folder = page.study_folder
    assert folder is not None and folder.parent == searches_dir(state.config.data.path)
    assert load_config(folder / "config.yaml").search.coarse_trials == 3  # the config it started with
    assert page.outcome_label.isVisible() and page.outcome_label.text().startswith("Search finished: 4 trials")
    rows = page.trial_table.row_texts()
    assert [row[1] for row in rows] == ["coarse"] * 3 + ["fine"] and {row[2] for row in rows} <= {"complete", "pruned"}
    assert page.progress_bar.value() == page.progress_bar.maximum() == 4

    # Learning rate on a log x axis: each point sits at log10 of its trial's rate.
    records = {record.number: record for record in page.progress.records}
    points = page.trial_plot.points()
    assert len(points) == 4
    for number, x, y in points:
        assert x == pytest.approx(math.log10(records[number].params["optim.learning_rate"]))
        assert y == pytest.approx(records[number].value)
    assert page.trial_plot.set_x_parameter("optim.label_smoothing")
    assert [x for _number, x, _y in page.trial_plot.points()] == pytest.approx(
        [records[number].params["optim.label_smoothing"] for number in sorted(records)])
    page.trial_plot.set_x_parameter("optim.learning_rate")

    best = page.progress.best
    assert best is not None and page.trial_table.select_trial(best.number)
    assert page.trial_plot.detail_label.text().startswith(f"Trial {best.number} (")

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT_DIR / "search.png"))

    data_path = state.config.data.path
    assert page.train_best_button.isEnabled() and page.open_report_button.isEnabled()
    with qtbot.waitSignal(page.best_config_applied):
        qtbot.mouseClick(page.train_best_button, Qt.MouseButton.LeftButton)
    assert state.config.optim.learning_rate == best.params["optim.learning_rate"]
    assert state.config.optim.weight_decay == best.params["optim.weight_decay"]
    assert state.config.data.path == data_path and state.config.search.coarse_trials == 3

    # The study is listed for reopening, and shows the same trials from its report.
    page.refresh()
    assert page.study_settings.chosen_study() == folder
    page.progress.trials.clear()
    qtbot.mouseClick(page.study_settings.show_button, Qt.MouseButton.LeftButton)
    assert len(page.trial_table.row_texts()) == 4 and len(page.trial_plot.points()) == 4


def test_stop_then_stop_now_interrupts_the_running_trial_and_ends_the_search(
    qtbot, page: SearchPage, state: ConfigState
) -> None:
    state.set_value("search.coarse_epochs", 50)  # long enough to be interrupted mid-trial
    with qtbot.waitSignal(page.controller.run_ended, timeout=SEARCH_TIMEOUT_MS) as ended:
        page.start()
        qtbot.waitUntil(lambda: any(record.state == "running" and Path(record.run_dir, "events.jsonl").is_file()
                                    for record in page.progress.records), timeout=SEARCH_TIMEOUT_MS)
        page.stop()
        assert page.stop_button.text() == "Stop now" and "running trials finish" in page.status_label.text()
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
        assert not page.stop_button.isEnabled()
    assert ended.args[0] == "finished"
    assert page.outcome_label.text().startswith("Search stopped: 1 trial (1 failed)")
    assert page.trial_table.row_texts()[0][-1].startswith("interrupted")
    assert page.start_button.isEnabled() and page.stop_button.text() == "Stop"


def test_a_refused_storage_is_reported_in_the_page(qtbot, page: SearchPage) -> None:
    page.study_settings.storage_edit.setText("nosuchdb://nowhere")
    with qtbot.waitSignal(page.controller.run_ended, timeout=SEARCH_TIMEOUT_MS) as ended:
        folder = page.start()
    assert ended.args[0] == "failed"
    assert page.outcome_label.text().startswith("The search failed: --storage: cannot open 'nosuchdb://nowhere'")
    assert not list(folder.glob("*.yaml"))  # the refused search leaves no config behind
    assert page.start_button.isEnabled() and not page.train_best_button.isEnabled()


def test_the_space_editor_writes_the_space_into_the_config_and_marks_a_refused_range(
    qtbot, page: SearchPage, state: ConfigState
) -> None:
    editor = page.space_editor
    assert state.config.search.space == () and editor.table.rowCount() == len(default_space(state.config))
    assert "default space for feature extraction" in editor.note_label.text()

    editor.set_cell(0, COLUMN_LOW, "0.001")
    space = state.config.search.space
    assert len(space) == 4 and (space[0].path, space[0].low, space[0].high) == ("optim.learning_rate", 0.001, 0.1)
    assert "Your own space of 4 parameters" in editor.note_label.text()

    row = editor.add_parameter("augment.preset")
    assert editor.table.cellWidget(row, COLUMN_SCALE).currentText() == "choices"
    editor.set_cell(row, COLUMN_LOW, "light, strong")
    assert state.config.search.space[-1].choices == ("light", "strong")
    editor.set_cell(row, COLUMN_PATH, "model.head_dropout")
    assert (state.config.search.space[-1].low, state.config.search.space[-1].high) == (0.0, 0.5)

    editor.set_cell(1, COLUMN_HIGH, "1e-6")  # weight decay: high below low
    assert editor.error == "search.space[1].high: must be > low (1e-05), got 1e-06"
    assert editor.error_label.isVisible() and state.config.search.space[1].high == 0.1
    assert editor.table.item(1, COLUMN_LOW).background().color().alpha() > 0  # the refused row is marked
    assert not page.start_button.isEnabled() and "search.space[1].high" in page.start_button.toolTip()

    editor.set_cell(1, COLUMN_HIGH, "0.3")
    assert not editor.error and state.config.search.space[1].high == 0.3

    editor.set_cell(2, COLUMN_HIGH, "1.5")  # label smoothing 1.5 is a value the config refuses
    assert not page.start_button.isEnabled()
    assert "optim.label_smoothing: must be in [0, 1)" in page.start_button.toolTip()

    editor.reset_to_default()
    assert state.config.search.space == () and editor.table.rowCount() == 4 and page.start_button.isEnabled()


def test_a_log_axis_over_decades_labels_only_the_powers_of_ten(page: SearchPage) -> None:
    plot = page.trial_plot
    assert plot.x_parameter == "optim.learning_rate"  # 1e-4 to 0.1 on a log scale by default
    axis = plot.plot.getAxis("bottom")
    major, minor = axis._tickLevels  # set by the page: pyqtgraph's own labels every 2x..9x as well
    assert [label for position, label in major if -4.1 <= position <= -0.9] == ["0.0001", "0.001", "0.01", "0.1"]
    assert {label for _, label in minor} == {""}

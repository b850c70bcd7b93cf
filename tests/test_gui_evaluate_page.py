"""The Evaluate page on a copy of the demo project: real ``main.py evaluate`` children, the report explored.

The page writes its reports into the project, so the tests work on a copy of the
``demo_project`` fixture (two runs and the ``pair`` ensemble of their best checkpoints).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QPoint, Qt
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.paths import project_dir_for
from engine.evaluation.report_folders import evaluations_folder, list_reports
from gui.pages.evaluate.page import EvaluatePage
from gui.services.config_state import ConfigState
from gui.style import apply_style

EVALUATION_TIMEOUT_MS = 180_000
LISTING_TIMEOUT_MS = 30_000  # pool jobs of a few milliseconds, but the machine may be busy
SCREENSHOT = SCREENSHOT_DIR / "evaluate.png"


@pytest.fixture(scope="module")
def project_data(demo_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo data with its project folder (runs, ensemble), for the page to write reports into."""
    data = tmp_path_factory.mktemp("evaluate") / "photos"
    shutil.copytree(demo_project, data)
    return data


@pytest.fixture
def page(qtbot: QtBot, qapp, project_data: Path) -> EvaluatePage:
    apply_style(qapp)
    state = ConfigState()
    state.set_value("data.path", str(project_data))
    page = EvaluatePage(state)
    qtbot.addWidget(page)
    page.resize(950, 680)
    page.show()
    # Settled: the models listed, and the project's newest report (if any) on screen.
    reports = list_reports(project_dir_for(project_data))
    qtbot.waitUntil(lambda: len(page.chooser.entries()) > 0 and page.reports() == reports
                    and page.report_folder == (reports[0] if reports else None), timeout=LISTING_TIMEOUT_MS)
    return page


def _entry(page: EvaluatePage, kind: str):
    return next(entry for entry in page.chooser.entries() if entry.kind == kind)


def test_an_ensemble_report_shows_its_members_and_the_images_of_a_chosen_cell(
    qtbot: QtBot, page: EvaluatePage, project_data: Path
) -> None:
    manifest = _entry(page, "ensemble").path
    with qtbot.waitSignal(page.evaluation_finished, timeout=EVALUATION_TIMEOUT_MS) as finished:
        page.evaluate_model(manifest)
        assert page.is_running
        assert not page.controls.evaluate_button.isEnabled()
    folder = finished.args[0]
    assert folder.parent == evaluations_folder(project_dir_for(project_data))
    assert folder.name.startswith("pair-val-")
    report = page.view.report
    confusion = page.view.confusion_view
    assert confusion.total == report["summary"]["images"] == 20
    assert confusion.classes == tuple(report["classes"])

    table = page.view.scores_table
    names = [table.item(row, 0).toolTip() for row in range(table.rowCount())]
    assert names[0] == "ensemble"
    assert sorted(names[1:]) == sorted(report["members"]) and len(names) == 3

    gallery = page.view.cell_gallery

    def click_cell(row: int, column: int) -> None:
        center = confusion.cell_rect(row, column).center()
        qtbot.mouseClick(confusion, Qt.MouseButton.LeftButton, pos=QPoint(round(center.x()), round(center.y())))
        assert confusion.selected_cell == (row, column)
        images = gallery.images()
        assert len(images) == confusion.counts[row][column]
        true_label, predicted_label = confusion.classes[row], confusion.classes[column]
        assert all(image.path.parent.name == true_label == image.true_label for image in images)
        assert all(image.caption.startswith(predicted_label) for image in images)

    size = len(confusion.classes)
    for row in range(size):
        for column in range(size):
            click_cell(row, column)
    # Back to the cell with the most mistakes (the fullest if there are none), and one of its images' Grad-CAM.
    _mistaken, _count, row, column = max(
        (row != column, count, row, column)
        for row, counts in enumerate(confusion.counts) for column, count in enumerate(counts) if count)
    click_cell(row, column)
    with qtbot.waitSignal(page.view.cam_panel.map_shown, timeout=EVALUATION_TIMEOUT_MS):
        gallery.choose(0)
    qtbot.waitUntil(lambda: gallery.gallery_model.loaded_count == len(gallery.images()))

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))


def test_a_checkpoint_report_has_its_tables_and_earlier_reports_reopen_without_running(
    qtbot: QtBot, page: EvaluatePage
) -> None:
    page.chooser.select(_entry(page, "checkpoint"))
    test_index = page.controls.split_combo.findData("test")
    # The demo runs keep no test images (data.test_fraction = 0): the test split cannot be chosen.
    qtbot.waitUntil(lambda: not page.controls.split_combo.model().item(test_index).isEnabled())
    page.controls.fit_temperature_check.setChecked(True)
    with qtbot.waitSignal(page.evaluation_finished, timeout=EVALUATION_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.controls.evaluate_button, Qt.MouseButton.LeftButton)
    report = page.view.report
    assert finished.args[0] == page.report_folder
    qtbot.waitUntil(lambda: page.reports()[:1] == [page.report_folder])  # listed again, newest first
    assert page.controls.reports_combo.currentData() == page.report_folder
    assert page.view.confusion_view.total == report["summary"]["images"]
    assert page.view.scores_table.rowCount() == 1
    assert page.view.per_class_model.rowCount() == len(report["classes"])
    assert len(page.view.top_losses_gallery.images()) == len(report["top_losses"])
    assert page.view.reliability_plot.bars
    assert report["temperature_fit"] is not None
    assert "fitted on validation" in page.view.notes_label.text()
    assert page.report_url().toLocalFile() == str(finished.args[0] / "index.html")

    earlier = page.reports()[-1]
    with qtbot.waitSignal(page.report_shown) as shown:
        page.open_report(earlier)
    assert shown.args == [earlier] and not page.is_running
    assert page.controls.reports_combo.currentData() == earlier


def test_a_failing_evaluation_shows_the_command_line_message(qtbot: QtBot, page: EvaluatePage, tmp_path: Path) -> None:
    best = _entry(page, "checkpoint").path
    doomed = tmp_path / "doomed.safetensors"
    shutil.copy(best, doomed)
    shutil.copy(best.with_suffix(".json"), doomed.with_suffix(".json"))
    assert page.chooser.choose_file(doomed)
    doomed.unlink()
    with qtbot.waitSignal(page.runner.finished, timeout=EVALUATION_TIMEOUT_MS):
        qtbot.mouseClick(page.controls.evaluate_button, Qt.MouseButton.LeftButton)
    panel = page.message_panel
    assert panel.isVisible()
    assert panel.title_label.text() == "The evaluation failed"
    assert "doomed.safetensors" in panel.detail_label.text()
    assert "not found" in panel.detail_label.text()
    assert page.controls.evaluate_button.isEnabled()


def test_cancelling_goes_back_to_what_was_on_screen(qtbot: QtBot, page: EvaluatePage) -> None:
    shown = page.report_folder
    with qtbot.assertNotEmitted(page.evaluation_finished), qtbot.waitSignal(page.runner.finished) as finished:
        qtbot.mouseClick(page.controls.evaluate_button, Qt.MouseButton.LeftButton)
        assert page.message_panel.action_button.text() == "Cancel"
        qtbot.mouseClick(page.message_panel.action_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] is False
    assert not page.is_running and page.controls.evaluate_button.isEnabled()
    assert page.report_folder == shown
    assert page.view.isVisible() == (shown is not None)


def test_a_project_without_models_says_to_train_first(qtbot: QtBot, tmp_path: Path) -> None:
    state = ConfigState()
    state.set_value("data.path", str(copy_demo(tmp_path / "photos", classes=2, per_class=3)))
    page = EvaluatePage(state)
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(lambda: page.message_panel.title_label.text() == "Train a model first")
    assert not page.controls.evaluate_button.isEnabled()
    assert page.reports() == []

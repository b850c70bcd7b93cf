"""The Predict page on the demo project: real checkpoints, an ensemble, TTA, real files dropped and exported."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo, demo_classes
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSize, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.evaluation.ensemble import load_probability_model
from engine.evaluation.predict import Prediction, Predictor
from gui.pages.predict.page import PredictPage
from gui.pages.predict.prediction_runner import CHUNK_SIZE
from gui.pages.predict.prediction_view import PREDICTED, PREDICTION_ROLE, SHOW_UNREADABLE, SORT_LEAST_CONFIDENT, WAITING
from gui.services.config_state import ConfigState
from gui.style import apply_style

SCREENSHOT = SCREENSHOT_DIR / "predict.png"
PAGE_SIZE = QSize(950, 680)
PREDICT_TIMEOUT_MS = 60_000


@pytest.fixture
def new_photos(tmp_path: Path) -> Path:
    """8 demo photos the models never saw (2 of each of their 4 classes, in class folders) and one corrupt PNG."""
    folder = copy_demo(tmp_path / "new photos", classes=demo_classes()[:4], per_class=2, skip=40)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00 not really a picture" * 20)
    return folder


@pytest.fixture
def make_page(qtbot: QtBot, qapp: QApplication) -> Iterator[Callable[[Path | None], PredictPage]]:
    """Build shown Predict pages whose model list is in (when a project is open)."""
    apply_style(qapp)

    def make(data: Path | None) -> PredictPage:
        state = ConfigState(RunConfig().with_changes(**{"data.path": str(data) if data else ""}))
        page = PredictPage(state)
        state.setParent(page)
        qtbot.addWidget(page)
        page.resize(PAGE_SIZE)
        page.show()
        if data is not None:
            qtbot.waitSignal(page.chooser.models_listed, timeout=10_000).wait()
        return page

    yield make


def shown_predictions(page: PredictPage) -> dict[Path, Prediction]:
    model = page.model
    return {model.index(row).data(PREDICTION_ROLE).path: model.index(row).data(PREDICTION_ROLE)
            for row in range(model.rowCount())}


def assert_same_top1(page: PredictPage, expected: list[Prediction]) -> None:
    shown = shown_predictions(page)
    for prediction in expected:
        assert shown[prediction.path].labels[0] == prediction.labels[0]
        assert shown[prediction.path].probabilities[0] == pytest.approx(prediction.probabilities[0], abs=1e-5)


def test_predicts_a_folder_shows_unreadable_files_and_exports_csv(
    qtbot: QtBot, make_page: Callable[[Path | None], PredictPage], demo_project: Path, new_photos: Path,
    tmp_path: Path,
) -> None:
    page = make_page(demo_project)
    checkpoint = page.chooser.current()
    assert checkpoint is not None and checkpoint.kind == "checkpoint"

    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS) as finished:
        page.add_paths([new_photos])
    assert finished.args == [9]
    shown = shown_predictions(page)
    broken = shown.pop(new_photos / "broken.png")
    assert broken.error and not broken.labels
    photos = sorted(shown)
    assert len(photos) == 8
    assert_same_top1(page, Predictor(checkpoint.path).predict(photos, top_k=1))
    doubtful = sum(1 for prediction in shown.values() if prediction.probabilities[0] < 0.5)
    assert page.summary_label.text() == "9 images · 1 unreadable" + (
        f" · {doubtful} below 50% confidence" if doubtful else "")

    page.grid.filter.set_show(SHOW_UNREADABLE)
    assert page.grid.filter.rowCount() == 1
    page.grid.filter.set_show("all")
    page.sort_combo.setCurrentIndex(page.sort_combo.findData(SORT_LEAST_CONFIDENT))
    confidences = [page.grid.filter.index(row, 0).data(PREDICTION_ROLE).probabilities[:1]
                   for row in range(page.grid.filter.rowCount())]
    assert confidences[:-1] == sorted(confidences[:-1]) and confidences[-1] == ()  # the unreadable file last

    # A second batch with the same model and TTA uses the model already loaded.
    extra = copy_demo(tmp_path / "one more", classes=demo_classes()[:1], per_class=1, skip=45)
    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS) as finished:
        page.add_paths([extra])
    assert finished.args == [10]
    assert page.runner.model_loads == 1

    page.top_k_spin.setValue(2)
    written = page.export_csv(tmp_path / "out" / "predictions.csv")
    with written.open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["path", "label_1", "probability_1", "label_2", "probability_2", "error"]
    assert len(rows) == 11
    broken_row = next(row for row in rows if row[0] == str(new_photos / "broken.png"))
    assert broken_row[-1] == broken.error

    page.top_k_spin.setValue(3)
    page.sort_combo.setCurrentIndex(0)
    save_screenshot(qtbot, page)


def test_switching_to_the_ensemble_or_to_tta_predicts_again(
    qtbot: QtBot, make_page: Callable[[Path | None], PredictPage], demo_project: Path, new_photos: Path,
) -> None:
    page = make_page(demo_project)
    photos = sorted(path for path in new_photos.rglob("*.png") if path.name != "broken.png")
    with qtbot.waitSignal(page.model.rowsInserted, timeout=10_000):
        page.add_paths(photos)
    # The first chunk is under way with no TTA; its predictions are stale once flip is chosen.
    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS):
        page.tta_combo.setCurrentIndex(page.tta_combo.findData("flip"))
    assert_same_top1(page, load_probability_model(page.chooser.current().path, tta="flip").predict(photos, top_k=1))

    entries = page.chooser.entries()
    ensemble = next(index for index, entry in enumerate(entries) if entry.kind == "ensemble")
    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS):
        page.chooser.combo.setCurrentIndex(ensemble)
    manifest = entries[ensemble].path
    assert_same_top1(page, load_probability_model(manifest, tta="flip").predict(photos, top_k=1))

    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS):
        page.tta_combo.setCurrentIndex(page.tta_combo.findData("none"))
    assert_same_top1(page, load_probability_model(manifest).predict(photos, top_k=1))
    assert page.runner.model_loads in (3, 4)  # the stale first chunk may or may not have loaded its model


def test_cancel_stops_between_chunks_and_predict_resumes(
    qtbot: QtBot, make_page: Callable[[Path | None], PredictPage], demo_project: Path, tmp_path: Path,
) -> None:
    page = make_page(demo_project)
    folder = copy_demo(tmp_path / "many", classes=demo_classes()[:4], per_class=10, skip=30)  # 3 chunks
    with qtbot.waitSignal(page.model.rowsInserted, timeout=10_000):
        page.add_paths([folder])
    qtbot.waitUntil(lambda: page.model.count(PREDICTED) >= CHUNK_SIZE, timeout=PREDICT_TIMEOUT_MS)
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    assert "Cancelled" in page.message_label.text()
    assert not page.progress_bar.isVisible() and page.predict_button.isVisible()
    assert page.model.count(WAITING) >= 40 - 2 * CHUNK_SIZE  # the chunk running when cancelled may still count

    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.predict_button, Qt.MouseButton.LeftButton)
    assert finished.args == [40]
    assert page.summary_label.text().startswith("40 images") and not page.predict_button.isVisible()


def test_dropped_files_are_added_and_predicted(
    qtbot: QtBot, make_page: Callable[[Path | None], PredictPage], demo_project: Path, new_photos: Path,
) -> None:
    page = make_page(demo_project)
    web = QMimeData()
    web.setUrls([QUrl("https://example.com/cat.jpg")])
    refused = QDragEnterEvent(QPoint(40, 40), Qt.DropAction.CopyAction, web, Qt.MouseButton.LeftButton,
                              Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(page.drop_zone, refused)
    assert not refused.isAccepted()

    files = QMimeData()
    photos = sorted((new_photos / demo_classes()[0]).glob("*.png"))
    files.setUrls([QUrl.fromLocalFile(str(path)) for path in photos])
    enter = QDragEnterEvent(QPoint(40, 40), Qt.DropAction.CopyAction, files, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(page.drop_zone, enter)
    assert enter.isAccepted() and page.drop_zone.highlighted
    drop = QDropEvent(QPointF(40, 40), Qt.DropAction.CopyAction, files, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS) as finished:
        QApplication.sendEvent(page.drop_zone, drop)
    assert drop.isAccepted() and not page.drop_zone.highlighted
    assert finished.args == [2]
    assert sorted(shown_predictions(page)) == photos


def test_without_a_project_images_wait_until_a_model_is_browsed(
    qtbot: QtBot, make_page: Callable[[Path | None], PredictPage], demo_project: Path, new_photos: Path,
) -> None:
    page = make_page(None)
    assert page.drop_zone.isVisible()
    with qtbot.waitSignal(page.model.rowsInserted, timeout=10_000):
        page.add_paths([new_photos / "broken.png", new_photos / "missing.png"])
    assert page.model.rowCount() == 1
    assert "missing.png: no such file or folder" in page.message_label.text()
    assert "Open a data folder" in page.message_label.text()
    assert page.summary_label.text() == "1 image · 1 waiting"

    run = next((demo_project / ".transfer-studio" / "runs").iterdir())
    with qtbot.waitSignal(page.predictions_finished, timeout=PREDICT_TIMEOUT_MS):
        assert page.chooser.choose_file(run)
    assert page.summary_label.text() == "1 image · 1 unreadable"
    page.clear()
    assert page.model.rowCount() == 0 and page.drop_zone.isVisible()


def save_screenshot(qtbot: QtBot, page: PredictPage) -> None:
    page.resize(PAGE_SIZE)
    QApplication.processEvents()
    thumbnails = page.model.thumbnails
    qtbot.waitUntil(lambda: thumbnails.pending_count == 0
                    and thumbnails.loaded_count + thumbnails.failed_count >= len(page.grid.visible_source_rows()),
                    timeout=10_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))

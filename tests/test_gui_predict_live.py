"""Live prediction on the Predict page: a video made of demo photos, played and predicted with a real checkpoint.

The videos are written with OpenCV (Motion-JPEG in AVI) from photos the models never saw,
one class after another, so that what is shown over the picture can be checked. A damaged
file and a machine without cameras are the unhappy paths.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from demo_photos import DEMO, demo_classes
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, QSize, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.evaluation.ensemble import load_probability_model
from gui.main_window import MainWindow
from gui.pages import PAGES
from gui.pages.predict.frame_sources import FrameSource, list_cameras
from gui.pages.predict.live_predictor import FramePrediction
from gui.pages.predict.live_view import CAMERA, VIDEO
from gui.pages.predict.page import IMAGES, PredictPage
from gui.services.config_state import ConfigState
from gui.style import apply_style

SCREENSHOT = SCREENSHOT_DIR / "predict_live.png"
PAGE_SIZE = QSize(950, 680)
FPS = 24
FRAMES_PER_PHOTO = 12
CLASSES = demo_classes()[:4]  # the demo project's classes
TIMEOUT_MS = 30_000


def write_video(path: Path, photos: Sequence[Path], *, frames_per_photo: int = FRAMES_PER_PHOTO) -> Path:
    """A 4:3 Motion-JPEG video showing each photo in turn, centred on black (as the demo's own backgrounds)."""
    width, height = 192, 144
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    assert writer.isOpened()
    for photo in photos:
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        picture = np.asarray(Image.open(photo).convert("RGB").resize((height, height), Image.Resampling.BICUBIC))
        frame[:, (width - height) // 2:(width + height) // 2] = picture
        for _ in range(frames_per_photo):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


PHOTOS = [sorted((DEMO / name).glob("*.png"))[30] for name in CLASSES]  # one each the models never saw


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s at 24 frames/s: ``PHOTOS`` in turn, 12 frames each."""
    return write_video(tmp_path_factory.mktemp("video") / "four classes.avi", PHOTOS)


def photo_of(frame_index: int) -> int:
    """Which of ``PHOTOS`` a frame of ``video`` shows."""
    return frame_index // FRAMES_PER_PHOTO


@pytest.fixture
def make_page(qtbot: QtBot, qapp: QApplication) -> Iterator[Callable[[Path], PredictPage]]:
    """Build shown Predict pages on a project, its model list in; each is hidden (playback stopped) after the test."""
    apply_style(qapp)
    pages: list[PredictPage] = []

    def make(data: Path) -> PredictPage:
        state = ConfigState(RunConfig().with_changes(**{"data.path": str(data)}))
        page = PredictPage(state)
        state.setParent(page)
        qtbot.addWidget(page)
        page.resize(PAGE_SIZE)
        page.show()
        qtbot.waitSignal(page.chooser.models_listed, timeout=10_000).wait()
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.live.shutdown()
    assert_no_reader_left(qtbot)


def assert_no_reader_left(qtbot: QtBot) -> None:
    """Every reader thread has ended (none is left to be destroyed while running)."""
    qtbot.waitUntil(lambda: not FrameSource._running, timeout=5_000)


def collect_predictions(page: PredictPage) -> list[FramePrediction]:
    predictions: list[FramePrediction] = []
    page.live.predictor.predicted.connect(predictions.append)
    return predictions


def test_a_video_plays_with_the_top_k_of_its_frames_predicted_off_the_gui_thread(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path, video: Path,
) -> None:
    page = make_page(demo_project)
    page.set_source(VIDEO)
    live = page.live
    assert live.panel.title_label.text() == "Open a video file" and not live.play_button.isEnabled()
    predictions = collect_predictions(page)
    page.top_k_spin.setValue(2)

    live.open_video(video)
    assert live.playback.is_playing and live.play_button.text() == "Pause"
    page.source_buttons.button(2).click()  # "Video file" again: nothing stops
    assert live.playback.is_playing and live.playback.source is not None
    qtbot.waitUntil(lambda: live.picture.prediction is not None
                    and live.picture.prediction.frame.index >= 2 * FRAMES_PER_PHOTO + 4, timeout=TIMEOUT_MS)
    assert "Predicting" in live.playback.status_text() and "frames/s" in live.playback.status_text()
    assert [label for label, _ in live.picture.shown_labels()] == live.picture.prediction.labels[:2]
    save_screenshot(qtbot, page)
    with qtbot.waitSignal(live.playback.source.ended, timeout=TIMEOUT_MS):
        pass
    qtbot.waitUntil(lambda: not live.predictor.is_busy, timeout=TIMEOUT_MS)

    main_thread = threading.get_ident()
    assert predictions and all(prediction.thread_id != main_thread for prediction in predictions)
    indices = [prediction.frame.index for prediction in predictions]
    assert indices == sorted(set(indices))  # newest first, none twice, none out of order
    assert indices[0] < 3  # the file waited on its first frame while the model loaded
    # A frame gets the label its photo gets as a file (the frames are the photos, scaled and JPEG-coded).
    by_file = load_probability_model(page.chooser.current().path).predict(PHOTOS, top_k=1)
    assert [prediction.labels[0] for prediction in predictions] == [
        by_file[photo_of(prediction.frame.index)].labels[0] for prediction in predictions]
    assert all(p.probabilities == sorted(p.probabilities, reverse=True) for p in predictions)
    assert sorted(predictions[0].labels) == sorted(CLASSES)
    assert live.picture.badge.startswith("Ended") and live.play_button.text() == "Play"
    assert f"{live.predictor.predicted_count} of 48 frames predicted" in live.status_label.text()


def test_frames_that_come_while_the_model_is_busy_are_dropped_not_queued(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path, video: Path,
) -> None:
    page = make_page(demo_project)
    page.set_source(VIDEO)
    delay = 0.25  # about 6 frames of the video go by while one is predicted
    live = page.live
    live.predictor.set_model(SlowModel(load_probability_model(page.chooser.current().path), delay))
    predictions = collect_predictions(page)

    live.open_video(video)
    with qtbot.waitSignal(live.playback.source.ended, timeout=TIMEOUT_MS):
        pass
    predicted_when_ended = len(predictions)
    qtbot.waitUntil(lambda: not live.predictor.is_busy, timeout=TIMEOUT_MS)

    # No backlog: after the last frame at most the one being predicted and the one waiting come.
    assert len(predictions) - predicted_when_ended <= 2
    duration = 48 / FPS
    assert 3 <= len(predictions) <= duration / delay + 2
    # Every frame decoded was predicted, replaced while it waited for the model, or replaced before the screen
    # took it: dropped, never queued, never lost.
    assert len(predictions) + live.predictor.dropped_count + live.playback.source.frames_dropped == 48
    assert live.predictor.dropped_count >= 48 - len(predictions) - live.playback.source.frames_dropped
    indices = [prediction.frame.index for prediction in predictions]
    gaps = np.diff(indices)
    assert (gaps > 0).all() and gaps.max() >= 3  # each prediction took the newest frame, skipping the ones between
    assert indices[-1] == 47  # the last frame waited and was predicted
    assert all(prediction.labels[0] in CLASSES for prediction in predictions)


class SlowModel:
    """The real model, slowed down, so that frames come faster than it predicts on any machine."""

    def __init__(self, model: object, delay: float) -> None:
        self.model = model
        self.classes = model.classes  # type: ignore[attr-defined]
        self.delay = delay

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        time.sleep(self.delay)
        return self.model.predict_images(images)  # type: ignore[attr-defined]


def test_pause_then_snapshot_saves_the_frame_shown_and_its_prediction(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path, video: Path, tmp_path: Path,
) -> None:
    page = make_page(demo_project)
    live = page.live
    assert live.snapshot_folder is not None and live.snapshot_folder.name == "snapshots"  # in the project's folder
    page.set_source(VIDEO)
    live.open_video(video)
    qtbot.waitUntil(lambda: live.playback.frame is not None and live.playback.frame.index >= FRAMES_PER_PHOTO + 3,
                    timeout=TIMEOUT_MS)
    qtbot.mouseClick(live.play_button, Qt.MouseButton.LeftButton)
    assert not live.playback.is_playing and live.picture.badge == "Paused" and live.play_button.text() == "Play"
    paused = live.playback.frame
    # The frame held on screen is predicted in its turn, so the overlay comes to describe it.
    qtbot.waitUntil(lambda: live.picture.prediction is not None and live.picture.prediction.frame is paused,
                    timeout=TIMEOUT_MS)
    assert live.playback.frame is paused

    live.set_snapshot_folder(tmp_path / "shots")
    qtbot.mouseClick(live.snapshot_button, Qt.MouseButton.LeftButton)
    png = tmp_path / "shots" / f"four_classes-frame{paused.index:06d}.png"
    record = json.loads(png.with_suffix(".json").read_text())
    with Image.open(png) as saved:
        assert saved.size == (192, 144)
    shown = live.picture.shown_labels()
    assert [(item["label"], item["probability"]) for item in record["top_k"]] == shown
    assert record["frame"] == paused.index and record["source"] == str(video) and record["image"] == png.name
    assert record["model"] == str(page.chooser.current().path) and record["tta"] == "none"
    assert sorted(record["probabilities"]) == sorted(CLASSES)
    assert png.name in live.message_label.text()
    assert live.snapshot() is not None and (png.parent / f"{png.stem}-2.png").exists()  # never over the first

    qtbot.mouseClick(live.play_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: live.playback.frame.index > paused.index, timeout=TIMEOUT_MS)
    assert live.picture.badge == ""


def test_a_damaged_video_shows_a_message_and_prediction_stops(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path, video: Path, tmp_path: Path,
) -> None:
    page = make_page(demo_project)
    page.set_source(VIDEO)
    live = page.live
    noise = tmp_path / "noise.avi"
    noise.write_bytes(os.urandom(20_000))
    live.open_video(noise)
    qtbot.waitUntil(lambda: live.message_label.isVisible(), timeout=TIMEOUT_MS)
    assert "noise.avi: cannot be opened as a video" in live.message_label.text()
    assert "Prediction stopped" in live.message_label.text()
    assert live.panel.isVisible() and not live.playback.is_playing and live.play_button.text() == "Play"

    # Cut short: it plays, then says where it broke off, and nothing more is predicted.
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[:video.stat().st_size // 2])
    predictions = collect_predictions(page)
    live.open_video(cut)
    qtbot.waitUntil(lambda: "Prediction stopped" in live.message_label.text(), timeout=TIMEOUT_MS)
    assert "cut.avi: stopped at frame" in live.message_label.text() and "of 48" in live.message_label.text()
    count = len(predictions)
    qtbot.waitUntil(lambda: not live.predictor.is_busy, timeout=TIMEOUT_MS)
    assert len(predictions) <= count + 1  # at most the one under way when the file broke off
    assert live.picture.isVisible() and not live.playback.is_playing  # the last good frame stays on screen
    assert page.isVisible()


def test_camera_without_a_device_says_so_and_offers_a_video_file(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path,
) -> None:
    if list_cameras():
        pytest.skip("this machine has a camera; the test is about one without")
    page = make_page(demo_project)
    page.source_buttons.button(1).click()
    live = page.live
    assert page.source == CAMERA and live.mode == CAMERA and page._live_box.title() == "Camera"
    assert live.cameras == [] and not live.camera_combo.isEnabled()
    assert live.camera_combo.placeholderText() == "No camera found"
    assert live.panel.title_label.text() == "No camera found" and not live.play_button.isEnabled()
    assert live.panel.action_button.text() == "Use a video file instead"
    qtbot.mouseClick(live.panel.action_button, Qt.MouseButton.LeftButton)
    assert page.source == VIDEO and live.mode == VIDEO and page._live_box.title() == "Video file"
    assert live.open_button.isVisible() and live.panel.title_label.text() == "Open a video file"
    page.set_source(IMAGES)
    assert page.drop_zone.isVisible() and not live.isVisible()


def test_a_video_dropped_on_the_page_plays(
    qtbot: QtBot, make_page: Callable[[Path], PredictPage], demo_project: Path, video: Path,
) -> None:
    page = make_page(demo_project)
    files = QMimeData()
    files.setUrls([QUrl.fromLocalFile(str(video))])
    QApplication.sendEvent(page, QDragEnterEvent(QPoint(40, 40), Qt.DropAction.CopyAction, files,
                                                 Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    drop = QDropEvent(QPointF(40, 40), Qt.DropAction.CopyAction, files, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(page, drop)
    assert drop.isAccepted() and page.source == VIDEO and page.live.source_label.text() == video.name
    qtbot.waitUntil(lambda: page.live.playback.frame is not None, timeout=TIMEOUT_MS)
    assert page.model.rowCount() == 0  # not taken for an image


def test_closing_the_window_stops_playback_and_prediction(
    qtbot: QtBot, main_windows: list[MainWindow], demo_project: Path, video: Path, tmp_path: Path,
) -> None:
    window = MainWindow(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
    main_windows.append(window)
    window.show()
    page = window.page(PredictPage)
    window.show_page(page)
    run = next((demo_project / ".transfer-studio" / "runs").iterdir())
    assert page.chooser.choose_file(run)
    page.set_source(VIDEO)
    live = page.live
    live.open_video(video)
    qtbot.waitUntil(lambda: live.picture.prediction is not None, timeout=TIMEOUT_MS)

    # Another page first: the video stops where it was, and plays on from there.
    window.show_page(window.page(PAGES[0]))
    assert not live.playback.is_playing and not live.playback.source.is_running
    stopped_at = live.playback.frame.index
    window.show_page(page)
    live.play()
    qtbot.waitUntil(lambda: live.playback.frame.index > stopped_at, timeout=TIMEOUT_MS)
    assert live.playback.frame.index < stopped_at + FRAMES_PER_PHOTO  # went on, did not start over

    window.close()
    assert not live.playback.source.is_running
    qtbot.waitUntil(lambda: not live.predictor.is_busy, timeout=TIMEOUT_MS)
    assert_no_reader_left(qtbot)


def save_screenshot(qtbot: QtBot, page: PredictPage) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))

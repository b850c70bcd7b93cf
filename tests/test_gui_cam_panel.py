"""The Grad-CAM panel computes maps off the GUI thread, drops superseded ones, and reports errors in place."""

from __future__ import annotations

from pathlib import Path

from demo_photos import DEMO
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.paths import project_dir_for
from gui.pages.evaluate.cam_panel import EMPTY_TITLE, NO_MODEL_TITLE, CamPanel

SCREENSHOTS = SCREENSHOT_DIR


def photo(name: str, number: int = 0) -> Path:
    return sorted((DEMO / name).glob("*.png"))[number]


def make_panel(qtbot: QtBot) -> CamPanel:
    panel = CamPanel()
    qtbot.addWidget(panel)
    panel.resize(500, 380)
    panel.show()
    return panel


def test_empty_states_say_what_to_do(qtbot: QtBot, demo_run: Path) -> None:
    panel = make_panel(qtbot)
    assert panel.message_panel.isVisible() and panel.message_panel.title_label.text() == NO_MODEL_TITLE
    panel.set_model(demo_run)
    assert panel.message_panel.title_label.text() == EMPTY_TITLE
    assert not panel.is_busy


def test_shows_the_map_switches_class_and_opacity(qtbot: QtBot, demo_run: Path) -> None:
    panel = make_panel(qtbot)
    panel.set_model(demo_run)
    with qtbot.waitSignal(panel.map_shown, timeout=60_000) as shown:
        panel.show_image(photo("bag", 3), true_label="bag")
    activation = shown.args[0]
    assert activation.class_name == "bag"
    assert panel.class_combo.itemText(0).startswith("predicted: bag ")
    assert panel.class_combo.count() == len(activation.classes)
    assert "True: <b>bag</b>" in panel.caption_label.text() and "Layer bn2" in panel.caption_label.text()
    assert panel.overlay_title.text() == "Evidence for bag"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel.grab().save(str(SCREENSHOTS / "cam_panel.png"))

    before = panel.overlay_view.grab().toImage()
    panel.opacity_slider.setValue(90)
    assert panel.opacity_label.text() == "90%"
    assert panel.overlay_view.grab().toImage() != before

    second = panel.class_combo.itemData(1)
    panel.class_combo.setCurrentIndex(1)
    with qtbot.waitSignal(panel.map_shown, timeout=30_000) as shown:
        panel.class_combo.activated.emit(1)
    assert shown.args[0].class_index == second
    assert panel.overlay_title.text() == f"Evidence for {activation.classes[second]}"
    assert "Showing:" in panel.caption_label.text()
    assert panel.class_combo.currentIndex() == 1  # the list is kept for the same image


def test_a_newer_image_supersedes_an_older_request(qtbot: QtBot, demo_run: Path) -> None:
    panel = make_panel(qtbot)
    panel.set_model(demo_run)
    shown: list = []
    panel.map_shown.connect(shown.append)
    panel.show_image(photo("trouser"), true_label="trouser")
    panel.show_image(photo("sneaker"), true_label="sneaker")
    qtbot.waitUntil(lambda: not panel.is_busy, timeout=60_000)
    assert [activation.class_name for activation in shown] == ["sneaker"]
    assert "sneaker" in panel.caption_label.text()


def test_an_unreadable_image_is_reported_in_the_panel(qtbot: QtBot, demo_run: Path, tmp_path: Path) -> None:
    panel = make_panel(qtbot)
    panel.set_model(demo_run)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture at all")
    with qtbot.waitSignal(panel.cam_failed, timeout=60_000) as failed:
        panel.show_image(broken)
    assert "broken.png" in failed.args[0]
    assert panel.message_panel.isVisible()
    assert panel.message_panel.title_label.text() == "Cannot show the activation map"
    assert "broken.png" in panel.message_panel.detail_label.text()
    # The next good image brings the map back.
    with qtbot.waitSignal(panel.map_shown, timeout=60_000):
        panel.show_image(photo("trouser"))
    assert not panel.message_panel.isVisible()


def test_an_ensemble_map_names_its_members(qtbot: QtBot, demo_project: Path) -> None:
    panel = make_panel(qtbot)
    panel.set_model(project_dir_for(demo_project) / "ensembles" / "pair.json")
    with qtbot.waitSignal(panel.map_shown, timeout=60_000) as shown:
        panel.show_image(next((demo_project / "bag").glob("*.png")), true_label="bag")
    assert len(shown.args[0].members) == 2
    assert "averaged over 2 ensemble members" in panel.caption_label.text()

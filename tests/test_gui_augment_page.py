"""The Augment page on a small copy of the demo: controls bound to the config, refusals at the field, live preview.

Previews are the engine's real ``preview_dataset`` drawn on a worker thread; tests wait
on the page's ``preview_updated`` signal and compare the pixels of successive grids.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QApplication
from screenshots import SCREENSHOT_DIR

from augment import preview_dataset
from engine.core.config import RunConfig
from gui.pages.augment.page import AugmentPage
from gui.pages.augment.preview_view import NO_DATA_TITLE, PREVIEW_COPIES, UPDATING_TEXT, backbone_data_settings
from gui.services.config_state import ConfigState
from gui.style import apply_style
from gui.widgets.fields import PairField

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
SCREENSHOT = SCREENSHOT_DIR / "augment_page.png"
PAGE_SIZE = QSize(950, 680)
PREVIEW_TIMEOUT_MS = 30_000  # the first preview also builds the backbone once for its data settings


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of the demo, six Fashion-MNIST images each."""
    root = tmp_path_factory.mktemp("augment-demo")
    for name in ("sneaker", "trouser", "bag"):
        (root / name).mkdir()
        for image in sorted((DEMO / name).glob("*.png"))[:6]:
            shutil.copy(image, root / name / image.name)
    return root


@pytest.fixture
def make_page(qtbot, qapp, demo_copy: Path) -> Iterator[Callable[..., AugmentPage]]:
    """Build a shown page on a config with ``changes``; with data, wait for its first preview."""
    apply_style(qapp)
    pages: list[AugmentPage] = []

    def make(**changes: object) -> AugmentPage:
        config = RunConfig().with_changes(**{"data.path": str(demo_copy), **changes})
        page = AugmentPage(ConfigState(config))
        qtbot.addWidget(page)
        pages.append(page)
        page.resize(PAGE_SIZE)
        if config.data.path:
            with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS):
                page.show()
        else:
            page.show()
        qtbot.waitExposed(page)
        return page

    yield make
    for page in pages:
        assert page.preview.wait_for_done(PREVIEW_TIMEOUT_MS)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def differ(first: Image.Image, second: Image.Image) -> bool:
    return first.size != second.size or not np.array_equal(pixels(first), pixels(second))


def type_into(qtbot, editor, text: str) -> None:
    """Replace an editor's text as a user would and press Enter."""
    editor.selectAll()
    qtbot.keyClicks(editor, text)
    qtbot.keyClick(editor, Qt.Key.Key_Return)


def test_preview_follows_the_controls(qtbot, make_page) -> None:
    page = make_page()
    first = page.preview.image
    assert first is not None and page.preview.status_label.text() == ""
    statuses: list[str] = []  # the status line at the moment each new preview arrives
    page.preview_updated.connect(lambda _image: statuses.append(page.preview.status_label.text()))

    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS) as strong:
        page.preset_field.button("strong").click()
    assert page.state.config.augment.preset == "strong"
    assert differ(first, strong.args[0])
    assert statuses == [UPDATING_TEXT] and page.preview.status_label.text() == ""

    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS) as cutout:
        type_into(qtbot, page.field("cutout").editor, "1")
    assert page.state.config.augment.cutout == 1.0
    assert differ(strong.args[0], cutout.args[0])

    seed = page.preview.seed
    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS) as shuffled:
        page.preview.shuffle_button.click()
    assert page.preview.seed != seed and differ(cutout.args[0], shuffled.args[0])
    assert page.preview.image is shuffled.args[0]

    page.preview.actual_size_check.setChecked(True)  # pixel for pixel, to read the captions
    assert page.preview.image_view.size() == QSize(*shuffled.args[0].size)
    page.preview.actual_size_check.setChecked(False)
    assert page.preview.image_view.width() < shuffled.args[0].width

    QApplication.processEvents()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))


def test_quick_changes_draw_one_preview_of_the_last(qtbot, make_page) -> None:
    page = make_page(**{"data.input_size": 64})
    shown: list[Image.Image] = []
    page.preview_updated.connect(shown.append)
    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS):
        for preset in ("standard", "strong", "none"):
            page.preset_field.button(preset).click()
    assert not page.preview.is_updating  # nothing else is coming
    assert len(shown) == 1
    config = page.state.config
    expected = preview_dataset(config.data.path, config.augment, PREVIEW_COPIES, seed=page.preview.seed,
                               settings=backbone_data_settings(config.model.backbone, 64))
    assert config.augment.preset == "none" and not differ(shown[0], expected)


def test_an_unordered_range_is_marked_at_its_field(qtbot, make_page) -> None:
    page = make_page(**{"data.input_size": 64})
    crop = page.field("crop_scale")
    assert isinstance(crop, PairField)
    assert (crop.minimum_edit.placeholderText(), crop.maximum_edit.placeholderText()) == ("0.35", "1")

    crop.minimum_edit.setText("0.9")
    crop.maximum_edit.setText("0.2")
    assert not crop.commit()
    assert crop.error == "must be [min, max] with 0.01 <= min <= max <= 1.0, got [0.9, 0.2]"
    assert not page.state.is_valid and page.state.config.augment.crop_scale is None
    qtbot.waitUntil(lambda: page.preview.problem_label.isVisible())
    assert "augment.crop_scale" in page.preview.problem_label.text()

    type_into(qtbot, crop.minimum_edit, "abc")
    assert crop.error == "min and max must be numbers, got 'abc'"

    crop.maximum_edit.clear()  # an empty side takes the preset's value
    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS):
        type_into(qtbot, crop.minimum_edit, "0.8")
    assert page.state.config.augment.crop_scale == (0.8, 1.0)
    assert crop.error == "" and page.state.is_valid and not page.preview.problem_label.isVisible()


def test_cutmix_is_refused_in_feature_extraction(qtbot, make_page) -> None:
    page = make_page(**{"data.input_size": 64})
    assert "cutmix" in page.mixing_hint.text() and not page.mixing_hint.isHidden()

    type_into(qtbot, page.cutmix_field.editor, "1.0")
    assert "feature extraction trains on cached features" in page.cutmix_field.error
    assert page.state.config.augment.cutmix_alpha == 0.0 and not page.state.is_valid

    page.state.set_value("model.mode", "fine_tune")
    assert "only in feature extraction" in page.mixing_hint.text()
    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS):
        assert page.cutmix_field.commit()
    assert page.cutmix_field.error == "" and page.state.config.augment.cutmix_alpha == 1.0


def test_controls_reset_to_the_preset(qtbot, make_page) -> None:
    page = make_page(**{"data.input_size": 64})
    flip = page.rows["horizontal_flip"]
    assert flip.field.editor.placeholderText() == "0.5" and flip.reset_button.isHidden()
    assert not page.use_preset_button.isEnabled()

    type_into(qtbot, flip.field.editor, "0.9")
    assert page.state.config.augment.horizontal_flip == 0.9
    assert not flip.reset_button.isHidden() and page.use_preset_button.isEnabled()
    flip.reset_button.click()
    assert page.state.config.augment.horizontal_flip is None
    assert flip.field.editor.text() == "" and flip.reset_button.isHidden()

    page.preset_field.button("strong").click()
    assert flip.field.editor.placeholderText() == "0.5"
    assert page.field("random_policy").editor.itemText(0) == "preset's (randaugment)"
    assert page.field("random_policy_ops").editor.placeholderText() == "2"
    page.state.apply({"augment.rotation_degrees": 45.0, "augment.cutout_holes": [2, 5],
                      "augment.random_policy": "trivialaugment"})
    assert page.field("cutout_holes").minimum_edit.text() == "2"
    assert page.field("random_policy_magnitude").editor.placeholderText() == "1"  # trivialaugment's own default
    page.use_preset_button.click()
    augment = page.state.config.augment
    assert (augment.rotation_degrees, augment.cutout_holes, augment.random_policy) == (None, None, None)
    assert augment.preset == "strong" and not page.use_preset_button.isEnabled()


def test_a_control_without_effect_is_explained(qtbot, make_page) -> None:
    page = make_page(**{"data.input_size": 64})
    holes = page.rows["cutout_holes"]
    assert holes.field.minimum_edit.placeholderText() == "off"  # preset light has no cutout

    assert page.state.set_value("augment.cutout_holes", [1, 3])
    assert "cutout is off" in holes.note_label.text() and not holes.note_label.isHidden()
    qtbot.waitUntil(lambda: "cutout is off" in page.preview.problem_label.text(), timeout=PREVIEW_TIMEOUT_MS)
    assert page.preview.image is not None  # the last grid stays beside the message

    with qtbot.waitSignal(page.preview_updated, timeout=PREVIEW_TIMEOUT_MS):
        page.state.set_value("augment.cutout", 0.5)
    assert holes.note_label.isHidden() and not page.preview.problem_label.isVisible()


def test_without_usable_data_the_preview_says_why(qtbot, make_page, tmp_path: Path) -> None:
    page = make_page(**{"data.path": ""})
    panel = page.preview.message_panel
    qtbot.waitUntil(lambda: panel.isVisible() and panel.title_label.text() == NO_DATA_TITLE)
    assert page.preview.image is None

    page.state.set_value("data.path", str(tmp_path / "missing"))
    qtbot.waitUntil(lambda: panel.title_label.text() == "Cannot preview these images", timeout=PREVIEW_TIMEOUT_MS)
    assert "missing" in panel.detail_label.text()

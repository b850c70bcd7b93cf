"""The Model page on the demo config: backbone search, modes, stages, recipes, and a real LR-finder run.

The LR finder runs ``main.py lr-find`` as a real child process on a small copy of the
bundled demo; the tests wait on the panel's own controller signals.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSize, Qt, QThreadPool
from PySide6.QtWidgets import QApplication
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.core.paths import project_dir_for
from engine.data.health import HealthReport
from engine.training.recommended import format_rate, recommended_recipe
from gui.pages.model.backbone_picker import PENDING_TEXT, BackboneTableModel, search_pattern
from gui.pages.model.lr_finder_panel import LRFinderPanel
from gui.pages.model.page import ModelPage
from gui.services.config_state import ConfigState
from gui.style import apply_style

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
PAGE_SIZE = QSize(950, 680)
WORKER_TIMEOUT_MS = 30_000
LR_FIND_TIMEOUT_MS = 180_000
LR_FIND_STEPS = 40


# Any QSettings built from application names stays off the user's real ones (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


def demo_state(data: Path = DEMO, **changes: object) -> ConfigState:
    config = RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, **changes})
    return ConfigState(config)


@pytest.fixture
def make_page(qtbot, qapp) -> Iterator:
    """Build shown Model pages at the size they have in the window; wait for their threads after the test."""
    apply_style(qapp)

    pages: list[ModelPage] = []

    def make(state: ConfigState) -> ModelPage:
        page = ModelPage(state)
        pages.append(page)
        page.resize(PAGE_SIZE)
        page.show()
        qtbot.waitExposed(page)
        return page

    yield make
    for page in pages:
        page.close()
        page.deleteLater()
    QApplication.processEvents()
    # Describing backbones and reading stages run on the global pool; let them end with the test.
    assert QThreadPool.globalInstance().waitForDone(WORKER_TIMEOUT_MS)
    QApplication.processEvents()


def small_demo(root: Path, classes: int = 3, images: int = 20) -> Path:
    """A copy of the first ``classes`` demo classes with ``images`` images each."""
    class_folders = sorted(path for path in DEMO.iterdir() if path.is_dir() and not path.name.startswith("."))
    for folder in class_folders[:classes]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:images]:
            shutil.copy(image, root / folder.name / image.name)
    return root


def report_with(counts: dict[str, int]) -> HealthReport:
    """A health report of a dataset with these usable images per class (no files needed for the rule)."""
    larger = max(counts.values())
    smaller = min(count for count in counts.values() if count)
    return HealthReport(root=Path("/data"), layout="class_folders", classes=tuple(sorted(counts)),
                        class_counts=dict(counts), records=(), problems=(), imbalance_ratio=larger / smaller)


def save_screenshot(widget, name: str) -> Path:
    QApplication.processEvents()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    assert widget.grab().save(str(path))
    return path


def wait_for_stages(qtbot, page: ModelPage, count: int) -> None:
    qtbot.waitUntil(lambda: len(page.stage_view.stages) == count, timeout=WORKER_TIMEOUT_MS)


def test_page_builds_on_the_demo_config(qtbot, make_page):
    state = demo_state()
    page = make_page(state)

    assert page.mode_field.editor.currentData() == "feature_extraction"
    assert page.mode_explanation.text().startswith("The pretrained backbone stays frozen")
    picker = page.backbone_picker
    assert picker.model.name_at(0) == "tf_efficientnet_lite0", "offline-available backbones come first"
    assert picker.table.currentIndex().row() == 0
    assert not any(field.isEnabled() for field in page.fine_tune_fields)
    assert not page.head_epochs_field.isEnabled()
    assert not page.training_form.layout().isRowVisible(page.restart_field)
    assert not page.ema_decay_field.isEnabled()
    assert all(field.toolTip() for field in page.fine_tune_fields), "every control explains itself"

    wait_for_stages(qtbot, page, 8)
    qtbot.waitUntil(lambda: "4.7 M parameters" in picker.summary_label.text(), timeout=WORKER_TIMEOUT_MS)
    assert "works offline" in picker.summary_label.text()
    assert page.stage_view.trainable_names() == []
    qtbot.waitUntil(lambda: PENDING_TEXT not in picker.model.index(1, BackboneTableModel.COLUMN_PARAMS).data(),
                    timeout=WORKER_TIMEOUT_MS)


def test_choosing_backbone_mode_and_schedule_updates_the_config(qtbot, make_page):
    state = demo_state()
    page = make_page(state)
    picker = page.backbone_picker

    picker.set_filter("resnet18")
    cell = picker.table.visualRect(picker.model.index(picker.model.row_of("resnet18"), 0)).center()
    qtbot.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    assert state.config.model.backbone == "resnet18"

    mode = page.mode_field.editor
    mode.setCurrentIndex(mode.findData("fine_tune"))
    assert state.config.model.mode == "fine_tune"
    assert all(field.isEnabled() for field in page.fine_tune_fields)
    assert not page.head_epochs_field.isEnabled()
    mode.setCurrentIndex(mode.findData("two_stage"))
    assert state.config.model.mode == "two_stage" and page.head_epochs_field.isEnabled()
    assert page.mode_explanation.text().startswith("The head learns alone")
    wait_for_stages(qtbot, page, 5)  # resnet18: the stem and four layers
    assert page.stage_view.trainable_names() == ["layer4", "layer3"]

    schedule = page.schedule_field.editor
    schedule.setCurrentIndex(schedule.findData("cosine_restarts"))
    assert state.config.optim.schedule == "cosine_restarts"
    form = page.training_form.layout()
    assert form.isRowVisible(page.restart_field) and not form.isRowVisible(page.step_fields[0])
    schedule.setCurrentIndex(schedule.findData("step"))
    assert form.isRowVisible(page.step_fields[0]) and not form.isRowVisible(page.restart_field)

    picker.weights_field.choose("none")
    assert state.config.model.weights == "none"
    qtbot.waitUntil(lambda: "Random initialisation" in picker.summary_label.text(), timeout=WORKER_TIMEOUT_MS)


def test_invalid_values_are_marked_at_the_field(qtbot, make_page):
    state = demo_state()
    page = make_page(state)
    rate = page.learning_rate_field

    rate.editor.setText("-1")
    rate.editor.editingFinished.emit()

    assert not state.is_valid
    assert "must be > 0" in rate.error and rate.error_label.isVisible()
    assert page.error_label.isVisible() and "optim.learning_rate" in page.error_label.text()
    assert not page.lr_finder.find_button.isEnabled()
    assert "Fix the settings" in page.lr_finder.find_button.toolTip()
    assert state.config.optim.learning_rate == 3e-3, "the last valid config is kept"

    rate.editor.setText("1e-3")
    rate.editor.editingFinished.emit()
    assert state.is_valid and not rate.error and page.error_label.isHidden()
    assert state.config.optim.learning_rate == 1e-3
    assert page.lr_finder.find_button.isEnabled()


@pytest.mark.parametrize(("mode", "per_class", "epochs"), [
    ("feature_extraction", 20, 30), ("feature_extraction", 300, 20), ("feature_extraction", 2000, 10),
    ("fine_tune", 20, 15), ("fine_tune", 300, 10), ("fine_tune", 2000, 6), ("two_stage", 20, 18),
])
def test_recommended_recipe_follows_mode_and_data_size(mode: str, per_class: int, epochs: int):
    report = report_with({"cat": per_class, "dog": per_class, "fox": per_class})
    recipe = recommended_recipe(mode, report)

    assert recipe["model.mode"] == mode and recipe["optim.epochs"] == epochs
    assert recipe["optim.class_balance"] == "none" and recipe["optim.schedule"] == "cosine"
    if mode == "feature_extraction":
        assert recipe["optim.learning_rate"] == 3e-3 and recipe["optim.weight_decay"] == 0.01
        assert recipe["optim.ema"] is False
    else:
        assert recipe["optim.learning_rate"] == 1e-3 and recipe["model.backbone_lr_scale"] == 0.1
        assert recipe["model.trainable_stages"] == 2 and recipe["optim.warmup_epochs"] == 1
        assert recipe["optim.label_smoothing"] == 0.1 and recipe["optim.early_stopping_patience"] == 3
        assert recipe["augment.preset"] == ("light" if per_class < 100 else "standard")
    if mode == "two_stage":
        assert recipe["model.head_epochs"] == 3
    # Every recipe is a valid config, also on top of settings it must override (cutmix needs pixels).
    RunConfig().with_changes(**{"model.mode": "fine_tune", "augment.cutmix_alpha": 1.0}).with_changes(**recipe)


def test_recommended_recipe_weighs_rare_classes_and_works_before_a_scan():
    imbalanced = report_with({"common": 400, "rare": 100})
    assert recommended_recipe("fine_tune", imbalanced)["optim.class_balance"] == "weighted_loss"
    assert recommended_recipe("fine_tune", report_with({"a": 290, "b": 100}))["optim.class_balance"] == "none"
    assert recommended_recipe("feature_extraction", None)["optim.epochs"] == 20  # a medium dataset is assumed
    with pytest.raises(ValueError, match="mode"):
        recommended_recipe("fine tune", None)


def test_recommended_button_applies_and_explains_the_recipe(qtbot, make_page):
    state = demo_state(**{"model.mode": "fine_tune", "optim.epochs": 40, "optim.learning_rate": 0.1})
    page = make_page(state)
    page.set_report(report_with({"cat": 30, "dog": 120}))

    qtbot.mouseClick(page.recommend_button, Qt.MouseButton.LeftButton)

    config = state.config
    assert (config.optim.learning_rate, config.optim.epochs) == (1e-3, 15)
    assert config.optim.class_balance == "weighted_loss" and config.augment.preset == "light"
    text = page.recipe_label.text()
    assert page.recipe_label.isVisible() and "Fine-tuning" in text and "~75 images per class" in text
    assert "4.0× the smallest" in text
    assert page.learning_rate_field.editor.text() == "0.001", "the fields show the recipe"


def test_backbone_search_narrows_the_list_and_fills_details_lazily(qtbot, make_page):
    page = make_page(demo_state())
    picker = page.backbone_picker
    everything = picker.model.rowCount()

    picker.set_filter("resnet1")

    names = [picker.model.name_at(row) for row in range(picker.model.rowCount())]
    assert 0 < len(names) < everything / 20
    assert all("resnet1" in name for name in names) and "resnet18" in names
    assert picker.count_label.text().startswith(f"{len(names)} backbones")
    visible = picker.visible_names()
    assert visible and len(visible) < len(names), "only the rows on screen are described"

    def visible_rows_filled() -> bool:
        return all(picker.model.details(name) is not None for name in picker.visible_names())

    qtbot.waitUntil(visible_rows_filled, timeout=WORKER_TIMEOUT_MS)
    row = picker.model.row_of("resnet18")
    cells = [picker.model.index(row, column).data() for column in range(picker.model.columnCount())]
    assert cells == ["resnet18", "11.7", "224×224", "hub"]
    assert picker.model.details(names[-1]) is None, "rows below the screen wait until scrolled to"
    cell = picker.table.visualRect(picker.model.index(row, 0)).center()
    qtbot.mouseClick(picker.table.viewport(), Qt.MouseButton.LeftButton, pos=cell)
    assert "11.7 M parameters" in picker.summary_label.text() and "Hugging Face hub" in picker.summary_label.text()
    assert save_screenshot(page, "model_page.png").stat().st_size > 10_000

    picker.set_filter("no such backbone")
    assert picker.model.rowCount() == 0 and "No backbone matches" in picker.count_label.text()
    assert search_pattern("Efficientnet Lite") == "*efficientnet*lite*" and search_pattern("vit_*") == "vit_*"


def test_stage_view_marks_the_stages_that_train(qtbot, make_page):
    state = demo_state(**{"model.mode": "fine_tune"})
    page = make_page(state)
    wait_for_stages(qtbot, page, 8)  # tf_efficientnet_lite0: stem, seven block stages with the head conv
    view = page.stage_view

    assert view.trainable_names() == ["blocks.6+conv_head+bn2", "blocks.5"]
    assert view.summary_label.text() == "2 of 8 stages train with the head."
    page.trainable_field.editor.setValue(3)
    assert state.config.model.trainable_stages == 3 and len(view.trainable_names()) == 3
    page.trainable_field.editor.setValue(-1)
    assert page.trainable_field.editor.text() == "all" and len(view.trainable_names()) == 8
    page.trainable_field.editor.setValue(0)
    assert view.trainable_names() == []
    state.apply({"model.trainable_stages": 2, "model.unfreeze_every": 2})
    assert view.summary_label.text() == "2 of 8 stages train with the head, and one more every 2 epochs."
    state.set_value("model.mode", "feature_extraction")
    assert view.trainable_names() == [] and "only the new head trains" in view.summary_label.text()


def test_lr_finder_is_disabled_without_a_dataset(qtbot, qapp):
    panel = LRFinderPanel(ConfigState(RunConfig()))
    qtbot.addWidget(panel)
    assert not panel.find_button.isEnabled()
    assert panel.find_button.toolTip().startswith("Open a dataset first")
    panel.start()
    assert not panel.controller.is_running


def test_lr_finder_runs_and_its_suggestion_can_be_used(qtbot, make_page, tmp_path: Path):
    data = small_demo(tmp_path / "clothes")
    state = demo_state(data)
    page = make_page(state)
    panel = page.lr_finder
    panel.num_steps = LR_FIND_STEPS
    page.tabs.setCurrentWidget(panel)
    steps: list[dict] = []
    panel.controller.event_received.connect(lambda event: steps.append(event) if event["event"] == "lr_find_step"
                                            else None)

    with qtbot.waitSignal(panel.controller.run_ended, timeout=LR_FIND_TIMEOUT_MS) as ended:
        qtbot.mouseClick(panel.find_button, Qt.MouseButton.LeftButton)
        assert panel.stop_button.isVisible() and not panel.find_button.isEnabled()

    assert ended.args[0] == "finished", ended.args[1]
    rates, losses = panel.loss_curve.getOriginalDataset()
    smoothed_rates, smoothed = panel.smoothed_curve.getOriginalDataset()
    assert 2 <= len(rates) <= LR_FIND_STEPS and len(rates) == len(steps)
    assert list(rates) == [event["learning_rate"] for event in steps] == list(smoothed_rates)
    assert list(losses) == [event["loss"] for event in steps]
    assert list(smoothed) == [event["smoothed_loss"] for event in steps]
    assert rates[0] == pytest.approx(1e-7)

    assert panel.suggestion_line.isVisible() and panel.suggestion_rate is not None
    assert rates[0] < panel.suggestion_rate < rates[-1] * 1.0001
    assert panel.suggestion_label.toPlainText() == f"suggested {format_rate(panel.suggestion_rate)}"
    assert panel.reason_label.isVisible() and "try" in panel.reason_label.text()
    setting = panel.learning_rate_setting
    assert panel.use_button.isVisible() and panel.use_button.text() == f"Use {format_rate(setting)}"
    assert panel.find_button.isEnabled() and not panel.stop_button.isVisible()

    folders = list((project_dir_for(data) / "lr-find").iterdir())
    assert [folder.name for folder in folders if folder.is_dir()] == [panel.controller.run_dir.name]
    assert not any(folder.suffix == ".yaml" for folder in folders), "the temporary config is removed"
    assert (panel.controller.run_dir / "config.yaml").is_file()
    save_screenshot(page, "model_page_lr_finder.png")

    qtbot.mouseClick(panel.use_button, Qt.MouseButton.LeftButton)
    assert state.config.optim.learning_rate == setting


def test_lr_finder_failure_is_a_message_not_a_dialog(qtbot, tmp_path: Path):
    data = small_demo(tmp_path / "clothes", classes=2, images=10)
    panel = LRFinderPanel(demo_state(data, **{"model.backbone": "no_such_backbone"}), num_steps=5)
    qtbot.addWidget(panel)

    with qtbot.waitSignal(panel.controller.run_ended, timeout=LR_FIND_TIMEOUT_MS) as ended:
        panel.start()

    assert ended.args[0] == "failed"
    assert "no_such_backbone" in panel.status_label.text() and panel.status_label.text().startswith(
        "The learning-rate finder failed")
    assert QApplication.activeModalWidget() is None
    assert panel.find_button.isEnabled() and not panel.use_button.isVisible()


def test_format_rate_writes_rates_as_people_do():
    assert [format_rate(rate) for rate in (0.002, 0.01, 2.5e-4, 1.0, 0.000999)] == ["2e-3", "1e-2", "2.5e-4",
                                                                                       "1e0", "1e-3"]

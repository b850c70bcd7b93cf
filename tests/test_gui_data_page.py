"""The Data page on real folders: class sizes, lazily decoded thumbnails, exclusions, split settings, screenshot.

Datasets are copies of the bundled Fashion-MNIST demo with a few bad files added;
every scan is the engine's real one, and thumbnails come from real worker threads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QObject, QSize, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QTreeWidgetItem
from screenshots import SCREENSHOT_DIR

from engine.core.paths import project_dir_for
from engine.data.exclusions import EXCLUSIONS_NAME
from engine.data.health import HealthReport, scan_dataset
from engine.data.prepare import prepare_dataset
from gui.pages.data.class_table import ClassTableModel
from gui.pages.data.health_view import PATHS_ROLE, USER_GROUP_TITLE, USER_LEFT_OUT_TEXT
from gui.pages.data.page import DataPage, folder_url
from gui.pages.data.split_settings import FOLDER_RULE
from gui.services.config_state import ConfigState
from gui.style import apply_style
from gui.widgets.thumbnails import FAILED, LOADED, REASON_ROLE, STATUS_ROLE, USER_EXCLUDED_ROLE

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
WAIT_MS = 20_000
PAGE_SIZE = QSize(950, 680)


def copy_demo(root: Path, classes: tuple[str, ...], per_class: int = 50, skip: int = 0) -> Path:
    """``per_class`` images (after the first ``skip``) of each of ``classes`` from the demo, under ``root``."""
    for label in classes:
        (root / label).mkdir(parents=True)
        for source in sorted((DEMO / label).glob("*.png"))[skip : skip + per_class]:
            shutil.copyfile(source, root / label / source.name)
    return root


def add_bad_files(root: Path, label: str) -> dict[str, Path]:
    """A zero-byte file, a text file named .jpg and a too small image; names sort before the demo's."""
    folder = root / label
    files = {"empty": folder / "0_empty.png", "text": folder / "0_notes.jpg", "tiny": folder / "0_tiny.png"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("not a picture\n")
    Image.new("L", (16, 16), 128).save(files["tiny"])
    return files


def scan(root: Path) -> HealthReport:
    """Scan as the window's scanner does: with the project's scan cache."""
    project = project_dir_for(root)
    project.mkdir(exist_ok=True)
    return scan_dataset(root, cache_file=project / "scan_cache.json")


@pytest.fixture
def make_page(qtbot, qapp) -> Iterator[Callable[..., DataPage]]:
    """Shown Data pages at a realistic size; their thumbnail threads end before ``tmp_path`` goes."""
    apply_style(qapp)
    pages: list[DataPage] = []

    def make(state: ConfigState | None = None) -> DataPage:
        page = DataPage(state=state)
        qtbot.addWidget(page)
        page.resize(PAGE_SIZE)
        page.show()
        qtbot.waitExposed(page)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.thumbnail_grid.thumbnail_model.clear()
        assert page.thumbnail_grid.thumbnail_model.wait_for_done(WAIT_MS)
    QApplication.processEvents()


def table_counts(page: DataPage) -> dict[str, str]:
    model = page.class_table.model()
    return {
        model.index(row, ClassTableModel.COLUMN_CLASS).data(): model.index(row, ClassTableModel.COLUMN_IMAGES).data()
        for row in range(model.rowCount())
    }


def tree_item_for(page: DataPage, path: Path) -> QTreeWidgetItem:
    """The health-report row standing for exactly ``path`` (not its group)."""
    tree = page.health_view.tree
    for index in range(tree.topLevelItemCount()):
        group = tree.topLevelItem(index)
        for row in range(group.childCount()):
            item = group.child(row)
            if item.data(0, PATHS_ROLE) == (path,):
                return item
    raise AssertionError(f"no row for {path}")


def thumbnail_row(page: DataPage, name: str) -> int:
    model = page.thumbnail_grid.thumbnail_model
    rows = [row for row in range(model.rowCount()) if model.index(row).data() == name]
    assert rows, f"{name} is not in the grid"
    return rows[0]


def test_classes_thumbnails_and_placeholders(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat", "dress"), per_class=40)
    bad = add_bad_files(data, "coat")
    changed = data / "coat" / "0_changed.png"
    Image.effect_noise((64, 64), 40).save(changed)
    report = scan(data)
    changed.write_bytes(changed.read_bytes()[:100])  # damaged after the scan: only decoding finds out
    page = make_page()

    page.set_report(report)

    # The tiny image is usable (a warning); the empty file and the text file are not.
    assert table_counts(page) == {"bag": "40", "coat": "42", "dress": "40"}
    assert "3 classes" in page.balance_label.text()
    assert page.class_table.selected_class == "bag", "the first class is selected at once"
    model = page.thumbnail_grid.thumbnail_model
    qtbot.waitUntil(lambda: model.loaded_count >= 12, timeout=WAIT_MS)
    assert model.label == "bag" and model.rowCount() == 40
    assert all(model.index(row).data(Qt.ItemDataRole.DecorationRole).width() > 0 for row in range(model.rowCount()))

    assert page.class_table.select_class("coat")
    assert page.images_title.text() == "Images of “coat”"
    # Only rows on screen are decoded: the grid shows a few rows of the 44 files.
    visible = page.thumbnail_grid.visible_rows()
    assert 8 <= len(visible) < model.rowCount()
    qtbot.waitUntil(lambda: model.pending_count == 0 and model.loaded_count == len(visible) - 3, timeout=WAIT_MS)
    assert model.failed_count == 3
    for name, reason in (("0_empty.png", "empty"), ("0_notes.jpg", "not an image"), ("0_changed.png", "decode")):
        index = model.index(thumbnail_row(page, name))
        assert index.data(STATUS_ROLE) == FAILED
        assert reason in index.data(REASON_ROLE)
        assert reason in index.data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(thumbnail_row(page, bad["tiny"].name)).data(STATUS_ROLE) == LOADED

    # Back to a class already seen: its thumbnails come from the cache, without new work.
    assert page.class_table.select_class("bag")
    assert model.loaded_count >= len(visible) and model.pending_count == 0


def test_scrolling_decodes_what_comes_into_view(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat"))
    page = make_page()
    page.set_report(scan(data))
    grid, model = page.thumbnail_grid, page.thumbnail_grid.thumbnail_model
    qtbot.waitUntil(lambda: model.loaded_count > 0 and model.pending_count == 0, timeout=WAIT_MS)
    last = model.index(model.rowCount() - 1)
    assert model.data(last, STATUS_ROLE) != LOADED

    grid.scrollToBottom()

    qtbot.waitUntil(lambda: model.data(last, STATUS_ROLE) == LOADED, timeout=WAIT_MS)
    assert model.loaded_count < model.rowCount() or len(grid.visible_rows()) == model.rowCount()


def test_exclude_from_the_health_view_persists_and_training_leaves_it_out(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat"), per_class=10)
    tiny = add_bad_files(data, "coat")["tiny"]
    page = make_page()
    page.set_report(scan(data))
    assert table_counts(page)["coat"] == "11"

    actions = page.health_view.file_actions
    assert not actions.exclude_action.isEnabled(), "nothing selected yet"
    tree_item_for(page, tiny).setSelected(True)
    assert actions.exclude_action.isEnabled() and not actions.include_action.isEnabled()
    with qtbot.waitSignal(page.exclusions_changed) as changed:
        actions.exclude_action.trigger()

    assert changed.args == [frozenset({tiny})]
    saved = json.loads((project_dir_for(data) / EXCLUSIONS_NAME).read_text())
    assert saved["excluded"] == ["coat/0_tiny.png"], "stored relative to the data folder"
    assert table_counts(page)["coat"] == "10"
    assert tree_item_for(page, tiny).text(2) == USER_LEFT_OUT_TEXT
    assert "1 of them by you" in page.health_view.summary_label.text()
    groups = [page.health_view.tree.topLevelItem(i).text(0) for i in range(page.health_view.tree.topLevelItemCount())]
    assert f"{USER_GROUP_TITLE} (1)" in groups
    assert actions.include_action.isEnabled(), "the selection survives, so the exclusion can be undone"

    prepared = prepare_dataset(data, val_fraction=0.2)
    assert prepared.excluded_by_user == (tiny,)
    assert all(record.path != tiny for records in prepared.splits.values() for record in records)
    assert sum(len(records) for records in prepared.splits.values()) == 20

    # A rescan (a new report of the same folder) keeps the exclusion.
    page.set_report(scan(data))
    assert page.excluded_paths == frozenset({tiny})
    assert tree_item_for(page, tiny).text(2) == USER_LEFT_OUT_TEXT
    assert page.split_settings.counts["train"] + page.split_settings.counts["val"] == 20

    tree_item_for(page, tiny).setSelected(True)
    actions.include_action.trigger()
    assert json.loads((project_dir_for(data) / EXCLUSIONS_NAME).read_text())["excluded"] == []
    assert table_counts(page)["coat"] == "11"
    assert prepare_dataset(data).excluded_by_user == ()


def test_any_image_can_be_excluded_from_the_grid(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat"), per_class=10)
    page = make_page()
    page.set_report(scan(data))
    grid, model = page.thumbnail_grid, page.thumbnail_grid.thumbnail_model
    first, second = model.index(0), model.index(1)
    grid.selectionModel().select(first, grid.selectionModel().SelectionFlag.ClearAndSelect)
    grid.selectionModel().select(second, grid.selectionModel().SelectionFlag.Select)
    actions = grid.file_actions
    assert grid.contextMenuPolicy() == Qt.ContextMenuPolicy.ActionsContextMenu
    assert grid.actions() == actions.actions, "the right-click menu"

    actions.exclude_action.trigger()

    paths = {first.data(Qt.ItemDataRole.UserRole), second.data(Qt.ItemDataRole.UserRole)}
    assert page.excluded_paths == paths
    assert first.data(USER_EXCLUDED_ROLE) and second.data(USER_EXCLUDED_ROLE)
    assert "excluded by you" in first.data(Qt.ItemDataRole.ToolTipRole)
    assert table_counts(page)["bag"] == "8"
    assert not actions.exclude_action.isEnabled() and actions.include_action.isEnabled()
    assert {record.path for record in prepare_dataset(data).splits["train"]}.isdisjoint(paths)


class _UrlCatcher(QObject):
    """Receives the URLs QDesktopServices would hand to the file manager."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open_url(self, url: QUrl) -> None:
        self.urls.append(url)


def test_show_in_file_manager_opens_the_folder(make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat"), per_class=6)
    tiny = add_bad_files(data, "coat")["tiny"]
    page = make_page()
    page.set_report(scan(data))
    assert folder_url(tiny) == QUrl.fromLocalFile(str(data / "coat"))

    catcher = _UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open_url")
    try:
        tree_item_for(page, tiny).setSelected(True)
        page.health_view.file_actions.reveal_action.trigger()
        grid = page.thumbnail_grid
        grid.setCurrentIndex(grid.thumbnail_model.index(0))
        grid.file_actions.reveal_action.trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")

    assert catcher.urls == [QUrl.fromLocalFile(str(data / "coat")), QUrl.fromLocalFile(str(data / "bag"))]


def test_split_fields_validate_and_counts_follow(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "clothes", ("bag", "coat", "dress"), per_class=20)
    state = ConfigState()
    page = make_page(state)
    page.set_report(scan(data))
    split = page.split_settings
    assert split.counts == {"train": 48, "val": 12, "test": 0}
    assert split.count_labels["val"].text() == "12" and split.share_labels["val"].text() == "20%"
    assert split.val_field.isEnabled() and split.note_label.isHidden()

    split.val_field.editor.setValue(1.5)  # the box stops at 1.0, which the engine refuses: at most 0.99…
    assert split.val_field.error.startswith("must be in [0, 1)")
    assert not state.is_valid and state.config.data.val_fraction == 0.2

    split.val_field.editor.setValue(0.1)
    split.test_field.editor.setValue(0.25)
    qtbot.waitUntil(lambda: split.counts == {"train": 39, "val": 6, "test": 15}, timeout=WAIT_MS)
    assert state.is_valid and split.val_field.error == ""
    split.test_field.editor.setValue(0.95)
    assert "must leave images to train on" in split.test_field.error

    state.set_value("data.split_seed", 7)
    assert split.seed_field.editor.value() == 7


def test_presplit_folders_disable_the_fractions(qtbot, make_page, tmp_path: Path) -> None:
    root = tmp_path / "presplit"
    copy_demo(root / "train", ("bag", "coat"), per_class=12)
    copy_demo(root / "val", ("bag", "coat"), per_class=3, skip=12)
    page = make_page()

    page.set_report(scan(root))

    split = page.split_settings
    assert not split.val_field.isEnabled()
    assert split.test_field.isEnabled(), "no test folder: a test share is still taken from train"
    assert split.note_label.isVisible()
    assert split.note_label.text().startswith(f"train/val folders found: {FOLDER_RULE}")
    assert split.counts == {"train": 24, "val": 6, "test": 0}
    prepared = prepare_dataset(root)
    assert {name: len(records) for name, records in prepared.splits.items()} == split.counts


def test_state_survives_a_save_and_restore(make_page) -> None:
    page = make_page()
    page.splitter.setSizes([300, 650])
    page.right_splitter.setSizes([400, 260])
    saved = page.save_state()
    other = make_page()

    other.restore_state(saved)
    other.restore_state(page.splitter.saveState())  # an older layout's state is ignored

    assert other.splitter.sizes() == page.splitter.sizes()
    assert other.right_splitter.sizes() == page.right_splitter.sizes()


def test_screenshot_of_the_demo_with_a_class_selected(qtbot, make_page, tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "demo", tuple(sorted(p.name for p in DEMO.iterdir() if p.is_dir())))
    add_bad_files(data, "bag")
    page = make_page()
    page.set_report(scan(data))
    assert page.class_table.select_class("bag")
    model = page.thumbnail_grid.thumbnail_model
    qtbot.waitUntil(lambda: model.loaded_count >= 10 and model.pending_count == 0, timeout=WAIT_MS)
    page.set_excluded(frozenset({model.index(4).data(Qt.ItemDataRole.UserRole)}))
    QApplication.processEvents()

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "data_page.png"
    assert page.grab().save(str(shot))
    assert shot.stat().st_size > 20_000

"""The Review page on real demo photos with known flipped labels: cards, keys, undo, folder moves, a child review."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QPointF, QRectF, Qt
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.paths import project_dir_for
from engine.data.exclusions import load_exclusions
from engine.data.prepare import prepare_dataset
from engine.data.relabels import load_relabels
from engine.review.findings import review_dataset
from gui.pages.review.page import REVIEW_JSON, ReviewPage
from gui.services.config_state import ConfigState
from gui.style import apply_style

REVIEW_TIMEOUT_MS = 180_000


def _labels(data: Path) -> dict[Path, str]:
    prepared = prepare_dataset(data)
    return {record.path: record.label for records in prepared.splits.values() for record in records}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Three demo classes; a coat filed as a bag and a sandal as a coat, so the review has label issues to show."""
    root = copy_demo(tmp_path / "photos", classes=["bag", "coat", "sandal"], per_class=12)
    for true, given in (("coat", "bag"), ("sandal", "coat")):
        flipped = sorted((root / true).glob("*.png"))[0]
        shutil.move(flipped, root / given / flipped.name)
    return root


def _page(qtbot: QtBot, qapp, data: Path) -> ReviewPage:
    apply_style(qapp)
    state = ConfigState()
    state.set_value("data.path", str(data))
    page = ReviewPage(state)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    return page


def test_cards_keys_and_undo_write_the_project_files_that_preparation_honours(qtbot: QtBot, qapp, data: Path) -> None:
    review_dataset(data, draw_map=False).save_json(project_dir_for(data) / REVIEW_JSON)
    page = _page(qtbot, qapp, data)
    shown = page.shown_findings
    assert shown and shown[0].kind == "label_issue"
    first, given, true = Path(shown[0].path), shown[0].given_label, shown[0].suggested_label
    assert first.name.startswith(true) and first.parent.name == given != true, "a flipped photo, its class found"
    assert page.panel.finding == shown[0]
    # One photo may be the subject of two findings: each card shows its thumbnail.
    qtbot.waitUntil(lambda: not page.panel.is_loading and page.gallery.gallery_model.loaded_count == len(shown))
    page.grab().save(str(SCREENSHOT_DIR / "review.png"))

    qtbot.keyClick(page.gallery, Qt.Key.Key_1 + ["bag", "coat", "sandal"].index(true))  # a class by its number
    assert load_relabels(project_dir_for(data)) == {first: true}
    assert _labels(data)[first] == true
    assert page.gallery.currentIndex().row() == 1, "the next card is chosen"
    assert f"relabelled to '{true}'" in page.gallery.images()[0].caption

    qtbot.keyClick(page.gallery, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert load_relabels(project_dir_for(data)) == {}
    assert page.gallery.currentIndex().row() == 0

    qtbot.keyClick(page.gallery, Qt.Key.Key_Return)  # the suggestion
    assert f"relabelled to '{true}'" in page.gallery.images()[0].caption
    # The same photo may have other findings (an outlier among the bags); every card of it says so.
    row = next(row for row, finding in enumerate(page.shown_findings) if Path(finding.path) != first)
    assert all(f"relabelled to '{true}'" in page.gallery.images()[other].caption for other in range(row))
    page.choose(row)
    second = Path(page.panel.finding.path)
    qtbot.keyClick(page.gallery, Qt.Key.Key_E)
    assert load_exclusions(project_dir_for(data)) == {second}
    assert second not in _labels(data)

    row = next((row for row, finding in enumerate(page.shown_findings) if Path(finding.path) not in (first, second)),
               None)
    kept = None
    if row is not None:
        page.choose(row)
        qtbot.keyClick(page.gallery, Qt.Key.Key_K)
        kept = page.shown_findings[row]
        assert page.gallery.images()[row].caption.endswith("kept")
    page.kind_combo.setCurrentIndex(page.kind_combo.currentIndex())  # a fresh filter hides what was decided
    page.decided_check.setChecked(True)
    page.decided_check.setChecked(False)
    assert first not in {Path(finding.path) for finding in page.shown_findings}
    assert kept is None or kept not in page.shown_findings

    assert page.apply_to_folders()
    assert (data / true / first.name).is_file() and not first.exists()
    assert load_relabels(project_dir_for(data)) == {}
    assert _labels(data)[data / true / first.name] == true
    assert page.undo_folder_moves()
    assert first.is_file() and _labels(data)[first] == true, "back in its old folder, and relabelled in the project"

    changes = data.parent / "changes.csv"
    assert page.export_changes(changes)
    assert f"{first},relabel,{given},{true}" in changes.read_text().splitlines()


def test_review_runs_as_a_child_and_shows_its_findings(qtbot: QtBot, qapp, data: Path) -> None:
    page = _page(qtbot, qapp, data)
    assert not page.shown_findings and page.review_button.isEnabled()
    page.review()
    assert page.is_running
    qtbot.waitUntil(lambda: not page.is_running, timeout=REVIEW_TIMEOUT_MS)
    assert (project_dir_for(data) / "review.csv").is_file()
    assert page.shown_findings and page.shown_findings[0].kind == "label_issue"
    assert "photos reviewed" in page.header.summary_label.text()


def test_the_map_shows_every_photo_filters_and_relabels_a_selection_in_one_undo(
    qtbot: QtBot, qapp, data: Path
) -> None:
    project = project_dir_for(data)
    review = review_dataset(data, project_dir=project)
    review.save_json(project / REVIEW_JSON)
    assert (project / "review_map.json").is_file(), "the layout is cached in the project"
    page = _page(qtbot, qapp, data)
    page.tabs.setCurrentWidget(page.map_tab)
    qtbot.waitExposed(page)
    map_view = page.map_view
    assert map_view.visible_count == review.photos == 36
    xs = [point.x for point in review.map]
    assert max(xs) - min(xs) > 0.5, "laid out, not piled up"

    # Hovering finds the photo under the pointer; clicking a photo with a finding shows its card.
    flagged = Path(page.shown_findings[0].path)
    row = next(row for row, point in enumerate(review.map) if Path(point.path) == flagged)
    point = map_view.point(row)
    assert map_view.nearest(QPointF(point.x, point.y)) == row
    map_view.photo_clicked.emit(flagged)
    assert page.tabs.currentWidget() is page.findings_tab and Path(page.panel.finding.path) == flagged
    page.tabs.setCurrentWidget(page.map_tab)

    map_view.class_combo.setCurrentIndex(map_view.class_combo.findText("sandal"))
    in_sandal = [point for point in review.map if review.classes[point.label] == "sandal"]
    assert map_view.visible_count == len(in_sandal)
    map_view.select_rectangle(QRectF(-2, -2, 4, 4))
    assert sorted(map_view.selected_paths()) == sorted(Path(point.path) for point in in_sandal)
    map_view.target_combo.setCurrentText("bag")
    map_view.relabel_button.click()
    assert load_relabels(project) == {Path(point.path): "bag" for point in in_sandal}
    page.undo()
    assert load_relabels(project) == {}, "the whole selection comes back with one undo"
    map_view.exclude_button.click()
    assert load_exclusions(project) == {Path(point.path) for point in in_sandal}
    page.grab().save(str(SCREENSHOT_DIR / "review_map.png"))


def test_label_next_ranks_with_a_child_then_labels_by_key_into_the_class_folder_with_undo(
    qtbot: QtBot, qapp, demo_project: Path, tmp_path: Path
) -> None:
    data = tmp_path / "photos"
    shutil.copytree(demo_project, data)
    unlabelled = copy_demo(tmp_path / "unlabelled", classes=4, per_class=3, skip=30)
    page = _page(qtbot, qapp, data)
    page.set_report(prepare_dataset(data).report)
    view = page.label_next
    page.tabs.setCurrentWidget(view)
    qtbot.waitUntil(lambda: len(view.chooser.entries()) > 0, timeout=30_000)
    view.folder_edit.setText(str(unlabelled))
    view.count_spin.setValue(3)
    view.rank()
    qtbot.waitUntil(lambda: not view.is_running, timeout=REVIEW_TIMEOUT_MS)
    assert view.current is not None, view.status_label.text()
    first = view.current.path
    qtbot.waitUntil(lambda: view._decoder is None or not view.photo_view.sizeHint().isEmpty(), timeout=5_000)
    page.grab().save(str(SCREENSHOT_DIR / "review_label_next.png"))
    before = {path.relative_to(data) for path in data.rglob("*.png")}

    with qtbot.waitSignal(page.files_changed):
        qtbot.keyClick(view, Qt.Key.Key_2)  # the second class
    added = {path.relative_to(data) for path in data.rglob("*.png")} - before
    second_class = prepare_dataset(data).classes[1]
    assert added == {Path(second_class) / first.name}
    assert view.current is not None and view.current.path != first, "the next photo is shown"
    qtbot.keyClick(view, Qt.Key.Key_S)
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert {path.relative_to(data) for path in data.rglob("*.png")} == before
    assert view.current is not None and view.current.path == first, "the photo taken back is shown again"

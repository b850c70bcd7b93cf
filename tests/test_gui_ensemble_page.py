"""The Ensemble page on a copy of the demo project, with real ``main.py`` children for every file it writes.

Each test copies the session's ``demo_project`` (two Lite0 runs and ``pair.json``) so
that the manifests, soups and reports it writes stay out of the shared fixture.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QApplication
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.core.paths import project_dir_for
from engine.training.train import train
from gui.pages.ensemble.checkpoint_table import CheckpointTableModel
from gui.pages.ensemble.page import EnsemblePage
from gui.services.config_state import ConfigState
from gui.style import apply_style

PAGE_SIZE = QSize(950, 680)
LIST_TIMEOUT_MS = 10_000
COMMAND_TIMEOUT_MS = 180_000  # a child imports torch and timm: seconds alone, longer on a busy machine
GREEDY_LINE = re.compile(r"^(?P<name>\S+)\tval log-loss (?P<loss>[\d.]+)\ttop-1 [\d.]+%\tpicked (?P<picked>\d+)x$")


@pytest.fixture
def photos(demo_project: Path, tmp_path: Path) -> Path:
    """A private copy of the demo project's data folder, its hidden project folder included."""
    return Path(shutil.copytree(demo_project, tmp_path / "photos"))


@pytest.fixture
def make_page(qtbot, qapp) -> Iterator[Callable[[Path | None], EnsemblePage]]:
    """Build shown Ensemble pages whose first listing is done."""
    apply_style(qapp)
    pages: list[EnsemblePage] = []

    def make(data: Path | None) -> EnsemblePage:
        state = ConfigState(RunConfig().with_changes(**{"data.path": str(data) if data else ""}))
        page = EnsemblePage(state)
        state.setParent(page)
        qtbot.addWidget(page)
        pages.append(page)
        page.resize(PAGE_SIZE)
        page.show()
        if data is not None:
            qtbot.waitSignal(page.models_listed, timeout=LIST_TIMEOUT_MS).wait()
        return page

    yield make
    for page in pages:
        page.builder.cancel()
        page.close()


def rows(page: EnsemblePage) -> list[dict[str, object]]:
    """The table as shown (sorted), one dict per row: header -> text, plus "checked" and "path"."""
    proxy, shown = page.proxy, []
    for row in range(proxy.rowCount()):
        cells: dict[str, object] = {header: proxy.index(row, column).data()
                                    for column, header in enumerate(CheckpointTableModel.HEADERS)}
        first = proxy.index(row, CheckpointTableModel.COLUMN_RUN)
        cells["checked"] = first.data(Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
        cells["path"] = Path(first.data(CheckpointTableModel.PATH_ROLE))
        shown.append(cells)
    return shown


def check(page: EnsemblePage, name: str) -> list[Path]:
    """Tick every row whose checkpoint is ``name``, as a click on its box does; returns their paths."""
    ticked = []
    for row, cells in enumerate(rows(page)):
        if cells["Checkpoint"] == name:
            index = page.proxy.index(row, CheckpointTableModel.COLUMN_RUN)
            assert page.proxy.setData(index, Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
            ticked.append(cells["path"])
    return ticked


def click(qtbot, button) -> None:
    assert button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def saved_names(page: EnsemblePage) -> list[str]:
    return [page.saved_list.item(row).text() for row in range(page.saved_list.count())]


def save_screenshot(page: EnsemblePage, name: str) -> Path:
    page.resize(PAGE_SIZE)
    QApplication.processEvents()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    assert page.grab().save(str(path))
    return path


def test_hand_picked_weighted_ensemble_is_saved_as_a_manifest(qtbot, make_page, photos: Path) -> None:
    page = make_page(photos)
    shown = rows(page)
    assert len(shown) == 4 and not any(cells["checked"] for cells in shown)
    assert page.header.summary_label.text() == "4 checkpoints of photos · 1 saved ensemble"
    scores = [(float(str(cells["Val top-1"]).rstrip("%")), -float(str(cells["Val loss"]))) for cells in shown]
    assert scores == sorted(scores, reverse=True)  # best first
    assert not page.builder.save_button.isEnabled()

    best = check(page, "best")
    assert len(best) == 2 and "2 checked" in page.selection_label.text()
    page.weighted_check.setChecked(True)
    first_row = next(row for row, cells in enumerate(rows(page)) if cells["path"] == best[0])
    assert page.proxy.setData(page.proxy.index(first_row, CheckpointTableModel.COLUMN_WEIGHT), 3.0)
    assert not page.proxy.setData(page.proxy.index(first_row, CheckpointTableModel.COLUMN_WEIGHT), 0.0)
    page.builder.name_edit.setText("by-hand")
    with qtbot.waitSignal(page.manifest_saved, timeout=COMMAND_TIMEOUT_MS) as saved:
        click(qtbot, page.builder.save_button)
    manifest = project_dir_for(photos) / "ensembles" / "by-hand.json"
    assert saved.args == [manifest]
    content = json.loads(manifest.read_text())
    assert content["combine"] == "weighted"
    weights = {(manifest.parent / member["path"]).resolve(): member["weight"] for member in content["members"]}
    assert weights == {best[0].resolve(): 3.0, best[1].resolve(): 1.0}
    assert page.builder.current == manifest
    assert page.builder.name_edit.text().startswith("ensemble-")  # a fresh name for the next one
    # The page lists the project again and selects the new ensemble.
    qtbot.waitUntil(lambda: saved_names(page)[0] == "by-hand · 2 members", timeout=LIST_TIMEOUT_MS)
    assert page.saved_list.currentItem().text() == "by-hand · 2 members"

    page.builder.name_edit.setText("by-hand")
    click(qtbot, page.builder.save_button)
    assert "exists already" in page.builder.status_label.text()
    assert not page.builder.is_running


def test_greedy_selection_checks_its_picks_and_scores_no_worse_than_the_best_member(
        qtbot, make_page, photos: Path) -> None:
    page = make_page(photos)
    printed: list[str] = []
    page.builder.runner.line_printed.connect(printed.append)
    assert "greedy selection pick among all 4" in page.selection_label.text()
    with qtbot.waitSignal(page.manifest_applied, timeout=COMMAND_TIMEOUT_MS) as applied:
        click(qtbot, page.builder.greedy_button)
    manifest = applied.args[0]
    assert manifest.parent == project_dir_for(photos) / "ensembles" and manifest.is_file()
    members = {(manifest.parent / member["path"]).resolve(): member["weight"]
               for member in json.loads(manifest.read_text())["members"]}
    shown = rows(page)
    assert all(str(cells["Picked"]).endswith("×") for cells in shown)  # every checkpoint was a candidate
    for cells in shown:
        picked = int(str(cells["Picked"]).rstrip("×"))
        assert cells["checked"] == (picked > 0)
        assert picked == members.get(cells["path"].resolve(), 0)
    assert page.weighted_check.isChecked() and page.builder.current == manifest

    member_losses = [float(match["loss"]) for line in printed if (match := GREEDY_LINE.match(line))]
    assert len(member_losses) == 4
    with qtbot.waitSignal(page.report_shown, timeout=COMMAND_TIMEOUT_MS) as shown_report:
        click(qtbot, page.builder.evaluate_button)
    report = json.loads((shown_report.args[0] / "report.json").read_text())
    assert report["summary"]["log_loss"] <= min(member_losses) + 5e-5  # the CLI prints 4 decimals
    assert page.results.rows()[0][0] == "Ensemble"
    save_screenshot(page, "ensemble_greedy.png")


def test_a_loaded_ensemble_is_evaluated_beside_each_member(qtbot, make_page, photos: Path) -> None:
    page = make_page(photos)
    pair = project_dir_for(photos) / "ensembles" / "pair.json"
    assert page.saved_list.currentItem().text() == "pair · 2 members"
    with qtbot.waitSignal(page.evaluate_requested) as requested:
        click(qtbot, page.detail_button)
    assert requested.args == [pair]
    with qtbot.waitSignal(page.manifest_applied, timeout=LIST_TIMEOUT_MS):
        click(qtbot, page.load_button)
    assert sorted(cells["Checkpoint"] for cells in rows(page) if cells["checked"]) == ["best", "best"]
    assert page.builder.current == pair and not page.weighted_check.isChecked()

    with qtbot.waitSignal(page.report_shown, timeout=COMMAND_TIMEOUT_MS) as shown_report:
        click(qtbot, page.builder.evaluate_button)
    folder = shown_report.args[0]
    assert folder.parent == project_dir_for(photos) / "evaluations" and folder.name.startswith("pair-val-")
    assert not list((project_dir_for(photos) / "ensembles").glob("ensemble-*"))  # evaluated as it was saved
    table = page.results.rows()
    assert table[0][0] == "Ensemble"
    assert sorted(row[0] for row in table[1:]) == sorted(f"{path.parent.parent.name}/best"
                                                         for path in _member_paths(pair))
    report = json.loads((folder / "report.json").read_text())
    members_mean = sum(member["summary"]["log_loss"] for member in report["members"].values()) / 2
    assert report["summary"]["log_loss"] <= members_mean + 1e-6  # averaging probabilities never hurts log-loss
    assert page.results.headline_label.text().startswith(
        f"Ensemble log-loss {report['summary']['log_loss']:.4f} vs members' mean {members_mean:.4f}")
    save_screenshot(page, "ensemble.png")

def test_soup_of_two_runs_is_written_and_unrelated_members_are_refused(qtbot, make_page, photos: Path) -> None:
    # A small random-init model of other classes, trained in seconds into the copied project.
    other = copy_demo(photos.parent / "other", classes=3, per_class=5)
    config = RunConfig().with_changes(**{
        "data.path": str(other), "data.num_workers": 0, "data.input_size": 64, "optim.epochs": 1,
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none"})
    train(config, project_dir_for(photos) / "runs" / "20261125-090000-mobilenetv3_small_050")
    page = make_page(photos)
    best = check(page, "best")
    lite0 = [path for path in best if "lite0" in path.parent.parent.name]
    assert len(best) == 3 and len(lite0) == 2

    page.builder.name_edit.setText("mixed")
    with qtbot.waitSignal(page.builder.runner.finished, timeout=COMMAND_TIMEOUT_MS) as finished:
        click(qtbot, page.builder.soup_button)
    assert finished.args[0] is False
    assert "differ in architecture" in page.builder.status_label.text()
    with qtbot.waitSignal(page.builder.runner.finished, timeout=COMMAND_TIMEOUT_MS) as finished:
        click(qtbot, page.builder.save_button)
    assert finished.args[0] is False
    assert "ensemble members must predict the same classes" in page.builder.status_label.text()
    save_screenshot(page, "ensemble_refused.png")
    assert not list((project_dir_for(photos) / "ensembles").glob("mixed*"))

    small_row = next(row for row, cells in enumerate(rows(page)) if cells["checked"] and cells["path"] not in lite0)
    index = page.proxy.index(small_row, CheckpointTableModel.COLUMN_RUN)
    page.proxy.setData(index, Qt.CheckState.Unchecked, Qt.ItemDataRole.CheckStateRole)
    page.builder.name_edit.setText("pair")
    with qtbot.waitSignal(page.manifest_saved, timeout=COMMAND_TIMEOUT_MS) as saved:
        click(qtbot, page.builder.soup_button)
    soup = project_dir_for(photos) / "ensembles" / "pair-soup.safetensors"
    assert saved.args == [soup] and soup.is_file()
    assert page.builder.current == soup
    # The soup's metadata copy beside it (pair-soup.json) is not listed as a manifest.
    with qtbot.waitSignal(page.models_listed, timeout=LIST_TIMEOUT_MS):
        page.refresh()
    assert saved_names(page) == ["pair · 2 members"]


def test_empty_states_say_what_to_do(qtbot, make_page, tmp_path: Path) -> None:
    page = make_page(None)
    assert page.message_panel.title_label.text() == "No project open"
    empty = copy_demo(tmp_path / "fresh", classes=2, per_class=2)
    page._state.set_value("data.path", str(empty))
    qtbot.waitSignal(page.models_listed, timeout=LIST_TIMEOUT_MS).wait()
    assert page.message_panel.title_label.text() == "Train a model first"
    assert page.project_dir == project_dir_for(empty)


def test_a_damaged_checkpoint_is_listed_but_cannot_be_checked(qtbot, make_page, photos: Path) -> None:
    broken = project_dir_for(photos) / "runs" / "20261126-080000-resnet18" / "checkpoints" / "best.safetensors"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    page = make_page(photos)
    (row,) = [row for row, cells in enumerate(rows(page)) if cells["path"] == broken]
    index = page.proxy.index(row, CheckpointTableModel.COLUMN_NAME)
    assert index.data() == "best (unreadable)" and "damaged checkpoint" in index.data(Qt.ItemDataRole.ToolTipRole)
    first = page.proxy.index(row, CheckpointTableModel.COLUMN_RUN)
    assert not first.flags() & Qt.ItemFlag.ItemIsUserCheckable
    assert not page.proxy.setData(first, Qt.CheckState.Checked, Qt.ItemDataRole.CheckStateRole)
    assert "pick among all 4" in page.selection_label.text()  # the four readable ones


def _member_paths(manifest: Path) -> list[Path]:
    return [(manifest.parent / member["path"]).resolve() for member in json.loads(manifest.read_text())["members"]]


def test_cancel_stops_the_command_and_writes_nothing(qtbot, make_page, photos: Path) -> None:
    page = make_page(photos)
    page.builder.name_edit.setText("never")
    with qtbot.waitSignal(page.builder.busy_changed) as busy:
        click(qtbot, page.builder.greedy_button)
    assert busy.args == [True]
    assert page.builder.cancel_button.isVisible() and not page.builder.save_button.isEnabled()
    assert not page.load_button.isEnabled()
    save_screenshot(page, "ensemble_busy.png")
    with qtbot.waitSignal(page.builder.busy_changed, timeout=COMMAND_TIMEOUT_MS) as busy:
        click(qtbot, page.builder.cancel_button)
    assert busy.args == [False]
    assert page.builder.status_label.text() == "Stopped."
    assert page.builder.greedy_button.isEnabled() and page.load_button.isEnabled()
    assert not (project_dir_for(photos) / "ensembles" / "never.json").exists()

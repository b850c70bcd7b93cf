"""The Runs page on real run folders: two short real trainings (one stopped), a damaged and a foreign folder.

The runs are trained once for the module with the engine's own ``train``; the resume
test (last, since it changes the stopped run) goes through a real child process. Runs
killed mid-way or written by another process are made by hand, holding their writer
lock in this process where another process would.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import pytest
from PySide6.QtCore import QObject, QSize, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.core.errors import BackboneUnavailable
from engine.core.paths import project_dir_for
from engine.training.callback import Callback, LoopState
from engine.training.run_summary import list_runs, read_run
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import train
from gui.pages.runs.page import RunsPage
from gui.pages.runs.run_curves import curve_name
from gui.pages.runs.run_table import RunTableModel, displayed_state
from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController
from gui.style import apply_style

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
PAGE_SIZE = QSize(950, 680)
LIST_TIMEOUT_MS = 10_000
FINISHED_NAME = "20260301-101500-tf_efficientnet_lite0"
STOPPED_NAME = "20260302-093000-tf_efficientnet_lite0"
FAILED_NAME = "20260302-150000-convnext_tiny"
BROKEN_NAME = "20260303-120000-resnet18"
FOREIGN_NAME = "holiday photos"
KILLED_NAME = "20260305-090000-tf_efficientnet_lite0"
ELSEWHERE_NAME = "20260305-100000-tf_efficientnet_lite0"
EARLIER_NAME = "20260305-080000-tf_efficientnet_lite0"


class StopAfterSecondEpoch(Callback):
    """Asks for a clean stop the way the GUI does: a STOP file in the run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def after_epoch(self, state: LoopState) -> None:
        if state.epoch == 2:
            RunFolder(self.run_dir).request_stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 classes x 10 photos demo copy with finished, stopped and failed runs, a damaged and a foreign folder."""
    data = tmp_path_factory.mktemp("runs-page") / "clothes"
    for name in ("coat", "sandal", "shirt"):  # two alike, so that the curves have somewhere to climb
        (data / name).mkdir(parents=True)
        for image in sorted((DEMO / name).glob("*.png"))[:10]:
            shutil.copy(image, data / name / image.name)
    runs = project_dir_for(data) / "runs"
    config = RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, "optim.epochs": 5,
                                          "optim.batch_size": 8})
    assert train(config, runs / FINISHED_NAME).state == "finished"
    stopped = runs / STOPPED_NAME
    slower = config.with_changes(**{"optim.learning_rate": 3e-4})
    assert train(slower, stopped, callbacks=[StopAfterSecondEpoch(stopped)]).state == "cancelled"
    with pytest.raises(BackboneUnavailable):  # no offline weights for it, and the tests are offline
        train(config.with_changes(**{"model.backbone": "convnext_tiny"}), runs / FAILED_NAME)
    (runs / BROKEN_NAME).mkdir()
    (runs / BROKEN_NAME / "config.yaml").write_text("model: [unclosed\n  backbone: {{{\n")
    (runs / FOREIGN_NAME).mkdir()
    (runs / FOREIGN_NAME / "beach.jpg").write_bytes(b"not really a picture")
    return data


@pytest.fixture
def make_page(qtbot, qapp) -> Iterator[Callable[..., RunsPage]]:
    """Build shown Runs pages whose first listing is done; wait for their pool threads afterwards."""
    apply_style(qapp)
    pages: list[RunsPage] = []

    def make(data: Path | None, *, state: ConfigState | None = None,
             controller: RunController | None = None) -> RunsPage:
        state = state or ConfigState(RunConfig().with_changes(**{"data.path": str(data) if data else ""}))
        controller = controller or RunController(poll_interval_ms=50)
        page = RunsPage(state, controller)
        state.setParent(page)
        controller.setParent(page)
        qtbot.addWidget(page)
        pages.append(page)
        page.resize(PAGE_SIZE)
        page.show()
        if data is not None:
            # The listing the page started runs on a pool thread; it reports on a later event-loop turn.
            qtbot.waitSignal(page.runs_listed, timeout=LIST_TIMEOUT_MS).wait()
        return page

    yield make
    for page in pages:
        page.close()


def rows(page: RunsPage) -> dict[str, dict[str, str]]:
    """Folder name -> {header: text} for every row, as shown."""
    proxy = page.proxy
    shown = {}
    for row in range(proxy.rowCount()):
        name = Path(proxy.index(row, 0).data(RunTableModel.PATH_ROLE)).name
        shown[name] = {header: proxy.index(row, column).data() for column, header in enumerate(RunTableModel.HEADERS)}
    return shown


def hand_made_run(data: Path, name: str, status: dict | str) -> Path:
    """A run folder as a process leaves it three epochs into five: metrics, a last checkpoint, ``status``.

    ``writer.lock`` exists (every writer leaves it) but nobody holds it.
    """
    run_dir = project_dir_for(data) / "runs" / name
    folder = RunFolder.create(run_dir, RunConfig().with_changes(**{"data.path": str(data), "optim.epochs": 5}))
    folder.write_metrics([{"epoch": epoch, "train_loss": 1.2 / epoch, "val_loss": 1.3 / epoch,
                           "val_top1": 0.5 + 0.1 * epoch} for epoch in (1, 2, 3)])
    folder.checkpoint_path("last").write_bytes(b"")  # only its presence matters to the page
    (run_dir / "writer.lock").touch()
    folder.status_path.write_text(status if isinstance(status, str) else json.dumps(status))
    return run_dir


def running_status(pid: int, host: str) -> dict:
    """What ``status.json`` says while a process at ``pid`` on ``host`` writes the run."""
    return {"state": "running", "epoch": 3, "num_epochs": 5, "pid": pid, "host": host,
            "started": "2026-03-05T09:00:00", "heartbeat": time.time()}


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def status_tip(page: RunsPage, name: str) -> str:
    for row in range(page.proxy.rowCount()):
        if Path(page.proxy.index(row, 0).data(RunTableModel.PATH_ROLE)).name == name:
            return page.proxy.index(row, RunTableModel.COLUMN_STATUS).data(Qt.ItemDataRole.ToolTipRole)
    raise KeyError(name)


def best_value(run_dir: Path) -> float:
    (finished,) = [event for event in read_events(run_dir) if event["event"] == "run_finished"]
    return finished["best_value"]


def save_screenshot(page: RunsPage, name: str) -> Path:
    page.resize(PAGE_SIZE)
    QApplication.processEvents()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    assert page.grab().save(str(path))
    return path


class UrlCatcher(QObject):
    """Receives the URLs QDesktopServices is asked to open (Qt's own hook for a URL scheme)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[QUrl] = []

    @Slot(QUrl)
    def open_url(self, url: QUrl) -> None:
        self.urls.append(url)


def test_runs_are_listed_with_state_epochs_and_best_accuracy(make_page, project: Path) -> None:
    page = make_page(project)
    shown = rows(page)

    assert set(shown) == {FINISHED_NAME, STOPPED_NAME, FAILED_NAME, BROKEN_NAME, FOREIGN_NAME}
    runs = project_dir_for(project) / "runs"
    finished = shown[FINISHED_NAME]
    assert finished["Started"] == "2026-03-01 10:15"
    assert (finished["Backbone"], finished["Mode"]) == ("tf_efficientnet_lite0", "feature extraction")
    assert finished["Epochs"] == "5 / 5"
    assert finished["Best val. accuracy"] == f"{best_value(runs / FINISHED_NAME):.1%}"
    assert finished["Status"] == "finished"
    stopped = shown[STOPPED_NAME]
    assert stopped["Epochs"] == "2 / 5"
    assert stopped["Status"] == "cancelled: stop requested"
    accuracies = [row["val_top1"] for row in RunFolder(runs / STOPPED_NAME).read_metrics()]
    assert stopped["Best val. accuracy"] == f"{max(accuracies):.1%}"
    failed = shown[FAILED_NAME]
    assert failed["Status"].startswith("failed: backbone 'convnext_tiny': no offline weights are installed")
    assert (failed["Epochs"], failed["Best val. accuracy"]) == ("0 / 5", "—")
    broken = shown[BROKEN_NAME]
    assert broken["Status"].startswith("unreadable: config.yaml: not valid YAML")
    assert broken["Backbone"] == "—" and broken["Started"] == "2026-03-03 12:00"
    assert shown[FOREIGN_NAME]["Status"] == "unreadable: no config.yaml: not a run folder"
    assert page.header.summary_label.text() == "3 runs of clothes · 2 unreadable folders"

    # Newest first, and the newest readable run of a freshly opened project is selected.
    assert list(shown)[:4] == [BROKEN_NAME, FAILED_NAME, STOPPED_NAME, FINISHED_NAME]
    assert [run.name for run in page.selected_runs()] == [FAILED_NAME]

    page.table.sortByColumn(RunTableModel.COLUMN_EPOCHS, Qt.SortOrder.DescendingOrder)
    assert list(rows(page))[0] == FINISHED_NAME


def test_selecting_runs_overlays_their_curves(make_page, project: Path) -> None:
    page = make_page(project)
    runs = project_dir_for(project) / "runs"

    page.select_runs([runs / FINISHED_NAME, runs / STOPPED_NAME])

    selected = page.selected_runs()
    assert {run.name for run in selected} == {FINISHED_NAME, STOPPED_NAME}
    for plot, column, scale in ((page.curves.accuracy_plot, "val_top1", 100), (page.curves.loss_plot, "val_loss", 1)):
        curves = {curve.name(): curve for curve in plot.getPlotItem().listDataItems()}
        assert set(curves) == {curve_name(run) for run in selected}
        for run in selected:
            metrics = RunFolder(run.path).read_metrics()
            epochs, values = curves[curve_name(run)].getData()
            assert list(epochs) == [row["epoch"] for row in metrics]
            assert list(values) == pytest.approx([row[column] * scale for row in metrics])
        colors = {run.name: curves[curve_name(run)].opts["pen"].color().name() for run in selected}
        assert len(set(colors.values())) == 2, "each run has its own colour"
    swatches = {}
    for row in range(page.proxy.rowCount()):
        swatch = page.proxy.index(row, RunTableModel.COLUMN_STARTED).data(Qt.ItemDataRole.DecorationRole)
        if swatch is not None:
            swatches[Path(page.proxy.index(row, 0).data(RunTableModel.PATH_ROLE)).name] = swatch.name()
    assert swatches == colors, "the table shows each run's curve colour"
    assert "2 runs selected" in page.detail_label.text()
    save_screenshot(page, "runs_page.png")

    page.select_runs([])
    assert page.curves.accuracy_plot.getPlotItem().listDataItems() == []
    assert not page.open_folder_button.isEnabled()


def test_a_page_without_a_project_says_so(make_page) -> None:
    page = make_page(None)
    assert page.project_dir is None
    assert page.message_panel.isVisible()
    assert page.message_panel.title_label.text() == "No project open"


def test_load_config_replaces_the_forms_config(make_page, project: Path, qtbot) -> None:
    state = ConfigState(RunConfig().with_changes(**{"data.path": str(project), "optim.epochs": 42}))
    page = make_page(project, state=state)
    stopped = project_dir_for(project) / "runs" / STOPPED_NAME
    page.select_runs([stopped])
    assert page.load_config_button.isEnabled()

    with qtbot.waitSignals([state.changed, page.config_loaded]):
        qtbot.mouseClick(page.load_config_button, Qt.MouseButton.LeftButton)

    assert state.config == RunFolder(stopped).load_config()
    assert state.config.optim.learning_rate == 3e-4 and state.config.optim.epochs == 5

    page.select_runs([project_dir_for(project) / "runs" / BROKEN_NAME])
    assert not page.load_config_button.isEnabled(), "an unreadable run has no config to load"


def test_open_run_folder_asks_the_desktop_to_open_its_url(make_page, project: Path, qtbot) -> None:
    page = make_page(project)
    finished = project_dir_for(project) / "runs" / FINISHED_NAME
    page.select_runs([finished])
    catcher = UrlCatcher()
    QDesktopServices.setUrlHandler("file", catcher, "open_url")
    try:
        qtbot.mouseClick(page.open_folder_button, Qt.MouseButton.LeftButton)
    finally:
        QDesktopServices.unsetUrlHandler("file")

    assert catcher.urls == [QUrl.fromLocalFile(str(finished))] == [page.run_folder_url()]


def test_resume_is_offered_for_a_stopped_or_failed_run(make_page, project: Path) -> None:
    page = make_page(project)
    runs = project_dir_for(project) / "runs"
    # The failed run failed before its first epoch: resuming starts it again from its config.
    expected = {FINISHED_NAME: False, STOPPED_NAME: True, FAILED_NAME: True, BROKEN_NAME: False, FOREIGN_NAME: False}
    for name, resumable in expected.items():
        page.select_runs([runs / name])
        assert page.resume_button.isEnabled() == resumable, name
    page.select_runs([runs / STOPPED_NAME, runs / FINISHED_NAME])
    assert not page.resume_button.isEnabled(), "resume acts on one run"


def test_a_killed_run_reads_as_interrupted_and_a_long_final_line_is_found(project: Path, tmp_path: Path) -> None:
    finished = project_dir_for(project) / "runs" / FINISHED_NAME
    killed = tmp_path / "runs" / "20260304-080000-tf_efficientnet_lite0"
    shutil.copytree(finished, killed, ignore=shutil.ignore_patterns("best.*"))
    # What a killed process leaves: no final event, and a status that still says running.
    events = (killed / "events.jsonl").read_text().splitlines(keepends=True)
    (killed / "events.jsonl").write_text("".join(line for line in events if '"run_finished"' not in line))
    RunFolder(killed).write_status("running", epoch=4, num_epochs=5)

    (summary,) = list_runs(tmp_path)
    assert (summary.state, summary.has_last_checkpoint) == ("interrupted", True), "no process holds its lock"
    assert displayed_state(summary, active_run=None) == "interrupted"
    assert displayed_state(summary, active_run=killed) == "running"

    # A failure's last line can be far longer than the tail read at first (a deep traceback).
    RunFolder(killed).write_event("run_failed", error_type="RuntimeError", message="CUDA error: out of memory",
                                  traceback="frame\n" * 40_000)
    assert read_run(killed).state == "failed" and read_run(killed).reason == "CUDA error: out of memory"


def test_a_run_whose_process_died_shows_as_interrupted_and_resumable(make_page, tmp_path: Path) -> None:
    data = tmp_path / "clothes"
    data.mkdir()
    pid, host = dead_pid(), socket.gethostname()
    killed = hand_made_run(data, KILLED_NAME, running_status(pid, host))
    hand_made_run(data, EARLIER_NAME, {"state": "cancelled", "reason": "stop requested", "pid": pid, "host": host})
    page = make_page(data)
    page.select_runs([killed])

    assert rows(page)[KILLED_NAME]["Status"] == "interrupted"
    assert f"(pid {pid} on {host}) ended without finishing the run" in status_tip(page, KILLED_NAME)
    assert f"Interrupted: its process (pid {pid} on {host})" in page.detail_label.text()
    assert page.resume_button.isEnabled()
    save_screenshot(page, "runs_interrupted.png")


def test_a_run_another_process_writes_shows_as_running_and_is_not_resumed(
        make_page, tmp_path: Path, qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gui.pages.runs.page._POLL_INTERVAL_MS", 50)
    data = tmp_path / "clothes"
    data.mkdir()
    run_dir = hand_made_run(data, ELSEWHERE_NAME, running_status(4242, "gpu-box"))
    other_process = filelock.FileLock(run_dir / "writer.lock")  # a second lock object conflicts, as a process would
    other_process.acquire()
    controller = RunController(poll_interval_ms=50)
    try:
        page = make_page(data, controller=controller)
        page.select_runs([run_dir])
        assert rows(page)[ELSEWHERE_NAME]["Status"] == "running: process 4242 on gpu-box"
        assert "process 4242 on gpu-box is writing this run, outside this window" in page.detail_label.text()
        assert not page.resume_button.isEnabled()
        save_screenshot(page, "runs_running_elsewhere.png")
        with qtbot.assertNotEmitted(controller.run_started):
            page.resume_selected()

        other_process.release()  # killed: the page notices on its own
        qtbot.waitUntil(lambda: rows(page)[ELSEWHERE_NAME]["Status"] == "interrupted", timeout=LIST_TIMEOUT_MS)
        assert page.resume_button.isEnabled()

        # Another process resumes it between the listing and the click.
        (run_dir / "status.json").write_text(json.dumps(running_status(5151, "gpu-box")))
        other_process.acquire()
        with qtbot.assertNotEmitted(controller.run_started):
            qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
        assert not controller.is_running
        assert page.detail_label.text().splitlines()[-1] == (
            "Not resumed: process 5151 on gpu-box is writing this run; stop it first, or wait for it to end")
        qtbot.waitUntil(lambda: rows(page)[ELSEWHERE_NAME]["Status"] == "running: process 5151 on gpu-box",
                        timeout=LIST_TIMEOUT_MS)
        assert not page.resume_button.isEnabled()
    finally:
        other_process.release()


def test_a_garbage_status_reads_as_interrupted(make_page, tmp_path: Path) -> None:
    data = tmp_path / "clothes"
    data.mkdir()
    garbled = hand_made_run(data, KILLED_NAME, '{"state": "runn\x00\x00')
    listed = hand_made_run(data, ELSEWHERE_NAME, "[1, 2]")
    page = make_page(data)

    for run_dir in (garbled, listed):
        page.select_runs([run_dir])
        assert rows(page)[run_dir.name]["Status"] == "interrupted"
        assert status_tip(page, run_dir.name) == "its process ended without finishing the run; resume it to go on"
        assert page.resume_button.isEnabled()


def test_resuming_the_stopped_run_finishes_it(make_page, project: Path, qtbot) -> None:
    controller = RunController(poll_interval_ms=50)
    page = make_page(project, controller=controller)
    stopped = project_dir_for(project) / "runs" / STOPPED_NAME
    page.select_runs([stopped])

    with qtbot.waitSignal(controller.run_started, timeout=LIST_TIMEOUT_MS):
        qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert rows(page)[STOPPED_NAME]["Status"] == "running"
    assert not page.resume_button.isEnabled(), "one run at a time"

    with qtbot.waitSignal(controller.run_ended, timeout=240_000) as ended:
        pass  # the child trains epochs 3 to 5
    assert ended.args[0] == "finished", ended.args[1]
    # The page re-reads the runs when the run ends; no event was processed since, so the listing is still to come.
    qtbot.waitSignal(page.runs_listed, timeout=LIST_TIMEOUT_MS).wait()
    shown = rows(page)[STOPPED_NAME]
    assert shown["Status"] == "finished" and shown["Epochs"] == "5 / 5"
    assert [run.name for run in page.selected_runs()] == [STOPPED_NAME], "the selection survives a refresh"
    assert len(page.curves.loss_plot.getPlotItem().listDataItems()[0].getData()[0]) == 5

"""The whole window as a user drives it: every page on the demo, a real run, closing during a run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QSettings, QSize
from PySide6.QtWidgets import QApplication, QMessageBox
from screenshots import SCREENSHOT_DIR

from engine.models.checkpoint import load_checkpoint
from gui.main_window import MainWindow
from gui.pages import AugmentPage, DataPage, EnsemblePage, EvaluatePage, ExportPage, PredictPage, RunsPage, TrainPage
from gui.style import apply_style

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
SCREENSHOTS = SCREENSHOT_DIR / "pages"
RUN_TIMEOUT_MS = 240_000


@pytest.fixture
def window(qtbot, qapp, tmp_path: Path) -> Iterator[MainWindow]:
    apply_style(qapp)
    settings = QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat)
    main = MainWindow(settings)
    main.resize(QSize(1100, 700))
    main.show()
    qtbot.waitExposed(main)
    yield main
    if main.controller.is_running:
        with qtbot.waitSignal(main.controller.run_ended, timeout=RUN_TIMEOUT_MS):
            main.controller.kill()
    main.close()
    main.scanner.wait_for_done(30_000)
    main.page(AugmentPage).preview.wait_for_done(30_000)
    main.deleteLater()
    QApplication.processEvents()


@pytest.fixture
def small_demo(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "data", ("bag", "sneaker", "trouser"), 12)


def open_and_scan(qtbot, window: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(window.scan_finished, timeout=60_000):
        window.open_dataset(folder)


def test_every_page_on_the_demo_project(qtbot, window: MainWindow, tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo, ignore=shutil.ignore_patterns(".transfer-studio"))
    open_and_scan(qtbot, window, demo)
    assert window.state.config.data.path == str(demo.resolve())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for row in range(window.sidebar.count()):
        window.sidebar.setCurrentRow(row)
        name = window.sidebar.item(row).text().lower()
        if name == "augment":
            qtbot.waitSignal(window.page(AugmentPage).preview_updated, timeout=120_000).wait()
        if name == "data":
            qtbot.waitUntil(lambda: window.page(DataPage).thumbnail_grid.thumbnail_model.loaded_count >= 10,
                            timeout=60_000)
        QApplication.processEvents()
        path = SCREENSHOTS / f"{row + 1}-{name}.png"
        assert window.grab().save(str(path))
    print(f"screenshots of every page: {SCREENSHOTS}")
    assert window.sidebar.count() == 12 and len(list(SCREENSHOTS.glob("*.png"))) >= 12


def test_model_pages_on_a_project_with_runs(qtbot, window: MainWindow, demo_project: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(demo_project, photos)  # with its .transfer-studio folder: two runs and an ensemble
    with qtbot.waitSignal(window.page(EnsemblePage).models_listed, timeout=60_000):
        open_and_scan(qtbot, window, photos)
    manifest = photos / ".transfer-studio" / "ensembles" / "pair.json"
    with qtbot.waitSignal(window.page(EvaluatePage).evaluation_finished, timeout=RUN_TIMEOUT_MS) as finished:
        window.page(EnsemblePage).evaluate_requested.emit(manifest)
        assert window.pages.currentIndex() == window.sidebar.currentRow()
        assert window.sidebar.currentItem().text() == "Evaluate"
    report = finished.args[0]
    assert (report / "report.json").is_file() and report.parent.name == "evaluations"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for page_class in (EnsemblePage, EvaluatePage, PredictPage, ExportPage):
        window.show_page(window.page(page_class))
        QApplication.processEvents()
        name = window.sidebar.currentItem().text().lower()
        assert window.grab().save(str(SCREENSHOTS / f"with-runs-{name}.png"))


def test_a_run_started_from_the_window_draws_curves_and_is_listed(qtbot, window: MainWindow,
                                                                   small_demo: Path) -> None:
    open_and_scan(qtbot, window, small_demo)
    listed: list[list] = [[]]
    window.page(RunsPage).runs_listed.connect(listed.append)
    assert window.state.apply({
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none", "model.mode": "fine_tune",
        "optim.epochs": 1, "data.input_size": 64, "data.num_workers": 0, "optim.batch_size": 8,
    })
    with qtbot.waitSignal(window.controller.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        window.start_action.trigger()
    assert ended.args[0] == "finished", ended.args
    xs, ys = window.page(TrainPage).curves.series("train_loss")
    assert len(xs) >= 1 and len(ys) == len(xs)
    assert len(window.page(TrainPage).curves.series("val_loss")[0]) == 1
    qtbot.waitUntil(lambda: any(run.path == window.page(TrainPage).run_dir and run.state == "finished"
                                for run in listed[-1]), timeout=30_000)


def test_closing_during_a_run_asks_and_stops_cleanly(qtbot, window: MainWindow, small_demo: Path) -> None:
    open_and_scan(qtbot, window, small_demo)
    assert window.state.apply({
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none", "model.mode": "fine_tune",
        "optim.epochs": 50, "data.input_size": 64, "data.num_workers": 0, "optim.batch_size": 4,
    })
    with qtbot.waitSignal(window.controller.event_received, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda event: event["event"] == "batch_finished"):
        window.page(TrainPage).start()
    window.close()
    box = window.findChild(QMessageBox, "close_during_run")
    assert box is not None and box.isVisible() and window.isVisible()
    stop_button = next(button for button in box.buttons() if button.text() == "Stop and close")
    with qtbot.waitSignal(window.controller.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        stop_button.click()
    assert ended.args[0] == "cancelled"
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10_000)
    last = window.page(TrainPage).run_dir / "checkpoints" / "last.safetensors"
    assert load_checkpoint(last).metadata["stopped"] == "stopped"


def test_config_save_and_load_through_the_window(qtbot, window: MainWindow, small_demo: Path, tmp_path: Path) -> None:
    open_and_scan(qtbot, window, small_demo)
    assert window.state.apply({"optim.learning_rate": 0.02, "model.head": "mlp"})
    saved = window.save_config(tmp_path / "recipe.yaml")
    assert window.state.apply({"optim.learning_rate": 0.5, "model.head": "linear"})
    assert window.load_config(saved)
    assert window.state.config.optim.learning_rate == 0.02 and window.state.config.model.head == "mlp"
    (tmp_path / "broken.yaml").write_text("optim:\n  epochs: zero\n")
    assert not window.load_config(tmp_path / "broken.yaml")
    assert "optim.epochs" in window.status_label.text()
    shortcuts = {action.text(): action.shortcut().toString() for action in
                 (window.open_action, window.start_action, window.stop_action, window.save_config_action)}
    assert shortcuts == {"&Open data folder…": "Ctrl+O", "&Start training": "Ctrl+Return",
                         "S&top training": "Ctrl+.", "&Save config…": "Ctrl+S"}

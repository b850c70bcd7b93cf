"""The Export page exports real checkpoints and ensembles through the CLI and shows each format's parity."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from pytestqt.qtbot import QtBot
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig
from engine.export.exporter import PARITY_TOLERANCE
from gui.pages.export.page import ExportPage
from gui.services.config_state import ConfigState

SCREENSHOT = SCREENSHOT_DIR / "export.png"
EXPORT_TIMEOUT_MS = 180_000


@pytest.fixture
def page(qtbot: QtBot, demo_project: Path) -> ExportPage:
    """The page on the demo project, its models listed and the first one's formats known."""
    state = ConfigState(RunConfig().with_changes(**{"data.path": str(demo_project), "data.num_workers": 0}))
    page = ExportPage(state)
    qtbot.addWidget(page)
    page.resize(950, 680)
    page.show()
    qtbot.waitUntil(lambda: page.export_button.isEnabled(), timeout=30_000)
    return page


def _choose(qtbot: QtBot, page: ExportPage, kind: str) -> None:
    index = next(row for row, entry in enumerate(page.chooser.entries()) if entry.kind == kind)
    page.chooser.combo.setCurrentIndex(index)
    qtbot.waitUntil(lambda: page.export_button.isEnabled(), timeout=30_000)


def _parity_by_format(page: ExportPage) -> dict[str, tuple[str, float]]:
    table = page.results.table
    return {table.item(row, 0).text().split(" (")[0]: (table.item(row, 3).text(), table.item(row, 3).data(256))
            for row in range(table.rowCount())}


def test_exports_a_checkpoint_to_onnx_and_timm_with_parity(qtbot: QtBot, page: ExportPage, tmp_path: Path) -> None:
    entry = page.chooser.current()
    assert entry.kind == "checkpoint"
    assert all(box.isEnabled() for box in page.formats.boxes.values())
    assert str(page.folder_edit.text()).startswith(str(Path(entry.path).parents[3] / "exports"))
    page.formats.boxes["torchscript"].setChecked(False)

    out = tmp_path / "export"
    with qtbot.waitSignal(page.export_finished, timeout=EXPORT_TIMEOUT_MS) as finished:
        assert page.export_model(out)
        assert not page.export_button.isEnabled() and page.cancel_button.isEnabled()
    assert finished.args == [out]

    parity = _parity_by_format(page)
    assert list(parity) == ["ONNX", "timm folder"]
    for text, difference in parity.values():
        assert text.startswith("✓") and "8 real images" in text
        assert difference <= PARITY_TOLERANCE
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "predict.py").is_file()
    assert (out / "timm" / "config.json").is_file() and not (out / "torchscript").exists()
    assert "Each export computes what PyTorch computes (largest difference ≤ 1e-4)" in page.results.status_label.text()
    assert any(line.startswith("onnx: ") for line in page.results.log_view.toPlainText().splitlines())

    table, buttons = page.results.table, page.results.open_folder_button
    # Room for everything, benchmark included (in the window, the page scrolls; below its minimum it would overlap).
    page.resize(950, max(900, page.minimumSizeHint().height()))
    qtbot.waitUntil(lambda: buttons.y() >= table.geometry().bottom())  # laid out below the rows, not over them

    # The benchmark of what was just exported, beside the PyTorch model it came from.
    assert page.benchmark.run_button.isEnabled()
    page.benchmark.runs, page.benchmark.throughput_batch = 3, 4  # fewer and smaller calls: the rows are what is tested
    page.benchmark.benchmark()
    assert page.benchmark.is_running and page.benchmark.progress_bar.isVisible()
    qtbot.waitUntil(lambda: not page.benchmark.is_running, timeout=EXPORT_TIMEOUT_MS)
    measured = page.benchmark.table
    assert [measured.item(row, 0).text() for row in range(measured.rowCount())] == ["pytorch", "onnx", "timm"]
    marks = [measured.item(row, 6).text() for row in range(measured.rowCount())]
    assert any("fastest" in mark for mark in marks) and any("most accurate" in mark for mark in marks)
    assert (out / "benchmark.json").is_file() and "validation images" in page.benchmark.status_label.text()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT))

    command = page.results.copy_predict_command()
    assert QGuiApplication.clipboard().text() == command
    assert str(out / "onnx" / "predict.py") in command and command.endswith("model.onnx IMAGE")
    assert page.results.open_folder_button.isEnabled()



def test_an_ensemble_has_no_timm_folder_but_exports_to_torchscript(qtbot: QtBot, page: ExportPage,
                                                                    tmp_path: Path) -> None:
    _choose(qtbot, page, "ensemble")
    timm = page.formats.boxes["timm"]
    assert not timm.isEnabled() and not timm.isChecked()
    assert "ensemble has no timm form" in timm.toolTip()
    assert "ensemble has no timm form" in page.formats.labels["timm"].text()
    # TorchScript, the quickest format to write: the ensemble as one ONNX graph is checked in test_export.py.
    page.formats.boxes["onnx"].setChecked(False)
    assert page.formats.chosen() == ["torchscript"]

    out = tmp_path / "ensemble"
    with qtbot.waitSignal(page.export_finished, timeout=EXPORT_TIMEOUT_MS):
        page.export_model(out)
    ((text, difference),) = _parity_by_format(page).values()
    assert text.startswith("✓") and difference <= PARITY_TOLERANCE
    assert (out / "torchscript" / "model.torchscript.pt").is_file()

    # Back to a checkpoint: the timm folder is offered again; the user's unticked ONNX stays unticked.
    _choose(qtbot, page, "checkpoint")
    assert page.formats.boxes["timm"].isEnabled() and page.formats.boxes["timm"].isChecked()
    assert page.formats.chosen() == ["torchscript", "timm"]


def test_a_failing_export_shows_the_cli_message(qtbot: QtBot, page: ExportPage, tmp_path: Path) -> None:
    empty = tmp_path / "no-images"
    empty.mkdir()
    page.check_folder_edit.setText(str(empty))
    assert page.folder_images_radio.isChecked()
    with qtbot.waitSignal(page.runner.finished, timeout=EXPORT_TIMEOUT_MS) as finished:
        page.export_model(tmp_path / "export")
    assert finished.args[0] is False
    assert page.results.status_label.text() == f"Export failed: no images found in {empty}"
    assert page.results.table.rowCount() == 0
    assert page.export_button.isEnabled() and not page.results.open_folder_button.isEnabled()


def test_cancel_ends_the_export_and_says_so(qtbot: QtBot, page: ExportPage, tmp_path: Path) -> None:
    with qtbot.waitSignal(page.runner.started):
        assert page.export_model(tmp_path / "export")
    assert page.results.status_label.text().startswith("Exporting")
    assert page.progress_bar.isVisible() and not page.formats.boxes["onnx"].isEnabled()
    assert not page.export_model(tmp_path / "another")  # one export at a time
    with qtbot.waitSignal(page.runner.finished, timeout=EXPORT_TIMEOUT_MS):
        page.cancel_button.click()
    assert page.results.status_label.text().startswith("Export cancelled")
    assert page.export_button.isEnabled() and not page.progress_bar.isVisible()

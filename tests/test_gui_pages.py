"""The table of pages: a page is one class plus one row; the window it builds imports without torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QLabel, QStyle, QVBoxLayout, QWidget

from engine.data.health import HealthReport
from gui.main_window import MainWindow
from gui.pages import PAGES, Page
from gui.services.config_state import ConfigState
from gui.style import apply_style

ROOT = Path(__file__).resolve().parents[1]
SCAN_TIMEOUT_MS = 30_000
HEAVY_MODULES = ("torch", "torchvision", "timm", "albumentations", "optuna")


class NotesPage(Page):
    """A page that only remembers what the window told it."""

    title = "Notes"
    icon = QStyle.StandardPixmap.SP_FileIcon

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.projects: list[Path] = []
        self.reports: list[HealthReport] = []
        self.label = QLabel("Notes about this project", self)
        QVBoxLayout(self).addWidget(self.label)

    def set_project(self, folder: Path) -> None:
        self.projects.append(folder)

    def set_report(self, report: HealthReport) -> None:
        self.reports.append(report)


@pytest.fixture
def window(qtbot, qapp, tmp_path: Path) -> Iterator[MainWindow]:
    apply_style(qapp)
    main = MainWindow(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat),
                      page_classes=(*PAGES, NotesPage))
    main.show()
    qtbot.waitExposed(main)
    yield main
    main.close()
    assert main.scanner.wait_for_done(SCAN_TIMEOUT_MS)
    main.deleteLater()
    QApplication.processEvents()


def test_a_page_added_as_a_row_is_in_the_sidebar_and_hears_the_window(qtbot, window: MainWindow,
                                                                       tmp_path: Path) -> None:
    notes = window.page(NotesPage)
    last = window.sidebar.count() - 1
    assert window.sidebar.count() == len(PAGES) + 1 and window.sidebar.item(last).text() == "Notes"
    window.sidebar.setCurrentRow(last)
    assert window.pages.currentWidget().widget() is notes and notes.label.isVisible()

    data = copy_demo(tmp_path / "data", 2, 3)
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS) as finished:
        window.open_dataset(data)
    assert notes.projects == [data.resolve()] and notes.reports == [finished.args[0]]
    window.show_page(notes)
    assert window.sidebar.currentRow() == last


def test_the_window_imports_without_torch() -> None:
    """The window appears before torch, timm, albumentations and optuna load: they load on first use."""
    code = ("import sys, gui.app, gui.main_window; "
            f"print(*[name for name in {HEAVY_MODULES!r} if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=True)
    assert result.stdout.split() == [], f"imported at once: {result.stdout}"

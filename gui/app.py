"""Start the Transfer Studio GUI: the application object, its style, and the main window.

``main.py`` calls ``run_app`` when it is given no command, or a project to open.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QApplication

from gui.main_window import MainWindow
from gui.pages.project.page import DEMO_PROJECT
from gui.services import settings as ui_settings
from gui.style import apply_style

# How long, after the window closed, an aborted scan may take to notice and stop.
_SHUTDOWN_WAIT_MS = 5000


def create_application(argv: list[str] | None = None) -> QApplication:
    """Return the QApplication (created if needed) with Transfer Studio's names and style.

    High-DPI scaling needs no setting: it is always on in Qt 6.
    """
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv if argv is not None else sys.argv)
    app.setOrganizationName(ui_settings.ORGANIZATION_NAME)
    app.setApplicationName(ui_settings.APPLICATION_NAME)
    app.setApplicationDisplayName(ui_settings.APPLICATION_NAME)
    apply_style(app)
    return app


def run_app(project_path: Path | None = None) -> int:
    """Open the main window on a project and run the event loop until the window closes.

    Args:
        project_path: the data folder or CSV to open; when None, the project opened last, else the demo.

    Returns:
        The exit status for the process.
    """
    app = create_application()
    window = open_main_window(project_path)
    status = app.exec()
    # The event loop is over, so waiting blocks no one; the window aborted its scan on close.
    window.scanner.wait_for_done(_SHUTDOWN_WAIT_MS)
    QThreadPool.globalInstance().waitForDone(_SHUTDOWN_WAIT_MS)
    return status


def open_main_window(project_path: Path | None = None) -> MainWindow:
    """Show the main window on the user's settings and open a project in it (see ``run_app``)."""
    settings = ui_settings.open_settings()
    window = MainWindow(settings)
    window.show()
    if project_path is not None:
        window.open_dataset(project_path)
        return window
    last = ui_settings.read_last_project(settings)
    if last is not None and last.exists():
        window.open_dataset(last)
        return window
    window.open_dataset(DEMO_PROJECT)
    if last is not None:
        window.show_project_message(f"The last project, {last}, is gone; opened the demo instead.")
    return window

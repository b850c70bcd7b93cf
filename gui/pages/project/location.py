"""The Project page's panel that shows where the open dataset's project folder is, and lets the user move it.

The project folder (runs, caches, health report) is ``engine.core.paths.project_dir_for``'s:
one the user chose, else ``DATA/.transfer-studio``, else a per-user folder when the data
folder cannot be written. "Change…" and "Use default" remember or forget a choice and emit
``folder_changed``, so that the window opens the dataset again from its new place.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from engine.core.errors import ConfigError
from engine.core.paths import (
    PROJECT_FOLDER_NAME,
    choose_project_dir,
    chosen_project_dirs,
    data_base,
    project_dir_for,
    project_location_note,
)
from gui.services.run_controller import RunController
from gui.style import severity_color


class ProjectFolderPanel(QFrame):
    """The open dataset's project folder: its path, "Open folder", "Change…", "Use default", and why it is there.

    Args:
        controller: the window's training runs; the folder is not moved under a running one.
        parent: the parent widget.
    """

    folder_changed = Signal()  # the dataset's project folder is now another one

    def __init__(self, controller: RunController | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._controller = controller
        self._data_path: Path | None = None
        self._dialog: QFileDialog | None = None
        self.setObjectName("project_card")

        self.title_label = QLabel(self)
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.path_edit = QLineEdit(self)
        self.path_edit.setReadOnly(True)
        self.path_edit.setAccessibleName("Project folder")
        self.open_button = QPushButton("Open folder", self)
        self.open_button.setToolTip("Show the project folder in the file manager")
        self.open_button.clicked.connect(self.open_folder)
        self.change_button = QPushButton("Change…", self)
        self.change_button.setToolTip("Keep this dataset's runs, caches and reports in another folder")
        self.change_button.clicked.connect(self.ask_for_folder)
        self.default_button = QPushButton("Use default", self)
        self.default_button.setToolTip(f"Go back to {PROJECT_FOLDER_NAME} beside the data (or your user folder "
                                       "when the data cannot be written)")
        self.default_button.clicked.connect(lambda: self.choose_folder(None))
        self.note_label = QLabel(self)
        self.note_label.setWordWrap(True)
        self.note_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        row = QHBoxLayout()
        row.addWidget(self.title_label)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.open_button)
        row.addWidget(self.change_button)
        row.addWidget(self.default_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 10, 16, 10)
        layout.setSpacing(6)
        layout.addLayout(row)
        layout.addWidget(self.note_label)
        self.hide()

    @property
    def project_dir(self) -> Path | None:
        """The project folder shown, or None when no dataset is open."""
        return project_dir_for(self._data_path) if self._data_path is not None else None

    def set_data_path(self, path: Path) -> None:
        """Show the project folder of this data folder or CSV (hidden while it does not exist)."""
        self._data_path = path
        self.refresh()

    def refresh(self) -> None:
        """Read where the project folder is again, and why."""
        if self._data_path is None or not self._data_path.exists():
            self.hide()
            return
        base = data_base(self._data_path)
        project, chosen = project_dir_for(base), str(base) in chosen_project_dirs()
        name = base.name or str(base)
        self.title_label.setText(f"Project folder of “{name}”:")
        self.path_edit.setText(str(project))
        self.path_edit.setToolTip(f"{project}\nruns, caches and the health report of {base}")
        self.path_edit.setCursorPosition(len(str(project)))  # its end tells projects apart
        self.default_button.setEnabled(chosen)
        # The engine's note repeats the path shown above: the line says only why, the tooltip has it all.
        if chosen:
            why = "Chosen by you; “Use default” goes back to the usual place."
        elif project != base / PROJECT_FOLDER_NAME:
            why = f"In your user data folder, because “{name}” cannot be written."
        else:
            why = ""
        self._show_note(why, "info")
        self.note_label.setToolTip(project_location_note(base) or "")
        self.show()

    def choose_folder(self, folder: Path | None) -> bool:
        """Make ``folder`` the project folder (None: the default one); False, and why on the panel, if refused."""
        if self._data_path is None:
            return False
        if self._controller is not None and self._controller.is_running:
            self._show_note("Stop the training run first: it is writing into the current project folder.", "warning")
            return False
        try:
            choose_project_dir(self._data_path, folder)
        except ConfigError as error:
            # The engine's message names the command line's option; here the button is the option.
            self._show_note(f"Cannot use that folder: {str(error).removeprefix('--project-dir: ')}", "warning")
            return False
        self.refresh()
        self.folder_changed.emit()
        return True

    def ask_for_folder(self) -> None:
        """Ask for the new project folder in a folder dialog that does not block the event loop."""
        if self._data_path is None:
            return
        if self._dialog is not None:
            self._dialog.close()
        current = project_dir_for(self._data_path)
        start = current if current.is_dir() else data_base(self._data_path)
        dialog = QFileDialog(self, f"Choose the project folder of {data_base(self._data_path).name}", str(start))
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda folder: self.choose_folder(Path(folder)))
        dialog.destroyed.connect(self._on_dialog_destroyed)
        self._dialog = dialog
        dialog.open()

    def open_folder(self) -> None:
        """Show the project folder in the platform's file manager, creating it first if no scan did yet."""
        folder = self.project_dir
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._show_note(f"Cannot create {folder}: {error.strerror or error}", "warning")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _show_note(self, text: str, severity: str) -> None:
        self.note_label.setText(text)
        self.note_label.setStyleSheet(f"color: {severity_color(severity, self.palette()).name()};")
        self.note_label.setVisible(bool(text))

    def _on_dialog_destroyed(self) -> None:
        self._dialog = None

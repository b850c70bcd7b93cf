"""The actions on files selected in a view of the dataset: exclude them from training, include them again, show one.

The health report's tree and the thumbnail grid both carry them in their context menus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QStyle, QWidget


class FileActions(QObject):
    """"Exclude from training", "Include again" and "Show in file manager" for the files selected in a view.

    The actions sit in the view's context menu; they enable themselves for what is selected
    (``update()``) and turn a click into a request, which the page that owns the exclusions acts on.

    Args:
        view: the item view whose context menu gets the actions.
        selected_paths: the files selected in the view.
        is_used: whether a file is trained on (neither left out by the scan nor by the user).
        is_user_excluded: whether the user left a file out.

    Signals:
        exclusion_requested: (paths, True to leave them out of training / False to include them again).
        reveal_requested: a file whose folder should open in the file manager.
    """

    exclusion_requested = Signal(object, bool)
    reveal_requested = Signal(object)

    def __init__(
        self,
        view: QWidget,
        selected_paths: Callable[[], tuple[Path, ...]],
        is_used: Callable[[Path], bool],
        is_user_excluded: Callable[[Path], bool],
    ) -> None:
        super().__init__(view)
        self._selected_paths = selected_paths
        self._is_used = is_used
        self._is_user_excluded = is_user_excluded
        icon = view.style().standardIcon
        self.exclude_action = QAction(icon(QStyle.StandardPixmap.SP_DialogCancelButton), "Exclude from training", view)
        self.exclude_action.setToolTip("Leave the selected files out of training; they stay on disk untouched")
        self.exclude_action.triggered.connect(self._on_exclude_action_triggered)
        self.include_action = QAction(icon(QStyle.StandardPixmap.SP_DialogApplyButton), "Include again", view)
        self.include_action.setToolTip("Train on the selected files again")
        self.include_action.triggered.connect(self._on_include_action_triggered)
        self.reveal_action = QAction(icon(QStyle.StandardPixmap.SP_DirOpenIcon), "Show in file manager", view)
        self.reveal_action.setToolTip("Open the folder that holds the selected file")
        self.reveal_action.triggered.connect(self._on_reveal_action_triggered)
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        view.addActions(self.actions)
        self.update()

    @property
    def actions(self) -> list[QAction]:
        """Exclude, include again, show in file manager."""
        return [self.exclude_action, self.include_action, self.reveal_action]

    def update(self) -> None:
        """Enable the actions that apply to the selected files."""
        paths = self._selected_paths()
        self.exclude_action.setEnabled(any(self._is_used(path) for path in paths))
        self.include_action.setEnabled(any(self._is_user_excluded(path) for path in paths))
        self.reveal_action.setEnabled(bool(paths))

    def _on_exclude_action_triggered(self) -> None:
        paths = tuple(path for path in self._selected_paths() if self._is_used(path))
        if paths:
            self.exclusion_requested.emit(paths, True)

    def _on_include_action_triggered(self) -> None:
        paths = tuple(path for path in self._selected_paths() if self._is_user_excluded(path))
        if paths:
            self.exclusion_requested.emit(paths, False)

    def _on_reveal_action_triggered(self) -> None:
        paths = self._selected_paths()
        if paths:
            self.reveal_requested.emit(paths[0])

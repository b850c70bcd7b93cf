"""The Review page's "Label next" tab: rank a folder of unlabelled photos, then label the chosen ones by key.

``main.py label-next`` runs as a child process (``CommandRunner``) with the chosen model and writes the
project's ``label_next.csv``; the view then shows the photos it picked one at a time with the model's guess.
A number key labels the photo with that class: it is added to the dataset at once (a copy in the class
folder, or a row of the CSV: ``engine.data.labelling``) and Ctrl+Z takes the latest one back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import DatasetError
from engine.data.labelling import add_labels, undo_last_labels
from engine.evaluation.suggestions import Suggestion, read_suggestions
from gui.services.command_runner import CommandRunner
from gui.services.workers import Worker, run_in_thread_pool
from gui.widgets.fitted_image import FittedImage, decode_preview, pil_to_qimage
from gui.widgets.model_chooser import ModelChooser

LABEL_NEXT_CSV = "label_next.csv"


class LabelNextView(QWidget):
    """Rank unlabelled photos with a model, then label the picked ones one by one.

    Signals:
        labels_changed: photos were added to the dataset or taken back (the scan is out of date).
    """

    labels_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._data_path: Path | None = None
        self._project_dir: Path | None = None
        self._classes: tuple[str, ...] = ()
        self._queue: list[Suggestion] = []
        self._position = 0
        self._labelled: list[Path] = []  # photos labelled here, latest last: what Ctrl+Z takes back
        self._decoder: Worker | None = None
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)

        self.folder_edit = QLineEdit(self)
        self.folder_edit.setPlaceholderText("A folder of photos without labels")
        self.browse_button = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "", self)
        self.browse_button.setToolTip("Choose the folder of unlabelled photos")
        self.browse_button.clicked.connect(self._on_browse_button_clicked)
        self.chooser = ModelChooser(parent=self)
        self.count_spin = QSpinBox(self)
        self.count_spin.setRange(1, 1000)
        self.count_spin.setValue(20)
        self.count_spin.setPrefix("batch of ")
        self.rank_button = QPushButton("Rank photos", self)
        self.rank_button.setToolTip("Ask the model which photos it is least sure of, spread out so that the batch "
                                    "holds no near-copies")
        self.rank_button.clicked.connect(self.rank)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.photo_view = FittedImage(self)
        self.guess_label = QLabel(self)
        self.guess_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.keys_label = QLabel(self)
        self.keys_label.setWordWrap(True)
        self.skip_button = QPushButton("Skip (S)", self)
        self.skip_button.clicked.connect(self.skip)
        self.undo_button = QPushButton("Undo (Ctrl+Z)", self)
        self.undo_button.clicked.connect(self.undo)

        source = QHBoxLayout()
        source.addWidget(self.folder_edit, 2)
        source.addWidget(self.browse_button)
        source.addWidget(self.chooser, 2)
        source.addWidget(self.count_spin)
        source.addWidget(self.rank_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.keys_label, 1)
        buttons.addWidget(self.skip_button)
        buttons.addWidget(self.undo_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(source)
        layout.addWidget(self.status_label)
        layout.addWidget(self.photo_view, 1)
        layout.addWidget(self.guess_label)
        layout.addLayout(buttons)
        self.installEventFilter(self)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._show_current()

    # Public API ------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a ranking is running."""
        return self.runner.is_running

    @property
    def current(self) -> Suggestion | None:
        """The photo to label now, if any."""
        return self._queue[self._position] if self._position < len(self._queue) else None

    def set_project(self, data_path: Path | None, project_dir: Path | None) -> None:
        """Label into ``data_path``, whose project folder is ``project_dir``; shows its last ranking."""
        self._data_path, self._project_dir = data_path, project_dir
        self.chooser.set_project(project_dir)
        self._queue, self._position, self._labelled = [], 0, []
        if project_dir is not None and (project_dir / LABEL_NEXT_CSV).is_file():
            self._read_ranking()
        self._show_current()

    def set_classes(self, classes: tuple[str, ...]) -> None:
        """The dataset's classes, in the order the number keys pick them."""
        self._classes = classes
        self._show_current()

    def rank(self) -> None:
        """Start ``main.py label-next`` on the chosen folder with the chosen model."""
        model = self.chooser.current()
        folder = self.folder_edit.text().strip()
        if self.is_running or self._data_path is None or self._project_dir is None:
            return
        if not folder or model is None:
            self.status_label.setText("Choose a folder of unlabelled photos and a trained model first.")
            return
        self.runner.start("label-next", [str(self._data_path), folder, "--model", str(model.path),
                                         "--count", str(self.count_spin.value()),
                                         "--csv", str(self._project_dir / LABEL_NEXT_CSV)])
        self.status_label.setText("Ranking the photos…")
        self._update_controls()

    def label(self, name: str) -> bool:
        """Add the current photo to the dataset as ``name`` and move on; False (reason shown) when refused."""
        photo = self.current
        if photo is None or self._data_path is None or self._project_dir is None:
            return False
        try:
            done = add_labels(self._data_path, self._project_dir, {photo.path: name})
        except (DatasetError, OSError) as error:
            self.status_label.setText(f"Not added: {error}")
            return False
        if not done.added:
            self.status_label.setText(f"Not added: {done.skipped[0] if done.skipped else 'nothing to add'}")
            return False
        self._labelled.append(photo.path)
        self.status_label.setText(f"{photo.path.name} added as '{name}'.")
        self._position += 1
        self._show_current()
        self.labels_changed.emit()
        return True

    def skip(self) -> None:
        """Leave the current photo unlabelled and show the next."""
        if self.current is not None:
            self._position += 1
            self._show_current()

    def undo(self) -> bool:
        """Take the latest photo labelled here back out of the dataset and show it again."""
        if not self._labelled or self._project_dir is None:
            return False
        try:
            done = undo_last_labels(self._project_dir)
        except (DatasetError, OSError) as error:
            self.status_label.setText(f"Not undone: {error}")
            return False
        photo = self._labelled.pop()
        row = next((row for row, item in enumerate(self._queue) if item.path == photo), None)
        if row is not None:
            self._position = row
        kept = f" ({done.skipped[0]})" if done.skipped else ""
        self.status_label.setText(f"{photo.name} taken back out of the dataset{kept}.")
        self._show_current()
        self.labels_changed.emit()
        return True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Number keys label, S skips, Ctrl+Z undoes, while the view has the focus."""
        if watched is self and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            action = self._key_action(event)
            if action is not None:
                action()
                return True
        return super().eventFilter(watched, event)

    # Showing ---------------------------------------------------------------------------------------

    def _key_action(self, event: QKeyEvent) -> Callable[[], object] | None:
        if event.matches(QKeySequence.StandardKey.Undo):
            return self.undo
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return None
        key = event.key()
        if Qt.Key.Key_1 <= key <= Qt.Key.Key_9 and key - Qt.Key.Key_1 < len(self._classes):
            return lambda: self.label(self._classes[key - Qt.Key.Key_1])
        return self.skip if key == Qt.Key.Key_S else None

    def _read_ranking(self) -> None:
        assert self._project_dir is not None
        try:
            suggestions = read_suggestions(self._project_dir / LABEL_NEXT_CSV)
        except DatasetError as error:
            self.status_label.setText(str(error))
            return
        self._queue = [item for item in suggestions if item.picked and item.path.is_file()]
        self._position = 0
        held = sum(item.already_labelled is not None for item in suggestions)
        self.status_label.setText(f"{len(self._queue)} photos to label, picked from {len(suggestions)}"
                                  + (f" ({held} already in the dataset, left out)" if held else "") + ".")

    def _show_current(self) -> None:
        photo = self.current
        keys = "  ".join(f"{number}: {name}" for number, name in enumerate(self._classes[:9], start=1))
        self.keys_label.setText(f"Keys: {keys}  ·  S skips" if keys else "")
        self._update_controls()
        self.photo_view.set_image(QImage())
        if photo is None:
            done = len(self._queue) > 0
            self.guess_label.setText("All photos of this batch are done: rank again for the next one." if done else
                                     "Rank a folder of unlabelled photos to see which ones to label first.")
            return
        self.guess_label.setText(f"{self._position + 1} of {len(self._queue)}: {photo.path.name} · the model "
                                 f"guesses '{photo.guess}' ({photo.confidence:.0%}, margin {photo.margin:.2f})")
        if self._decoder is not None:
            self._decoder.abort()
        self._decoder = run_in_thread_pool(decode_preview, photo.path)
        self._decoder.signals.returned.connect(self._on_decoder_returned)

    def _update_controls(self) -> None:
        has_project = self._project_dir is not None
        self.rank_button.setEnabled(has_project and not self.is_running)
        self.skip_button.setEnabled(self.current is not None)
        self.undo_button.setEnabled(bool(self._labelled))

    # Slots -----------------------------------------------------------------------------------------

    def _on_decoder_returned(self, image: Image.Image) -> None:
        if self._decoder is not None and self.sender() is self._decoder.signals:
            self.photo_view.set_image(pil_to_qimage(image))

    def _on_browse_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of unlabelled photos", self.folder_edit.text())
        if folder:
            self.folder_edit.setText(folder)

    def _on_runner_line_printed(self, line: str) -> None:
        if self.is_running:
            self.status_label.setText(line)

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        if succeeded:
            self._labelled = []
            self._read_ranking()
        else:
            self.status_label.setText(f"The ranking failed: {message}")
        self._show_current()
        self.setFocus()


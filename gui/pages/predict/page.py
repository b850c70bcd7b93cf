"""The "Predict" page: top-k labels and confidence of dropped images (exported as CSV), or live over a camera or video.

The page chooses the model, TTA and source. Images are shown with their results
(``gui.pages.predict.prediction_view``); files are listed on a pool thread and predicted a chunk
at a time by ``gui.pages.predict.prediction_runner``, which keeps loaded models and drops
predictions made with a model or TTA that has changed meanwhile. A camera or a video file
plays in ``gui.pages.predict.live_view``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.paths import project_dir_for
from engine.data.health_report import FileRecord
from engine.data.images import IMAGE_SUFFIXES
from engine.evaluation.catalog import ModelEntry
from engine.evaluation.predictions import write_predictions_csv
from gui.pages.base import Page
from gui.pages.predict.drop_zone import DropZone
from gui.pages.predict.live_view import CAMERA, VIDEO, VIDEO_SUFFIXES, LiveView
from gui.pages.predict.prediction_runner import ModelKey, PredictionRunner, collect_records
from gui.pages.predict.prediction_view import (
    LABEL_PREFIX,
    LOW_CONFIDENCE,
    MAX_TOP_K,
    PREDICTED,
    SHOW_ALL,
    SHOW_DOUBTFUL,
    SHOW_UNREADABLE,
    SORT_ADDED,
    SORT_LABEL,
    SORT_LEAST_CONFIDENT,
    SORT_MOST_CONFIDENT,
    SORT_NAME,
    UNREADABLE,
    WAITING,
    PredictionGrid,
    PredictionModel,
)
from gui.services.config_state import ConfigState
from gui.services.workers import Worker, bound_to, run_in_thread_pool
from gui.style import severity_color
from gui.widgets.model_chooser import KINDS_WITH_EXPORTS, ModelChooser
from gui.widgets.page_header import PageHeader

TTA_CHOICES = {"none": "None", "flip": "Flip (2 views, ~2× time)", "multicrop": "Multi-crop (5 views, ~5× time)"}
IMAGES = "images"
SOURCES = {IMAGES: "Images", CAMERA: "Camera", VIDEO: "Video file"}  # what the page predicts, in button order


class PredictPage(Page):
    """Predict labels of any images with one of the project's models or ensembles.

    Args:
        state: the config being edited; its ``data.path`` names the project whose models are offered.
        parent: the parent widget.

    Signals:
        predictions_finished: every image added so far has a prediction; the number of images.
    """

    title = "Predict"
    icon = QStyle.StandardPixmap.SP_DialogYesButton

    predictions_finished = Signal(int)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._model_problem = ""  # why no model can predict, or ""
        self._collectors: set[Worker] = set()  # jobs listing the files of added paths
        self._message_severity = "info"

        self.header = PageHeader(self.title, parent=self)

        self.chooser = ModelChooser(KINDS_WITH_EXPORTS, parent=self)
        self.chooser.model_changed.connect(self._on_chooser_model_changed)
        self.chooser.browse_failed.connect(self._show_problem)
        self.tta_combo = QComboBox(self)
        for mode, text in TTA_CHOICES.items():
            self.tta_combo.addItem(text, mode)
        self.tta_combo.setToolTip("Test-time augmentation: average the model's answers over mirrored or cropped "
                                  "views of each image; often a little more accurate, always slower")
        self.tta_combo.currentIndexChanged.connect(self._on_tta_combo_index_changed)
        self.top_k_spin = QSpinBox(self)
        self.top_k_spin.setRange(1, MAX_TOP_K)
        self.top_k_spin.setValue(3)
        self.top_k_spin.setToolTip("How many of the most likely labels each image shows, and the CSV holds")
        self.top_k_spin.valueChanged.connect(self._on_top_k_spin_value_changed)
        self.source_buttons = QButtonGroup(self)
        for number, text in enumerate(SOURCES.values()):
            self.source_buttons.addButton(QRadioButton(text, self), number)
        self.source_buttons.button(0).setChecked(True)
        self.source_buttons.idClicked.connect(self._on_source_buttons_id_clicked)

        self.add_images_button = QPushButton("Add images…", self)
        self.add_images_button.clicked.connect(self._on_add_images_button_clicked)
        self.add_folder_button = QPushButton("Add folder…", self)
        self.add_folder_button.clicked.connect(self._on_add_folder_button_clicked)
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.setToolTip("Remove every image from the page")
        self.clear_button.clicked.connect(self.clear)
        self.show_combo = QComboBox(self)
        self.show_combo.setToolTip("Which images to show")
        self.show_combo.currentIndexChanged.connect(self._on_show_combo_index_changed)
        self.sort_combo = QComboBox(self)
        for text, order in (("Order added", SORT_ADDED), ("Least confident first", SORT_LEAST_CONFIDENT),
                            ("Most confident first", SORT_MOST_CONFIDENT), ("Label", SORT_LABEL),
                            ("File name", SORT_NAME)):
            self.sort_combo.addItem(text, order)
        self.sort_combo.currentIndexChanged.connect(self._on_sort_combo_index_changed)

        self.model = PredictionModel(self)
        self.runner = PredictionRunner(self.model, self)
        self.grid = PredictionGrid(self.model, self)
        self.drop_zone = DropZone(self)
        self._results = QStackedWidget(self)
        self._results.addWidget(self.drop_zone)
        self._results.addWidget(self.grid)
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label.hide()
        self.summary_label = QLabel(self)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setMaximumWidth(220)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop after the images being predicted now")
        self.cancel_button.clicked.connect(self.cancel)
        self.predict_button = QPushButton("Predict", self)
        self.predict_button.setToolTip("Predict the images that are still waiting")
        self.predict_button.clicked.connect(self._on_predict_button_clicked)
        self.export_button = QPushButton("Export CSV…", self)
        self.export_button.setToolTip("Save each image's path, top-k labels with probabilities, and any error")
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.live = LiveView(self)
        self.live.video_file_requested.connect(lambda: self.set_source(VIDEO))
        self._sources = QStackedWidget(self)

        self._lay_out()
        self.setAcceptDrops(True)
        self.model.rowsInserted.connect(self._update_view)
        self.model.modelReset.connect(self._update_view)
        self.model.dataChanged.connect(self._on_model_data_changed)
        self.runner.progressed.connect(self._on_runner_progressed)
        self.runner.loading_started.connect(self._on_runner_loading_started)
        self.runner.model_missing.connect(self._on_runner_model_missing)
        self.runner.failed.connect(self._show_problem)
        self.runner.busy_changed.connect(self._update_view)
        self.runner.finished.connect(self.predictions_finished)
        state.changed.connect(self._on_state_changed)
        self.live.set_top_k(self.top_k_spin.value())
        self._fill_show_combo([])
        self._update_view()
        self.refresh()

    # Public API ----------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """What is predicted: ``IMAGES``, ``CAMERA`` or ``VIDEO``."""
        return list(SOURCES)[self.source_buttons.checkedId()]

    def set_source(self, source: str) -> None:
        """Predict images, a camera or a video file; a camera or video playing stops."""
        self.source_buttons.button(list(SOURCES).index(source)).setChecked(True)
        if source == IMAGES:
            self._sources.setCurrentIndex(0)
            return
        if self._sources.currentIndex() == 1 and self.live.mode == source:
            return  # its button clicked again: what plays goes on
        self.live.set_mode(source)
        self._live_box.setTitle(SOURCES[source])
        self._sources.setCurrentIndex(1)

    def refresh(self) -> None:
        """List the project's models again (after a run ended or a manifest was saved)."""
        data_path = self._state.config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        self.live.set_project_dir(project_dir)
        if project_dir != self.chooser.project_dir:
            self.chooser.set_project(project_dir)
        else:
            self.chooser.refresh()

    def add_paths(self, paths: Sequence[str | Path]) -> None:
        """Add image files and folders (searched recursively); their images are predicted as they are listed."""
        if not paths:
            return
        worker = run_in_thread_pool(collect_records, [Path(path) for path in paths])
        self._collectors.add(worker)
        worker.signals.returned.connect(bound_to(self, lambda result: self._on_collector_returned(worker, result)))
        worker.signals.finished.connect(bound_to(self, lambda: self._collectors.discard(worker)))

    def clear(self) -> None:
        """Remove every image and stop predicting."""
        for worker in self._collectors:
            worker.abort()
        self.runner.stop()
        self._show_message("")
        self.model.clear()

    def cancel(self) -> None:
        """Stop predicting after the chunk running now; the images left keep waiting (Predict resumes)."""
        self.runner.cancel()
        self._show_message("Cancelled; the images still waiting can be predicted with “Predict”.")
        self._update_view()

    def export_csv(self, path: str | Path) -> Path:
        """Write the predictions so far (top-k as shown, unreadable files with their error) to ``path``, atomically."""
        return write_predictions_csv(self.model.predictions(self.top_k_spin.value()), path)

    # Qt event handlers ---------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _local_paths(event.mimeData().urls()):
            event.acceptProposedAction()
            self.drop_zone.set_highlighted(True)

    def dragLeaveEvent(self, event: QDragLeaveEvent) -> None:
        self.drop_zone.set_highlighted(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self.drop_zone.set_highlighted(False)
        paths = _local_paths(event.mimeData().urls())
        if not paths:
            return
        event.acceptProposedAction()
        if len(paths) == 1 and paths[0].suffix.lower() in VIDEO_SUFFIXES:
            self.set_source(VIDEO)
            self.live.open_video(paths[0])
            return
        self.set_source(IMAGES)  # dropped on a camera or video: show the images coming
        self.add_paths(paths)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._show_message(self.message_label.text(), self._message_severity)
        super().changeEvent(event)

    # Set-up and helpers --------------------------------------------------------------------------

    def _lay_out(self) -> None:
        model_box = QGroupBox("Model", self)
        options = QHBoxLayout()
        options.addWidget(self.tta_combo)
        options.addSpacing(24)
        options.addWidget(QLabel("Labels per image:", model_box))
        options.addWidget(self.top_k_spin)
        options.addStretch(1)
        form = QFormLayout(model_box)
        form.addRow("Model:", self.chooser)
        form.addRow("Test-time augmentation:", options)
        sources = QHBoxLayout()
        for button in self.source_buttons.buttons():
            sources.addWidget(button)
            sources.addSpacing(12)
        sources.addStretch(1)
        form.addRow("Predict:", sources)

        images_box = QGroupBox("Images", self)
        tools = QHBoxLayout()
        for button in (self.add_images_button, self.add_folder_button, self.clear_button):
            tools.addWidget(button)
        tools.addStretch(1)
        tools.addWidget(QLabel("Show:", images_box))
        tools.addWidget(self.show_combo)
        tools.addSpacing(12)
        tools.addWidget(QLabel("Sort:", images_box))
        tools.addWidget(self.sort_combo)
        status = QHBoxLayout()
        status.addWidget(self.summary_label, 1)
        status.addWidget(self.progress_bar)
        status.addWidget(self.cancel_button)
        status.addWidget(self.predict_button)
        status.addWidget(self.export_button)
        images = QVBoxLayout(images_box)
        images.addLayout(tools)
        images.addWidget(self.message_label)
        images.addWidget(self._results, 1)
        images.addLayout(status)

        self._live_box = QGroupBox(SOURCES[VIDEO], self)
        QVBoxLayout(self._live_box).addWidget(self.live)
        self._sources.addWidget(images_box)
        self._sources.addWidget(self._live_box)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.header)
        layout.addWidget(model_box)
        layout.addWidget(self._sources, 1)

    def _current_key(self) -> ModelKey | None:
        """The key of the chosen model and TTA; None (and ``_model_problem`` set) when there is none."""
        entry: ModelEntry | None = self.chooser.current()
        self._model_problem = ""
        if entry is None:
            self._model_problem = ("Open a data folder on the Project page to use its models, or Browse… for one."
                                   if self.chooser.project_dir is None
                                   else "Train a model first: no checkpoints in this project yet.")
            return None
        try:
            mtime_ns = entry.path.stat().st_mtime_ns
        except OSError as error:
            self._model_problem = f"{entry.path}: cannot be read ({error.strerror})"
            return None
        return ModelKey(entry.path, mtime_ns, self.tta_combo.currentData())

    def _restart(self) -> None:
        """Predict every image again if the model or TTA changed since their predictions."""
        key = self._current_key()
        if key != self.runner.key or key is None:
            self._show_message("")
        self.runner.set_key(key)
        self.live.set_key(key, self._model_problem)

    def _show_message(self, text: str, severity: str = "info") -> None:
        self._message_severity = severity
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))
        color = severity_color(severity, self.palette()).name()
        self.message_label.setStyleSheet(f"color: {color};")

    def _show_problem(self, message: str) -> None:
        self._show_message(message, "error")

    def _fill_show_combo(self, classes: Sequence[str]) -> None:
        current = self.show_combo.currentData()
        self.show_combo.blockSignals(True)
        self.show_combo.clear()
        self.show_combo.addItem("All images", SHOW_ALL)
        self.show_combo.addItem(f"Below {LOW_CONFIDENCE:.0%} confidence", SHOW_DOUBTFUL)
        self.show_combo.addItem("Unreadable files", SHOW_UNREADABLE)
        for label in classes:
            self.show_combo.addItem(f"Predicted “{label}”", LABEL_PREFIX + label)
        found = self.show_combo.findData(current)
        self.show_combo.setCurrentIndex(max(found, 0))
        self.show_combo.blockSignals(False)
        self.grid.filter.set_show(self.show_combo.currentData())

    def _update_view(self) -> None:
        count = self.model.rowCount()
        running = self.runner.is_busy
        self._results.setCurrentWidget(self.grid if count else self.drop_zone)
        self.summary_label.setText(self._summary_text())
        self.progress_bar.setVisible(running)
        self.cancel_button.setVisible(running)
        waiting = self.model.count(WAITING)
        self.predict_button.setVisible(self.runner.is_halted and waiting > 0 and self.runner.key is not None)
        self.export_button.setEnabled(self.model.count(PREDICTED) + self.model.count(UNREADABLE) > 0)
        self.clear_button.setEnabled(count > 0)

    def _summary_text(self) -> str:
        """E.g. "38 images · 3 unreadable · 12 below 50% confidence"."""
        count = self.model.rowCount()
        if not count:
            return "No images yet"
        parts = [f"{count} {'image' if count == 1 else 'images'}"]
        unreadable, doubtful, waiting = (self.model.count(UNREADABLE), self.model.doubtful_count(),
                                         self.model.count(WAITING))
        if unreadable:
            parts.append(f"{unreadable} unreadable")
        if doubtful:
            parts.append(f"{doubtful} below {LOW_CONFIDENCE:.0%} confidence")
        if waiting:
            parts.append(f"{waiting} waiting")
        return " · ".join(parts)

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, _config: object) -> None:
        data_path = self._state.config.data.path
        project_dir = project_dir_for(data_path) if data_path else None
        self.live.set_project_dir(project_dir)
        if project_dir != self.chooser.project_dir:
            self.chooser.set_project(project_dir)

    def _on_chooser_model_changed(self, entry: ModelEntry | None) -> None:
        self.chooser.combo.setPlaceholderText("Train a model first: no checkpoints in this project yet"
                                              if self.chooser.project_dir is not None else "no project open")
        self._fill_show_combo(entry.classes if entry is not None else [])
        # An export predicts as it is deployed: its runtime has no test-time augmentation to offer.
        is_export = entry is not None and entry.kind == "export"
        if is_export:
            self.tta_combo.setCurrentIndex(self.tta_combo.findData("none"))
        self.tta_combo.setEnabled(not is_export)
        self._restart()

    def _on_tta_combo_index_changed(self, _index: int) -> None:
        self._restart()

    def _on_top_k_spin_value_changed(self, value: int) -> None:
        self.grid.set_top_k(value)
        self.live.set_top_k(value)

    def _on_source_buttons_id_clicked(self, number: int) -> None:
        self.set_source(list(SOURCES)[number])

    def _on_show_combo_index_changed(self, _index: int) -> None:
        self.grid.filter.set_show(self.show_combo.currentData())

    def _on_sort_combo_index_changed(self, _index: int) -> None:
        self.grid.filter.set_order(self.sort_combo.currentData())

    def _on_predict_button_clicked(self) -> None:
        self._show_message("")
        self.runner.start()

    def _on_add_images_button_clicked(self) -> None:
        suffixes = " ".join(f"*{suffix}" for suffix in sorted(IMAGE_SUFFIXES))
        paths, _filter = QFileDialog.getOpenFileNames(self, "Add images", self._start_folder(),
                                                      f"Images ({suffixes});;All files (*)")
        self.add_paths(paths)

    def _on_add_folder_button_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images", self._start_folder())
        if folder:
            self.add_paths([folder])

    def _on_export_button_clicked(self) -> None:
        start = str(Path(self._start_folder()) / "predictions.csv")
        path, _filter = QFileDialog.getSaveFileName(self, "Export predictions", start, "CSV files (*.csv)")
        if not path:
            return
        try:
            written = self.export_csv(path)
        except OSError as error:
            self._show_problem(f"Cannot write {path}: {error.strerror or error}")
            return
        self._show_message(f"Saved {self.model.count(PREDICTED) + self.model.count(UNREADABLE)} predictions "
                           f"to {written}")

    def _start_folder(self) -> str:
        paths = self.model.paths()
        if paths:
            return str(paths[-1].parent)
        return self._state.config.data.path or str(Path.home())

    def _on_collector_returned(self, worker: Worker, result: tuple[list[FileRecord], list[str]]) -> None:
        if worker.abort_requested:
            return  # cleared meanwhile
        records, problems = result
        self.model.add_files(records)
        if self.runner.is_halted:
            self._show_message("")  # new images: predict them, whatever stopped the last pass
        self.runner.start()
        if problems:  # beside any message about the model, which still applies
            self._show_problem("\n".join([*problems, self.message_label.text()]).strip())

    def _on_runner_progressed(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_bar.setFormat("%v of %m")

    def _on_runner_loading_started(self, name: str) -> None:
        self.progress_bar.setFormat(f"Loading {name}…")

    def _on_runner_model_missing(self) -> None:
        self._show_message(self._model_problem, "warning")
        self._update_view()

    def _on_model_data_changed(self) -> None:
        self.summary_label.setText(self._summary_text())
        self.export_button.setEnabled(self.model.count(PREDICTED) + self.model.count(UNREADABLE) > 0)


def _local_paths(urls: Sequence) -> list[Path]:
    """The local files and folders among dropped URLs."""
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]

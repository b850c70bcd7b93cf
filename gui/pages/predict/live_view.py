"""The Predict page's live sources: a camera or a video file, played with the model's top-k over the picture.

``LiveView`` chooses the source (a video file, one of the cameras found; or says there is
none), and shows what its ``LivePlayback`` plays: the picture with the prediction over it
(``LivePicture``), play/pause, a snapshot of the predicted frame with its prediction, and
the rate the model sustains. Playing stops when the view is hidden (another source, another
page, the window closing).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QHideEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from gui.pages.predict.frame_sources import CameraDevice, Frame, FrameSource, list_cameras
from gui.pages.predict.live_picture import LivePicture
from gui.pages.predict.live_playback import LivePlayback
from gui.pages.predict.live_predictor import FramePrediction, LivePredictor
from gui.pages.predict.prediction_runner import ModelKey
from gui.pages.predict.snapshots import save_snapshot
from gui.style import severity_color
from gui.widgets.elided_label import ElidedLabel
from gui.widgets.message_panel import MessagePanel

CAMERA, VIDEO = "camera", "video"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
STATUS_INTERVAL_MS = 250  # the rate and position are redrawn this often, not once per frame
PAUSED = "Paused"


class LiveView(QWidget):
    """Plays a camera or a video file and shows the model's top-k for the newest frame it could predict.

    Args:
        parent: the parent widget.

    Signals:
        video_file_requested: there is no camera and the user asked to predict a video file instead.
    """

    video_file_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.playback = LivePlayback(self)
        self._mode = VIDEO
        self._model_problem = ""  # why no model can predict, or ""
        self._project_dir: Path | None = None
        self._chosen_folder: Path | None = None  # where the user asked snapshots to go

        self.open_button = QPushButton("Open video…", self)
        self.open_button.clicked.connect(self._on_open_button_clicked)
        self.source_label = ElidedLabel(self)
        self.camera_combo = QComboBox(self)
        self.camera_combo.setMinimumWidth(220)
        self.camera_combo.currentIndexChanged.connect(self._on_camera_combo_index_changed)
        self.play_button = QPushButton(self)
        self.play_button.clicked.connect(self._on_play_button_clicked)
        self.snapshot_button = QPushButton("Snapshot", self)
        self.snapshot_button.setToolTip("Save the frame the overlay describes as PNG, and its prediction as JSON "
                                        "beside it")
        self.snapshot_button.clicked.connect(self._on_snapshot_button_clicked)
        self.folder_button = QPushButton("Snapshot folder…", self)
        self.folder_button.clicked.connect(self._on_folder_button_clicked)
        self.message_label = QLabel(self)
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        self.panel = MessagePanel(self)
        self.panel.action_clicked.connect(self._on_panel_action_clicked)
        self.picture = LivePicture(self)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.panel)
        self._stack.addWidget(self.picture)
        self.status_label = QLabel(self)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._update_status)

        self._lay_out()
        self.playback.frame_shown.connect(self._on_playback_frame_shown)
        self.playback.predicted.connect(self._on_playback_predicted)
        self.playback.loading_started.connect(self._on_playback_loading_started)
        self.playback.model_ready.connect(self._on_playback_model_ready)
        self.playback.failed.connect(self._on_playback_failed)
        self.playback.ended.connect(self._on_playback_ended)
        self.playback.state_changed.connect(self._on_playback_state_changed)
        self.set_mode(VIDEO)

    # Public API ----------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``CAMERA`` or ``VIDEO``."""
        return self._mode

    @property
    def predictor(self) -> LivePredictor:
        """What predicts the frames."""
        return self.playback.predictor

    @property
    def cameras(self) -> list[CameraDevice]:
        """The cameras offered (listed when Camera was chosen)."""
        return [self.camera_combo.itemData(row) for row in range(self.camera_combo.count())]

    @property
    def snapshot_folder(self) -> Path | None:
        """Where snapshots go: the folder chosen, else the project's ``snapshots`` folder; None without either."""
        if self._chosen_folder is not None:
            return self._chosen_folder
        return self._project_dir / "snapshots" if self._project_dir is not None else None

    def set_mode(self, mode: str) -> None:
        """Play from a camera or a video file; whatever played stops."""
        self.playback.set_source(None)
        self._mode = mode
        camera = mode == CAMERA
        self.open_button.setVisible(not camera)
        self.source_label.setVisible(not camera)
        self.source_label.setText("")
        self.source_label.setToolTip("")
        self.camera_combo.setVisible(camera)
        if camera:
            self._list_cameras()
        self._show_message("")
        self._show_idle_panel()

    def set_key(self, key: ModelKey | None, problem: str = "") -> None:
        """Predict with the model of ``key``; ``problem`` says why there is none when it is None."""
        if key != self.predictor.key:
            self.picture.set_prediction(None)
        self._model_problem = problem
        self.playback.set_key(key)
        if self.playback.is_running:
            self._show_model_problem()
        self._update_controls()

    def set_top_k(self, top_k: int) -> None:
        """Show ``top_k`` labels over the picture (and in snapshots)."""
        self.picture.set_top_k(top_k)

    def set_project_dir(self, folder: Path | None) -> None:
        """The open project's folder, whose ``snapshots`` folder takes snapshots unless another was chosen."""
        self._project_dir = folder
        self._update_controls()

    def set_snapshot_folder(self, folder: Path | None) -> None:
        """Save snapshots in ``folder``; None: in the project's folder again."""
        self._chosen_folder = folder
        self._update_controls()

    def open_video(self, path: str | Path) -> None:
        """Play the video file at ``path`` and predict its frames."""
        self.set_mode(VIDEO)
        self._use_source(FrameSource(Path(path)))
        self.source_label.setText(Path(path).name)
        self.source_label.setToolTip(str(path))
        self.play()

    def start_camera(self, camera: CameraDevice | None = None) -> None:
        """Play ``camera`` (the one chosen by default) and predict its frames."""
        if self._mode != CAMERA:
            self.set_mode(CAMERA)
        camera = camera or self.camera_combo.currentData()
        if camera is not None:
            self._use_source(FrameSource(camera=camera))
            self.play()

    def play(self) -> None:
        """Start, resume, or play again from the start once the file ended."""
        if self.playback.source is None:
            if self._mode == CAMERA and self.camera_combo.count():
                self.start_camera()
            return
        self._show_message("")
        self._show_model_problem()
        self.picture.set_badge("")
        self.playback.play()
        self._status_timer.start()

    def pause(self) -> None:
        """Hold the picture; the frame shown is still predicted, so the overlay comes to describe it."""
        if self.playback.is_running:
            self.playback.pause()
            self.picture.set_badge(PAUSED)

    def stop(self) -> None:
        """Stop playing and predicting; a file plays on from here with Play."""
        self.playback.stop()
        self._status_timer.stop()
        if self.picture.badge == PAUSED or self.picture.badge.startswith("Loading"):
            self.picture.set_badge("")
        self._update_status()

    def shutdown(self) -> None:
        """Stop, and wait for the model's job to end (the view is going away)."""
        self.stop()
        self.playback.shutdown()

    def snapshot(self, folder: Path | None = None) -> tuple[Path, Path] | None:
        """Save the frame the overlay describes (PNG) and its prediction (JSON) in ``folder`` or ``snapshot_folder``.

        Returns:
            The two paths; None when there is no prediction yet, no folder, or writing failed (the view says why).
        """
        prediction, key, source = self.picture.prediction, self.predictor.key, self.playback.source
        folder = folder or self.snapshot_folder
        if prediction is None or key is None or folder is None:
            return None
        name = str(source.path or source.name) if source is not None else "frame"
        try:
            png, record = save_snapshot(folder, prediction, source=name, model=key.path, tta=key.tta,
                                        top_k=self.picture.top_k)
        except OSError as error:
            self._show_message(f"Cannot save the snapshot in {folder}: {error.strerror or error}", "error")
            return None
        self._show_message(f"Saved {png.name} and {record.name} in {folder}")
        return png, record

    # Qt event handlers ---------------------------------------------------------------------------

    def hideEvent(self, event: QHideEvent) -> None:
        # Another source, another page or the window closing: the camera is released, the model rests.
        self.stop()
        super().hideEvent(event)

    # Set-up and helpers --------------------------------------------------------------------------

    def _lay_out(self) -> None:
        tools = QHBoxLayout()
        tools.addWidget(self.open_button)
        tools.addWidget(self.camera_combo)
        tools.addWidget(self.source_label, 1)
        tools.addWidget(self.play_button)
        tools.addWidget(self.snapshot_button)
        tools.addWidget(self.folder_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(tools)
        layout.addWidget(self.message_label)
        layout.addWidget(self._stack, 1)
        layout.addWidget(self.status_label)

    def _list_cameras(self) -> None:
        self.camera_combo.blockSignals(True)
        self.camera_combo.clear()
        for camera in list_cameras():
            self.camera_combo.addItem(camera.name, camera)
        self.camera_combo.setPlaceholderText("No camera found")
        self.camera_combo.setEnabled(self.camera_combo.count() > 0)
        self.camera_combo.blockSignals(False)

    def _use_source(self, source: FrameSource) -> None:
        self.playback.set_source(source)
        self.picture.clear()
        self._stack.setCurrentWidget(self.picture)

    def _show_idle_panel(self) -> None:
        """The panel that stands in for the picture until a source plays."""
        self.picture.clear()
        style = self.style()
        if self._mode == VIDEO:
            self.panel.show_message(
                "Open a video file",
                "Its frames are predicted as it plays, as fast as the model goes: frames that come while the model "
                "is busy are skipped. Pause to look at one frame; Snapshot saves it with its prediction.",
                icon=style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), action="Open video…")
        elif self.camera_combo.count():
            self.panel.show_message(
                "Predict what the camera sees",
                "Frames are predicted as they come, as fast as the model goes. Pause to look at one frame; "
                "Snapshot saves it with its prediction.",
                icon=style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay), action="Start camera")
        else:
            self.panel.show_message(
                "No camera found",
                "Transfer Studio sees no camera on this computer. Connect one and choose Camera again, or predict "
                "the frames of a video file instead.",
                icon=style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxInformation),
                action="Use a video file instead")
        self._stack.setCurrentWidget(self.panel)

    def _show_model_problem(self) -> None:
        if self.predictor.key is None and self.playback.source is not None:
            self._show_message(f"{self._model_problem or 'Choose a model above.'} Frames are shown, not predicted.",
                               "warning")
        elif self.message_label.property("severity") == "warning":
            self._show_message("")

    def _show_message(self, text: str, severity: str = "info") -> None:
        self.message_label.setText(text)
        self.message_label.setProperty("severity", severity if text else "")
        self.message_label.setVisible(bool(text))
        self.message_label.setStyleSheet(f"color: {severity_color(severity, self.palette()).name()};")

    def _update_controls(self) -> None:
        playing = self.playback.is_playing
        self.play_button.setText("Pause" if playing else "Play")
        self.play_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause if playing
                                                           else QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.setEnabled(self.playback.source is not None
                                    or (self._mode == CAMERA and self.camera_combo.count() > 0))
        self.snapshot_button.setEnabled(self.picture.prediction is not None)
        folder = self.snapshot_folder
        self.folder_button.setToolTip(f"Snapshots are saved in {folder}" if folder is not None
                                      else "Choose where snapshots are saved")

    def _update_status(self) -> None:
        self.status_label.setText(self.playback.status_text())

    # Slots ---------------------------------------------------------------------------------------

    def _on_open_button_clicked(self) -> None:
        start = str(self._project_dir.parent) if self._project_dir is not None else str(Path.home())
        patterns = " ".join(f"*{suffix}" for suffix in VIDEO_SUFFIXES)
        path, _filter = QFileDialog.getOpenFileName(self, "Open a video", start,
                                                    f"Videos ({patterns});;All files (*)")
        if path:
            self.open_video(path)

    def _on_camera_combo_index_changed(self, _index: int) -> None:
        if self.playback.source is not None:
            self.start_camera()  # the other camera, at once

    def _on_play_button_clicked(self) -> None:
        if self.playback.is_playing:
            self.pause()
        else:
            self.play()

    def _on_snapshot_button_clicked(self) -> None:
        if self.snapshot_folder is None:
            self._on_folder_button_clicked()
        if self.snapshot_folder is not None:
            self.snapshot()

    def _on_folder_button_clicked(self) -> None:
        start = self.snapshot_folder or Path.home()
        folder = QFileDialog.getExistingDirectory(self, "Save snapshots in", str(start))
        if folder:
            self.set_snapshot_folder(Path(folder))

    def _on_panel_action_clicked(self) -> None:
        if self._mode == VIDEO:
            self._on_open_button_clicked()
        elif self.camera_combo.count():
            self.start_camera()
        else:
            self.video_file_requested.emit()

    def _on_playback_frame_shown(self, frame: Frame) -> None:
        self.picture.set_image(frame.qimage)

    def _on_playback_predicted(self, prediction: FramePrediction) -> None:
        self.picture.set_prediction(prediction)
        if not self.snapshot_button.isEnabled():
            self._update_controls()
        if not self._status_timer.isActive():
            self._update_status()  # the last frames' predictions, after the file ended or was paused

    def _on_playback_loading_started(self, name: str) -> None:
        if not self.picture.badge:
            self.picture.set_badge(f"Loading {name}…")

    def _on_playback_model_ready(self) -> None:
        if self.picture.badge.startswith("Loading"):
            self.picture.set_badge("")

    def _on_playback_failed(self, message: str) -> None:
        self._status_timer.stop()
        self.picture.set_badge("")
        if self.playback.frame is None:
            self._show_idle_panel()
        self._show_message(message, "error")
        self._update_status()

    def _on_playback_ended(self) -> None:
        self._status_timer.stop()
        self.picture.set_badge("Ended · Play to watch again")
        self._update_status()

    def _on_playback_state_changed(self) -> None:
        self._update_controls()

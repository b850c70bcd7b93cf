"""Playing one frame source into the live predictor: play, pause, stop, and the line that sums it up.

``LivePlayback`` owns the ``FrameSource`` playing and the ``LivePredictor``: every frame
shown is offered to the predictor (which keeps only the newest), a video file waits on its
first frame while the model loads, and a failure of either stops both. ``LiveView`` shows
what it signals; nothing here is a widget.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from gui.pages.predict.frame_sources import Frame, FrameSource
from gui.pages.predict.live_predictor import LivePredictor
from gui.pages.predict.prediction_runner import ModelKey


class LivePlayback(QObject):
    """Plays ``source`` and has its frames predicted with the model of ``key``.

    Args:
        parent: the owner.

    Signals:
        frame_shown: the newest decoded ``Frame``, to show.
        predicted: a ``FramePrediction`` of a frame shown (the newest the model could take).
        loading_started: the file name of the model being loaded.
        model_ready: the model is loaded.
        failed: why the source or the model failed; playing and predicting stopped.
        ended: the file played to its end (its last frame is still being predicted).
        state_changed: playing started, paused, resumed or stopped.
    """

    frame_shown = Signal(object)
    predicted = Signal(object)
    loading_started = Signal(str)
    model_ready = Signal()
    failed = Signal(str)
    ended = Signal()
    state_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.predictor = LivePredictor(self)
        self.source: FrameSource | None = None
        self.frame: Frame | None = None  # the newest frame shown
        self.fps = 0.0  # of the source, 0 when unknown
        self.frame_count = 0  # of the file, 0 when unknown
        self._waiting_for_model = False  # a file paused on its first frame until the model has loaded
        self.predictor.predicted.connect(self.predicted)
        self.predictor.loading_started.connect(self.loading_started)
        self.predictor.model_ready.connect(self._on_predictor_model_ready)
        self.predictor.failed.connect(self._on_predictor_failed)

    @property
    def is_running(self) -> bool:
        """Whether the source is open (playing or paused)."""
        return self.source is not None and self.source.is_running

    @property
    def is_playing(self) -> bool:
        """Whether frames come, or will as soon as the model has loaded."""
        source = self.source
        return source is not None and source.is_running and (not source.is_paused or self._waiting_for_model)

    def set_source(self, source: FrameSource | None) -> None:
        """Play ``source`` from now on (it becomes this object's child); whatever played stops."""
        old, self.source = self.source, None
        if old is not None:
            old.stop()
            old.deleteLater()
        self.predictor.stop()
        self.frame, self.fps, self.frame_count, self._waiting_for_model = None, 0.0, 0, False
        if source is not None:
            source.setParent(self)
            source.opened.connect(self._on_source_opened)
            source.frame_arrived.connect(self._on_source_frame_arrived)
            source.failed.connect(self._on_source_failed)
            source.ended.connect(self._on_source_ended)
            self.source = source
        self.state_changed.emit()

    def set_key(self, key: ModelKey | None) -> None:
        """Predict with the model of ``key`` (None: show frames, predict none)."""
        self.predictor.set_key(key)
        if key is not None and self.is_running:
            self.predictor.start()

    def play(self) -> None:
        """Start, resume, or play again (a file that ended from its start; one stopped from where it was)."""
        source = self.source
        if source is None:
            return
        self._waiting_for_model = False
        if source.is_running:
            source.resume()
        else:
            self.predictor.start()
            source.start()
        self.state_changed.emit()

    def pause(self) -> None:
        """Hold the picture; the frame held is still predicted, so the last prediction comes to describe it."""
        if self.source is not None and self.source.is_running:
            self.source.pause()
            self._waiting_for_model = False  # stays paused when the model comes
            self.state_changed.emit()

    def stop(self) -> None:
        """Stop playing (the camera is released) and predicting."""
        if self.source is not None:
            self.source.stop()
        self.predictor.stop()
        self._waiting_for_model = False
        self.state_changed.emit()

    def shutdown(self) -> None:
        """Stop, and wait for the model's job to end (the page is going away)."""
        self.stop()
        self.predictor.shutdown()

    def status_text(self) -> str:
        """E.g. "Predicting 14.2 frames/s · video 24 frames/s · 20 of 48 frames predicted · 0:01 of 0:02"."""
        source = self.source
        if source is None:
            return ""
        parts = []
        rate = self.predictor.rate
        if self.predictor.key is None:
            parts.append("No model")
        elif rate > 0:
            parts.append(f"Predicting {rate:.1f} frames/s")
        if self.fps:
            parts.append(f"{'video' if source.path is not None else 'camera'} {self.fps:.0f} frames/s")
        if source.frames_read:  # decoded: shown, or dropped because the screen was busy
            parts.append(f"{self.predictor.predicted_count} of {source.frames_read} frames predicted")
        if self.frame is not None and source.path is not None and self.fps and self.frame_count:
            # The time at the end of the frame shown: the last frame reads "0:02 of 0:02".
            parts.append(f"{_clock((self.frame.index + 1) / self.fps)} of {_clock(self.frame_count / self.fps)}")
        return " · ".join(parts)

    def _on_source_opened(self, fps: float, frame_count: int) -> None:
        self.fps, self.frame_count = fps, frame_count

    def _on_source_frame_arrived(self, frame: Frame) -> None:
        self.frame = frame
        self.frame_shown.emit(frame)
        self.predictor.submit(frame)
        source = self.source
        if (source is not None and source.path is not None and self.predictor.key is not None
                and self.predictor.model is None and not self._waiting_for_model):
            # Loading takes seconds (torch, the first time): a file waits rather than play past unpredicted.
            self._waiting_for_model = True
            source.pause()

    def _on_source_failed(self, message: str) -> None:
        self.predictor.stop()
        self._waiting_for_model = False
        self.failed.emit(f"{message} Prediction stopped.")
        self.state_changed.emit()

    def _on_source_ended(self) -> None:
        self.ended.emit()
        self.state_changed.emit()

    def _on_predictor_model_ready(self) -> None:
        if self._waiting_for_model and self.source is not None:
            self._waiting_for_model = False
            self.source.resume()
        self.model_ready.emit()

    def _on_predictor_failed(self, message: str) -> None:
        if self.source is not None:
            self.source.stop()
        self._waiting_for_model = False
        self.failed.emit(f"{message} Prediction stopped.")
        self.state_changed.emit()


def _clock(seconds: float) -> str:
    """``m:ss`` of a video position."""
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"

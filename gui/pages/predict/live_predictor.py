"""Predicting live frames off the GUI thread, as fast as the model goes, always the newest frame.

``LivePredictor`` keeps one pending frame: a frame submitted while the model is busy
replaces the one waiting, which is dropped. When a prediction returns, the frame waiting
(if any) is predicted next, so the model runs back to back at the rate it sustains and
the picture it describes is never more than one prediction old. Jobs run one at a time
on the predictor's own one-thread pool, so that a long video never holds the threads the
rest of the app shares.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QThreadPool, Signal

from engine.evaluation.predictions import ProbabilityModel
from gui.pages.predict.frame_sources import Frame
from gui.pages.predict.prediction_runner import ModelCache, ModelKey
from gui.services.workers import Worker, bound_to, run_in_thread_pool

RATE_WINDOW = 12  # predictions the shown rate is averaged over at most
RATE_SPAN_S = 2.0  # ... and only those of the last seconds: a pause is not counted as a slow model
SHUTDOWN_WAIT_MS = 10_000  # a model load can take seconds; a prediction far less


@dataclass(frozen=True)
class FramePrediction:
    """A frame and the model's answer for it."""

    frame: Frame
    labels: list[str]  # every class, most likely first
    probabilities: list[float]  # in [0, 1], matching ``labels``
    seconds: float  # how long the model took, preprocessing included
    thread_id: int  # the Python thread that ran the model (a pool thread, never the GUI's)


def predict_frame(model: ProbabilityModel, frame: Frame, *, progress: Callable[[int, int], None],
                  should_abort: Callable[[], bool]) -> FramePrediction | None:
    """A ``Worker`` job: every class's probability for ``frame``, most likely first; None when aborted first."""
    if should_abort():
        return None
    started = time.perf_counter()
    probabilities = np.asarray(model.predict_images([frame.image]), dtype=np.float64)[0]
    order = np.argsort(-probabilities, kind="stable")
    return FramePrediction(frame, [model.classes[i] for i in order], [float(probabilities[i]) for i in order],
                           time.perf_counter() - started, threading.get_ident())


def load_model(cache: ModelCache, key: ModelKey, *, progress: Callable[[int, int], None],
               should_abort: Callable[[], bool]) -> ProbabilityModel:
    """A ``Worker`` job: the model of ``key``, from ``cache`` or loaded now."""
    return cache.get(key)


class LivePredictor(QObject):
    """Predicts the newest submitted frame with the model of ``key``, one frame at a time, off the GUI thread.

    Args:
        parent: the owner.

    Signals:
        loading_started: the file name of the model being loaded (on the first frame after a new key).
        model_ready: the model is loaded; frames are predicted from now on.
        predicted: a ``FramePrediction``, newest frame first; older frames were dropped.
        failed: why the model could not load or predict; the predictor stops until ``start``.
    """

    loading_started = Signal(str)
    model_ready = Signal()
    predicted = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one job at a time: predictions never overlap, nor pile up
        self._cache = ModelCache(size=1)
        self._key: ModelKey | None = None
        self._model: ProbabilityModel | None = None
        self._generation = 0  # bumped by every new key and by stop(): late results of older jobs are dropped
        self._pending: Frame | None = None  # the one frame waiting for the model
        self._job: Worker | None = None  # the load or prediction running
        self._halted = False  # failed: predict nothing until start()
        self._finished_at: deque[float] = deque(maxlen=RATE_WINDOW)
        self.predicted_count = 0  # frames predicted since start()
        self.dropped_count = 0  # frames replaced while they waited, since start()

    @property
    def key(self) -> ModelKey | None:
        """The model and TTA frames are predicted with; None when no model is chosen."""
        return self._key

    @property
    def model(self) -> ProbabilityModel | None:
        """The loaded model; None until the first frame after a new key has loaded it."""
        return self._model

    @property
    def is_busy(self) -> bool:
        """Whether a load or a prediction runs."""
        return self._job is not None

    @property
    def rate(self) -> float:
        """Predictions per second over the last few of the last ``RATE_SPAN_S``; 0 without two of them."""
        recent = [moment for moment in self._finished_at if moment >= time.monotonic() - RATE_SPAN_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def set_key(self, key: ModelKey | None) -> None:
        """Predict with the model of ``key`` from now on (loaded with the next frame)."""
        if key == self._key:
            return
        self._key, self._model = key, None
        self._generation += 1
        self._halted = False

    def set_model(self, model: ProbabilityModel) -> None:
        """Predict with ``model``, already loaded (for the chosen ``key``), from the next frame on."""
        self._model = model
        self._generation += 1  # a prediction of the model before is not shown
        self._finished_at.clear()
        self.model_ready.emit()

    def start(self) -> None:
        """Count afresh and predict frames again after a failure or ``stop``."""
        self._halted = False
        self._finished_at.clear()
        self.predicted_count = self.dropped_count = 0

    def submit(self, frame: Frame) -> None:
        """Predict ``frame`` as soon as the model is free, unless a newer frame comes first."""
        if self._halted or self._key is None:
            return
        if self._pending is not None:
            self.dropped_count += 1
        self._pending = frame
        self._next()

    def stop(self) -> None:
        """Predict nothing more: the waiting frame is dropped and the running prediction's result ignored."""
        self._pending = None
        self._generation += 1
        self._finished_at.clear()

    def shutdown(self) -> None:
        """Stop and wait for the running job (the page is going away)."""
        self.stop()
        if self._job is not None:
            self._job.abort()
        self._pool.waitForDone(SHUTDOWN_WAIT_MS)

    def _next(self) -> None:
        """Start the load or the prediction the waiting frame needs, unless a job runs (its end calls this)."""
        if self._job is not None or self._pending is None or self._key is None or self._halted:
            return
        generation, key = self._generation, self._key
        if self._model is None:
            if key not in self._cache:
                self.loading_started.emit(key.path.name)
            job = run_in_thread_pool(load_model, self._cache, key, thread_pool=self._pool)
            job.signals.returned.connect(bound_to(self, lambda model: self._on_loaded(key, model)))
        else:
            frame, self._pending = self._pending, None
            job = run_in_thread_pool(predict_frame, self._model, frame, thread_pool=self._pool)
            job.signals.returned.connect(bound_to(self, lambda result: self._on_predicted(generation, result)))
        job.signals.errored.connect(bound_to(self, lambda error: self._on_job_errored(generation, key, error)))
        job.signals.finished.connect(bound_to(self, lambda: self._on_job_finished(job)))
        self._job = job

    def _on_loaded(self, key: ModelKey, model: ProbabilityModel) -> None:
        # Kept even when stop() came meanwhile (a short clip ended while loading): the key is what matters.
        if key == self._key and self._model is None:
            self.set_model(model)

    def _on_predicted(self, generation: int, result: FramePrediction | None) -> None:
        if result is None or generation != self._generation:
            return  # stopped, or made with a model no longer chosen
        self._finished_at.append(time.monotonic())
        self.predicted_count += 1
        self.predicted.emit(result)

    def _on_job_errored(self, generation: int, key: ModelKey, error: Exception) -> None:
        if generation != self._generation and self._key != key:
            return  # the model changed meanwhile: its failure no longer matters
        self._halted = True
        self._pending = None
        self.failed.emit(f"Cannot predict with {key.path.name}: {error}")

    def _on_job_finished(self, job: Worker) -> None:
        if job is self._job:
            self._job = None
            self._next()

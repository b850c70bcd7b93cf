"""Predicting the Predict page's images on pool threads, a chunk at a time, with a cached model.

``PredictionRunner`` feeds the images of a ``PredictionModel`` that still wait to
``predict_chunk`` jobs one after another, so that cards fill in as results come and
Cancel stops between chunks. Models are loaded once per ``ModelKey`` (file,
modification time, TTA) by ``ModelCache``; a chunk predicted under a key that has
since changed is dropped and its images are predicted again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from PySide6.QtCore import QObject, Signal

from engine.core.errors import DatasetError
from engine.data.health_report import FileRecord
from engine.evaluation.predictions import Prediction, ProbabilityModel, collect_image_paths
from gui.pages.predict.prediction_view import MAX_TOP_K, PredictionModel
from gui.services.workers import Worker, bound_to, run_in_thread_pool

CHUNK_SIZE = 16  # images per pool job: small enough for steady progress, large enough to batch well


class ModelKey(NamedTuple):
    """What a loaded model depends on; predictions made under another key are stale."""

    path: Path
    mtime_ns: int
    tta: str


class ModelCache:
    """The last few loaded models by ``ModelKey``, shared by pool threads (one loads at a time).

    Asking whether a model is kept never waits for a load, so the GUI thread may ask.

    Args:
        size: models kept; each may hold an ensemble's worth of weights on the GPU.
    """

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._models: OrderedDict[ModelKey, ProbabilityModel] = OrderedDict()
        self._lock = threading.Lock()  # guards _models, held only for a moment
        self._load_lock = threading.Lock()  # held while loading: two jobs never load the same model twice
        self.loads = 0  # models loaded so far; a second batch with the same key adds none

    def __contains__(self, key: ModelKey) -> bool:
        with self._lock:
            return key in self._models

    def get(self, key: ModelKey) -> ProbabilityModel:
        """The model for ``key``, loaded now if it is not kept (raises what loading raises)."""
        with self._load_lock:
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    return self._models[key]
            from engine.export.any_model import load_any_model  # torch: loaded on first use

            model = load_any_model(key.path, device="auto", tta=key.tta)
            with self._lock:
                self.loads += 1
                self._models[key] = model
                while len(self._models) > self._size:
                    self._models.popitem(last=False)
            return model


def collect_records(inputs: Sequence[Path], *, progress: Callable[[int, int], None],
                    should_abort: Callable[[], bool]) -> tuple[list[FileRecord], list[str]]:
    """The image files in ``inputs`` (files, folders searched recursively) and why an input gave none.

    Each record carries the file's size and time, so that its cached thumbnail is
    decoded again once the file changes.
    """
    records: list[FileRecord] = []
    problems: list[str] = []
    for done, item in enumerate(inputs):
        if should_abort():
            break
        try:
            paths = collect_image_paths([item])
        except DatasetError as error:
            problems.append(str(error))
            continue
        for path in paths:
            try:
                stat = path.stat()
            except OSError:  # gone meanwhile: its card will say why it cannot be predicted
                records.append(FileRecord(path.absolute(), ""))
            else:
                records.append(FileRecord(path.absolute(), "", size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns))
        progress(done + 1, len(inputs))
    return records, problems


def predict_chunk(cache: ModelCache, key: ModelKey, paths: Sequence[Path], *, progress: Callable[[int, int], None],
                  should_abort: Callable[[], bool]) -> list[Prediction] | None:
    """Predict ``paths`` with the model of ``key`` (all ``MAX_TOP_K`` labels); None when aborted first."""
    if should_abort():
        return None
    model = cache.get(key)
    if should_abort():
        return None
    return model.predict(list(paths), top_k=MAX_TOP_K)


class PredictionRunner(QObject):
    """Predicts the images of ``model`` that wait, one chunk job at a time, with the model of ``key``.

    Args:
        model: the images; predictions go into it as chunks come back.
        parent: the owner.

    Signals:
        progressed: (images done, images in this pass); also when a chunk starts.
        loading_started: the file name of the model a chunk loads first (after that chunk's ``progressed``).
        model_missing: images wait but no model is chosen (``key`` is None).
        failed: why predicting failed (loading the model, usually); the runner halts.
        busy_changed: whether a chunk job runs and is wanted.
        finished: every image has a prediction, after a pass that predicted some; the number of images.
    """

    progressed = Signal(int, int)
    loading_started = Signal(str)
    model_missing = Signal()
    failed = Signal(str)
    busy_changed = Signal(bool)
    finished = Signal(int)

    def __init__(self, model: PredictionModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._model = model
        self._cache = ModelCache()
        self._key: ModelKey | None = None  # the model the shown predictions come from
        self._queue: list[Path] = []  # images of this pass not yet handed to a job, in order
        self._worker: Worker | None = None  # the one chunk job running
        self._running = 0  # images in that job
        self._halted = False  # cancelled, or the model failed: predict more only when asked
        self._pass_total = 0  # images in this pass; 0 when no pass is under way

    @property
    def key(self) -> ModelKey | None:
        """The model and TTA the predictions come from."""
        return self._key

    @property
    def is_busy(self) -> bool:
        """Whether a chunk job runs that has not been cancelled."""
        return self._worker is not None and not self._worker.abort_requested

    @property
    def is_halted(self) -> bool:
        """Whether predicting stopped (cancelled, or failed) until ``start`` is called."""
        return self._halted

    @property
    def model_loads(self) -> int:
        """How many times a model was loaded (a later batch with the same key loads none)."""
        return self._cache.loads

    def set_key(self, key: ModelKey | None) -> None:
        """Predict with ``key`` from now on; when it differs, every image is predicted again."""
        if key == self._key and key is not None:
            return
        self._key = key
        self._queue = []
        if self._worker is not None:
            self._worker.abort()  # what it predicts is dropped: it was made under the old key
        self._model.forget_predictions()
        self.start()

    def start(self) -> None:
        """Predict the images that wait (after a halt, too)."""
        self._halted = False
        self._next()

    def cancel(self) -> None:
        """Stop after the chunk running now, whose predictions still count; ``start`` resumes."""
        self._halted = True
        self.stop()

    def stop(self) -> None:
        """Hand out no more chunks of this pass (the images were removed); new images start a new pass."""
        self._queue = []
        self._pass_total = 0
        if self._worker is not None:
            self._worker.abort()
            self.busy_changed.emit(False)

    def _next(self) -> None:
        """Start the next chunk, unless one runs (its ``finished`` calls this again) or the runner halted."""
        if self._worker is not None or self._halted:
            return
        if not self._queue:
            self._queue = self._model.waiting_paths()
            if not self._queue:
                self._finish_pass()
                return
            if self._key is None:
                self._queue = []
                self.model_missing.emit()
                return
            self._pass_total = len(self._queue)
        key = self._key
        if key is None:
            raise RuntimeError("images are queued without a model")  # set_key empties the queue
        chunk, self._queue = self._queue[:CHUNK_SIZE], self._queue[CHUNK_SIZE:]
        worker = run_in_thread_pool(predict_chunk, self._cache, key, chunk)
        self._worker, self._running = worker, len(chunk)
        worker.signals.returned.connect(bound_to(self, lambda predictions: self._on_worker_returned(key, predictions)))
        worker.signals.errored.connect(bound_to(self, lambda error: self._on_worker_errored(worker, error)))
        worker.signals.finished.connect(bound_to(self, lambda: self._on_worker_finished(worker)))
        self.busy_changed.emit(True)
        self.progressed.emit(self._pass_total - len(self._queue) - self._running, self._pass_total)
        if key not in self._cache:
            self.loading_started.emit(key.path.name)

    def _finish_pass(self) -> None:
        total, self._pass_total = self._pass_total, 0
        self.busy_changed.emit(False)
        if total:
            self.finished.emit(self._model.rowCount())

    def _on_worker_returned(self, key: ModelKey, predictions: list[Prediction] | None) -> None:
        # A chunk cancelled while it ran still counts; one made under another model or TTA does not.
        if predictions is not None and key == self._key:
            self._model.set_predictions(predictions)
            if self._pass_total:
                self.progressed.emit(self._pass_total - len(self._queue), self._pass_total)

    def _on_worker_errored(self, worker: Worker, error: Exception) -> None:
        if worker.abort_requested:
            return
        self._halted = True
        self._queue = []
        name = self._key.path.name if self._key is not None else "this model"
        self.failed.emit(f"Cannot predict with {name}: {error}")

    def _on_worker_finished(self, worker: Worker) -> None:
        if worker is not self._worker:
            return
        self._worker, self._running = None, 0
        if self._halted:
            self._pass_total = 0
            self.busy_changed.emit(False)
        else:
            self._next()  # the next chunk, or a new pass for images added or a key changed meanwhile

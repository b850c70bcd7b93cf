"""Scan a data folder off the GUI thread and report the outcome as signals.

``DatasetScanner`` owns at most one live scan: starting a new one aborts the
previous one, and anything a stale worker still reports is dropped. The scan
itself (``scan_and_save``) is the engine's ``scan_dataset`` with the scan cache
and saved report in the dataset's project folder, as the CLI does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from engine.core.errors import TransferStudioError
from engine.core.paths import project_dir_for
from engine.data.health import HealthReport, ScanAborted, scan_dataset
from gui.services.workers import Worker

logger = logging.getLogger(__name__)

SCAN_CACHE_NAME = "scan_cache.json"

# At most this many progress signals a second cross to the GUI thread.
_PROGRESS_RATE_HZ = 25.0


@dataclass(frozen=True)
class ScanResult:
    """A finished scan.

    Attributes:
        report: the engine's health report.
        report_path: the saved text report, or None when the project folder is not writable.
        save_error: why the report could not be saved, or None.
    """

    report: HealthReport
    report_path: Path | None
    save_error: str | None


def scan_and_save(
    path: Path,
    *,
    progress: Callable[[int, int], None],
    should_abort: Callable[[], bool],
) -> ScanResult:
    """Scan ``path`` with the engine, using and refreshing its scan cache, and save the report.

    Runs on a worker thread. A read-only data folder's project folder is a per-user one
    (``project_dir_for``); when no project folder can be created, the report is still
    made, just neither cached nor saved.

    Raises:
        engine.core.errors.DatasetError: the folder cannot be used.
        engine.data.health.ScanAborted: ``should_abort()`` returned True.
    """
    project_dir, unusable = _writable_project_dir(path)
    cache_file = project_dir / SCAN_CACHE_NAME if project_dir is not None else None
    report = scan_dataset(
        path, cache_file=cache_file, progress=_RateLimited(progress), should_abort=should_abort
    )
    if project_dir is None:
        return ScanResult(report, None, unusable)
    try:
        _json_path, text_path = report.save(project_dir)
    except OSError as error:
        return ScanResult(report, None, f"cannot save the health report: {error}")
    return ScanResult(report, Path(text_path), None)


class DatasetScanner(QObject):
    """Runs one dataset scan at a time; a new scan aborts the old one.

    Scans run on a private one-thread pool, so a new scan starts only once the aborted
    one has stopped (within a file or two): two scans never write one scan cache at once.
    """

    scan_started = Signal(object)  # Path being scanned
    scan_progressed = Signal(int, int)  # files done, files in total
    scan_finished = Signal(object)  # ScanResult
    scan_failed = Signal(str)  # a message for the user, one or two sentences

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread_pool = QThreadPool(self)
        self._thread_pool.setMaxThreadCount(1)
        self._worker: Worker | None = None
        self._path: Path | None = None

    @property
    def is_scanning(self) -> bool:
        """Whether a scan is under way."""
        return self._worker is not None

    @property
    def path(self) -> Path | None:
        """The folder of the latest scan started."""
        return self._path

    def scan(self, path: Path) -> None:
        """Start scanning ``path``, aborting any scan under way."""
        self.abort()
        self._path = path
        worker = Worker(scan_and_save, path)
        worker.signals.progressed.connect(self._on_worker_progressed)
        worker.signals.returned.connect(self._on_worker_returned)
        worker.signals.errored.connect(self._on_worker_errored)
        self._worker = worker
        worker.start(self._thread_pool)
        self.scan_started.emit(path)

    def abort(self) -> None:
        """Abort the scan under way, if any; it will report nothing more."""
        if self._worker is not None:
            self._worker.abort()
            self._worker = None

    def wait_for_done(self, msecs: int) -> bool:
        """Block until no scan thread runs (after ``abort()``); only for shutdown and tests.

        Returns:
            False if a scan was still running after ``msecs`` milliseconds.
        """
        return self._thread_pool.waitForDone(msecs)

    def _is_current(self) -> bool:
        # Queued signals of an aborted worker may still arrive after a new scan started.
        return self._worker is not None and self.sender() is self._worker.signals

    def _on_worker_progressed(self, done: int, total: int) -> None:
        if self._is_current():
            self.scan_progressed.emit(done, total)

    def _on_worker_returned(self, result: ScanResult) -> None:
        if self._is_current():
            self._worker = None
            self.scan_finished.emit(result)

    def _on_worker_errored(self, error: Exception) -> None:
        if not self._is_current():
            return
        self._worker = None
        if isinstance(error, ScanAborted):
            return
        self.scan_failed.emit(describe_scan_error(error))


def describe_scan_error(error: BaseException) -> str:
    """A readable message for an exception raised by a scan; unexpected ones are also logged."""
    if isinstance(error, (TransferStudioError, OSError)):
        return str(error)
    logger.error("dataset scan failed", exc_info=error)
    return f"The scan stopped on an unexpected error ({type(error).__name__}: {error})."


def _writable_project_dir(path: Path) -> tuple[Path | None, str | None]:
    """The project folder, created if need be; else None and why not (None too when the data is missing)."""
    # Never create anything when the data folder itself is missing: the engine reports that.
    if not path.exists():
        return None, None
    project_dir = project_dir_for(path)
    try:
        # A per-user project folder's parents may not exist yet.
        project_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return None, (f"cannot create the project folder {project_dir} ({error.strerror or error}); "
                      "choose another on the Project page")
    return project_dir, None


class _RateLimited:
    """Forwards progress at most ``_PROGRESS_RATE_HZ`` times a second; the last report always goes.

    The engine reports from the scanning thread today; the lock keeps this correct
    should it ever report from its reader threads.
    """

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self._next_time = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            if done < total and now < self._next_time:
                return
            self._next_time = now + 1.0 / _PROGRESS_RATE_HZ
        self._progress(done, total)

"""The Data page's line about the decoded-image cache (photos decoded for fine-tuning), and a button to clear it.

Measuring and clearing walk the cache folder, which can hold thousands of files, so both
run on a worker thread; the panel only shows what they report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from engine.data.decoded_cache import CacheUsage, DecodedCache, decoded_cache_dir
from gui.services.workers import Worker

CLEAR_TEXT = "Clear decoded-image cache"


Progress = Callable[[int, int], None]


def _usage(cache: DecodedCache, *, progress: Progress, should_abort: Callable[[], bool]) -> CacheUsage:
    del progress, should_abort  # one walk of the folder: nothing to report or stop midway
    return cache.usage()


def _clear(cache: DecodedCache, *, progress: Progress, should_abort: Callable[[], bool]) -> CacheUsage:
    del progress, should_abort
    cache.clear()
    return cache.usage()


def describe(usage: CacheUsage) -> str:
    """The label's text for a cache's usage."""
    if usage.entries == 0:
        return "Decoded-image cache: empty"
    return f"Decoded-image cache: {usage.entries} images, {usage.size_bytes / 1e6:.1f} MB"


class DecodedCachePanel(QWidget):
    """Shows the size of the open dataset's decoded-image cache and clears it on request."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("Decoded-image cache: no dataset", self)
        self.label.setWordWrap(True)
        self.clear_button = QPushButton(CLEAR_TEXT, self)
        self.clear_button.setToolTip("Delete the photos that fine-tuning decoded and shrank; they are rebuilt"
                                     " during the next run's first epoch.")
        self.clear_button.setEnabled(False)
        self.clear_button.clicked.connect(self._on_clear_button_clicked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.clear_button)
        self._cache: DecodedCache | None = None
        self.worker: Worker | None = None

    def set_dataset(self, data_path: Path) -> None:
        """Show the cache of ``data_path`` (measured on a worker thread)."""
        self._cache = DecodedCache(decoded_cache_dir(data_path))
        self._run(_usage)

    def _on_clear_button_clicked(self) -> None:
        self._run(_clear)

    def _run(self, job: Callable[..., CacheUsage]) -> None:
        if self._cache is None:
            return
        self.clear_button.setEnabled(False)
        self.worker = Worker(job, self._cache)
        cache = self._cache
        self.worker.signals.returned.connect(lambda usage: self._on_worker_returned(cache, usage))
        self.worker.signals.errored.connect(self._on_worker_errored)
        self.worker.start()

    def _on_worker_returned(self, cache: DecodedCache, usage: CacheUsage) -> None:
        if cache is not self._cache:
            return  # another dataset was opened meanwhile
        self.label.setText(describe(usage))
        self.clear_button.setEnabled(usage.entries > 0)

    def _on_worker_errored(self, error: BaseException) -> None:
        self.label.setText(f"Decoded-image cache: {error}")
        self.clear_button.setEnabled(self._cache is not None)

"""Run a short job (a scan, thumbnails, one prediction) on a QThreadPool thread.

A ``Worker`` wraps a plain callable, as superqt's ``FunctionWorker`` does: the
callable gets a ``progress(done, total)`` callback and a ``should_abort()``
predicate, and the worker reports through signals on a separate ``QObject``
(``WorkerSignals``). Errors become the ``errored`` signal; nothing is raised in
the pool thread, and the worker never touches widgets.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal


class WorkerSignals(QObject):
    """The signals of one ``Worker``; they live on the GUI thread, so slots run there.

    ``returned`` or ``errored`` (never both) comes before ``finished``, which is always last.
    """

    started = Signal()  # the callable began running on a pool thread
    progressed = Signal(int, int)  # done, total; as reported by the callable
    returned = Signal(object)  # the callable's return value
    errored = Signal(object)  # the exception the callable raised
    finished = Signal()  # the worker is done, whatever the outcome


class Worker(QRunnable):
    """A ``QRunnable`` that calls ``fn(*args, progress=..., should_abort=..., **kwargs)``.

    Connect to ``worker.signals`` and then call ``start()``; the worker is handed to
    the pool on the next event-loop turn, so no signal can fire before the
    connections that follow ``start()`` in the same function are made.

    Args:
        fn: the job. It should call ``should_abort()`` now and then and raise its
            own "aborted" exception when it returns True; that exception arrives
            through ``errored`` like any other.
        *args: passed to ``fn``.
        **kwargs: passed to ``fn``.
    """

    # Workers between start() and their `finished` signal. Python must own the
    # runnable (autoDelete is off) and keep it alive while a pool thread runs it,
    # even when the caller drops its reference.
    _active: ClassVar[set[Worker]] = set()

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._abort_requested = threading.Event()
        self.signals = WorkerSignals()

    def abort(self) -> None:
        """Ask the job to stop; it is up to ``fn`` to notice through ``should_abort()``."""
        self._abort_requested.set()

    @property
    def abort_requested(self) -> bool:
        """Whether ``abort()`` has been called."""
        return self._abort_requested.is_set()

    def start(self, thread_pool: QThreadPool | None = None) -> None:
        """Queue the worker on ``thread_pool`` (the global pool by default).

        Must be called from a thread with a running (or soon running) event loop,
        normally the GUI thread.
        """
        if self in Worker._active:
            raise RuntimeError("this worker has already been started")
        Worker._active.add(self)
        self.signals.finished.connect(self._on_signals_finished)
        pool = thread_pool if thread_pool is not None else QThreadPool.globalInstance()
        # Deferred, so that the caller's connections are in place before any emission; the
        # pool as context object cancels the start if the pool is deleted first.
        QTimer.singleShot(0, pool, functools.partial(pool.start, self))

    def run(self) -> None:
        """Called by the pool on its thread; reports everything through ``signals``."""
        self.signals.started.emit()
        try:
            result = self._fn(
                *self._args,
                progress=self.signals.progressed.emit,
                should_abort=self._abort_requested.is_set,
                **self._kwargs,
            )
        except Exception as error:  # noqa: BLE001  every failure is reported as a signal, by design
            self.signals.errored.emit(error)
        else:
            self.signals.returned.emit(result)
        finally:
            self.signals.finished.emit()

    def _on_signals_finished(self) -> None:
        # Runs on the GUI thread after every earlier signal of this worker was delivered.
        Worker._active.discard(self)


def run_in_thread_pool(
    fn: Callable[..., Any], *args: Any, thread_pool: QThreadPool | None = None, **kwargs: Any
) -> Worker:
    """Create a ``Worker`` for ``fn`` and start it; connect to its signals right away.

    Args:
        fn: called as ``fn(*args, progress=..., should_abort=..., **kwargs)`` on a pool thread.
        *args: passed to ``fn``.
        thread_pool: the pool to run on; the global pool by default.
        **kwargs: passed to ``fn``.

    Returns:
        The started worker.
    """
    worker = Worker(fn, *args, **kwargs)
    worker.start(thread_pool)
    return worker


def bound_to(receiver: QObject, slot: Callable[..., Any]) -> Callable[..., None]:
    """``slot`` wrapped so that it does nothing once ``receiver`` is deleted.

    Qt disconnects a deleted receiver's bound methods, but not a lambda or partial that
    merely refers to it; a worker finishing after its page was closed would then touch a
    deleted widget. Connect such callables as ``signal.connect(bound_to(self, lambda ...))``.
    """

    def call(*args: Any) -> None:
        if shiboken6.isValid(receiver):
            slot(*args)

    return call

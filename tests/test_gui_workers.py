"""gui.services.workers: jobs run on a pool thread and report back through signals on the GUI thread."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

import pytest
from PySide6.QtCore import QThreadPool

from gui.services.workers import Worker, run_in_thread_pool

SIGNAL_TIMEOUT_MS = 5000


class JobFailed(RuntimeError):
    pass


class JobAborted(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _drain_thread_pool(qapp):
    yield
    # No worker of one test may outlive it and report into the next.
    assert QThreadPool.globalInstance().waitForDone(SIGNAL_TIMEOUT_MS)


def count_to(total: int, *, progress: Callable[[int, int], None], should_abort: Callable[[], bool]) -> str:
    for done in range(1, total + 1):
        progress(done, total)
    return f"counted to {total} on {threading.current_thread().name}"


def test_returned_value_progress_and_order_of_signals(qtbot):
    worker = Worker(count_to, 3)
    events: list[object] = []
    threads: set[str] = set()

    def record(name: str) -> Callable[..., None]:
        def slot(*args: object) -> None:
            threads.add(threading.current_thread().name)
            events.append((name, *args))

        return slot

    for name in ("started", "progressed", "returned", "errored", "finished"):
        getattr(worker.signals, name).connect(record(name))
    with qtbot.waitSignal(worker.signals.finished, timeout=SIGNAL_TIMEOUT_MS):
        worker.start()

    assert events[0] == ("started",)
    assert events[1:4] == [("progressed", 1, 3), ("progressed", 2, 3), ("progressed", 3, 3)]
    assert events[4][0] == "returned" and events[4][1].startswith("counted to 3 on ")
    assert "MainThread" not in events[4][1], "the job itself must not run on the GUI thread"
    assert events[5] == ("finished",)
    assert threads == {threading.current_thread().name}, "slots run on the GUI thread"


def test_exception_arrives_as_errored_signal_then_finished(qtbot):
    def fail(*, progress: Callable[[int, int], None], should_abort: Callable[[], bool]) -> None:
        raise JobFailed("no such folder: /nowhere")

    worker = Worker(fail)
    returned: list[object] = []
    worker.signals.returned.connect(returned.append)
    with (
        qtbot.waitSignal(worker.signals.finished, timeout=SIGNAL_TIMEOUT_MS),
        qtbot.waitSignal(worker.signals.errored, timeout=SIGNAL_TIMEOUT_MS) as errored,
    ):
        worker.start()

    (error,) = errored.args
    assert isinstance(error, JobFailed)
    assert str(error) == "no such folder: /nowhere"
    assert returned == []


def test_abort_is_seen_by_the_job(qtbot):
    running = threading.Event()

    def wait_for_abort(*, progress: Callable[[int, int], None], should_abort: Callable[[], bool]) -> None:
        running.set()
        # Bounded, so that a broken abort fails the test instead of hanging it.
        for _ in range(10_000):
            if should_abort():
                raise JobAborted("stopped on request")
            threading.Event().wait(0.001)

    worker = Worker(wait_for_abort)
    with qtbot.waitSignal(worker.signals.started, timeout=SIGNAL_TIMEOUT_MS):
        worker.start()
    assert running.wait(SIGNAL_TIMEOUT_MS / 1000)
    assert not worker.abort_requested
    with qtbot.waitSignal(worker.signals.errored, timeout=SIGNAL_TIMEOUT_MS) as errored:
        worker.abort()

    assert worker.abort_requested
    assert isinstance(errored.args[0], JobAborted)


def test_arguments_are_passed_through(qtbot):
    def describe(
        first: int, *, second: str, progress: Callable[[int, int], None], should_abort: Callable[[], bool]
    ) -> tuple[int, str, bool]:
        return first, second, should_abort()

    worker = Worker(describe, 7, second="seven")
    with qtbot.waitSignal(worker.signals.returned, timeout=SIGNAL_TIMEOUT_MS) as returned:
        worker.start()
    assert returned.args == [(7, "seven", False)]


def test_run_in_thread_pool_keeps_the_worker_alive_without_a_caller_reference(qtbot):
    signals = run_in_thread_pool(count_to, 2).signals
    gc.collect()
    with qtbot.waitSignal(signals.returned, timeout=SIGNAL_TIMEOUT_MS) as returned:
        pass
    assert returned.args[0].startswith("counted to 2")


def test_run_in_thread_pool_uses_the_given_pool(qtbot):
    pool = QThreadPool()
    worker = run_in_thread_pool(count_to, 1, thread_pool=pool)
    with qtbot.waitSignal(worker.signals.finished, timeout=SIGNAL_TIMEOUT_MS):
        pass
    assert pool.waitForDone(SIGNAL_TIMEOUT_MS)


def test_a_worker_starts_only_once(qtbot):
    worker = Worker(count_to, 1)
    with qtbot.waitSignal(worker.signals.finished, timeout=SIGNAL_TIMEOUT_MS):
        worker.start()
        with pytest.raises(RuntimeError, match="already been started"):
            worker.start()

"""Stop requests: a ``STOP`` file, SIGTERM, SIGHUP or Ctrl+C become a clean ``CancelFit("stopped")``."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from engine.data.loader_sizing import STOP_SIGNALS
from engine.training.callback import Callback, CancelEpoch, CancelFit, LoopState
from engine.training.distributed import SINGLE_PROCESS, DistributedContext
from engine.training.runfolder import RunFolder

# What stopped a run, as ranks exchange it; the highest code any rank has wins.
_STOP_MESSAGES = {1: "stop requested", 2: "SIGTERM received", 3: "SIGINT received", 4: "the torchrun launcher is gone",
                  5: "SIGHUP received"}
_STOP_CODES = {"STOP": 1, "SIGTERM": 2, "SIGINT": 3, "ORPHANED": 4, "SIGHUP": 5}


class StopWatcher(Callback):
    """Turns a ``STOP`` file, SIGTERM or Ctrl+C into a clean ``CancelFit("stopped")`` at the next batch.

    Signals are caught only inside ``installed()``, which the run wraps around all of
    its work, so a stop during feature extraction is as clean as one during an epoch.

    In a distributed run the ranks agree at the loop's sync points and at the end of
    each epoch (any rank's signal, rank 0's ``STOP`` file), so that all of them stop at
    the same step. Rank 0, validating alone, cuts validation short; the stop then
    follows at the epoch's end, as it would have in one process. Workers whose torchrun
    launcher was killed outright (SIGKILL, which it cannot pass on) stop the same way.

    Args:
        run_folder: the folder whose ``STOP`` file asks for a stop.
        distributed: this process's place in a distributed run.
    """

    order = -100

    def __init__(self, run_folder: RunFolder, distributed: DistributedContext = SINGLE_PROCESS) -> None:
        self.run_folder = run_folder
        self.distributed = distributed
        self.signalled: str | None = None
        # A worker outlives a killed launcher (torchrun starts it in a session of its own) and
        # is adopted by another process: a new parent means nobody waits for the run any more.
        self._launcher = os.getppid() if distributed.enabled else None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Catch the stop signals (SIGTERM, SIGINT, SIGHUP) while the block runs (main thread only, else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def check(self) -> None:
        """Raise ``CancelFit`` if a stop was asked for."""
        if self.signalled:
            raise CancelFit("stopped", f"{self.signalled} received")
        if self.run_folder.stop_requested():
            raise CancelFit("stopped", "stop requested")

    def before_batch(self, state: LoopState) -> None:
        if not self.distributed.enabled:
            self.check()
        elif not state.training and self._stop_code():
            raise CancelEpoch  # rank 0 validating alone: the others wait for the epoch's end

    def after_sync(self, state: LoopState) -> None:
        # Agreeing is a collective whose answer the host must read: done where the loop reads
        # the losses anyway, which every rank reaches at the same step.
        if self.distributed.enabled:
            self._agree()

    def after_epoch(self, state: LoopState) -> None:
        if self.distributed.enabled:
            self._agree()

    def _stop_code(self) -> int:
        if self._launcher is not None and os.getppid() != self._launcher:
            return _STOP_CODES["ORPHANED"]
        if self.signalled:
            return _STOP_CODES.get(self.signalled, 2)
        return _STOP_CODES["STOP"] if self.run_folder.stop_requested() else 0

    def _agree(self) -> None:
        code = self.distributed.all_reduce_max(self._stop_code())
        if code:
            raise CancelFit("stopped", _STOP_MESSAGES[code])

    def _on_signal(self, number: int, _frame: object) -> None:
        self.signalled = signal.Signals(number).name

"""Stop requests: a ``STOP`` file, SIGTERM, SIGHUP or Ctrl+C become a clean ``CancelFit("stopped")``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from engine.core.stop_signals import stop_received, stops_caught
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
    A second signal changes nothing: the checkpoint of the stop is written whole.

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
        """Catch the stop signals (SIGTERM, SIGINT, SIGHUP) while the block runs (main thread only, else a no-op).

        See ``engine.core.stop_signals.stops_caught``.
        """
        with stops_caught(self._on_signal):
            # A signal that came just before (a search, between its check and this trial) stops this run too.
            self.signalled = self.signalled or stop_received()
            yield

    def check(self) -> None:
        """Raise ``CancelFit`` if a stop was asked for."""
        if self.signalled or self.run_folder.stop_requested():
            raise CancelFit("stopped", self.message())

    def message(self) -> str:
        """What asked for the stop, in words: ``SIGTERM received``, else ``stop requested`` (the ``STOP`` file)."""
        return f"{self.signalled} received" if self.signalled else "stop requested"

    def before_batch(self, state: LoopState) -> None:
        self.run_folder.heartbeat()
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

    def _on_signal(self, name: str) -> None:
        self.signalled = name

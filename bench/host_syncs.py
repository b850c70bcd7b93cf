"""Count the engine's host syncs: every read of a tensor's value on the host by engine or augment code.

On a GPU each such read (``.item()``, ``float(t)``, ``.tolist()``, ``.cpu()``...) makes the
host wait until every queued kernel has run, so the loop can no longer queue the next
step ahead. ``HostReads`` wraps those ``torch.Tensor`` methods for its duration and
records each call made directly from a file under ``engine/`` or ``augment/``, with the
loop stage it happened in: the nearest enclosing training-loop hook or ``Loop`` method.
Calls from PyTorch's own code (an optimizer's CPU step counter) are not ours to remove.
With ``cuda_sync_debug`` it also records every synchronisation CUDA reports
(``torch.cuda.set_sync_debug_mode``), wherever on the stack it comes from, as ``cuda-sync``.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch

_ROOT = Path(__file__).resolve().parent.parent
_OURS = tuple(str(_ROOT / package) + "/" for package in ("engine", "augment"))
_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")

PER_STEP = frozenset({
    "before_batch", "after_batch", "after_loss", "before_step", "after_step",
    "_one_batch", "_forward", "_forward_in_pieces", "_step",
})
"""Stages that run once per batch or step: a read here waits for the GPU every step."""

_STAGES = PER_STEP | {
    "_sync", "after_sync", "before_fit", "after_fit", "before_epoch", "after_epoch", "before_train", "after_train",
    "before_validate", "after_validate", "after_cancel_fit", "after_batch_size_changed",
}


@dataclass(frozen=True)
class HostRead:
    """One read: the tensor method, where it was called, and the loop stage it ran in (None: outside the loop)."""

    method: str
    where: str
    stage: str | None
    training: bool


@dataclass
class HostReads:
    """A context manager that records the engine's host reads of tensors while it is active."""

    cuda_sync_debug: bool = False
    reads: list[HostRead] = field(default_factory=list)
    _saved: dict[str, Any] = field(default_factory=dict)
    _warnings: Any = None

    def per_step(self, *, training_only: bool = True) -> list[HostRead]:
        """The reads made in per-batch stages (of training batches only, by default)."""
        return [read for read in self.reads
                if read.stage in PER_STEP and (read.training or not training_only)]

    def by_stage(self) -> Counter[str | None]:
        """How many reads each stage made."""
        return Counter(read.stage for read in self.reads)

    def __enter__(self) -> HostReads:
        for name in _READS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original
            setattr(torch.Tensor, name, self._wrap(name, original))
        if self.cuda_sync_debug:
            self._watch_cuda_syncs()
        return self

    def _watch_cuda_syncs(self) -> None:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("always")
        reads = self.reads

        def record(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   *_args: Any, **_kwargs: Any) -> None:
            stage, training = _stage_of(sys._getframe(1))
            reads.append(HostRead("cuda-sync", f"{Path(filename).name}:{lineno}", stage, training))

        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        if self._warnings is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._warnings.__exit__(None, None, None)
            self._warnings = None

    def _wrap(self, name: str, original: Any) -> Any:
        reads = self.reads

        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(_OURS):
                stage, training = _stage_of(caller)
                reads.append(HostRead(name, f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}", stage,
                                      training))
            return original(tensor, *args, **kwargs)

        return counted


def _stage_of(frame: FrameType | None) -> tuple[str | None, bool]:
    """The innermost loop stage on the stack, and whether the loop was in a training pass."""
    while frame is not None:
        name = frame.f_code.co_name
        if name in _STAGES:
            state = frame.f_locals.get("state")
            return name, bool(getattr(state, "training", False))
        frame = frame.f_back
    return None, False

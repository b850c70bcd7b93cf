"""How many processes decode images for a DataLoader, and the loader options that go with them.

``data.num_workers: auto`` times a few items of the dataset at set-up (decode, resize,
augment: the whole ``__getitem__``) and starts as many workers as reach the rate the device
is expected to train at. Training on a GPU, the training process mostly waits for the
device, so the workers may have every CPU (as PyTorch's own DataLoader check allows);
training on the CPU, one CPU is left to the model.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.stop_signals import STOP_SIGNALS

TARGET_RATE_CUDA = 3000.0
"""Images/s a GPU is expected to consume: a small backbone at 224 px with mixed precision on a fast card."""

TARGET_RATE_OTHER = 100.0
"""Images/s a CPU or MPS device trains at, at most, on a small backbone."""

SAMPLE_ITEMS = 3
"""Items decoded at set-up to measure the decode rate."""


@dataclass(frozen=True)
class LoaderSizing:
    """DataLoader options for one split.

    Attributes:
        num_workers: decoding processes (0 decodes in the calling process).
        decode_rate: measured items/s of one process, or None when the count was given.
        pin_memory: page-locked batches, so host-to-GPU copies run without blocking (CUDA only).
        prefetch_factor: batches each worker prepares ahead (None without workers, as torch requires).
    """

    num_workers: int
    decode_rate: float | None = None
    pin_memory: bool = False
    prefetch_factor: int | None = None

    def loader_arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``torch.utils.data.DataLoader``."""
        arguments: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            # Workers live across epochs: restarting them re-imports torch and costs seconds each epoch.
            "persistent_workers": self.num_workers > 0,
        }
        if self.num_workers > 0:
            arguments["prefetch_factor"] = self.prefetch_factor
            arguments["worker_init_fn"] = leave_stopping_to_the_trainer
        return arguments


def leave_stopping_to_the_trainer(_worker_id: int) -> None:
    """In a DataLoader worker: ignore the stop signals, which the training process turns into a clean stop.

    A stop signal sent to the whole process group (``timeout``, SLURM's ``scancel``, a closed
    terminal) reaches the workers too; killed by it, they took the training process down with
    "DataLoader worker is killed by signal" before it could save a checkpoint. Workers still
    end with the training process: PyTorch's workers exit when it stops them or when it is gone.
    """
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, as in containers and batch jobs)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_num_workers(*, cpus: int, decode_rate: float, target_rate: float, batches: int, reserve: int = 1) -> int:
    """Workers that together decode ``target_rate`` items/s, within the CPUs and the work there is.

    ``reserve`` CPUs stay with the training process; a loader never gets more workers than
    it has batches per epoch (each worker prepares whole batches); one CPU means no workers.

    Args:
        cpus: CPUs available.
        decode_rate: items/s one process prepares.
        target_rate: items/s the device consumes.
        batches: batches in one pass over the split.
        reserve: CPUs left to the training process (0 when a GPU does the training).
    """
    if cpus <= 1 or batches <= 0:
        return 0
    wanted = math.ceil(target_rate / decode_rate) if decode_rate > 0 else cpus
    return max(1, min(wanted, cpus - reserve, batches))


def measure_decode_rate(dataset: Any, *, samples: int = SAMPLE_ITEMS) -> float:
    """Items/s of ``dataset[index]`` in this process, timed on a few items spread over the dataset.

    The first item is read once untimed: it pays for imports and first-call set-up that
    later items do not.
    """
    count = len(dataset)
    if count == 0:
        return math.inf
    picks: Sequence[int] = sorted({round(step * (count - 1) / max(1, samples)) for step in range(samples + 1)})
    dataset[picks[0]]
    timed = picks[1:] or picks
    started = time.perf_counter()
    for index in timed:
        dataset[index]
    elapsed = time.perf_counter() - started
    return len(timed) / elapsed if elapsed > 0 else math.inf


def size_loader(
    setting: int | str, dataset: Any, *, batch_size: int, cuda: bool, pin_memory: bool = False,
    target_rate: float | None = None,
) -> LoaderSizing:
    """The loader options for ``dataset`` under ``data.num_workers``.

    Args:
        setting: ``data.num_workers``: a count, or ``auto`` to measure and choose.
        dataset: the map-style dataset the loader reads.
        batch_size: items per batch.
        cuda: the batches go to a CUDA device (every CPU may decode, pinned memory, deeper prefetch).
        pin_memory: the device plan's ``pin_memory``.
        target_rate: items/s to reach (default: ``TARGET_RATE_CUDA`` on CUDA, else ``TARGET_RATE_OTHER``).
    """
    rate: float | None = None
    if isinstance(setting, int):
        workers = max(0, setting)
    else:
        rate = measure_decode_rate(dataset)
        target = target_rate if target_rate is not None else (TARGET_RATE_CUDA if cuda else TARGET_RATE_OTHER)
        workers = choose_num_workers(cpus=available_cpus(), decode_rate=rate, target_rate=target,
                                     batches=math.ceil(len(dataset) / max(1, batch_size)), reserve=0 if cuda else 1)
    # A GPU step is short, so each worker keeps more batches ready to cover an uneven decode time.
    prefetch = (4 if cuda else 2) if workers > 0 else None
    return LoaderSizing(num_workers=workers, decode_rate=rate, pin_memory=pin_memory and cuda,
                        prefetch_factor=prefetch)

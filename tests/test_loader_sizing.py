"""``data.num_workers``: a given count, or ``auto`` from the CPUs and a measured decode rate."""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch.utils.data import DataLoader

from engine.data.loader_sizing import (
    available_cpus,
    choose_num_workers,
    leave_stopping_to_the_trainer,
    measure_decode_rate,
    size_loader,
)


class _SlowItems:
    """A dataset whose items take ``seconds`` each."""

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds = count, seconds

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.seconds)
        return torch.tensor(index)


def test_available_cpus_follows_the_affinity_mask() -> None:
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))
    assert available_cpus() >= 1


@pytest.mark.parametrize(("cpus", "rate", "target", "batches", "reserve", "expected"), [
    (16, 40.0, 3000.0, 1000, 1, 15),  # slow decode, training on the CPU: every CPU but the trainer's
    (16, 40.0, 3000.0, 1000, 0, 16),  # the same on a GPU, whose trainer mostly waits: every CPU
    (2, 40.0, 3000.0, 1000, 0, 2),
    (16, 1000.0, 3000.0, 1000, 0, 3),  # fast decode: only as many as the target needs
    (16, 40.0, 3000.0, 4, 0, 4),  # no more workers than batches
    (1, 40.0, 3000.0, 1000, 0, 0),  # one CPU: decode in the training process
    (8, 1e6, 100.0, 1000, 1, 1),  # a cache hit is fast, but one worker keeps decoding off the trainer
    (4, 40.0, 3000.0, 0, 1, 0),  # nothing to load
])
def test_choose_num_workers(cpus: int, rate: float, target: float, batches: int, reserve: int, expected: int) -> None:
    assert choose_num_workers(cpus=cpus, decode_rate=rate, target_rate=target, batches=batches,
                              reserve=reserve) == expected


def test_measure_decode_rate_times_the_items() -> None:
    rate = measure_decode_rate(_SlowItems(50, 0.02))
    assert 25 < rate < 55  # 50/s, give or take the sleep's overshoot


def test_a_given_count_is_used_as_is() -> None:
    sizing = size_loader(3, _SlowItems(10, 0.0), batch_size=2, cuda=False)
    assert sizing.num_workers == 3 and sizing.decode_rate is None
    assert sizing.loader_arguments() == {"num_workers": 3, "pin_memory": False, "persistent_workers": True,
                                         "prefetch_factor": 2, "worker_init_fn": leave_stopping_to_the_trainer}


def test_zero_workers_gives_options_torch_accepts() -> None:
    arguments = size_loader(0, _SlowItems(10, 0.0), batch_size=2, cuda=True, pin_memory=True).loader_arguments()
    assert "prefetch_factor" not in arguments and arguments["persistent_workers"] is False
    assert arguments["pin_memory"] is True
    arguments["pin_memory"] = torch.cuda.is_available()  # pinning warns without a GPU
    assert [batch.tolist() for batch in DataLoader(_SlowItems(4, 0.0), batch_size=2, **arguments)] == [[0, 1], [2, 3]]


def test_auto_measures_and_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.data.loader_sizing.available_cpus", lambda: 8)
    sizing = size_loader("auto", _SlowItems(400, 0.02), batch_size=8, cuda=False, target_rate=100.0)
    assert sizing.decode_rate is not None and 25 < sizing.decode_rate < 55
    assert sizing.num_workers in (2, 3)  # ceil(100 / ~45)
    assert sizing.pin_memory is False and sizing.prefetch_factor == 2
    cuda = size_loader("auto", _SlowItems(400, 0.02), batch_size=8, cuda=True, pin_memory=True)
    assert cuda.num_workers == 8 and cuda.pin_memory and cuda.prefetch_factor == 4  # a GPU trains: every CPU decodes

"""How much the engine's loop adds to a training step, measured beside a bare PyTorch loop.

Both loops train the same timm model on the same pre-made batches (no data loading),
alternating rounds so that machine noise hits both; prints the median step times and
their ratio (goal: <= 1.05). Usage: ``python -m bench.step_overhead [--model NAME]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from engine.core.config import RunConfig
from engine.core.device import DevicePlan, plan_device
from engine.models.backbones import create_model
from engine.training.callbacks import EventReporter, LRSchedule, MetricsRecorder, StopWatcher
from engine.training.loop import Loop
from engine.training.runfolder import RunFolder

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def make_batches(count: int, batch_size: int, size: int, classes: int, plan: DevicePlan) -> Batches:
    generator = torch.Generator().manual_seed(0)
    return [
        (plan.to_device(torch.randn(batch_size, 3, size, size, generator=generator)),
         plan.to_device(torch.randint(classes, (batch_size,), generator=generator)))
        for _ in range(count)
    ]


def bare_round(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, plan: DevicePlan) -> float:
    loss_function = nn.CrossEntropyLoss()
    model.train()
    _sync(plan)
    started = time.perf_counter()
    for inputs, targets in batches:
        with plan.autocast():
            loss = loss_function(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(plan)
    return (time.perf_counter() - started) / len(batches)


def engine_round(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, plan: DevicePlan, folder: RunFolder
) -> float:
    scheduler = CosineLRScheduler(optimizer, t_initial=10_000, warmup_t=0, t_in_epochs=False)
    callbacks = [StopWatcher(folder), LRSchedule(scheduler), MetricsRecorder([str(i) for i in range(10)]),
                 EventReporter(folder, every_steps=max(1, len(batches) // 10))]
    loop = Loop(model=model, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(), train_batches=batches,
                val_batches=None, device_plan=plan, callbacks=callbacks)
    _sync(plan)
    started = time.perf_counter()
    loop.fit(1)
    _sync(plan)
    return (time.perf_counter() - started) / len(batches)


def _sync(plan: DevicePlan) -> None:
    if plan.is_cuda:
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv3_small_100")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()

    plan = plan_device("auto")
    model = plan.prepare_model(create_model(arguments.model, num_classes=10, weights="none").model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = make_batches(arguments.steps, arguments.batch_size, arguments.size, 10, plan)
    with tempfile.TemporaryDirectory() as scratch:
        folder = RunFolder.create(Path(scratch) / "run", RunConfig())
        bare_round(model, optimizer, batches[:3], plan)  # warm-up: allocator, kernels
        bare, looped = [], []
        for _ in range(arguments.rounds):
            bare.append(bare_round(model, optimizer, batches, plan))
            looped.append(engine_round(model, optimizer, batches, plan, folder))
    bare_ms, engine_ms = statistics.median(bare) * 1e3, statistics.median(looped) * 1e3
    print(f"model {arguments.model} @ {arguments.size}px, batch {arguments.batch_size}, {plan.describe()}")
    print(f"bare PyTorch step  {bare_ms:8.2f} ms (median of {arguments.rounds} rounds x {arguments.steps} steps)")
    print(f"engine loop step   {engine_ms:8.2f} ms")
    print(f"ratio engine/bare  {engine_ms / bare_ms:8.3f}  (goal <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

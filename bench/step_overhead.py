"""How much the engine's loop adds to a training step, measured beside a bare PyTorch loop.

Both loops train the same timm model on the same pre-made batches (no data loading),
in rounds that time both in turns, so that machine noise hits both alike. The engine runs with every callback a
default run attaches (``engine.training.stage_runner.standard_callbacks``: stop watcher,
schedule, metrics, checkpoints, events and the doctor's default checks) and reads its
losses back at the interval a run of that length would use. A round is one epoch's
training pass, timed from its first batch to its last sync; the checkpoint written at the
epoch's end is not a per-step cost and is left out. Prints the median step times, the
median of the rounds' ratios (goal: <= 1.03), and how many times per step the engine makes the host wait for the
device (goal: 0 on ordinary steps). Usage: ``python -m bench.step_overhead [--model NAME]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.host_syncs import HostReads
from engine.core.config import RunConfig
from engine.core.device import DevicePlan, plan_device
from engine.models.backbones import create_model
from engine.training.callback import Callback, LoopState
from engine.training.callbacks import CheckpointSaver, LRSchedule, MetricsRecorder, StopWatcher
from engine.training.doctor import DoctorContext, create_doctor
from engine.training.loop import Loop
from engine.training.runfolder import RunFolder
from engine.training.schedules import create_scheduler
from engine.training.stage_runner import standard_callbacks, sync_interval

Batches = list[tuple[torch.Tensor, torch.Tensor]]
CLASSES = 10


def make_batches(count: int, batch_size: int, size: int, plan: DevicePlan) -> Batches:
    generator = torch.Generator().manual_seed(0)
    return [
        (plan.to_device(torch.randn(batch_size, 3, size, size, generator=generator)),
         plan.to_device(torch.randint(CLASSES, (batch_size,), generator=generator)))
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


class _TrainPassClock(Callback):
    """Times the training pass: started first in ``before_train``, stopped last in ``after_train``."""

    def __init__(self, plan: DevicePlan, order: int, clock: list[float]) -> None:
        self.plan, self.order, self.clock = plan, order, clock

    def before_train(self, state: LoopState) -> None:
        if self.order < 0:
            _sync(self.plan)
            self.clock.append(time.perf_counter())

    def after_train(self, state: LoopState) -> None:
        if self.order > 0:
            _sync(self.plan)
            self.clock.append(time.perf_counter())


def engine_loop(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Batches, plan: DevicePlan,
                folder: RunFolder, clock: list[float]) -> Loop:
    config = RunConfig()
    steps = len(batches)
    recorder = MetricsRecorder([str(index) for index in range(CLASSES)])
    saver = CheckpointSaver(folder, model, {"classes": recorder.class_names}, monitor=config.optim.monitor)
    doctor = create_doctor(config, DoctorContext(config=config, num_classes=CLASSES, report=folder.write_event))
    schedule = LRSchedule(create_scheduler(optimizer, config.optim, steps))
    callbacks = [*standard_callbacks(folder, StopWatcher(folder), schedule, recorder, saver, doctor),
                 _TrainPassClock(plan, -1000, clock), _TrainPassClock(plan, 1000, clock)]
    return Loop(model=model, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(), train_batches=batches,
                val_batches=None, device_plan=plan, callbacks=callbacks, sync_every=sync_interval(steps))


def engine_round(loop: Loop, clock: list[float], epoch: int) -> float:
    clock.clear()
    loop.fit(epoch, start_epoch=epoch, start_step=(epoch - 1) * len(loop.train_batches))  # type: ignore[arg-type]
    return (clock[1] - clock[0]) / len(loop.train_batches)  # type: ignore[arg-type]


def count_host_syncs(loop: Loop, plan: DevicePlan, epoch: int) -> HostReads:
    """One more engine epoch with the engine's reads of tensors (and on CUDA every real sync) recorded."""
    with HostReads(cuda_sync_debug=plan.is_cuda) as counter:
        loop.fit(epoch, start_epoch=epoch, start_step=(epoch - 1) * len(loop.train_batches))  # type: ignore[arg-type]
    return counter


def _sync(plan: DevicePlan) -> None:
    if plan.is_cuda:
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv3_small_100")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--rounds", type=int, default=10)
    arguments = parser.parse_args()

    plan = plan_device("auto")
    model = plan.prepare_model(create_model(arguments.model, num_classes=CLASSES, weights="none").model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = make_batches(arguments.steps, arguments.batch_size, arguments.size, plan)
    with tempfile.TemporaryDirectory() as scratch:
        folder = RunFolder.create(Path(scratch) / "run", RunConfig())
        clock: list[float] = []
        loop = engine_loop(model, optimizer, batches, plan, folder, clock)
        bare_round(model, optimizer, batches[:3], plan)  # warm-up: allocator, kernels
        bare, looped = [], []
        for epoch in range(1, arguments.rounds + 1):
            # Each round times both, in turns, so that a slow spell of this shared machine hits a pair alike.
            if epoch % 2:
                bare.append(bare_round(model, optimizer, batches, plan))
                looped.append(engine_round(loop, clock, epoch))
            else:
                looped.append(engine_round(loop, clock, epoch))
                bare.append(bare_round(model, optimizer, batches, plan))
        syncs = count_host_syncs(loop, plan, arguments.rounds + 1)
    bare_ms, engine_ms = statistics.median(bare) * 1e3, statistics.median(looped) * 1e3
    ratio = statistics.median(engine / plain for engine, plain in zip(looped, bare, strict=True))
    per_step, at_sync = len(syncs.per_step()), sum(1 for read in syncs.reads if read.stage not in (None,))
    print(f"model {arguments.model} @ {arguments.size}px, batch {arguments.batch_size}, {plan.describe()}")
    print(f"callbacks: {', '.join(type(callback).__name__ for callback in loop.callbacks[1:-1])}")
    print(f"bare PyTorch step  {bare_ms:8.2f} ms (median of {arguments.rounds} rounds x {arguments.steps} steps)")
    print(f"engine loop step   {engine_ms:8.2f} ms (losses read every {loop.sync_every} steps)")
    kind = "reads of tensors by engine code" + (" and CUDA syncs" if plan.is_cuda else "")
    print(f"host syncs ({kind}) in one epoch of {arguments.steps} steps: {per_step} on ordinary steps, "
          f"{at_sync - per_step} at sync points and the epoch's end")
    print(f"host syncs per ordinary step on {plan.device.type}: {per_step / arguments.steps:.2f}  (goal 0)")
    print(f"ratio engine/bare  {ratio:8.3f}  (goal <= 1.03; median of the rounds' ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

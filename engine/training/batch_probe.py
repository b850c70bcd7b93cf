"""``optim.batch_size: auto``: the largest batch whose training step fits in the GPU's memory.

The probe runs the real model's forward and backward passes on random images at
decreasing sizes, from the largest power of two the training set can fill (at most
``LARGEST``), halving after each out-of-memory error, as Ultralytics' ``batch=-1`` does.
A size also fails when its peak memory leaves less than ``HEADROOM`` of the GPU free:
the optimizer's state, the data loader's pinned batches and memory fragmentation need
room the probe does not measure. The model's weights, gradients and BatchNorm statistics
and train/eval modes are as they were before the probe.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.device import DevicePlan

LARGEST = 1024
HEADROOM = 0.15


def largest_fitting_batch(try_batch: Callable[[int], None], *, start: int) -> int:
    """The first of ``start, start / 2, ... 1`` for which ``try_batch(size)`` does not run out of memory.

    Raises:
        torch.OutOfMemoryError: not even one image fits.
        RuntimeError: ``try_batch`` failed for another reason.
    """
    size = max(1, start)
    while True:
        try:
            try_batch(size)
            return size
        except RuntimeError as error:
            if not is_out_of_memory(error) or size == 1:
                raise
        # Outside the except block, so that the failed attempt's tensors can be freed.
        size //= 2


def probe_batch_size(model: nn.Module, plan: DevicePlan, input_size: tuple[int, int, int], num_classes: int,
                     *, train_images: int) -> int:
    """The largest power-of-two batch (at most the training set, at most ``LARGEST``) whose step fits.

    Args:
        model: the model as it will train (trainable parameters set), on ``plan.device``.
        plan: the run's device plan (autocast and memory format as in training).
        input_size: ``(channels, height, width)`` of the model input.
        num_classes: outputs of the model.
        train_images: images in the training set; a larger batch than that is never useful.
    """
    start = 1 << (max(1, min(train_images, LARGEST)).bit_length() - 1)
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    modes = [(module, module.training) for module in model.modules()]
    model.train()
    try:
        return largest_fitting_batch(lambda size: _one_step(model, plan, input_size, num_classes, size), start=start)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():  # the probe's random images must not move BatchNorm's statistics
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        for module, training in modes:
            module.training = training
        if plan.is_cuda:
            torch.cuda.empty_cache()


def _one_step(model: nn.Module, plan: DevicePlan, input_size: tuple[int, int, int], num_classes: int,
              size: int) -> None:
    model.zero_grad(set_to_none=True)
    if plan.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(plan.device)
    images = plan.to_device(torch.randn(size, *input_size))
    targets = torch.randint(num_classes, (size,)).to(plan.device)
    with plan.autocast():
        loss = F.cross_entropy(model(images), targets)
    loss.backward()
    if plan.is_cuda:
        peak = torch.cuda.max_memory_allocated(plan.device)
        total = torch.cuda.get_device_properties(plan.device).total_memory
        if peak > (1 - HEADROOM) * total:
            raise torch.OutOfMemoryError(f"a batch of {size} peaks at {peak / 2**30:.1f} GiB of "
                                         f"{total / 2**30:.1f} GiB, leaving less than {HEADROOM:.0%} free")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says a device ran out of memory (CUDA's own type, or the message MPS raises)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())

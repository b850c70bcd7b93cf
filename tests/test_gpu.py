"""CUDA training paths: AMP with channels_last, pinned copies, and a loop free of host syncs per step.

Marked ``gpu`` and skipped without a CUDA GPU; ``bench/gpu_check.sh`` runs them on a GPU
machine. A tiny timm model (``test_efficientnet``) keeps each test to seconds: the point
is the device path, not accuracy.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import engine  # noqa: F401  (the torchvision fix, before timm)
from engine.core.device import DevicePlan, plan_device
from engine.training.callback import Callback, LoopState
from engine.training.loop import Loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CLASSES = 3
SIZE = 64


def _tiny_model() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", pretrained=False, num_classes=CLASSES)


def _batches(count: int, batch_size: int = 8, *, pin: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Host batches ``(N, 3, 64, 64)`` float32 and ``(N,)`` int64 labels, pinned like a CUDA run's loader makes them."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        images = torch.randn(batch_size, 3, SIZE, SIZE, generator=generator)
        targets = torch.randint(0, CLASSES, (batch_size,), generator=generator)
        batches.append((images.pin_memory(), targets.pin_memory()) if pin else (images, targets))
    return batches


class KeepLosses(Callback):
    """Keeps each training loss as a device tensor: nothing here reads a value on the host."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.output_dtypes: list[torch.dtype] = []

    def after_loss(self, state: LoopState) -> None:
        if state.training:
            self.losses.append(state.loss.detach())
            self.output_dtypes.append(state.outputs.dtype)


def _loop(plan: DevicePlan, batches: list, callbacks: list[Callback]) -> tuple[Loop, nn.Module]:
    model = plan.prepare_model(_tiny_model())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loop = Loop(model=model, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(), train_batches=batches,
                val_batches=None, device_plan=plan, callbacks=callbacks)
    return loop, model


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_an_amp_fine_tuning_step_in_channels_last_trains(amp_dtype: torch.dtype) -> None:
    if amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    device = plan_device("cuda").device
    plan = DevicePlan(device, amp_dtype=amp_dtype, channels_last=True, reason="test")
    assert plan.grad_scaler().is_enabled() == (amp_dtype == torch.float16)
    keep = KeepLosses()
    loop, model = _loop(plan, _batches(4), [keep])
    convolution = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)
    before = [parameter.detach().clone() for parameter in model.parameters()]

    loop.fit(1)
    torch.cuda.synchronize()
    assert all(dtype == amp_dtype for dtype in keep.output_dtypes)  # the forward ran under autocast
    losses = torch.stack(keep.losses).float().cpu()
    assert len(losses) == 4 and torch.isfinite(losses).all()
    changed = sum(not torch.equal(old, new.detach()) for old, new in zip(before, model.parameters(), strict=True))
    # fp16: the scaler may skip the first steps while it finds its scale, not all four.
    assert changed == len(before) if amp_dtype == torch.bfloat16 else changed > 0
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # master weights stay fp32


def test_pinned_batches_reach_the_gpu_by_non_blocking_copies() -> None:
    plan = plan_device("cuda")
    assert plan.pin_memory and plan.channels_last
    images, targets = _batches(1)[0]
    assert images.is_pinned() and targets.is_pinned()
    on_device = plan.to_device((images, targets))
    assert isinstance(on_device, tuple) and all(tensor.device == plan.device for tensor in on_device)
    assert on_device[0].is_contiguous(memory_format=torch.channels_last)
    torch.cuda.current_stream().synchronize()
    assert torch.equal(on_device[0].cpu(), images) and torch.equal(on_device[1].cpu(), targets)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=4,
                                         pin_memory=plan.pin_memory)
    batch_images, _batch_targets = next(iter(loader))
    assert batch_images.is_pinned()


def test_the_loop_makes_no_host_sync_per_step() -> None:
    plan = plan_device("cuda")
    if plan.amp_dtype == torch.float16:
        pytest.skip("fp16 loss scaling reads found-inf on the host each step (by design of GradScaler)")
    keep = KeepLosses()
    loop, _model = _loop(plan, _batches(6), [keep])
    loop.fit(1)  # warm-up: first-call allocations and lazy initialisation may sync
    torch.cuda.synchronize()
    keep.losses.clear()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop.fit(2, start_epoch=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert len(keep.losses) == 6 and torch.isfinite(torch.stack(keep.losses).float()).all()

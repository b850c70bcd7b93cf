"""Where tensors live and in what precision: CUDA, else Apple MPS, else CPU, each with what suits it.

``choose_device`` is the rule (a pure function of what was asked and what is present);
``plan_device`` applies it to this machine and returns a ``DevicePlan`` that says, with a
plain-language ``reason``, why. On CUDA: bf16 autocast where the GPU supports it (no loss
scaling needed), else fp16 with a gradient scaler; pinned host memory and non-blocking
copies. On MPS: fp16 autocast with a gradient scaler. On CPU: fp32. channels_last for image
batches everywhere. In a distributed run each process has made its own GPU current
(``engine.training.distributed``), and the plan follows it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from engine.core.config import DEVICES
from engine.core.errors import ConfigError

_NAMES = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}
_MISSING = {"cuda": "no CUDA GPU visible to PyTorch", "mps": "no Apple MPS device"}


@dataclass(frozen=True)
class DevicePlan:
    """How one run uses its device.

    Attributes:
        device: where the model and batches live.
        amp_dtype: autocast dtype (bfloat16 or float16), or None for full precision.
        channels_last: store 4-D image batches and the model in NHWC.
        reason: why this device and precision, in plain language, e.g.
            ``CPU: no CUDA or MPS device found`` (for ``run_started.device_reason``).
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    reason: str = ""

    @property
    def is_cuda(self) -> bool:
        """True when running on a CUDA GPU."""
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """Whether data loaders should pin host memory (only useful for CUDA copies)."""
        return self.is_cuda

    def describe(self) -> str:
        """One line for logs and events, e.g. ``cuda:0 (NVIDIA H100), bf16 autocast, channels_last``."""
        parts = [str(self.device)]
        if self.is_cuda:
            parts[0] += f" ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "mps":
            parts[0] += " (Apple GPU)"
        parts.append(f"{_dtype_name(self.amp_dtype)} autocast" if self.amp_dtype else "fp32")
        if self.channels_last:
            parts.append("channels_last")
        return ", ".join(parts)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes; a no-op without AMP."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 autocast (bf16 and fp32 need none).

        fp16 gradients underflow without scaling on any device, so the scaler is on for fp16
        on MPS too: torch's ``GradScaler`` supports ``"mps"`` (its ``unscale_`` special-cases
        MPS, which has no float64, and the unscale/update kernels exist for MPS since torch 2.3).
        """
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def to_device(self, value: Any) -> Any:
        """Move a tensor (or a tuple/list of tensors) to the device, non-blocking from pinned memory."""
        if isinstance(value, torch.Tensor):
            moved = value.to(self.device, non_blocking=self.is_cuda)
            if self.channels_last and moved.dim() == 4:
                moved = moved.contiguous(memory_format=torch.channels_last)
            return moved
        if isinstance(value, (tuple, list)):
            return type(value)(self.to_device(item) for item in value)
        return value

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to the device, in channels_last where planned."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def choose_device(requested: str, *, cuda_available: bool, mps_available: bool) -> tuple[str, str]:
    """The device kind for ``requested`` given what the machine has, and why, in plain language.

    ``auto`` takes CUDA, then Apple MPS, then the CPU; a named device must be present.

    Args:
        requested: the config's ``device``: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        cuda_available: a CUDA GPU is visible to PyTorch.
        mps_available: an Apple MPS device is usable.

    Returns:
        ``(kind, reason)``: kind is ``cpu``, ``cuda`` or ``mps``; reason starts with the
        kind's name, e.g. ``("cpu", "CPU: no CUDA or MPS device found")``.

    Raises:
        ConfigError: an unknown device, or a named one this machine lacks (the message lists
            what is available).
    """
    present = {"cuda": cuda_available, "mps": mps_available}
    if requested not in DEVICES:
        raise ConfigError(f"device: must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "auto":
        if cuda_available:
            return "cuda", "CUDA: a CUDA GPU is visible, and auto prefers it"
        if mps_available:
            return "mps", "MPS: no CUDA GPU, but an Apple GPU (MPS) is usable"
        return "cpu", "CPU: no CUDA or MPS device found"
    if requested == "cpu":
        unused = [_NAMES[kind] for kind, here in present.items() if here]
        also = f" (this machine also has {' and '.join(unused)})" if unused else ""
        return "cpu", f"CPU: requested with device: cpu{also}"
    if not present[requested]:
        available = ", ".join(["cpu", *(kind for kind, here in present.items() if here)])
        raise ConfigError(f"device: {requested!r} was requested but this machine has {_MISSING[requested]};"
                          f" available: {available}")
    return requested, f"{_NAMES[requested]}: requested with device: {requested}"


def mps_available() -> bool:
    """Whether an Apple MPS device is usable (False on builds without MPS)."""
    return torch.backends.mps.is_available()


def plan_device(requested: str = "auto", *, amp: bool = True, images: bool = True) -> DevicePlan:
    """Choose the device and precision for a run on this machine.

    Args:
        requested: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda`` or ``mps``.
        amp: allow mixed precision (CUDA and MPS; the CPU always trains in fp32).
        images: batches are 4-D images, so channels_last may help (False for feature vectors).

    Raises:
        ConfigError: a device was named that this machine lacks (see ``choose_device``).
    """
    kind, reason = choose_device(requested, cuda_available=torch.cuda.is_available(), mps_available=mps_available())
    # channels_last also speeds up convolutions on CPU (1.6x for EfficientNet-Lite0 here).
    if kind == "cpu":
        return DevicePlan(torch.device("cpu"), channels_last=images, reason=reason)
    # The reason adds the precision only where it is not the usual one; describe() names both.
    amp_dtype, precision = None, "fp32 (amp: false)"
    if kind == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        if amp and torch.cuda.is_bf16_supported():
            amp_dtype, precision = torch.bfloat16, ""
        elif amp:
            amp_dtype, precision = torch.float16, "fp16 with loss scaling (this GPU has no bf16)"
    else:
        device = torch.device("mps")
        # fp16, not bf16: every Apple GPU computes fp16 natively, whereas bf16 needs macOS 14
        # and is emulated on M1. torch's generic autocast path accepts either dtype on MPS.
        if amp and torch.amp.is_autocast_available("mps"):
            amp_dtype, precision = torch.float16, ""
        elif amp:
            precision = "fp32 (this PyTorch has no MPS autocast)"
    reason += f"; {precision}" if precision else ""
    return DevicePlan(device, amp_dtype=amp_dtype, channels_last=images, reason=reason)


def uses_cuda(requested: str = "auto") -> bool:
    """Whether ``plan_device(requested)`` puts the run on a CUDA GPU (distributed runs pick NCCL then).

    Raises:
        ConfigError: a device was named that this machine lacks (see ``choose_device``).
    """
    kind, _reason = choose_device(requested, cuda_available=torch.cuda.is_available(), mps_available=mps_available())
    return kind == "cuda"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).removeprefix("torch."))

"""Where tensors live and in what precision: CUDA with AMP when present, plain CPU otherwise.

On CUDA: bf16 autocast where the GPU supports it (no loss scaling needed), else
fp16 with a gradient scaler; channels_last memory format for image batches;
pinned host memory and non-blocking copies. On CPU every one of these is off. In a
distributed run each process has made its own GPU current (``engine.training.distributed``), and
the plan follows it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from engine.core.errors import ConfigError


@dataclass(frozen=True)
class DevicePlan:
    """How one run uses its device.

    Attributes:
        device: where the model and batches live.
        amp_dtype: autocast dtype (bfloat16 or float16), or None for full precision.
        channels_last: store 4-D image batches and the model in NHWC.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

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
        parts.append(f"{str(self.amp_dtype).removeprefix('torch.')} autocast" if self.amp_dtype else "fp32")
        if self.channels_last:
            parts.append("channels_last")
        return ", ".join(parts)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes; a no-op without AMP."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (bf16 and fp32 need none)."""
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


def plan_device(requested: str = "auto", *, amp: bool = True, images: bool = True) -> DevicePlan:
    """Choose the device and precision for a run.

    Args:
        requested: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: allow mixed precision (CUDA only).
        images: batches are 4-D images, so channels_last may help (False for feature vectors).

    Raises:
        ConfigError: ``cuda`` was asked for and no GPU is visible.
    """
    if not uses_cuda(requested):
        # channels_last also speeds up convolutions on CPU (1.6x for EfficientNet-Lite0 here).
        return DevicePlan(torch.device("cpu"), channels_last=images)
    device = torch.device("cuda", torch.cuda.current_device())
    amp_dtype = None
    if amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return DevicePlan(device, amp_dtype=amp_dtype, channels_last=images)


def uses_cuda(requested: str = "auto") -> bool:
    """Whether ``plan_device(requested)`` puts the run on a CUDA GPU (distributed runs pick NCCL then).

    Raises:
        ConfigError: ``cuda`` was asked for and no GPU is visible.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but no CUDA GPU is visible to PyTorch; use auto or cpu")
    return requested == "cuda" or (requested == "auto" and torch.cuda.is_available())

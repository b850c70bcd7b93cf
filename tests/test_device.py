"""Device choice: the rule over every request and machine, and the real plan of this machine.

``choose_device`` is a pure function of what was asked and what is present, so every
combination is checked without pretending to have hardware; the CPU plan (and, on a
machine that has one, the GPU plan) is then built for real.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from demo_photos import copy_demo
from torch import nn

from engine.core.config import DEVICES
from engine.core.device import DevicePlan, choose_device, mps_available, plan_device, uses_cuda
from engine.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MACHINES = list(itertools.product((False, True), repeat=2))  # (cuda_available, mps_available)


@pytest.mark.parametrize(("cuda", "mps"), MACHINES)
def test_auto_takes_cuda_then_mps_then_cpu(cuda: bool, mps: bool) -> None:
    kind, reason = choose_device("auto", cuda_available=cuda, mps_available=mps)
    assert kind == ("cuda" if cuda else "mps" if mps else "cpu")
    assert reason.startswith(f"{kind.upper()}: ")
    if kind == "cpu":
        assert reason == "CPU: no CUDA or MPS device found"


@pytest.mark.parametrize(("cuda", "mps"), MACHINES)
def test_cpu_is_always_granted_and_names_the_devices_left_unused(cuda: bool, mps: bool) -> None:
    kind, reason = choose_device("cpu", cuda_available=cuda, mps_available=mps)
    assert kind == "cpu" and reason.startswith("CPU: requested with device: cpu")
    assert ("CUDA" in reason) == cuda and ("MPS" in reason) == mps


@pytest.mark.parametrize("requested", ["cuda", "mps"])
@pytest.mark.parametrize(("cuda", "mps"), MACHINES)
def test_a_named_accelerator_is_granted_only_where_present(requested: str, cuda: bool, mps: bool) -> None:
    present = {"cuda": cuda, "mps": mps}
    if present[requested]:
        assert choose_device(requested, cuda_available=cuda, mps_available=mps) == (
            requested, f"{requested.upper()}: requested with device: {requested}")
        return
    with pytest.raises(ConfigError) as refused:
        choose_device(requested, cuda_available=cuda, mps_available=mps)
    available = ", ".join(["cpu"] + [kind for kind in ("cuda", "mps") if present[kind]])
    assert str(refused.value).startswith(f"device: '{requested}' was requested but this machine has no ")
    assert str(refused.value).endswith(f"; available: {available}")


def test_every_config_choice_has_a_rule_and_others_are_refused() -> None:
    for requested in DEVICES:
        choose_device(requested, cuda_available=True, mps_available=True)
    with pytest.raises(ConfigError, match="device: must be one of auto, cpu, cuda, mps, got 'tpu'"):
        choose_device("tpu", cuda_available=True, mps_available=True)


def test_the_mps_message_reads_as_asked() -> None:
    with pytest.raises(ConfigError) as refused:
        choose_device("mps", cuda_available=True, mps_available=False)
    assert str(refused.value) == ("device: 'mps' was requested but this machine has no Apple MPS device;"
                                  " available: cpu, cuda")


def test_the_cpu_plan_is_fp32_unpinned_with_channels_last_and_trains() -> None:
    plan = plan_device("cpu", amp=True)
    assert plan.device == torch.device("cpu") and plan.amp_dtype is None and plan.channels_last
    assert not plan.is_cuda and not plan.pin_memory and not plan.grad_scaler().is_enabled()
    assert plan.reason.startswith("CPU: requested with device: cpu")
    assert plan.describe() == "cpu, fp32, channels_last"
    assert not plan_device("cpu", images=False).channels_last

    torch.manual_seed(0)
    model = plan.prepare_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)))
    images = plan.to_device(torch.randn(2, 3, 8, 8))
    assert images.is_contiguous(memory_format=torch.channels_last)
    with plan.autocast():
        loss = model(images).logsumexp(1).mean()
    loss.backward()
    assert loss.dtype == torch.float32 and all(p.grad is not None for p in model.parameters())


def test_auto_on_this_machine_follows_the_rule() -> None:
    plan = plan_device("auto")
    kind, reason = choose_device("auto", cuda_available=torch.cuda.is_available(), mps_available=mps_available())
    assert plan.device.type == kind and plan.reason.startswith(reason)
    assert uses_cuda("auto") == (kind == "cuda") and not uses_cuda("cpu")


def test_precision_rules_of_accelerator_plans() -> None:
    """The scaler, pinning and autocast dtype follow the device type alone (plans built directly)."""
    mps_fp16 = DevicePlan(torch.device("mps"), amp_dtype=torch.float16)
    assert mps_fp16.grad_scaler().is_enabled()  # fp16 gradients need scaling on MPS as on CUDA
    assert not mps_fp16.pin_memory and not mps_fp16.is_cuda
    assert not DevicePlan(torch.device("mps"), amp_dtype=torch.bfloat16).grad_scaler().is_enabled()
    assert DevicePlan(torch.device("cuda", 0)).pin_memory  # (a CUDA scaler is checked on a GPU, below)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cuda_plan_names_the_gpu_and_its_precision() -> None:
    plan = plan_device("cuda")
    assert plan.is_cuda and plan.pin_memory and plan.amp_dtype in (torch.bfloat16, torch.float16)
    assert plan.reason.startswith("CUDA: requested with device: cuda")
    assert torch.cuda.get_device_name(plan.device) in plan.describe()
    assert plan_device("cuda", amp=False).reason == "CUDA: requested with device: cuda; fp32 (amp: false)"
    assert plan.grad_scaler().is_enabled() == (plan.amp_dtype == torch.float16)


@pytest.mark.skipif(not mps_available(), reason="needs an Apple MPS device")
def test_the_mps_plan_uses_fp16_autocast_with_a_scaler() -> None:
    plan = plan_device("mps")
    assert plan.device.type == "mps" and plan.amp_dtype == torch.float16 and plan.grad_scaler().is_enabled()
    assert plan.reason.startswith("MPS: requested with device: mps") and not plan.pin_memory


@pytest.mark.skipif(mps_available(), reason="this machine has an MPS device")
def test_the_cli_refuses_a_missing_device_in_one_line(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", ("bag", "sneaker"), 4)
    result = subprocess.run([sys.executable, "main.py", "train", str(data), "--device", "mps"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "device: 'mps' was requested but this machine has no Apple MPS device" in lines[0]
    assert not (data / ".transfer-studio" / "runs").exists()  # refused before a run folder was made

"""The device's speed, measured once the baseline has run: what the plan's time estimates are made of.

Two sources: a short probe that times fine-tuning steps and forward passes of the backbone at
its input size on this device (random pixels: the time does not depend on them), and the
baseline run's own record of how long decoding, start-up and feature extraction took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.auto.plan import DEFAULT_DECODE_SECONDS, DeviceSpeed
from engine.core.config import RunConfig
from engine.core.device import DevicePlan, plan_device
from engine.core.errors import ConfigError
from engine.core.events import FeaturesExtracted
from engine.models.backbones import create_model, resolve_data_settings, set_trainable_stages
from engine.training.runfolder import read_events, read_metrics_file

PROBE_SECONDS = 1.0  # time each kind of pass for about this long (after one warm-up pass, at least one pass)
PROBE_MOST_PASSES = 20
PROBE_TRAINABLE_STAGES = 2  # the Recommended fine-tuning recipe's


def measure_speed(
    config: RunConfig, num_classes: int, batch_size: int, baseline_run: Path, baseline_seconds: float,
) -> DeviceSpeed:
    """Time this device on the config's backbone, and read the baseline run's timings.

    Args:
        config: the base config (backbone, input size, device, precision).
        num_classes: classes of the dataset.
        batch_size: images per pass, as fine-tuning will batch them (a pass's fixed cost, large for
            small models and inputs, is then shared as it will be).
        baseline_run: the finished feature-extraction run folder.
        baseline_seconds: its wall time, as Auto measured it.

    Raises:
        BackboneUnavailable: the backbone is unknown.
    """
    loaded = create_model(config.model.backbone, num_classes=num_classes, weights="none")  # times need no weights
    settings = resolve_data_settings(loaded.model, config.data.input_size)
    _, height, width = settings.input_size
    plan = plan_device(config.device, amp=config.amp, images=True)
    model = plan.prepare_model(loaded.model)
    set_trainable_stages(model, PROBE_TRAINABLE_STAGES)
    inputs = plan.to_device(torch.randn(batch_size, 3, height, width))
    targets = plan.to_device(torch.randint(0, num_classes, (batch_size,)))

    def train_pass() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()

    def eval_pass() -> None:
        model.eval()
        with torch.inference_mode(), plan.autocast():
            model(inputs)

    train_seconds = _seconds_per_pass(train_pass, plan) / batch_size
    eval_seconds = _seconds_per_pass(eval_pass, plan) / batch_size
    decode, startup = _baseline_timings(baseline_run, baseline_seconds, eval_seconds)
    return DeviceSpeed(
        device=plan.describe(), input_size=int(width), resizable=_resizable(loaded.model, int(width)),
        train_seconds=train_seconds, eval_seconds=eval_seconds, decode_seconds=decode, startup_seconds=startup,
    )


def _seconds_per_pass(one_pass: Callable[[], None], plan: DevicePlan) -> float:
    """Mean time of one pass after a warm-up pass, over about ``PROBE_SECONDS``."""
    one_pass()  # warm-up: allocations, kernel selection
    _synchronize(plan)
    passes, started = 0, time.perf_counter()
    while passes < PROBE_MOST_PASSES and (passes == 0 or time.perf_counter() - started < PROBE_SECONDS):
        one_pass()
        _synchronize(plan)
        passes += 1
    return (time.perf_counter() - started) / passes


def _synchronize(plan: DevicePlan) -> None:
    if plan.is_cuda:
        torch.cuda.synchronize(plan.device)  # the clock must wait for the queued kernels


def _resizable(model: torch.nn.Module, side: int) -> bool:
    """Whether the backbone accepts another input side (fixed-size models, e.g. most ViTs, do not)."""
    try:
        resolve_data_settings(model, max(32, side // 2))
    except ConfigError:
        return False
    return True


def _baseline_timings(run_dir: Path, wall_seconds: float, eval_seconds: float) -> tuple[float, float]:
    """Seconds per photo to decode, and a run's start-up seconds, from the baseline run's events and metrics.

    Its feature extraction timed decoding plus a forward pass per computed photo; its start-up
    is what remains of its wall time after the features and the epochs.
    """
    features = [event for event in read_events(run_dir) if event["event"] == FeaturesExtracted.event]
    computed = sum(int(event["computed"]) for event in features)
    feature_seconds = sum(float(event["seconds"]) for event in features)
    decode = DEFAULT_DECODE_SECONDS
    if computed:
        decode = max(DEFAULT_DECODE_SECONDS, feature_seconds / computed - eval_seconds)
    epochs = sum(float(row.get("seconds") or 0.0) for row in read_metrics_file(run_dir / "metrics.csv"))
    return decode, max(1.0, wall_seconds - feature_seconds - epochs)

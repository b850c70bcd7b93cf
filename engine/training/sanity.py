"""The sanity check: a model that cannot overfit twenty images will not learn a thousand.

``run_sanity_check`` takes a few training images per class, switches every
regulariser and augmentation off, and trains the run's real model, head and
optimizer on them alone until it has memorised them (100% training accuracy and a
loss near zero) or ``max_steps`` pass. A failure is explained in plain words, with
the likely causes ranked by what the loss did.
"""

from __future__ import annotations

import dataclasses
import math
import random
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from engine.core.config import RunConfig
from engine.core.device import DevicePlan
from engine.core.errors import ConfigError
from engine.core.events import RunCancelled, RunFailed, SanityFinished, SanityProgressed, SanityStarted
from engine.data.health import FileRecord
from engine.training.callback import Callback, CancelFit, LoopState
from engine.training.callbacks import StopWatcher
from engine.training.loop import Loop
from engine.training.losses import create_loss
from engine.training.runfolder import RunFolder
from engine.training.setup import Reporter, build_training, create_optimizer, prepare_run_data, seed_everything

# Everything that makes memorising harder on purpose, switched off. ``augment`` is
# replaced whole, so explicit overrides (a flip chance set with the preset) go too.
SANITY_CHANGES: dict[str, Any] = {
    "augment": {"preset": "none"},
    "model.head_dropout": 0.0,
    "model.drop_path_rate": 0.0,
    "optim.weight_decay": 0.0,
    "optim.label_smoothing": 0.0,
    "optim.schedule": "constant",
    "optim.warmup_epochs": 0.0,
    "optim.ema": False,
    "optim.class_balance": "none",  # the sample is balanced; a sampler drawing with replacement only adds noise
}
LOSS_TARGET_FRACTION = 0.1  # memorised: every image right, and the loss below a tenth of chance's ln(C)
MEMORISED = "memorised"
OUT_OF_STEPS = "out_of_steps"
STOPPED = "stopped"


@dataclass
class SanityResult:
    """How the sanity check went.

    Attributes:
        passed: the sample was memorised (100% accuracy, loss under a tenth of ln(C)).
        train_accuracy: accuracy on the whole sample at the last measurement, 0 to 1.
        steps: optimizer steps taken.
        final_loss: mean loss on the sample at the last measurement.
        message: one or two plain sentences saying what happened.
        likely_causes: for a failure, what to look at, most likely first.
        initial_loss: mean loss on the sample before the first step.
        num_images: images in the sample.
        out_dir: the folder written, if any.
        ended: ``memorised``, ``out_of_steps``, or ``stopped`` (a stop request ended it early).
    """

    passed: bool
    train_accuracy: float
    steps: int
    final_loss: float
    message: str
    likely_causes: list[str] = field(default_factory=list)
    initial_loss: float = math.nan
    num_images: int = 0
    out_dir: Path | None = None
    ended: str = OUT_OF_STEPS


def sanity_config(config: RunConfig) -> RunConfig:
    """``config`` with regularisation and augmentation off and a constant rate (``SANITY_CHANGES``)."""
    return config.with_changes(**SANITY_CHANGES)


def select_sample(records: Sequence[FileRecord], num_images: int, *, seed: int = 0) -> tuple[FileRecord, ...]:
    """A stratified sample: classes take turns, in random order within each, until ``num_images``.

    Every class gets at least one image (so a sample may exceed ``num_images`` when there
    are more classes); the result is sorted by path, as the splits of a ``PreparedDataset``.
    """
    generator = random.Random(seed)
    by_class: dict[str, list[FileRecord]] = {}
    for record in sorted(records, key=lambda item: str(item.path)):
        by_class.setdefault(record.label, []).append(record)
    queues = []
    for label in sorted(by_class):
        members = by_class[label]
        generator.shuffle(members)
        queues.append(members)
    wanted = max(num_images, len(queues))
    chosen: list[FileRecord] = []
    while len(chosen) < wanted and any(queues):
        for queue in queues:
            if queue and len(chosen) < wanted:
                chosen.append(queue.pop())
    return tuple(sorted(chosen, key=lambda item: str(item.path)))


class MemorisationMonitor(Callback):
    """Measures accuracy and loss on the whole sample, in eval mode, every few steps; stops when memorised.

    Raises ``CancelFit("memorised")`` once every image is right and the loss is at most
    ``target_loss``; ``CancelFit("out_of_steps")`` after ``max_steps`` steps or on a
    loss that is not finite.

    Args:
        batches: the sample as ``(inputs, targets)`` batches, with evaluation transforms.
        device_plan: device and precision of the loop.
        max_steps: optimizer steps before giving up.
        target_loss: the mean loss that counts as memorised.
        every_steps: steps between measurements.
        report: receives ``sanity_progressed`` events.
    """

    order = 20

    def __init__(
        self,
        batches: Iterable[tuple[Any, torch.Tensor]],
        device_plan: DevicePlan,
        *,
        max_steps: int,
        target_loss: float,
        every_steps: int = 5,
        report: Reporter | None = None,
    ) -> None:
        self.batches = batches
        self.device_plan = device_plan
        self.max_steps = max_steps
        self.target_loss = target_loss
        self.every_steps = max(1, every_steps)
        self.report = report
        self.initial: tuple[float, float] = (math.nan, 0.0)
        self.latest: tuple[float, float] = (math.nan, 0.0)

    def before_fit(self, state: LoopState) -> None:
        self.initial = self.latest = self.measure(state.model)
        self._record(0)

    def after_step(self, state: LoopState) -> None:
        if state.step % self.every_steps and state.step < self.max_steps:
            return
        self.latest = self.measure(state.model)
        self._record(state.step)
        loss, accuracy = self.latest
        if accuracy == 1.0 and loss <= self.target_loss:
            raise CancelFit(MEMORISED)
        if state.step >= self.max_steps or not math.isfinite(loss):
            raise CancelFit(OUT_OF_STEPS)

    def measure(self, model: nn.Module) -> tuple[float, float]:
        """Mean loss and accuracy of ``model`` on the sample, in eval mode (modes restored after)."""
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        try:
            with torch.inference_mode(), self.device_plan.autocast():
                for inputs, targets in self.batches:
                    targets = self.device_plan.to_device(targets)
                    logits = model(self.device_plan.to_device(inputs)).float()
                    total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
                    correct += int((logits.argmax(dim=1) == targets).sum())
                    count += len(targets)
        finally:
            for module, training in modes:
                module.training = training
        return total_loss / max(count, 1), correct / max(count, 1)

    def _record(self, step: int) -> None:
        loss, accuracy = self.latest
        if self.report is not None:
            self.report(SanityProgressed.event, step=step, train_accuracy=accuracy,
                        loss=loss if math.isfinite(loss) else None)


def run_sanity_check(
    config: RunConfig,
    *,
    num_images: int = 20,
    max_steps: int = 300,
    out_dir: str | Path | None = None,
    echo: TextIO | None = None,
) -> SanityResult:
    """Try to memorise a small stratified sample of the training split, with nothing in the way.

    Uses the run's real model, head, batches and optimizer (``engine.training.setup``), with the
    changes of ``sanity_config``. Success: 100% accuracy on the sample and a loss below
    a tenth of ln(C), measured in eval mode.

    Args:
        config: the run's settings; ``config.data.path`` names the dataset.
        num_images: size of the sample (at least one image per class).
        max_steps: optimizer steps before giving up.
        out_dir: a new folder for ``config.yaml`` (the changed config), ``events.jsonl``
            (``sanity_started``, ``sanity_progressed``, ``sanity_finished``; ``run_failed``
            or ``run_cancelled`` as a training run would) and ``status.json``; None writes nothing.
        echo: also write each event line to this stream (needs ``out_dir``).

    Raises:
        ConfigError, DatasetError, BackboneUnavailable, CheckpointError: bad input; with
            ``out_dir``, recorded there as ``run_failed`` first.
    """
    if not config.data.path:
        raise ConfigError("data.path: must name a dataset folder or CSV, got ''")
    if num_images < 1:
        raise ConfigError(f"num_images: must be >= 1, got {num_images}")
    if max_steps < 1:
        raise ConfigError(f"max_steps: must be >= 1, got {max_steps}")
    checked = sanity_config(config)
    if out_dir is None:
        return _check(checked, num_images, max_steps, report=None, callbacks=())
    folder = RunFolder.create(out_dir, checked)
    folder.echo = echo
    stop_watcher = StopWatcher(folder)
    try:
        with stop_watcher.installed():
            result = _check(checked, num_images, max_steps, report=folder.write_event, callbacks=[stop_watcher],
                            check_stop=stop_watcher.check)
    except CancelFit as cancel:  # a stop before training began (during feature extraction)
        folder.write_event(RunCancelled.event, reason=cancel.reason, message=cancel.message)
        folder.write_status("cancelled", reason=cancel.reason)
        return SanityResult(False, 0.0, 0, math.nan, "stopped before the check began", out_dir=folder.path,
                            ended=STOPPED)
    except Exception as error:
        # As in engine.training.train: the one place the command records its own failure.
        folder.write_event(
            RunFailed.event, error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
        )
        folder.write_status("failed", error=str(error))
        raise
    result.out_dir = folder.path
    if result.ended == STOPPED:
        folder.write_event(RunCancelled.event, step=result.steps, reason="stopped", message=result.message)
        folder.write_status("cancelled", reason="stopped")
    else:
        folder.write_event(SanityFinished.event, step=result.steps, **_payload(result))
        folder.write_status("finished", passed=result.passed)
    return result


def _check(
    config: RunConfig,
    num_images: int,
    max_steps: int,
    *,
    report: Reporter | None,
    callbacks: Sequence[Callback],
    check_stop: Callable[[], None] | None = None,
) -> SanityResult:
    seed_everything(config.seed)
    dataset = prepare_run_data(config)
    sample = select_sample(dataset.splits["train"], num_images, seed=config.seed)
    # The sample is both what trains and what is measured (with evaluation transforms).
    sample_dataset = dataclasses.replace(dataset, splits={"train": sample, "val": sample, "test": ()})
    setup = build_training(config, sample_dataset, report=report, check_stop=check_stop)
    num_classes = len(dataset.classes)
    target_loss = LOSS_TARGET_FRACTION * math.log(num_classes)
    if report is not None:
        counts = {label: sum(record.label == label for record in sample) for label in dataset.classes}
        report(SanityStarted.event, num_images=len(sample), per_class=counts, max_steps=max_steps,
               target_loss=target_loss, learning_rate=config.optim.learning_rate, backbone=config.model.backbone,
               mode=config.model.mode, device=setup.plan.describe(), changes=SANITY_CHANGES)
    monitor = MemorisationMonitor(
        setup.val_batches, setup.plan, max_steps=max_steps, target_loss=target_loss, report=report,
    )
    loss_function = create_loss(config, setup.train_targets, num_classes).to(setup.plan.device)
    loop = Loop(
        model=setup.loop_model, optimizer=create_optimizer(setup, config), loss_function=loss_function,
        train_batches=setup.train_batches, val_batches=None, device_plan=setup.plan,
        callbacks=[*callbacks, monitor],
    )
    state = loop.fit(math.ceil(max_steps / max(1, len(setup.train_batches))))
    return _verdict(state, monitor, len(sample), num_classes, max_steps, config.optim.learning_rate)


def _verdict(
    state: LoopState, monitor: MemorisationMonitor, num_images: int, num_classes: int, max_steps: int,
    learning_rate: float,
) -> SanityResult:
    initial_loss = monitor.initial[0]
    loss, accuracy = monitor.latest
    if state.cancel_reason not in (MEMORISED, OUT_OF_STEPS):
        message = f"stopped after {state.step} steps, before the check could finish"
        return SanityResult(False, accuracy, state.step, loss, message, initial_loss=initial_loss,
                            num_images=num_images, ended=STOPPED)
    if state.cancel_reason == MEMORISED:
        message = (
            f"passed: memorised all {num_images} images in {state.step} steps (100% training accuracy, "
            f"loss {initial_loss:.4g} -> {loss:.4g}); the model, the labels and the optimizer can learn"
        )
        return SanityResult(True, accuracy, state.step, loss, message, initial_loss=initial_loss,
                            num_images=num_images, ended=MEMORISED)
    message = (
        f"failed: could not memorise {num_images} images in {state.step} steps, with augmentation and "
        f"regularisation off (training accuracy {accuracy:.0%}, loss {initial_loss:.4g} -> {loss:.4g}; "
        f"the target was 100% and a loss under {LOSS_TARGET_FRACTION * math.log(num_classes):.3g}). "
        "A model that cannot overfit a handful of images will not learn the whole dataset: fix this first."
    )
    if accuracy == 1.0:
        message += (
            " Every image already ranks its own class first, but without confidence: accuracy cannot tell barely"
            " trained weights from trained ones, the loss can."
        )
    causes = likely_causes(initial_loss, loss, accuracy, learning_rate=learning_rate, max_steps=max_steps)
    return SanityResult(False, accuracy, state.step, loss, message, causes, initial_loss=initial_loss,
                        num_images=num_images)


def likely_causes(
    initial_loss: float, final_loss: float, accuracy: float, *, learning_rate: float, max_steps: int
) -> list[str]:
    """What usually stops a model memorising a small sample, most likely first given what the loss did."""
    too_high = (
        f"learning rate too high ({learning_rate:g}): the loss rose or blew up; try 10x lower, or run lr-find"
    )
    too_low = (
        f"learning rate too low ({learning_rate:g}): the loss barely moved; try 10x to 1000x higher, or run lr-find"
    )
    labels = "labels wrong or inconsistent: identical or near-identical images filed under different classes"
    head = ("a bug in the head or the optimizer: the new layer is not trained (its parameters are missing from "
            "the optimizer, or frozen)")
    small = ("model too small, or frozen features that cannot tell these images apart: try model.mode fine_tune, "
             "a larger backbone or an mlp head")
    steps = f"too few steps: the loss was still falling; raise max_steps above {max_steps}"
    if not math.isfinite(final_loss) or final_loss > initial_loss * 1.05:
        return [too_high, labels, head]
    if final_loss > initial_loss * 0.9:
        return [too_low, head, labels]
    if accuracy == 1.0:
        return [steps, too_low, labels]
    return [labels, small, too_high, steps]


def _payload(result: SanityResult) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {
        "passed": result.passed, "train_accuracy": result.train_accuracy, "steps": result.steps,
        "final_loss": number(result.final_loss), "initial_loss": number(result.initial_loss),
        "num_images": result.num_images, "message": result.message, "likely_causes": result.likely_causes,
    }

"""What the training loop hands its callbacks: ``Callback``, the ``LoopState`` they read, the
``StepLoss`` readings of the training loss, and the ``Cancel*`` exceptions they raise to stop work.

Kept free of torch so that the doctor's checks (callbacks) register, and a config naming
them is checked, before any model code loads; ``engine.training.loop`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

# The key of ``LoopState.scratch`` where the metrics callback publishes a finished epoch's row.
EPOCH_METRICS = "epoch_metrics"


class CancelBatch(Exception):  # noqa: N818 (control flow, not an error)
    """Skip the rest of the current batch."""


class CancelEpoch(Exception):  # noqa: N818
    """Skip the rest of the current epoch's training or validation."""


class CancelFit(Exception):  # noqa: N818
    """End the fit; ``reason`` says why (``stopped``, ``diverged``, ``early_stop``...)."""

    def __init__(self, reason: str = "stopped", message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class StepLoss:
    """One optimizer step's training loss, read back from the device at a sync point.

    Attributes:
        step: the optimizer step it belongs to (``LoopState.step`` after that step).
        epoch: the epoch of that step.
        batch_index: the index, within its epoch, of the step's last batch.
        loss: the mean loss over the step's images (of every accumulated batch).
        learning_rate: the rate of the first parameter group during that step.
    """

    step: int
    epoch: int
    batch_index: int
    loss: float
    learning_rate: float


@dataclass
class LoopState:
    """What callbacks may read (and a few things they may set) while the loop runs.

    Attributes:
        model: the module being optimised (the head alone in feature extraction); the loop
            runs whatever is here, so a callback may put a wrapper of the same parameters in
            its place for the fit (distributed training does).
        optimizer: its optimizer.
        num_epochs: epochs the fit will run to.
        epoch: current epoch, counted from 1.
        step: optimizer steps taken since the run began.
        batch_index: index of the batch within the current pass.
        batches_per_epoch: training batches per epoch.
        steps_per_epoch: optimizer steps per epoch (fewer than batches with gradient accumulation).
        epoch_step: optimizer steps taken in the current epoch.
        accumulate_steps: batches whose gradients add up before each optimizer step.
        training: True in the training pass, False in validation.
        inputs, targets, outputs, loss: the current batch (``loss`` stays on the device: reading it
            is a host sync, which the loop does every ``sync_every`` steps, not the callbacks).
        losses: the training losses of the steps since the previous sync point, read back at the
            latest one (``Callback.after_sync``).
        batch_size: images in the current loaded batch.
        micro_batch_size: images per forward pass, when the loop splits batches after running
            out of memory (None: whole batches).
        previous_micro_batch_size: what it was before the latest split.
        cancel_reason: why the fit ended early, if it did.
        scratch: per-callback scratch space keyed by callback name, for sharing results.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    num_epochs: int
    batches_per_epoch: int
    steps_per_epoch: int = 0
    accumulate_steps: int = 1
    start_epoch: int = 1
    epoch: int = 0
    step: int = 0
    epoch_step: int = 0
    batch_index: int = 0
    training: bool = True
    inputs: Any = None
    targets: torch.Tensor | None = None
    outputs: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    losses: list[StepLoss] = field(default_factory=list)
    batch_size: int = 0
    micro_batch_size: int | None = None
    previous_micro_batch_size: int | None = None
    cancel_reason: str | None = None
    cancel_message: str = ""
    scratch: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Base of every loop feature; override only the hooks you need.

    ``order`` sorts callbacks: lower runs first in every hook.

    The per-step hooks (``after_loss``, ``before_step``, ``after_step``) must not read a tensor's
    value on the host (``float(loss)``, ``.item()``, ``.cpu()``...): on a GPU that waits for every
    queued kernel, once per step. Values that callbacks judge arrive in ``after_sync``, every
    ``Loop.sync_every`` steps and at the end of each training pass, in ``state.losses``; device
    values of a callback's own are best read there too.
    """

    order: int = 0

    def before_fit(self, state: LoopState) -> None: ...
    def after_fit(self, state: LoopState) -> None: ...
    def before_epoch(self, state: LoopState) -> None: ...
    def after_epoch(self, state: LoopState) -> None: ...
    def before_train(self, state: LoopState) -> None: ...
    def after_train(self, state: LoopState) -> None: ...
    def before_validate(self, state: LoopState) -> None: ...
    def after_validate(self, state: LoopState) -> None: ...
    def before_batch(self, state: LoopState) -> None: ...
    def after_batch(self, state: LoopState) -> None: ...
    def after_loss(self, state: LoopState) -> None: ...
    def before_step(self, state: LoopState) -> None: ...
    def after_step(self, state: LoopState) -> None: ...
    def after_sync(self, state: LoopState) -> None: ...
    def after_batch_size_changed(self, state: LoopState) -> None: ...
    def after_cancel_fit(self, state: LoopState) -> None: ...

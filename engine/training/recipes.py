"""Training-recipe callbacks: mixed batches, EMA weights, early stopping, gradual unfreezing.

Each is one setting of the config turned into a loop feature; none edits the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import nn

from augment.mixing import mix_batch
from engine.core.config import RunConfig
from engine.core.device import DevicePlan
from engine.core.events import CheckpointSaved, StagesUnfrozen
from engine.models.checkpoint import save_checkpoint
from engine.training.callback import EPOCH_METRICS, Callback, CancelFit, LoopState
from engine.training.optimizer import refill_parameter_groups
from engine.training.runfolder import RunFolder
from engine.training.setup import apply_trainable_stages


class MixBatches(Callback):
    """Mixup / CutMix: replaces each training batch by mixed inputs with soft targets (timm's Mixup).

    Args:
        mixup: from ``augment.create_mixup``; its targets carry the label smoothing.
    """

    order = -30  # before anything looks at the batch

    def __init__(self, mixup: Mixup) -> None:
        self.mixup = mixup

    def before_batch(self, state: LoopState) -> None:
        if state.training and state.targets is not None and len(state.targets) > 1:
            state.inputs, state.targets = mix_batch(self.mixup, state.inputs, state.targets)


class EmaWeights(Callback):
    """Polyak averaging: an exponential moving average of the weights, evaluated and saved every epoch.

    The averaged copy (timm's ``ModelEmaV3``) is validated after each epoch beside the
    raw weights (``ema_val_loss``, ``ema_val_top1`` in the epoch's metrics) and saved as
    the ``ema`` checkpoint of the whole network. Each fit starts its own average from the
    weights it begins with (a ``two_stage`` run's fine-tuning from the head stage's last
    weights); within a fit the average goes on when gradual unfreezing changes the model.

    Args:
        loop_model: the module the loop trains.
        export_model: the whole network (contains ``loop_model``'s parameters).
        val_batches: validation batches.
        plan: device and precision.
        loss_function: the validation loss.
        decay: share of the average kept per step.
        run_folder: where the ``ema`` checkpoint goes.
        metadata: facts every checkpoint carries.
    """

    order = 15  # after the metrics row exists, before checkpoints and events read it

    def __init__(
        self,
        *,
        loop_model: nn.Module,
        export_model: nn.Module,
        val_batches: Iterable[tuple[Any, torch.Tensor]] | None,
        plan: DevicePlan,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        decay: float,
        run_folder: RunFolder,
        metadata: dict[str, Any],
    ) -> None:
        self.loop_model = loop_model
        self.export_model = export_model
        self.val_batches = val_batches
        self.plan = plan
        self.loss_function = loss_function
        self.decay = decay
        self.run_folder = run_folder
        self.metadata = metadata
        self.ema: ModelEmaV3 | None = None

    def before_fit(self, state: LoopState) -> None:
        self.ema = ModelEmaV3(self.loop_model, decay=self.decay)

    def before_train(self, state: LoopState) -> None:
        # Gradual unfreezing (before the epoch) turns a stage's frozen BatchNorms back into BatchNorms,
        # whose state has one more buffer; timm's average pairs its tensors with the model's by position,
        # so it must take the model's new layout first.
        assert self.ema is not None
        if _layout(self.ema.module) != _layout(self.loop_model):
            self.ema = self._rebound(self.ema)

    def after_step(self, state: LoopState) -> None:
        assert self.ema is not None
        self.ema.update(self.loop_model, step=state.step)

    def after_epoch(self, state: LoopState) -> None:
        assert self.ema is not None
        row = state.scratch.setdefault(EPOCH_METRICS, {"epoch": state.epoch})
        if self.val_batches is not None:
            row["ema_val_loss"], row["ema_val_top1"] = self._validate(self.ema.module, self.val_batches)
        raw = {key: value.detach().clone() for key, value in self.loop_model.state_dict().items()}
        self.loop_model.load_state_dict(self.ema.module.state_dict())
        try:
            path = save_checkpoint(
                self.run_folder.checkpoint_path("ema"), model_state=self.export_model.state_dict(),
                metadata={**self.metadata, "name": "ema", "epoch": state.epoch, "step": state.step,
                          "metrics": {"val_loss": row.get("ema_val_loss"), "val_top1": row.get("ema_val_top1")}},
            )
        finally:
            self.loop_model.load_state_dict(raw)
        self.run_folder.write_event(CheckpointSaved.event, epoch=state.epoch, step=state.step, name="ema", path=path,
                                    metric="val_top1", value=row.get("ema_val_top1"))

    def _rebound(self, ema: ModelEmaV3) -> ModelEmaV3:
        """A new average of the model as it is now, holding the old one's values wherever the names match.

        Nothing is lost: a tensor that the old average has under the same name and shape keeps its
        averaged value, and the others start from the model's, which is what the old average would
        hold too (the layers that change are those that were frozen, whose values never moved).
        """
        averaged = ema.module.state_dict()
        rebound = ModelEmaV3(self.loop_model, decay=self.decay)
        with torch.no_grad():
            for name, value in rebound.module.state_dict().items():
                kept = averaged.get(name)
                if kept is not None and kept.shape == value.shape:
                    value.copy_(kept)
        return rebound

    def _validate(
        self, average: nn.Module, val_batches: Iterable[tuple[Any, torch.Tensor]]
    ) -> tuple[float | None, float | None]:
        model = average.eval()
        loss_sum, correct, count = 0.0, 0, 0
        with torch.inference_mode(), self.plan.autocast():
            for inputs, targets in val_batches:
                if len(targets) == 0:
                    continue
                inputs, targets = self.plan.to_device(inputs), self.plan.to_device(targets)
                logits = model(inputs)
                loss_sum += float(self.loss_function(logits, targets)) * len(targets)
                correct += int((logits.argmax(dim=1) == targets).sum())
                count += len(targets)
        return (loss_sum / count, correct / count) if count else (None, None)


def _layout(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The names and shapes of a module's state, in order."""
    return [(name, tuple(value.shape)) for name, value in module.state_dict().items()]


class EarlyStopping(Callback):
    """Ends the run when the monitored validation metric has not improved for ``patience`` epochs.

    The decision is taken after an epoch and acted on before the next one, so the last
    epoch is complete and checkpointed; the run ends with reason ``early_stop``.

    Args:
        monitor: ``val_top1`` (higher is better) or ``val_loss`` (lower is better).
        patience: epochs without improvement before stopping.
        history: metrics rows of earlier epochs (when resuming, or of an earlier stage).
        counting_from: the first epoch of this stage: earlier epochs (a two-stage run's head alone) set the
            best score to beat but use up none of the patience, which is for the epochs that train here.
    """

    order = 60

    def __init__(self, monitor: str, patience: int, history: list[dict[str, Any]] | None = None,
                 counting_from: int = 1) -> None:
        self.monitor = monitor
        self.patience = patience
        self.best: float | None = None
        self.best_score: float | None = None  # higher is better, whatever the metric
        self.best_epoch = 0
        self.waited = 0
        for row in history or []:
            self._observe(row)
            if int(row.get("epoch") or 0) < counting_from:
                self.waited = 0

    def after_epoch(self, state: LoopState) -> None:
        self._observe(state.scratch.get(EPOCH_METRICS, {}))

    def before_epoch(self, state: LoopState) -> None:
        if self.waited >= self.patience:
            raise CancelFit(
                "early_stop",
                f"{self.monitor} has not improved for {self.waited} epochs"
                f" (best {self.best:.4g} at epoch {self.best_epoch})",
            )

    def _observe(self, row: dict[str, Any]) -> None:
        value = row.get(self.monitor)
        if value is None:
            return
        score = -value if self.monitor == "val_loss" else value
        if self.best_score is None or score > self.best_score:
            self.best, self.best_score, self.best_epoch, self.waited = value, score, int(row["epoch"]), 0
        else:
            self.waited += 1


def trainable_stages_at(config: RunConfig, epoch: int, first_epoch: int = 1) -> int:
    """Stages that train in ``epoch`` under gradual unfreezing (one more every ``unfreeze_every`` epochs)."""
    base = config.model.trainable_stages
    if base == -1 or config.model.unfreeze_every == 0:
        return base
    return base + (epoch - first_epoch) // config.model.unfreeze_every


class GradualUnfreezing(Callback):
    """Lets one more backbone stage train every ``model.unfreeze_every`` epochs (ULMFiT's recipe).

    Args:
        model: the whole network.
        config: the run's settings.
        first_epoch: the epoch at which fine-tuning began (later in ``two_stage`` runs).
        report: receives a ``stages_unfrozen`` event when the count changes.
    """

    order = -40  # before anything looks at the optimizer in the new epoch

    def __init__(self, model: nn.Module, config: RunConfig, first_epoch: int, report: Callable[..., Any]) -> None:
        self.model = model
        self.config = config
        self.first_epoch = first_epoch
        self.report = report
        self.current: int | None = None

    def before_epoch(self, state: LoopState) -> None:
        wanted = trainable_stages_at(self.config, state.epoch, self.first_epoch)
        if self.current is None:
            self.current = wanted  # the set-up already froze the model for its first epoch
            return
        if wanted == self.current:
            return
        parts = apply_trainable_stages(self.model, wanted, self.config)
        refill_parameter_groups(state.optimizer, state.model, parts, self.config)
        self.current = wanted
        self.report(
            StagesUnfrozen.event, epoch=state.epoch, step=state.step, trainable_stages=wanted,
            trainable_parameters=sum(p.numel() for part in parts.values() for p in part),
        )

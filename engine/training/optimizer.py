"""The optimizer's side of a run: the batch each step averages over with the learning rate it gets
(the linear scaling rule), and the parameter groups (weight decay, layer-wise rates) that
gradual unfreezing refills in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import param_groups_layer_decay
from torch import nn

from engine.core.config import RunConfig
from engine.training.schedules import scaled_learning_rate


@dataclass(frozen=True)
class BatchScale:
    """The batch each optimizer step averages over, and the learning rate the linear scaling rule gives it.

    Attributes:
        batch_size: images per step in each process, ``optim.batch_size``.
        world_size: processes; DDP averages their gradients, so one step sees ``batch_size * world_size`` images.
        learning_rate: ``optim.learning_rate``, as configured.
        reference_batch_size: ``optim.reference_batch_size``, the batch that rate was tuned at (None: no scaling).
        peak_learning_rate: the head's peak rate, ``learning_rate * effective batch / reference_batch_size``.
    """

    batch_size: int
    world_size: int
    learning_rate: float
    reference_batch_size: int | None
    peak_learning_rate: float

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step over all processes."""
        return self.batch_size * self.world_size

    def describe(self) -> str:
        """One line, e.g. ``2 processes x batch 16 = effective batch 32; learning rate 0.001 x 32 / 16 = 0.002 ...``."""
        plural = "es" if self.world_size != 1 else ""
        batch = (f"{self.world_size} process{plural} x batch {self.batch_size} = "
                 f"effective batch {self.effective_batch_size}")
        if self.reference_batch_size is None:
            return (f"{batch}; learning rate {self.learning_rate:g}, not scaled (set optim.reference_batch_size to "
                    "the batch it was tuned at to scale it by the linear rule)")
        return (f"{batch}; learning rate {self.learning_rate:g} x {self.effective_batch_size} / "
                f"{self.reference_batch_size} = {self.peak_learning_rate:.4g} (linear scaling rule)")

    def to_dict(self) -> dict[str, Any]:
        """The fields and the effective batch, for events."""
        return {**dataclasses.asdict(self), "effective_batch_size": self.effective_batch_size}


def batch_scale(config: RunConfig, world_size: int = 1) -> BatchScale:
    """The effective batch of ``world_size`` processes and the head's peak rate at it (``scaled_learning_rate``)."""
    optim = config.optim
    effective = dataclasses.replace(optim, batch_size=optim.batch_size * world_size)
    return BatchScale(optim.batch_size, world_size, optim.learning_rate, optim.reference_batch_size,
                      scaled_learning_rate(effective))


def parameter_groups(
    model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig, *, world_size: int = 1
) -> list[dict]:
    """Optimizer groups: no weight decay on biases and norms (timm's rule); rates by ``lr_scale``.

    Without layer decay there are always four groups, in this order (some may be
    empty): ``head``, ``head_no_decay``, ``backbone``, ``backbone_no_decay``; gradual
    unfreezing refills them in place (``refill_parameter_groups``), so the optimizer
    state and the schedule never change shape. With ``model.layer_decay`` the groups
    are timm's, one per layer. ``world_size`` processes multiply the batch the rate is
    scaled for (``batch_scale``).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module  # gradual unfreezing refills the groups from the loop's model, wrapped
    learning_rate = batch_scale(config, world_size).peak_learning_rate
    if config.model.layer_decay is not None and parts["backbone"]:
        groups = param_groups_layer_decay(model, weight_decay=config.optim.weight_decay,
                                          layer_decay=config.model.layer_decay)
        return [{**group, "lr": learning_rate, "name": f"layer_{index}"} for index, group in enumerate(groups)]
    scales = {"head": 1.0, "backbone": config.model.backbone_lr_scale}
    groups = []
    for part, parameters in parts.items():
        wanted = {id(parameter) for parameter in parameters}
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, parameter in model.named_parameters():
            if id(parameter) in wanted and parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        for suffix, members, weight_decay in (("", decay, config.optim.weight_decay), ("_no_decay", no_decay, 0.0)):
            # timm's schedulers multiply each group's rate by its lr_scale.
            groups.append({"params": members, "lr": learning_rate, "lr_scale": scales[part],
                           "weight_decay": weight_decay, "name": part + suffix})
    return groups


def refill_parameter_groups(
    optimizer: torch.optim.Optimizer, model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig
) -> None:
    """Point the optimizer's groups at newly trainable parameters (gradual unfreezing)."""
    for group, fresh in zip(optimizer.param_groups, parameter_groups(model, parts, config), strict=True):
        group["params"] = fresh["params"]

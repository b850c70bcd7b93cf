"""The optimizer's side of a run: the batch each step averages over with the learning rate it gets
(the linear scaling rule), and the parameter groups (weight decay, layer-wise rates) that
gradual unfreezing refills in place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from timm.models._manipulate import group_with_matcher
from timm.optim import auto_group_layers
from torch import nn

from engine.core.config import RunConfig
from engine.training.schedules import scaled_learning_rate


@dataclass(frozen=True)
class BatchScale:
    """The batch each optimizer step averages over, and the learning rate the linear scaling rule gives it.

    Attributes:
        batch_size: images per forward pass in each process, ``optim.batch_size`` (``auto`` as resolved).
        world_size: processes; DDP averages their gradients, so a step sees the batches of all of them.
        accumulate_steps: ``optim.accumulate_steps``, batches whose gradients add up before each step.
        learning_rate: ``optim.learning_rate``, as configured.
        reference_batch_size: ``optim.reference_batch_size``, the batch that rate was tuned at (None: no scaling).
        peak_learning_rate: the head's peak rate, ``learning_rate * effective batch / reference_batch_size``.
    """

    batch_size: int
    world_size: int
    accumulate_steps: int
    learning_rate: float
    reference_batch_size: int | None
    peak_learning_rate: float

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step over all processes: ``batch_size * accumulate_steps * world_size``."""
        return self.batch_size * self.accumulate_steps * self.world_size

    def describe(self) -> str:
        """One line, e.g. ``2 processes x batch 16 x 4 accumulated = effective batch 128 images per step;
        learning rate 0.001 x 128 / 32 = 0.004 (linear scaling rule)``."""
        plural = "es" if self.world_size != 1 else ""
        accumulated = f" x {self.accumulate_steps} accumulated" if self.accumulate_steps != 1 else ""
        batch = (f"{self.world_size} process{plural} x batch {self.batch_size}{accumulated} = "
                 f"effective batch {self.effective_batch_size} images per step")
        if self.reference_batch_size is None:
            return (f"{batch}; learning rate {self.learning_rate:g}, not scaled (set optim.reference_batch_size to "
                    "the batch it was tuned at to scale it by the linear rule)")
        return (f"{batch}; learning rate {self.learning_rate:g} x {self.effective_batch_size} / "
                f"{self.reference_batch_size} = {self.peak_learning_rate:.4g} (linear scaling rule)")

    def to_dict(self) -> dict[str, Any]:
        """The fields and the effective batch, for events."""
        return {**dataclasses.asdict(self), "effective_batch_size": self.effective_batch_size}


def batch_scale(config: RunConfig, world_size: int = 1) -> BatchScale:
    """The effective batch of ``world_size`` processes and the head's peak rate at it (``scaled_learning_rate``).

    A step averages the gradients of ``optim.accumulate_steps`` batches in each process, so the
    effective batch, and the rate the linear scaling rule gives it, count every one of them.
    ``optim.batch_size: auto`` counts as ``fixed_batch_size()`` (a CUDA run resolves it first).
    """
    optim = config.optim
    batch_size = optim.fixed_batch_size()
    effective = dataclasses.replace(optim, batch_size=batch_size * optim.accumulate_steps * world_size)
    return BatchScale(batch_size, world_size, optim.accumulate_steps, optim.learning_rate,
                      optim.reference_batch_size, scaled_learning_rate(effective))


def parameter_groups(
    model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig, *, world_size: int = 1
) -> list[dict]:
    """Optimizer groups: no weight decay on biases and norms (timm's rule); rates by ``lr_scale``.

    The groups of a model are always the same, in the same order, however many of its
    stages train (some may be empty), so that gradual unfreezing can refill them in place
    (``refill_parameter_groups``) and the optimizer state and the schedule never change
    shape. Without layer decay they are ``head``, ``head_no_decay``, ``backbone``,
    ``backbone_no_decay``. With ``model.layer_decay``, when the model is the whole network
    (not the head alone of feature extraction), they are timm's layer-wise groups
    (``param_groups_layer_decay``): ``layer_<i>`` and ``layer_<i>_no_decay`` for every
    layer i of the network, bottom first, at ``layer_decay ** (top - i)`` of the head's
    rate. ``world_size`` processes multiply the batch the rate is scaled for (``batch_scale``).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module  # gradual unfreezing refills the groups from the loop's model, wrapped
    learning_rate = batch_scale(config, world_size).peak_learning_rate
    head = {id(parameter) for parameter in parts["head"]}
    whole_network = any(id(parameter) not in head for parameter in model.parameters())
    if config.model.layer_decay is not None and whole_network:
        return _layer_decay_groups(model, parts, config, learning_rate)
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


def _layer_decay_groups(
    model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig, learning_rate: float
) -> list[dict]:
    """timm's layer-wise groups (``param_groups_layer_decay``: its layers, scales and decay rule), every
    layer's pair present from the start.

    timm makes groups only for the layers that have trainable parameters, numbered as it meets
    them, so that each unfreezing would add groups and reorder them. Here the layers are those
    of the whole network, frozen weights included (a frozen BatchNorm holds its weight and bias
    as buffers), and each is in its pair of groups whether it trains yet or not.
    """
    layer_decay = config.model.layer_decay
    assert layer_decay is not None
    names = [name for name, _ in model.named_parameters()]
    names += [f"{path}.{name}" if path else name for path, module in model.named_modules()
              for name, _ in module.named_buffers(recurse=False) if name in ("weight", "bias")]
    group_matcher = getattr(model, "group_matcher", None)
    if group_matcher is not None:
        layer_of: dict[str, int] = group_with_matcher(((name, None) for name in names), group_matcher(coarse=False),
                                                      reverse=True)
    else:
        layer_of = auto_group_layers(model)  # timm's fallback: blocks of parameters, the head on top
    top = max(layer_of.values())
    trainable = {id(parameter) for part in parts.values() for parameter in part}
    members: dict[tuple[int, bool], list[nn.Parameter]] = {
        (layer, no_decay): [] for layer in range(top + 1) for no_decay in (False, True)
    }
    for name, parameter in model.named_parameters():
        if id(parameter) in trainable and parameter.requires_grad:
            members[layer_of.get(name, top), parameter.ndim <= 1].append(parameter)
    return [
        {"params": params, "lr": learning_rate, "lr_scale": layer_decay ** (top - layer),
         "weight_decay": 0.0 if no_decay else config.optim.weight_decay,
         "name": f"layer_{layer}" + ("_no_decay" if no_decay else "")}
        for (layer, no_decay), params in members.items()
    ]


def refill_parameter_groups(
    optimizer: torch.optim.Optimizer, model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig
) -> None:
    """Point the optimizer's groups at the parameters that now train (gradual unfreezing).

    Each group keeps its rate, ``initial_lr``, ``lr_scale`` and weight decay, so the schedule
    goes on unchanged; only its members change. Groups are matched by name.

    Raises:
        RuntimeError: the optimizer's groups are not the ones ``parameter_groups`` makes for this model.
    """
    fresh = {group["name"]: group["params"] for group in parameter_groups(model, parts, config)}
    names = [group.get("name") for group in optimizer.param_groups]
    if sorted(map(str, names)) != sorted(fresh):
        raise RuntimeError(f"gradual unfreezing: the optimizer's parameter groups {names} are not the model's "
                           f"{list(fresh)}")
    for group in optimizer.param_groups:
        group["params"] = fresh[group["name"]]

"""A backbone's stages (timm's coarse layer groups below the head), and freezing the lower ones for fine-tuning.

Frozen stages keep their BatchNorm statistics: their BatchNorm layers become timm's frozen
variants, which ``model.train()`` cannot switch back to batch statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d, unfreeze_batch_norm_2d

# group_parameters/group_modules only see parameters or modules that own parameters;
# the matcher they wrap is applied here to parameter *and* frozen-BN buffer names, so
# that a model's stages stay the same after freezing turns BN affines into buffers.
from timm.models._manipulate import group_with_matcher
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from engine.core.errors import ConfigError

_FROZEN_BATCH_NORMS = (FrozenBatchNorm2d, FrozenBatchNormAct2d)
# BatchNormAct2d and SyncBatchNormAct subclass these two.
_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


@dataclass
class TrainableParts:
    """What ``set_trainable_stages`` left trainable, ready for optimizer parameter groups.

    Attributes:
        head_parameters: parameters of the classifier head (always trainable).
        backbone_parameters: trainable parameters outside the head.
        frozen_stage_names: frozen stages, bottom (input side) first.
        trainable_stage_names: trainable stages, bottom first.
    """

    head_parameters: list[nn.Parameter]
    backbone_parameters: list[nn.Parameter]
    frozen_stage_names: list[str]
    trainable_stage_names: list[str]

    @property
    def num_trainable_parameters(self) -> int:
        """Number of trainable scalars (head and backbone)."""
        return sum(parameter.numel() for parameter in self.head_parameters + self.backbone_parameters)


@dataclass(frozen=True)
class _Stage:
    name: str
    entries: tuple[str, ...]  # parameter names, and weight/bias buffer names of frozen BatchNorms


def stage_names(model: nn.Module) -> list[str]:
    """Return the names of a model's stages below the head, bottom (input side) first.

    Stages are timm's coarse layer groups (``model.group_matcher(coarse=True)``: stem,
    then one per block stage), without the classifier head. A stage is named by the
    module paths only it holds, e.g. ``"conv_stem+bn1"``, ``"blocks.3"``,
    ``"blocks.6+conv_head+bn2"``. Freezing does not change them.
    """
    return [stage.name for stage in _stages(model)]


def num_stages(model: nn.Module) -> int:
    """Return how many stages lie below the head (see ``stage_names``)."""
    return len(_stages(model))


def set_trainable_stages(model: nn.Module, trainable_stages: int) -> TrainableParts:
    """Freeze the lower stages of a model for fine-tuning; the head always stays trainable.

    Frozen parameters get ``requires_grad=False``. BatchNorm layers in frozen stages are
    replaced (timm's ``freeze_batch_norm_2d``) by ``FrozenBatchNorm2d`` /
    ``FrozenBatchNormAct2d``, which always normalise with their stored statistics, so
    ``model.train()`` cannot put them back into batch-statistics mode and training never
    updates their running statistics. Their weight and bias become buffers with the same
    state-dict names (``num_batches_tracked`` disappears; BatchNorm restores it on load).

    May be called again with another count: stages that become trainable get their
    BatchNorms back (timm's ``unfreeze_batch_norm_2d``; that resets their momentum to
    PyTorch's default 0.1). BatchNorm1d/3d layers (rare in image backbones) are frozen
    in their parameters only and still track statistics in training mode.

    Args:
        model: a timm model (ideally just made by ``create_model``).
        trainable_stages: how many stages, counted from the top, to train besides the
            head: 0 = only the head, -1 or at least ``num_stages(model)`` = everything.

    Raises:
        ConfigError: ``trainable_stages`` is below -1.
    """
    if trainable_stages < -1:
        raise ConfigError(f"trainable_stages: must be -1 (all) or >= 0, got {trainable_stages}")
    stages = _stages(model)
    keep = len(stages) if trainable_stages == -1 else min(trainable_stages, len(stages))
    frozen, trainable = stages[: len(stages) - keep], stages[len(stages) - keep :]
    head = head_prefixes(model)
    frozen_entries = {entry for stage in frozen for entry in stage.entries}

    _convert_batch_norms(model, _owner_paths(frozen_entries), freeze=True)
    _convert_batch_norms(model, _owner_paths(entry for stage in trainable for entry in stage.entries), freeze=False)
    head_parameters: list[nn.Parameter] = []
    backbone_parameters: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name not in frozen_entries
        if is_under(name, head):
            head_parameters.append(parameter)
        elif parameter.requires_grad:
            backbone_parameters.append(parameter)
    return TrainableParts(
        head_parameters=head_parameters,
        backbone_parameters=backbone_parameters,
        frozen_stage_names=[stage.name for stage in frozen],
        trainable_stage_names=[stage.name for stage in trainable],
    )


def _stages(model: nn.Module) -> list[_Stage]:
    head = head_prefixes(model)
    entries = [name for name, _ in model.named_parameters()]
    for path, module in model.named_modules():
        if isinstance(module, _FROZEN_BATCH_NORMS):
            entries += [f"{path}.weight", f"{path}.bias"]
    body = [name for name in entries if not is_under(name, head)]
    groups = _group_entries(model, body)
    head_entries = [name for name in entries if is_under(name, head)]
    # The head takes part in naming only so that no stage is named by a path it shares with the head.
    names = _distinct_prefix_names(groups + [head_entries])[: len(groups)]
    return [_Stage(name=name, entries=tuple(group)) for name, group in zip(names, groups, strict=True)]


def _group_entries(model: nn.Module, names: list[str]) -> list[list[str]]:
    """Split parameter names into timm's coarse layer groups, bottom first."""
    try:
        matcher = model.group_matcher(coarse=True)
    except AssertionError:
        # A few models (RDNet) assert that they only have the fine grouping.
        matcher = model.group_matcher(coarse=False)
    except (AttributeError, NotImplementedError):
        matcher = None
    if matcher is None:
        # No timm grouping: each top-level child is a stage, in definition order.
        order = {name: index for index, (name, _) in enumerate(model.named_children())}
        matcher = lambda name: order.get(name.split(".", 1)[0], len(order))  # noqa: E731
    grouping = group_with_matcher(((name, None) for name in names), matcher)
    return [grouping[group_id] for group_id in sorted(grouping) if grouping[group_id]]


def _distinct_prefix_names(groups: list[list[str]]) -> list[str]:
    """Name each group by the shortest module paths that belong to it alone, joined by '+'."""
    owners: dict[str, set[int]] = {}
    for index, group in enumerate(groups):
        for name in group:
            parts = name.split(".")
            for length in range(1, len(parts) + 1):
                owners.setdefault(".".join(parts[:length]), set()).add(index)
    names: list[str] = []
    for index, group in enumerate(groups):
        prefixes: list[str] = []
        for name in group:
            parts = name.split(".")
            prefix = next(
                ".".join(parts[:length])
                for length in range(1, len(parts) + 1)
                if owners[".".join(parts[:length])] == {index}
            )
            if prefix not in prefixes:
                prefixes.append(prefix)
        names.append("+".join(prefixes))
    return names


def _owner_paths(entries: Iterable[str]) -> set[str]:
    """Module paths that own the given parameter/buffer names (root-level ones excluded)."""
    return {name.rsplit(".", 1)[0] for name in entries if "." in name}


def _convert_batch_norms(model: nn.Module, paths: set[str], *, freeze: bool) -> None:
    for path in sorted(paths):
        module = model.get_submodule(path)
        if freeze and isinstance(module, _BATCH_NORMS) and module.track_running_stats:
            replacement = freeze_batch_norm_2d(module)
        elif not freeze and isinstance(module, _FROZEN_BATCH_NORMS):
            replacement = unfreeze_batch_norm_2d(module)
        else:
            continue
        # timm builds the replacement on the CPU; keep it where the model lives.
        device = next(iter(module.buffers())).device
        parent_path, _, child_name = path.rpartition(".")
        model.get_submodule(parent_path).add_module(child_name, replacement.to(device))


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the classifier head(s): ``get_classifier()`` and timm's ``classifier`` config."""
    classifier = model.get_classifier()
    prefixes = {name for name, module in model.named_modules() if module is classifier and name}
    configured = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    prefixes.update((configured,) if isinstance(configured, str) else configured)
    return tuple(sorted(prefixes))


def is_under(name: str, prefixes: Iterable[str]) -> bool:
    """Whether a parameter or module name is one of ``prefixes`` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)

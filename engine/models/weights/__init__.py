"""Pretrained weights that work offline: a registry of weight packages, and safe weight-file loading.

A ``WeightsProvider`` (``provider``) turns a pip package that ships ImageNet weights into a
timm-named safetensors file in the user cache, converted once; ``files`` reads weight files
without ever running a full unpickle. A provider is one module here that calls
``register_weights_provider`` and is imported below (``efficientnet_lite``).
"""

from engine.models.weights import efficientnet_lite  # noqa: F401 (registers its providers)
from engine.models.weights.efficientnet_lite import convert_efficientnet_pytorch_state_dict
from engine.models.weights.files import WEIGHT_FILE_SUFFIXES, StateDict, file_digest, load_state_dict_file
from engine.models.weights.provider import (
    CONVERSION_VERSION,
    Converter,
    WeightsProvider,
    get_weights_provider,
    list_weights_providers,
    register_weights_provider,
)

__all__ = [
    "CONVERSION_VERSION", "WEIGHT_FILE_SUFFIXES", "Converter", "StateDict", "WeightsProvider",
    "convert_efficientnet_pytorch_state_dict", "file_digest", "get_weights_provider", "list_weights_providers",
    "load_state_dict_file", "register_weights_provider",
]

"""Classifier heads: build the new head a run trains (linear or a one-hidden-layer MLP), and put it into a timm model.

A head maps the backbone's pooled features ``(N, num_features)`` to logits ``(N, num_classes)``.
Every head starts at chance (its output layer is zero, so the first loss is exactly ln C),
and its layer names do not depend on its settings' values, so checkpoints load into a
head rebuilt from ``head_signature``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.core.config import HEADS, ModelConfig
from engine.core.errors import CheckpointError, ConfigError
from engine.models.backbones import classifier_of

# nn.LeakyReLU's default slope; the Kaiming gain below must use the same one.
LEAKY_RELU_SLOPE = 0.01

# The ModelConfig fields that decide a head's layers, per head kind: what a checkpoint must record.
_SIGNATURE_FIELDS = {
    "linear": ("head", "head_dropout"),
    "mlp": ("head", "head_hidden", "head_activation", "head_batchnorm", "head_dropout"),
}


@dataclass(frozen=True)
class _Activation:
    create: Callable[[], nn.Module]
    initialise: Callable[[torch.Tensor], Any]  # fills the weight of the layer before the activation


def _kaiming(nonlinearity: str, slope: float = 0.0) -> Callable[[torch.Tensor], Any]:
    return lambda weight: nn.init.kaiming_normal_(weight, a=slope, mode="fan_in", nonlinearity=nonlinearity)


_ACTIVATIONS: dict[str, _Activation] = {
    # He et al. 2015: ReLU zeroes half of its inputs, so the weights need variance 2 / fan_in
    # (leaky ReLU: 2 / ((1 + slope²) fan_in)) to keep the activations' scale layer to layer.
    "relu": _Activation(nn.ReLU, _kaiming("relu")),
    "leaky_relu": _Activation(lambda: nn.LeakyReLU(LEAKY_RELU_SLOPE), _kaiming("leaky_relu", LEAKY_RELU_SLOPE)),
    # Glorot & Bengio 2010 for the smooth activations that are near-linear around zero.
    "elu": _Activation(nn.ELU, nn.init.xavier_uniform_),
    # SELU self-normalises only from LeCun normal weights (variance 1 / fan_in, Klambauer et al. 2017):
    # torch's docs say to use Kaiming with nonlinearity="linear" for it, not calculate_gain("selu").
    "selu": _Activation(nn.SELU, _kaiming("linear")),
    "gelu": _Activation(nn.GELU, nn.init.xavier_uniform_),
    "silu": _Activation(nn.SiLU, nn.init.xavier_uniform_),
}


def create_head(model_config: ModelConfig, num_features: int, num_classes: int) -> nn.Module:
    """Build a new classifier head from the model settings, initialised to start at chance.

    ``linear``: ``Sequential(dropout, fc)``. ``mlp``: ``Sequential(hidden, norm, activation,
    dropout, fc)``, where ``norm`` is ``BatchNorm1d`` with ``head_batchnorm`` and ``Identity``
    otherwise, and ``dropout`` is ``Dropout(head_dropout)`` (also at 0, so the layer names
    never change). ``fc`` is the output layer in both.

    Initialisation: the hidden layer gets Kaiming (He) normal weights for relu and leaky_relu,
    LeCun normal for selu and Xavier (Glorot) uniform for elu, gelu and silu; biases are zero.
    The output layer ``fc`` is all zeros, so every logit is 0 and the first loss is exactly ln C.

    Args:
        model_config: uses ``head``, ``head_hidden``, ``head_activation``, ``head_batchnorm``
            and ``head_dropout``.
        num_features: width of the pooled features the head receives (``LoadedBackbone.num_features``).
        num_classes: number of logits.

    Returns:
        The head: ``(N, num_features)`` features in, ``(N, num_classes)`` logits out.

    Raises:
        ConfigError: an unknown head or activation, or a width below 1.
    """
    _check(model_config, num_features, num_classes)
    dropout = nn.Dropout(model_config.head_dropout)
    if model_config.head == "linear":
        # One linear layer over fixed features has no symmetry to break, so all zeros is a fine start.
        fc = nn.Linear(num_features, num_classes)
        _zero(fc)
        return nn.Sequential(OrderedDict(dropout=dropout, fc=fc))

    activation = _ACTIVATIONS[model_config.head_activation]
    # BatchNorm subtracts the batch mean right after the hidden layer, so a bias there would do nothing.
    hidden = nn.Linear(num_features, model_config.head_hidden, bias=not model_config.head_batchnorm)
    activation.initialise(hidden.weight)
    if hidden.bias is not None:
        nn.init.zeros_(hidden.bias)
    norm = nn.BatchNorm1d(model_config.head_hidden) if model_config.head_batchnorm else nn.Identity()
    fc = nn.Linear(model_config.head_hidden, num_classes)
    # A zero output layer starts at chance (loss exactly ln C), like Fixup/ReZero and the zero-gamma
    # trick of Goyal et al. zero the last layer of a branch. It does not stall training: fc's gradient
    # (softmax - target) ⊗ hidden activations is non-zero and differs per hidden unit, because the
    # hidden layer is random; only the hidden layer waits one step for fc to become non-zero.
    _zero(fc)
    return nn.Sequential(OrderedDict(hidden=hidden, norm=norm, activation=activation.create(), dropout=dropout, fc=fc))


def install_head(model: nn.Module, head: nn.Module) -> None:
    """Replace a timm model's classifier by ``head``, in place.

    Afterwards ``model(x)`` runs ``head`` on the pooled features (timm's ``forward_head``
    calls the classifier attribute), ``classifier_of(model)`` returns it, and its
    parameters are ``model.<classifier path>.*`` in the state dict (``classifier.*`` for
    EfficientNet, ``fc.*`` for ResNet, ``head.*`` for ViT, ``head.fc.*`` for ConvNeXt).
    The head moves to the device of the classifier it replaces.

    timm's ``drop_rate`` dropout still runs before the classifier in ``model(x)``; a head
    that brings its own dropout should go into a model made with ``drop_rate=0``.

    Raises:
        ConfigError: the model has no classifier, or two (distilled DeiT), or its
            ``get_classifier()`` does not return the installed head.
    """
    path = _classifier_path(model)
    old = model.get_submodule(path)
    device = next((tensor.device for tensor in itertools.chain(old.parameters(), model.parameters())), None)
    if device is not None:
        head = head.to(device)
    model.set_submodule(path, head, strict=True)
    if classifier_of(model) is not head:
        model.set_submodule(path, old, strict=True)
        raise ConfigError(
            f"model.backbone: {type(model).__name__} does not read its classifier from '{path}', "
            "so a custom head cannot be installed in it"
        )


def head_signature(model_config: ModelConfig) -> dict[str, Any]:
    """Return the settings that decide a head's layers, for a checkpoint's metadata.

    The keys are ``ModelConfig`` field names: ``head`` and ``head_dropout`` for a linear
    head, plus ``head_hidden``, ``head_activation`` and ``head_batchnorm`` for an MLP.
    The values are JSON scalars. ``rebuild_head`` turns the dict back into the same head.
    """
    fields = _SIGNATURE_FIELDS.get(model_config.head)
    if fields is None:
        raise ConfigError(f"model.head: must be one of {', '.join(HEADS)}, got {model_config.head!r}")
    return {name: getattr(model_config, name) for name in fields}


def rebuild_head(
    model: nn.Module, signature: Mapping[str, Any] | None, num_features: int, num_classes: int
) -> nn.Module:
    """Build the head a checkpoint was trained with and install it, ready for ``load_state_dict``.

    Args:
        model: the timm model, made with ``num_classes`` outputs and ``drop_rate=0``.
        signature: ``head_signature`` from the checkpoint's metadata. None (a checkpoint from
            before heads were recorded) keeps the model's own timm ``nn.Linear`` classifier.
        num_features: width of the pooled features (``LoadedBackbone.num_features``).
        num_classes: the checkpoint's class count.

    Returns:
        The installed head (``classifier_of(model)``).

    Raises:
        CheckpointError: the signature is not a head this version can build.
    """
    if signature is None:
        return classifier_of(model)
    kind = signature.get("head") if isinstance(signature, Mapping) else None
    expected = _SIGNATURE_FIELDS.get(kind) if isinstance(kind, str) else None
    if expected is None or set(signature) != set(expected):
        raise CheckpointError(
            f"checkpoint head signature {dict(signature) if isinstance(signature, Mapping) else signature!r}: "
            f"expected the keys {', '.join(_SIGNATURE_FIELDS['mlp'])} of an mlp head, or head and head_dropout "
            "of a linear one"
        )
    try:
        model_config = dataclasses.replace(ModelConfig(), **signature)
        head = create_head(model_config, num_features, num_classes)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"checkpoint head signature {dict(signature)!r} cannot be rebuilt: {error}") from error
    install_head(model, head)
    return head


def _check(model_config: ModelConfig, num_features: int, num_classes: int) -> None:
    problems = [
        (model_config.head in HEADS, "model.head", f"must be one of {', '.join(HEADS)}", model_config.head),
        (model_config.head != "mlp" or model_config.head_activation in _ACTIVATIONS, "model.head_activation",
         f"must be one of {', '.join(_ACTIVATIONS)}", model_config.head_activation),
        (model_config.head != "mlp" or model_config.head_hidden >= 1, "model.head_hidden", "must be >= 1",
         model_config.head_hidden),
        (0.0 <= model_config.head_dropout < 1.0, "model.head_dropout", "must be in [0, 1)", model_config.head_dropout),
        (num_features >= 1, "num_features", "must be >= 1", num_features),
        (num_classes >= 1, "num_classes", "must be >= 1", num_classes),
    ]
    for ok, path, expectation, value in problems:
        if not ok:
            raise ConfigError(f"{path}: {expectation}, got {value!r}")


def _zero(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _classifier_path(model: nn.Module) -> str:
    """Module path of the model's one classifier, found by identity (``get_classifier()``)."""
    get_classifier = getattr(model, "get_classifier", None)
    classifier = get_classifier() if callable(get_classifier) else None
    if isinstance(classifier, (tuple, list)):
        configured = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        raise ConfigError(
            f"model.backbone: {type(model).__name__} has {len(classifier)} classifiers ({configured}); "
            "a new head needs a model with one (e.g. a non-distilled variant)"
        )
    paths = [name for name, module in model.named_modules() if module is classifier and name]
    if classifier is None or len(paths) != 1:
        raise ConfigError(
            f"model.backbone: {type(model).__name__} has no single classifier layer to replace "
            "(timm's get_classifier() found none)"
        )
    return paths[0]

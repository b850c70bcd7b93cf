"""Class activation maps (Grad-CAM): which parts of an image drove a checkpoint's or an ensemble's prediction.

Grad-CAM (Selvaraju et al. 2017, computed with captum) weighs the channels of the
backbone's last feature map, the one global pooling reads, by the gradient of a class
logit, and keeps the positive evidence. Loaded models stay in a small cache keyed by
file and modification time, so clicking through images does not reload them. The result,
``ActivationMap``, and its painting over the image live in ``engine.evaluation.activation_map`` (no torch).
"""

from __future__ import annotations

import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from augment import eval_source_side
from engine.core.errors import ConfigError
from engine.data.images import load_rgb
from engine.evaluation.activation_map import ActivationMap, overlay
from engine.evaluation.ensemble import Ensemble
from engine.evaluation.manifest import is_manifest
from engine.evaluation.predict import Predictor
from engine.models.checkpoint_metadata import read_checkpoint_metadata, resolve_checkpoint_path

__all__ = [
    "CACHE_SIZE", "TOP_K", "TargetLayer", "class_activation_map", "find_target_layer",
    # Re-exported because the GUI and the CLI import them from here; their home is engine.evaluation.activation_map.
    "ActivationMap", "overlay",
]

# Loaded models kept for the next request; each holds a backbone (tens of MB), so only a few.
CACHE_SIZE = 3
TOP_K = 3


@dataclass(frozen=True)
class TargetLayer:
    """The layer whose output Grad-CAM explains: the feature map global pooling reads.

    Attributes:
        name: its dotted name in the model, e.g. ``layer4``.
        module: the module itself.
        shape: its output ``(C, H, W)`` for the model's input size.
    """

    name: str
    module: nn.Module
    shape: tuple[int, int, int]


def find_target_layer(model: nn.Module, input_size: Sequence[int], *, backbone: str) -> TargetLayer:
    """Find the last convolutional feature map of a timm model, the input of its global pooling.

    Every timm model computes ``forward_head(forward_features(x))``, so the tensor that
    ``forward_features`` returns is the one pooled. One forward pass with hooks finds the
    modules that output exactly that tensor; of these the stage timm lists last in
    ``feature_info`` is preferred (``layer4``, ``stages.3``), else the outermost (``bn2``).
    This covers EfficientNet, ResNet, MobileNetV3, ConvNeXt, RegNet, DenseNet and the like.

    Vision transformers are refused rather than reshaped: their features are tokens
    ``(N, tokens, D)`` (Swin and MambaOut give a channels-last map), and a map made of
    them would depend on guesses about prefix tokens and grid layout.

    Args:
        model: a timm model in eval mode.
        input_size: ``(C, H, W)`` of its input, in pixels.
        backbone: the timm name, for messages.

    Raises:
        ConfigError: ``model.backbone`` has no convolutional feature map to explain.
    """
    outputs: list[tuple[str, torch.Tensor]] = []

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                outputs.append((name, output))
        return record

    handles = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules() if name]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    shape = tuple(features.shape)
    channels = getattr(model, "num_features", None)
    channels_last = len(shape) == 4 and shape[-1] == channels and shape[1] != channels
    if len(shape) != 4 or channels_last:
        kind = "a channels-last (N, H, W, C) map" if channels_last else "tokens, as vision transformers give"
        raise ConfigError(
            f"model.backbone: Grad-CAM needs a convolutional feature map (N, C, H, W) before global pooling, but "
            f"'{backbone}' pools a {shape} tensor ({kind}); class activation maps work with CNN backbones such "
            "as EfficientNet, ResNet, MobileNetV3 or ConvNeXt"
        )
    # In-place activations and containers return the very tensor object their last child made.
    candidates = [name for name, output in outputs if output is features]
    if not candidates:
        raise ConfigError(f"model.backbone: no layer of '{backbone}' outputs the feature map its pooling reads "
                          "(it is computed outside any module), so Grad-CAM has no layer to hook")
    feature_info = getattr(model, "feature_info", None) or [{}]
    stage = feature_info[-1].get("module") if isinstance(feature_info[-1], dict) else None
    name = stage if stage in candidates else min(candidates, key=lambda item: item.count("."))
    return TargetLayer(name, model.get_submodule(name), (shape[1], shape[2], shape[3]))


def class_activation_map(
    model_path: str | Path,
    image_path: str | Path,
    *,
    class_index: int | None = None,
    device: str = "auto",
) -> ActivationMap:
    """Grad-CAM of one image for a checkpoint, a run folder (its best) or an ensemble manifest.

    The probabilities are the model's own for the image (what ``Predictor.predict_proba``
    or ``Ensemble.predict_proba`` gives). For an ensemble every member's map is normalised
    to [0, 1], then the maps are averaged with the members' weights on the first member's
    view of the image. A member whose eval resize and crop differ from the first member's
    (another backbone) is shown that same view resized to its own input size for its map, so
    that the maps line up pixel for pixel.

    Args:
        model_path: a ``.safetensors`` checkpoint, its ``.json``, a run folder or an ensemble manifest.
        image_path: the image file.
        class_index: the class to explain; None explains the predicted (most probable) class.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        ImageFileError: the image cannot be read (the message names the file).
        CheckpointError: nothing loadable at ``model_path``, or an ensemble member missing or changed.
        ConfigError: ``class_index`` out of range, or a backbone without a convolutional feature map.
    """
    loaded = _load(model_path, device)
    # Decoded as large as the largest member's eval transform needs (a reduced decode of a photo).
    image = load_rgb(image_path, min_side=max(eval_source_side(explainer.predictor.data_settings)
                                              for explainer in loaded.explainers))
    with loaded.lock:
        return _explain(loaded, image, class_index)


@dataclass(frozen=True)
class _Explainer:
    """One checkpoint ready for Grad-CAM: its predictor, target layer and ensemble weight."""

    name: str
    predictor: Predictor
    layer: TargetLayer
    weight: float


@dataclass
class _Loaded:
    """A cached model: its explainers, classes and the file stamps that keep it valid."""

    explainers: list[_Explainer]
    classes: list[str]
    files: list[Path]
    stamp: tuple
    is_ensemble: bool
    # captum hooks the layer during a call: one Grad-CAM at a time per model.
    lock: threading.Lock


_cache: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
_cache_lock = threading.Lock()


def _load(model_path: str | Path, device: str) -> _Loaded:
    """The model at ``model_path`` from the cache, or loaded (and cached) when new or changed on disk."""
    ensemble = is_manifest(model_path)
    file = Path(model_path).resolve() if ensemble else resolve_checkpoint_path(model_path).resolve()
    key = (str(file), device)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached.stamp == _stamp(cached.files):
            _cache.move_to_end(key)
            return cached
        if ensemble:
            members = Ensemble(file, device=device)
            predictors = [(name, predictor, members.weights[name]) for name, predictor in members.predictors.items()]
            files = [file, *(member.path for member in members.manifest.members)]
        else:
            predictors = [("", Predictor(file, device=device), 1.0)]
            files = [file]
        explainers = [
            _Explainer(name, predictor, find_target_layer(
                predictor.model, predictor.data_settings.input_size,
                backbone=str(read_checkpoint_metadata(predictor.checkpoint_path).get("backbone"))), weight)
            for name, predictor, weight in predictors
        ]
        loaded = _Loaded(explainers, list(predictors[0][1].classes), files, _stamp(files), ensemble, threading.Lock())
        _cache[key] = loaded
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return loaded


def _stamp(files: Sequence[Path]) -> tuple:
    """Size and modification time of each file (None when it is gone), to notice a rewrite."""
    stamp: list[tuple[int, int] | None] = []
    for file in files:
        try:
            status = os.stat(file)
            stamp.append((status.st_size, status.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


@dataclass(frozen=True)
class _View:
    """An image after a model's eval transform: the last Pillow picture, the tensor, and the steps between."""

    picture: Image.Image
    tensor: torch.Tensor
    finish: Callable[[Image.Image], torch.Tensor]


def _view(transform: Callable[[Image.Image], torch.Tensor], image: Image.Image) -> _View:
    """Run the eval transform step by step, keeping the cropped picture before it becomes a tensor."""
    steps = list(getattr(transform, "transforms", [transform]))
    value: object = image
    picture, cut = image, 0
    for index, step in enumerate(steps):
        value = step(value)
        if isinstance(value, Image.Image):
            picture, cut = value, index + 1

    def finish(resized: Image.Image, tail: Sequence[Callable] = tuple(steps[cut:])) -> torch.Tensor:
        result: object = resized
        for step in tail:
            result = step(result)
        return result

    return _View(picture.convert("RGB"), value, finish)


def _explain(loaded: _Loaded, image: Image.Image, class_index: int | None) -> ActivationMap:
    # captum.attr imports matplotlib.pyplot (1-2 s): only pay for it when a map is asked for.
    from captum.attr import LayerAttribution, LayerGradCam

    views = [_view(explainer.predictor.transform, image) for explainer in loaded.explainers]
    canvas = views[0].picture
    probabilities = np.zeros(len(loaded.classes), dtype=np.float64)
    for explainer, view in zip(loaded.explainers, views, strict=True):
        probabilities += explainer.weight * _probabilities(explainer.predictor, view.tensor)
    if class_index is None:
        class_index = int(np.argmax(probabilities))
    elif not 0 <= (class_index := operator.index(class_index)) < len(loaded.classes):
        raise ConfigError(f"class_index: must be in [0, {len(loaded.classes)}) for this model's "
                          f"{len(loaded.classes)} classes, got {class_index}")

    heatmap = np.zeros((canvas.height, canvas.width), dtype=np.float64)
    for explainer, view in zip(loaded.explainers, views, strict=True):
        if np.array_equal(np.asarray(view.picture), np.asarray(canvas)):
            tensor = view.tensor
        else:
            tensor = view.finish(canvas.resize(view.picture.size, Image.Resampling.BICUBIC))
        predictor = explainer.predictor
        inputs = predictor.plan.to_device(tensor.unsqueeze(0)).requires_grad_(True)
        attribution = LayerGradCam(predictor.model, explainer.layer.module).attribute(
            inputs, target=class_index, relu_attributions=True)
        resized = LayerAttribution.interpolate(attribution.detach().float(), (canvas.height, canvas.width),
                                               interpolate_mode="bilinear")
        heatmap += explainer.weight * _unit_peak(resized[0, 0].cpu().numpy().astype(np.float64))
    order = np.argsort(-probabilities)[:TOP_K]
    return ActivationMap(
        image=canvas,
        heatmap=_unit_peak(heatmap).astype(np.float32),
        class_index=class_index,
        class_name=loaded.classes[class_index],
        probability=float(probabilities[class_index]),
        top=tuple((loaded.classes[index], float(probabilities[index])) for index in order),
        layer=_layer_names(loaded.explainers),
        classes=tuple(loaded.classes),
        probabilities=tuple(float(value) for value in probabilities),
        members=tuple(explainer.name for explainer in loaded.explainers) if loaded.is_ensemble else (),
        grid=loaded.explainers[0].layer.shape[1:],
    )


def _probabilities(predictor: Predictor, tensor: torch.Tensor) -> np.ndarray:
    """``(C,)`` softmax of one eval input after the checkpoint's temperature, as ``predict_proba`` computes it."""
    with torch.inference_mode():
        logits = predictor.model(predictor.plan.to_device(tensor.unsqueeze(0))).float()
    return (logits / predictor.temperature).softmax(dim=1)[0].cpu().numpy().astype(np.float64)


def _unit_peak(values: np.ndarray) -> np.ndarray:
    """Scale non-negative values so the largest is 1 (all zeros stay zeros)."""
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def _layer_names(explainers: Sequence[_Explainer]) -> str:
    names = {explainer.layer.name for explainer in explainers}
    if len(names) == 1:
        return names.pop()
    return "; ".join(f"{explainer.name}: {explainer.layer.name}" for explainer in explainers)

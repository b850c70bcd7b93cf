"""A class activation map as plain data, and the heatmap painted over the image the model saw.

numpy, Pillow and matplotlib's colormaps only (no torch), so the GUI can show a map that
``engine.evaluation.gradcam`` computed without loading a model itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.core.errors import ConfigError


@dataclass(frozen=True)
class ActivationMap:
    """Where a model found the evidence for one class in one image.

    Attributes:
        image: the picture as the model saw it (after the eval resize and crop, not normalised), RGB.
        heatmap: ``(H, W)`` float32 in [0, 1], the size of ``image``; 1 is the strongest evidence
            for ``class_index``, 0 none (all 0 when nothing in the image speaks for the class).
        class_index: the class explained.
        class_name: its name.
        probability: the model's probability of that class for this image, in [0, 1].
        top: the three most probable ``(class name, probability)``, best first.
        layer: the layer the map was taken from, e.g. ``bn2`` or ``layer4``; for an ensemble
            whose members differ, ``member: layer`` for each.
        classes: every class the model predicts, in index order.
        probabilities: the probability of each class, in index order (the ensemble's average
            for an ensemble, after any saved temperature).
        members: the ensemble members whose maps were averaged (by their weights); empty for a checkpoint.
        grid: ``(rows, columns)`` of the layer's feature map (the first member's for an ensemble):
            the map's true resolution before it is smoothly enlarged to the image.
    """

    image: Image.Image
    heatmap: np.ndarray
    class_index: int
    class_name: str
    probability: float
    top: tuple[tuple[str, float], ...]
    layer: str
    classes: tuple[str, ...]
    probabilities: tuple[float, ...]
    members: tuple[str, ...] = ()
    grid: tuple[int, int] = (1, 1)


def overlay(activation: ActivationMap, alpha: float = 0.45, colormap: str = "jet") -> Image.Image:
    """The heatmap in colour blended over the image the model saw.

    Args:
        activation: a ``class_activation_map`` result.
        alpha: share of the colour map in each pixel, 0 (the image only) to 1 (the map only).
        colormap: a matplotlib colormap name, e.g. ``jet``, ``inferno``, ``viridis``.

    Returns:
        An RGB image of ``activation.image``'s size.

    Raises:
        ConfigError: ``alpha`` outside [0, 1] or an unknown colormap.
    """
    # matplotlib.colormaps needs no pyplot and no backend: safe in the GUI process and headless.
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha: must be between 0 and 1, got {alpha}")
    try:
        colors = matplotlib.colormaps[colormap]
    except KeyError as error:
        raise ConfigError(f"colormap: {colormap!r} is not a matplotlib colormap (e.g. jet, inferno, viridis)") \
            from error
    painted = colors(np.clip(activation.heatmap, 0.0, 1.0))[..., :3].astype(np.float32) * 255.0
    picture = np.asarray(activation.image.convert("RGB"), dtype=np.float32)
    blended = (1.0 - alpha) * picture + alpha * painted
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")

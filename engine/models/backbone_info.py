"""Plain facts about backbones that need no timm or torch: the choices of weight source and ``BackboneInfo``.

The GUI's backbone picker shows these before anything heavy is loaded; the functions that
fill ``BackboneInfo`` live in ``engine.models.backbone_catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass

# model.weights: an installed offline package if any, else the hub; the hub only; random initialisation.
# Any other value is the path of a weights file.
WEIGHTS_AUTO = "auto"
WEIGHTS_HUB = "hub"
WEIGHTS_NONE = "none"


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

"""``ProbabilityGraph``: one model or an ensemble as a single module, normalised images in, probabilities out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from engine.data.settings import DataSettings


class ProbabilityGraph(nn.Module):
    """One model or an ensemble as a single module: normalised images in, softmax probabilities out.

    An ensemble averages its members' softmax outputs with fixed weights (the lectures'
    rule). A calibrated member divides its logits by its temperature first, as
    ``Predictor.predict_proba`` does. Members trained with another mean/std than the first get
    the input re-normalised inside the module, so every member sees exactly what its own
    preprocessing gives it.

    Args:
        members: eval-mode classifiers, ``(N, 3, H, W)`` images to ``(N, C)`` logits, same classes.
        weights: one per member, summing to 1 (None: a single member).
        adapters: per member, None or ``(scale, shift)`` ``(1, 3, 1, 1)`` tensors applied to the
            input as ``images * scale + shift``.
        temperatures: per member, the temperature ``T > 0`` its logits are divided by (None: all 1).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 adapters: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
                 temperatures: Sequence[float] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.weights = [float(weight) for weight in (weights or [1.0] * len(members))]
        self.temperatures = [float(value) for value in (temperatures or [1.0] * len(members))]
        self.adapted = [adapter is not None for adapter in (adapters or [None] * len(members))]
        for index, adapter in enumerate(adapters or []):
            if adapter is not None:
                self.register_buffer(f"scale_{index}", adapter[0])
                self.register_buffer(f"shift_{index}", adapter[1])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float32 normalised images to ``(N, C)`` probabilities (rows sum to 1)."""
        total: torch.Tensor | None = None
        for index, member in enumerate(self.members):
            inputs = images
            if self.adapted[index]:
                inputs = images * getattr(self, f"scale_{index}") + getattr(self, f"shift_{index}")
            logits = member(inputs)
            # Python-level branches: the graph holds only the operations a member needs.
            if self.temperatures[index] != 1.0:
                logits = logits / self.temperatures[index]
            probabilities = logits.softmax(dim=1)
            if len(self.members) > 1:
                probabilities = probabilities * self.weights[index]
            total = probabilities if total is None else total + probabilities
        assert total is not None  # members is never empty
        return total


def create_probability_graph(members: Sequence[nn.Module], settings: Sequence[DataSettings],
                             weights: Sequence[float] | None, temperatures: Sequence[float]) -> ProbabilityGraph:
    """The eval-mode graph of ``members``, whose input is normalised as the first member's ``settings`` say.

    Args:
        members: the members' models, logits out.
        settings: per member, the preprocessing it was trained with (only mean and std may differ).
        weights: per member, summing to 1; None for a single member.
        temperatures: per member, its calibration temperature (1: none).
    """
    reference = settings[0]
    adapters: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for member_settings in settings:
        if (member_settings.mean, member_settings.std) == (reference.mean, reference.std):
            adapters.append(None)
            continue
        # Undo the graph input's normalisation, apply the member's: x_k = (x * std_0 + mean_0 - mean_k) / std_k.
        mean_0, std_0 = _channel_tensor(reference.mean), _channel_tensor(reference.std)
        mean_k, std_k = _channel_tensor(member_settings.mean), _channel_tensor(member_settings.std)
        adapters.append((std_0 / std_k, (mean_0 - mean_k) / std_k))
    return ProbabilityGraph(members, weights, adapters, temperatures).eval()


def _channel_tensor(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)

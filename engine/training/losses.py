"""The training loss: cross-entropy with label smoothing, class weights and soft (mixed) targets.

One module handles both target kinds, because mixup and cutmix turn some batches'
class indices into probability rows while validation keeps plain indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.config import RunConfig


class ClassificationLoss(nn.Module):
    """Cross-entropy over logits ``(N, C)`` with targets ``(N,)`` indices or ``(N, C)`` probabilities.

    Args:
        label_smoothing: share of each hard target spread over all classes (soft targets
            from timm's Mixup already carry their smoothing).
        class_weights: ``(C,)`` weight of each class, or None.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # a stable log-softmax under autocast
        if targets.dim() == 1:
            return F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing)
        per_row = (-targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)
        if self.class_weights is None:
            return per_row.mean()
        # Weighted like F.cross_entropy: each row's weight is its target-weighted class weight.
        row_weights = targets @ self.class_weights
        return (per_row * row_weights).sum() / row_weights.sum()


def create_loss(config: RunConfig, train_targets: torch.Tensor, num_classes: int) -> ClassificationLoss:
    """The loss a run trains with; ``weighted_loss`` weighs class c by N / (C * count_c)."""
    weights = None
    if config.optim.class_balance == "weighted_loss":
        # A class absent from training counts as 1 (its weight never applies); N is the real item count.
        counts = torch.bincount(train_targets, minlength=num_classes).clamp(min=1).float()
        weights = len(train_targets) / (num_classes * counts)
    return ClassificationLoss(config.optim.label_smoothing, weights)

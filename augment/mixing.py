"""Mixup and CutMix of whole batches with timm's ``Mixup``, and the loss for the soft targets they make.

timm mixes a batch with its own reverse and asserts an even batch size; ``mix_batch``
also takes odd batches and 2-D feature batches (mixup only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target

from engine.core.config import AugmentConfig
from engine.core.errors import ConfigError


def create_mixup(augment: AugmentConfig, num_classes: int, label_smoothing: float = 0.0) -> Mixup | None:
    """timm's batch-mode Mixup/CutMix for the config, or None when mixing is off.

    Mixing is off when both alphas are 0 or ``augment.mix_probability`` is 0; the loop
    then trains on hard targets. When it is on, targets are soft: train with
    ``soft_target_cross_entropy`` and leave label smoothing to the targets (not the loss).

    Args:
        augment: ``mixup_alpha``, ``cutmix_alpha``, ``mix_probability`` and ``mix_switch_probability``.
        num_classes: width of the soft targets.
        label_smoothing: share of each target spread over all classes (``optim.label_smoothing``).

    Raises:
        ConfigError: ``num_classes`` below 1.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes: must be >= 1 to mix targets, got {num_classes}")
    if (augment.mixup_alpha == 0 and augment.cutmix_alpha == 0) or augment.mix_probability == 0:
        return None
    return Mixup(
        mixup_alpha=augment.mixup_alpha,
        cutmix_alpha=augment.cutmix_alpha,
        prob=augment.mix_probability,
        switch_prob=augment.mix_switch_probability,
        mode="batch",
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )


def mix_batch(mixup: Mixup, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch and return it with its soft targets.

    The batch is mixed in place, as timm does: item ``i`` with item ``N - 1 - i``, one
    weight (and for CutMix one box) for the whole batch, drawn from NumPy's global
    random state. timm needs an even batch, so in an odd batch the last item is left
    unmixed with its own (label-smoothed) one-hot target; the loaders shuffle every
    epoch, so no image is kept out of mixing for long.

    Args:
        mixup: from ``create_mixup``.
        inputs: ``(N, C, H, W)`` images, or ``(N, D)`` features when CutMix is off.
        targets: ``(N,)`` class indices.

    Returns:
        ``inputs`` (mixed) and ``(N, num_classes)`` float32 soft targets whose rows sum to 1.

    Raises:
        ConfigError: CutMix is on and ``inputs`` are not images.
    """
    cutmix_on = mixup.cutmix_alpha > 0 or mixup.cutmix_minmax is not None
    if cutmix_on and inputs.dim() != 4:
        raise ConfigError(
            f"augment.cutmix_alpha: cutmix pastes image regions and needs (N, C, H, W) images, got a batch of"
            f" shape {tuple(inputs.shape)}; use augment.mixup_alpha alone for features"
        )
    even = len(inputs) - len(inputs) % 2
    if even == 0:
        return inputs, mixup_target(targets, mixup.num_classes, 1.0, mixup.label_smoothing)
    _, mixed_targets = mixup(inputs[:even], targets[:even])  # a view: timm mixes it inside ``inputs``
    if even == len(inputs):
        return inputs, mixed_targets
    last = mixup_target(targets[even:], mixup.num_classes, 1.0, mixup.label_smoothing)
    return inputs, torch.cat([mixed_targets, last.to(mixed_targets.dtype)])


def soft_target_cross_entropy(
    logits: torch.Tensor, soft_targets: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy against soft targets (what ``mix_batch`` returns).

    Equal to ``timm.loss.SoftTargetCrossEntropy`` without ``weight``. With ``weight``
    (per-class, e.g. for ``optim.class_balance: weighted_loss``) each class's term is
    scaled by its weight and the sum is divided by the batch size, as torch does for
    probability targets.

    Args:
        logits: ``(N, C)`` raw scores.
        soft_targets: ``(N, C)`` probabilities, each row summing to 1.
        weight: ``(C,)`` class weights, or None.
    """
    return F.cross_entropy(logits, soft_targets.to(logits.dtype), weight=weight)

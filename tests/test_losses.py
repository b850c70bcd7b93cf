"""The training loss by value: label smoothing, class weights, and soft targets that agree with hard ones."""

from __future__ import annotations

import math

import torch

from engine.training.losses import ClassificationLoss

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0], [1.0, 1.0, 1.0]])
TARGETS = torch.tensor([0, 2, 1, 2])


def _log_probabilities() -> torch.Tensor:
    return LOGITS - LOGITS.exp().sum(dim=1, keepdim=True).log()


def test_label_smoothing_spreads_its_share_over_every_class() -> None:
    smoothing = 0.2
    log_p = _log_probabilities()
    hard = -log_p[torch.arange(4), TARGETS]
    uniform = -log_p.mean(dim=1)
    # (1 - e) of the mass on the true class, e spread evenly over all C classes.
    expected = ((1 - smoothing) * hard + smoothing * uniform).mean()

    loss = ClassificationLoss(label_smoothing=smoothing)(LOGITS, TARGETS)

    assert math.isclose(float(loss), float(expected), rel_tol=1e-6)
    assert float(loss) > float(ClassificationLoss()(LOGITS, TARGETS))  # the confident logits pay for it here


def test_one_hot_soft_targets_give_the_loss_of_their_class_indices() -> None:
    one_hot = torch.nn.functional.one_hot(TARGETS, 3).float()
    weights = torch.tensor([0.5, 2.0, 1.0])
    for loss in (ClassificationLoss(), ClassificationLoss(class_weights=weights)):
        assert math.isclose(float(loss(LOGITS, one_hot)), float(loss(LOGITS, TARGETS)), rel_tol=1e-6)
    # Weighted: sum of w_y * loss_i over sum of w_y, as F.cross_entropy defines it.
    log_p = _log_probabilities()
    row_weights = weights[TARGETS]
    expected = (row_weights * -log_p[torch.arange(4), TARGETS]).sum() / row_weights.sum()
    assert math.isclose(float(ClassificationLoss(class_weights=weights)(LOGITS, one_hot)), float(expected),
                        rel_tol=1e-6)


def test_a_mixed_target_is_the_mix_of_the_two_losses() -> None:
    lam = 0.7
    other = TARGETS.flip(0)
    mixed = lam * torch.nn.functional.one_hot(TARGETS, 3).float() + (1 - lam) * torch.nn.functional.one_hot(
        other, 3).float()
    loss = ClassificationLoss()
    expected = lam * loss(LOGITS, TARGETS) + (1 - lam) * loss(LOGITS, other)
    assert math.isclose(float(loss(LOGITS, mixed)), float(expected), rel_tol=1e-6)

"""Class balance on an imbalanced real subset: the loss weights, the balanced sampler's draws, and what they buy.

The subset is footwear, which a pretrained backbone tells apart only roughly: 35 sneakers and 4
sandals and 4 ankle boots to train on, 15 of each (other photos) to validate on. Left alone, the
head learns to answer "sneaker"; either balancing option must win back the rare classes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.training.callback import Callback, LoopState
from engine.training.losses import create_loss
from engine.training.setup import build_training, prepare_run_data
from engine.training.train import RunResult, train

TRAIN_COUNTS = {"ankle_boot": 4, "sandal": 4, "sneaker": 35}  # class index order: sorted names
VAL_PER_CLASS = 15
EPOCHS = 10
BALANCE_OPTIONS = ("none", "weighted_loss", "balanced_sampler")


class TrainingBatches(Callback):
    """Records the classes of every training batch and its loss beside the cross-entropy with ``weights``."""

    def __init__(self, weights: torch.Tensor | None) -> None:
        self.weights = weights
        self.drawn = torch.zeros(len(TRAIN_COUNTS), dtype=torch.long)
        self.losses: list[tuple[float, float]] = []

    def after_loss(self, state: LoopState) -> None:
        if not state.training:
            return
        targets = state.targets.cpu()
        self.drawn += torch.bincount(targets, minlength=len(TRAIN_COUNTS))
        expected = F.cross_entropy(state.outputs.detach().float().cpu(), targets, weight=self.weights)
        self.losses.append((float(state.loss.detach()), float(expected)))


def balanced_weights() -> torch.Tensor:
    """N / (C * count_c) of the training counts, written out: 43 / 12, 43 / 12, 43 / 105."""
    total, classes = sum(TRAIN_COUNTS.values()), len(TRAIN_COUNTS)
    return torch.tensor([total / (classes * count) for count in TRAIN_COUNTS.values()])


def assert_classes_drawn_equally(drawn: torch.Tensor) -> None:
    """``EPOCHS`` epochs of balanced draws: each class ~ Binomial(T, 1/C), checked to 4 standard deviations."""
    draws = int(drawn.sum())
    assert draws == EPOCHS * sum(TRAIN_COUNTS.values())
    share = 1 / len(TRAIN_COUNTS)
    deviation = math.sqrt(draws * share * (1 - share))
    print(f"\nbalanced sampler: {drawn.tolist()} of {draws} draws (expected {draws * share:.1f} "
          f"+- {deviation:.1f} each)")
    for count in drawn.tolist():
        assert abs(count - draws * share) < 4 * deviation  # 4 standard deviations: a false alarm 1 in 15,000


@pytest.fixture(scope="module")
def balance_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunResult, TrainingBatches]]:
    """One feature-extraction run (real Lite0 weights) per ``optim.class_balance``, with its training batches."""
    root = tmp_path_factory.mktemp("balance")
    data = root / "data"
    copy_demo(data / "train", TRAIN_COUNTS)
    copy_demo(data / "val", list(TRAIN_COUNTS), per_class=VAL_PER_CLASS, skip=max(TRAIN_COUNTS.values()))
    runs = {}
    for balance in BALANCE_OPTIONS:
        config = RunConfig().with_changes(**{
            "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.epochs": EPOCHS,
            "optim.class_balance": balance,
        })
        recorder = TrainingBatches(balanced_weights() if balance == "weighted_loss" else None)
        runs[balance] = (train(config, root / balance, callbacks=[recorder]), recorder)
    return runs


def test_weighted_loss_weighs_each_class_by_n_over_c_times_its_count() -> None:
    targets = torch.tensor([0] * 6 + [1] * 2 + [2] * 1 + [3] * 3)  # N = 12, C = 4
    config = RunConfig().with_changes(**{"optim.class_balance": "weighted_loss"})

    weights = create_loss(config, targets, 4).class_weights

    # 12 / (4 * 6), 12 / (4 * 2), 12 / (4 * 1), 12 / (4 * 3): exact in binary floating point.
    assert torch.equal(weights, torch.tensor([0.5, 1.5, 3.0, 1.0]))
    # So every class weighs the same in total, N / C = 3.
    assert torch.equal(torch.bincount(targets, weights=weights[targets]), torch.full((4,), 3.0, dtype=torch.float64))
    # A class missing from training counts as 1 (no division by zero); no balancing, no weights.
    assert torch.equal(create_loss(config, torch.tensor([0, 0, 0, 1]), 3).class_weights,
                       torch.tensor([4 / 9, 4 / 3, 4 / 3]))
    assert create_loss(RunConfig(), targets, 4).class_weights is None


@pytest.mark.slow
def test_a_weighted_run_trains_with_those_weights(balance_runs: dict) -> None:
    _, weighted = balance_runs["weighted_loss"]
    _, plain = balance_runs["none"]
    assert len(weighted.losses) == len(plain.losses) == 2 * EPOCHS  # 43 vectors in batches of 32
    for loss, expected in weighted.losses:
        assert loss == pytest.approx(expected, rel=1e-5)
    for loss, expected in plain.losses:  # unweighted cross-entropy, by the same check
        assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_the_balanced_sampler_draws_every_class_equally_often(balance_runs: dict) -> None:
    _, plain = balance_runs["none"]
    _, sampled = balance_runs["balanced_sampler"]
    # Without the sampler every epoch is a permutation of the training items.
    assert plain.drawn.tolist() == [EPOCHS * count for count in TRAIN_COUNTS.values()]
    assert_classes_drawn_equally(sampled.drawn)


@pytest.mark.slow
def test_balancing_raises_macro_recall_on_a_balanced_validation_set(balance_runs: dict) -> None:
    def macro_recall(result: RunResult) -> float:
        # The mean per-class recall of the last epoch on 15 photos per class.
        recalls = result.history[-1]["val_per_class_top1"]
        assert sorted(recalls) == sorted(TRAIN_COUNTS)
        return sum(recalls.values()) / len(recalls)

    scores = {balance: macro_recall(result) for balance, (result, _) in balance_runs.items()}
    print(f"\nmacro recall: {scores}; per class without balancing: "
          f"{balance_runs['none'][0].history[-1]['val_per_class_top1']}")
    for balance in ("weighted_loss", "balanced_sampler"):
        assert scores[balance] >= scores["none"] + 0.1, balance


def test_the_balanced_sampler_of_fine_tuning_draws_every_class_equally_often(tmp_path: Path) -> None:
    """The same promise through the image loader of fine-tuning (a WeightedRandomSampler over decoded photos)."""
    data = copy_demo(tmp_path / "data", TRAIN_COUNTS)
    drawn = {}
    for balance in ("none", "balanced_sampler"):
        config = RunConfig().with_changes(**{
            "data.path": str(data), "data.num_workers": 0, "data.input_size": 32, "data.val_fraction": 0.0,
            "model.mode": "fine_tune", "model.backbone": "mobilenetv3_small_050", "model.weights": "none",
            "optim.class_balance": balance, "optim.batch_size": 43})
        setup = build_training(config, prepare_run_data(config))
        counts = torch.zeros(len(TRAIN_COUNTS), dtype=torch.long)
        for _ in range(EPOCHS):
            for _, targets in setup.train_batches:
                counts += torch.bincount(targets, minlength=len(TRAIN_COUNTS))
        drawn[balance] = counts
    assert drawn["none"].tolist() == [EPOCHS * count for count in TRAIN_COUNTS.values()]
    assert_classes_drawn_equally(drawn["balanced_sampler"])

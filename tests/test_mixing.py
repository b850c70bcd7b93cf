"""Mixup and CutMix through timm: soft targets, pasted boxes, odd batches, feature batches and the soft loss."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy

from augment import create_mixup, mix_batch, soft_target_cross_entropy
from engine.config import AugmentConfig
from engine.errors import ConfigError

CLASSES = 5


@pytest.fixture(autouse=True)
def numpy_seeded() -> Iterator[None]:
    """timm's Mixup draws from NumPy's global state: seed it for each test and put it back."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def mixer(**changes: float) -> Mixup:
    mixup = create_mixup(AugmentConfig(**changes), CLASSES)
    assert mixup is not None
    return mixup


def constant_images(count: int, size: int = 16) -> torch.Tensor:
    """Image ``i`` is filled with the value ``i + 1``, so every pixel tells where it came from."""
    return torch.arange(1, count + 1, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 3, size, size).clone()


def test_no_mixing_gives_none() -> None:
    assert create_mixup(AugmentConfig(), CLASSES) is None
    assert create_mixup(AugmentConfig(mixup_alpha=0.2, mix_probability=0.0), CLASSES) is None


def test_the_config_reaches_timm() -> None:
    config = AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0, mix_probability=0.7, mix_switch_probability=0.3)
    mixup = create_mixup(config, CLASSES, label_smoothing=0.1)
    assert isinstance(mixup, Mixup)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.mix_prob, mixup.switch_prob) == (0.2, 1.0, 0.7, 0.3)
    assert (mixup.label_smoothing, mixup.num_classes, mixup.mode) == (0.1, CLASSES, "batch")


@pytest.mark.parametrize("alphas", [
    {"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
])
def test_targets_are_soft_rows_that_sum_to_one(alphas: dict[str, float]) -> None:
    mixup = mixer(**alphas)
    for _ in range(5):
        images, targets = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
        _, soft = mix_batch(mixup, images, targets)
        assert soft.shape == (8, CLASSES) and soft.dtype == torch.float32
        assert torch.allclose(soft.sum(dim=1), torch.ones(8), atol=1e-6)
        assert ((soft > 0) & (soft < 1)).any()  # mixed, not one-hot


def test_mixup_blends_each_image_with_its_mirror_in_the_batch() -> None:
    images = torch.randn(6, 3, 8, 8)
    targets = torch.tensor([0, 1, 2, 3, 4, 1])
    mixed, soft = mix_batch(mixer(mixup_alpha=0.4), images.clone(), targets)
    lam = soft[0, targets[0]].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0), atol=1e-6)


def test_cutmix_pastes_one_rectangle_of_the_mirror_image() -> None:
    images = constant_images(4)
    mixed, soft = mix_batch(mixer(cutmix_alpha=1.0), images.clone(), torch.tensor([0, 1, 2, 3]))
    pasted = mixed[0, 0] == 4  # image 0 holds 1s; its mirror, image 3, holds 4s
    assert (mixed[0, 0][~pasted] == 1).all()
    rows, columns = pasted.any(dim=1).nonzero().flatten(), pasted.any(dim=0).nonzero().flatten()
    assert len(rows) and len(columns)
    box = pasted[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
    assert box.all()  # the pasted pixels fill their bounding box: a rectangle
    assert soft[0, 3].item() == pytest.approx(pasted.float().mean().item(), abs=1e-6)
    assert soft[0, 0].item() == pytest.approx(1 - pasted.float().mean().item(), abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_an_odd_batch_mixes_all_but_the_last_item(smoothing: float) -> None:
    mixup = create_mixup(AugmentConfig(mixup_alpha=0.4), CLASSES, label_smoothing=smoothing)
    images = torch.randn(5, 3, 8, 8)
    targets = torch.tensor([0, 1, 2, 3, 4])
    mixed, soft = mix_batch(mixup, images.clone(), targets)
    assert mixed.shape == images.shape and soft.shape == (5, CLASSES)
    assert torch.allclose(soft.sum(dim=1), torch.ones(5), atol=1e-6)
    assert torch.equal(mixed[4], images[4])
    off = smoothing / CLASSES
    assert torch.allclose(soft[4], torch.tensor([off] * 4 + [1 - smoothing + off]))
    lam = (soft[0, 0].item() - off) / (1 - smoothing)
    assert torch.allclose(mixed[:4], lam * images[:4] + (1 - lam) * images[:4].flip(0), atol=1e-6)


def test_a_batch_of_one_is_left_as_it_is() -> None:
    images = torch.randn(1, 3, 8, 8)
    mixed, soft = mix_batch(mixer(mixup_alpha=0.4, cutmix_alpha=1.0), images.clone(), torch.tensor([2]))
    assert torch.equal(mixed, images)
    assert torch.equal(soft, F.one_hot(torch.tensor([2]), CLASSES).float())


@pytest.mark.parametrize("count", [6, 7])
def test_feature_batches_mix_with_mixup(count: int) -> None:
    features = torch.randn(count, 32)
    targets = torch.tensor([0, 1, 2, 3, 4, 1, 2])[:count]  # item 0 and its mirror differ in class
    mixed, soft = mix_batch(mixer(mixup_alpha=0.4), features.clone(), targets)
    even = count - count % 2
    lam = soft[0, targets[0]].item()
    assert 0 < lam < 1
    assert torch.allclose(mixed[:even], lam * features[:even] + (1 - lam) * features[:even].flip(0), atol=1e-6)
    assert torch.allclose(soft.sum(dim=1), torch.ones(count), atol=1e-6)


def test_cutmix_on_features_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"augment\.cutmix_alpha: .*\(6, 32\)"):
        mix_batch(mixer(mixup_alpha=0.4, cutmix_alpha=1.0), torch.randn(6, 32), torch.arange(6) % CLASSES)


def test_soft_target_loss_matches_timm_and_plain_cross_entropy() -> None:
    logits = torch.randn(6, CLASSES)
    soft = torch.softmax(torch.randn(6, CLASSES), dim=1)
    assert torch.allclose(soft_target_cross_entropy(logits, soft), SoftTargetCrossEntropy()(logits, soft), atol=1e-6)
    hard = torch.tensor([0, 1, 2, 3, 4, 0])
    one_hot = F.one_hot(hard, CLASSES).float()
    assert torch.allclose(soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, hard), atol=1e-6)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    expected = -(weight * soft * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    assert torch.allclose(soft_target_cross_entropy(logits, soft, weight), expected, atol=1e-6)

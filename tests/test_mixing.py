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
from engine.core.config import AugmentConfig
from engine.core.device import plan_device
from engine.core.errors import ConfigError
from engine.training.callback import Callback, LoopState
from engine.training.loop import Loop
from engine.training.recipes import MixBatches

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


class Batches(Callback):
    """Keeps a copy of every batch the loop sees at this point of ``before_batch`` (by ``order``)."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.seen: list[tuple[bool, torch.Tensor, torch.Tensor]] = []

    def before_batch(self, state: LoopState) -> None:
        self.seen.append((state.training, state.inputs.clone(), state.targets.clone()))


def run_mixing_loop(mixup: Mixup, inputs: list[torch.Tensor], targets: torch.Tensor, epochs: int) -> tuple:
    """A real loop with the run's mixing callback over ``inputs`` batches; the batches before and after it."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(inputs[0][0].numel(), CLASSES))
    before, after = Batches(MixBatches.order - 1), Batches(MixBatches.order + 1)
    loop = Loop(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        loss_function=lambda logits, soft: soft_target_cross_entropy(logits, soft) if soft.dim() == 2
        else F.cross_entropy(logits, soft),
        train_batches=[(batch, targets) for batch in inputs], val_batches=[(inputs[0].clone(), targets)],
        device_plan=plan_device("cpu", images=False), callbacks=[before, MixBatches(mixup), after],
    )
    loop.fit(epochs)
    return before.seen, after.seen


def test_the_training_loop_mixes_every_training_batch_and_no_validation_batch() -> None:
    # Item i and its mirror N - 1 - i always differ in class, so a soft row tells lam.
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 32, generator=generator) for _ in range(10)]

    before, after = run_mixing_loop(mixer(mixup_alpha=0.4), batches, targets, epochs=4)

    lams = []
    assert len(before) == len(after) == 4 * 11  # 10 training batches and 1 validation batch an epoch
    for (training, original, hard), (_, mixed, soft) in zip(before, after, strict=True):
        if not training:
            assert torch.equal(mixed, original) and torch.equal(soft, hard)  # validation is never mixed
            continue
        lam = soft[0, hard[0]].item()
        lams.append(lam)
        one_hot = F.one_hot(hard, CLASSES).float()
        torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot.flip(0), atol=1e-6, rtol=0)
        torch.testing.assert_close(mixed, lam * original + (1 - lam) * original.flip(0), atol=1e-5, rtol=1e-5)
    # lam ~ Beta(0.4, 0.4): never exactly 0 or 1, about half the draws in (0.1, 0.9), mean 1/2
    # (standard deviation 0.37, so 0.06 for the mean of 40).
    assert len(lams) == 40 and all(0 < lam < 1 for lam in lams)
    assert sum(0.1 < lam < 0.9 for lam in lams) >= 10
    assert abs(np.mean(lams) - 0.5) < 0.25


def test_the_training_loop_pastes_one_box_per_batch_whose_area_matches_the_targets() -> None:
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    images = constant_images(8, size=24)  # every pixel of image i is i + 1

    before, after = run_mixing_loop(mixer(cutmix_alpha=1.0), [images.clone() for _ in range(12)], targets, epochs=1)

    areas = []
    for (training, original, hard), (_, mixed, soft) in zip(before, after, strict=True):
        if not training:
            continue
        # Every image holds its own value outside one box and its mirror's inside, the same box for all.
        pasted = mixed != original
        box = pasted[0, 0]
        assert all(torch.equal(pasted[i, c], box) for i in range(8) for c in range(3))
        assert torch.equal(mixed[pasted], original.flip(0)[pasted])
        rows, columns = box.any(dim=1).nonzero().flatten(), box.any(dim=0).nonzero().flatten()
        if len(rows):
            assert box[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all()  # a rectangle
        area = box.float().mean().item()
        areas.append(area)
        # The soft target gives the pasted share to the mirror's class: lam = 1 - area.
        one_hot = F.one_hot(hard, CLASSES).float()
        torch.testing.assert_close(soft, (1 - area) * one_hot + area * one_hot.flip(0), atol=1e-6, rtol=0)
    assert len(areas) == 12 and sum(0 < area < 1 for area in areas) >= 9 and len(set(areas)) >= 6

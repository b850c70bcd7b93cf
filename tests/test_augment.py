"""The training transform: presets and overrides, effective controls, cache keys, seeding and what each step does."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from augment import (
    TrainTransform,
    create_eval_transform,
    create_train_transform,
    describe_train_transform,
    get_preset,
    list_presets,
    resolve_controls,
)
from engine.core.config import AUGMENT_PRESETS, AugmentConfig
from engine.core.errors import ConfigError
from engine.data.settings import DataSettings

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Non-square, so that a swapped height and width cannot pass.
SETTINGS = DataSettings(input_size=(3, 48, 64), mean=MEAN, std=STD, interpolation="bicubic", crop_pct=0.875,
                        crop_mode="center")
SQUARE = dataclasses.replace(SETTINGS, input_size=(3, 64, 64), crop_pct=1.0)
# Crop nothing away, so that the output is the input at the same size plus the step under test.
WHOLE = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "horizontal_flip": 0.0}


def demo_image() -> Image.Image:
    return Image.open(DEMO / "bag" / "bag_00018.png").convert("RGB")


def noise_image(size: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def pixels(tensor: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: ``(H, W, 3)`` uint8."""
    values = tensor * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    return (values * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_presets_and_controls_load_without_torch_or_albumentations() -> None:
    # The GUI's augmentation form shows and checks the controls in a process that has not loaded them.
    script = (
        "import sys\n"
        "from augment import get_preset, list_presets, resolve_controls\n"
        "from engine.core.config import AugmentConfig\n"
        "assert resolve_controls(AugmentConfig(preset='light', cutout=0.5)).cutout == 0.5\n"
        "assert [get_preset(name).changes_images for name in list_presets()] == [False, True, True, True]\n"
        "heavy = sorted({'torch', 'timm', 'albumentations', 'cv2'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_every_preset_gives_a_float_tensor_of_the_settings_size(preset: str) -> None:
    transform = create_train_transform(AugmentConfig(preset=preset), SETTINGS, seed=0)
    for _ in range(3):
        output = transform(demo_image())
        assert output.shape == (3, 48, 64) and output.dtype == torch.float32
        assert torch.isfinite(output).all()


def test_the_presets_are_the_configs_choices() -> None:
    assert list_presets() == AUGMENT_PRESETS


def test_preset_none_is_the_eval_transform() -> None:
    image = demo_image()
    train = create_train_transform(AugmentConfig(preset="none"), SETTINGS)
    assert torch.equal(train(image), create_eval_transform(SETTINGS)(image))
    assert not resolve_controls(AugmentConfig(preset="none")).changes_images


def test_null_controls_take_the_presets_values() -> None:
    for preset in AUGMENT_PRESETS:
        assert resolve_controls(AugmentConfig(preset=preset)) == get_preset(preset)
    light_with_cutout = resolve_controls(AugmentConfig(preset="light", cutout=0.5))
    assert light_with_cutout == dataclasses.replace(get_preset("light"), cutout=0.5)
    assert light_with_cutout.cutout_holes == get_preset("light").cutout_holes


def test_presets_grow_stronger() -> None:
    light, standard, strong = (get_preset(name) for name in ("light", "standard", "strong"))
    assert light.crop_scale is not None and light.horizontal_flip > 0 and light.cutout == 0
    assert standard.color_jitter > 0 and standard.rotation_degrees > 0 and standard.cutout > 0
    assert standard.blur == standard.noise == 0 and standard.random_policy == "none"
    assert strong.blur > 0 and strong.noise > 0 and strong.random_policy == "randaugment"
    assert strong.cutout > standard.cutout and strong.cutout_size[1] > standard.cutout_size[1]


def test_switching_the_policy_switches_its_defaults() -> None:
    trivial = resolve_controls(AugmentConfig(preset="strong", random_policy="trivialaugment"))
    assert (trivial.random_policy_ops, trivial.random_policy_magnitude) == (1, 1.0)
    rand = resolve_controls(AugmentConfig(preset="light", random_policy="randaugment"))
    assert (rand.random_policy_ops, rand.random_policy_magnitude) == (2, 0.5)


OVERRIDES = [
    ("light", "crop_scale", (0.5, 1.0)),
    ("light", "crop_ratio", (0.5, 2.0)),
    ("light", "horizontal_flip", 0.2),
    ("light", "vertical_flip", 0.5),
    ("light", "rotation_degrees", 10.0),
    ("light", "color_jitter", 0.2),
    ("light", "blur", 0.1),
    ("light", "noise", 0.1),
    ("light", "cutout", 0.5),
    ("standard", "cutout_holes", (2, 4)),
    ("standard", "cutout_size", (0.05, 0.1)),
    ("light", "random_policy", "trivialaugment"),
    ("strong", "random_policy_ops", 3),
    ("strong", "random_policy_magnitude", 0.8),
]


@pytest.mark.parametrize(("preset", "name", "value"), OVERRIDES)
def test_each_override_changes_the_controls_and_the_cache_key(preset: str, name: str, value: object) -> None:
    base = AugmentConfig(preset=preset)
    changed = dataclasses.replace(base, **{name: value})
    assert getattr(resolve_controls(changed), name) == value
    assert describe_train_transform(changed, SETTINGS) != describe_train_transform(base, SETTINGS)
    assert create_train_transform(changed, SETTINGS, seed=0)(demo_image()).shape == (3, 48, 64)


def test_the_cache_key_follows_effective_values_and_data_settings_only() -> None:
    standard = AugmentConfig(preset="standard")
    same_as_preset = dataclasses.replace(standard, color_jitter=get_preset("standard").color_jitter)
    assert describe_train_transform(same_as_preset, SETTINGS) == describe_train_transform(standard, SETTINGS)
    assert describe_train_transform(standard, SETTINGS) == describe_train_transform(AugmentConfig("standard"), SETTINGS)
    assert describe_train_transform(standard, SQUARE) != describe_train_transform(standard, SETTINGS)
    mixing = dataclasses.replace(standard, mixup_alpha=0.2)  # mixes batches, not the cached views
    assert describe_train_transform(mixing, SETTINGS) == describe_train_transform(standard, SETTINGS)


@pytest.mark.parametrize(("changes", "message"), [
    ({"preset": "light", "random_policy_ops": 3}, "augment.random_policy_ops: has no effect"),
    ({"preset": "standard", "random_policy_magnitude": 0.3}, "augment.random_policy_magnitude: has no effect"),
    ({"preset": "strong", "random_policy": "trivialaugment", "random_policy_ops": 2},
     "augment.random_policy_ops: trivialaugment applies exactly one operation"),
    ({"preset": "light", "cutout_size": (0.1, 0.2)}, "augment.cutout_size: has no effect"),
    ({"preset": "standard", "cutout": 0.0, "cutout_holes": (1, 4)}, "augment.cutout_holes: has no effect"),
    ({"preset": "none", "crop_ratio": (0.5, 2.0)}, "augment.crop_ratio: has no effect"),
    ({"preset": "heavy"}, "augment.preset: must be one of none, light, standard, strong, got 'heavy'"),
])
def test_controls_that_cannot_act_are_config_errors_naming_the_field(changes: dict, message: str) -> None:
    config = AugmentConfig(**changes)
    for build in (resolve_controls, lambda augment: create_train_transform(augment, SETTINGS),
                  lambda augment: describe_train_transform(augment, SETTINGS)):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            build(config)


def test_cutout_fills_holes_with_the_mean_colour() -> None:
    colour = (200, 30, 90)
    image = Image.new("RGB", (64, 64), colour)
    config = AugmentConfig(preset="light", **WHOLE, cutout=1.0, cutout_holes=(2, 2), cutout_size=(0.25, 0.25))
    fill = np.array([round(255 * value) for value in MEAN], dtype=np.uint8)
    transform = create_train_transform(config, SQUARE, seed=0)
    for _ in range(5):
        output = pixels(transform(image))
        holes = (output == fill).all(axis=-1).sum()
        untouched = (output == colour).all(axis=-1).sum()
        assert 16 * 16 <= holes <= 2 * 16 * 16  # two 16-pixel squares, which may overlap
        assert holes + untouched == 64 * 64


@pytest.mark.parametrize(("name", "flip"), [("horizontal_flip", np.fliplr), ("vertical_flip", np.flipud)])
def test_a_flip_of_probability_one_always_flips(name: str, flip: object) -> None:
    image = noise_image()
    unflipped = create_train_transform(AugmentConfig(preset="light", **WHOLE), SQUARE, seed=0)(image)
    assert np.array_equal(pixels(unflipped), np.asarray(image))  # the crop keeps everything
    config = AugmentConfig(preset="light", **{**WHOLE, name: 1.0})
    transform = create_train_transform(config, SQUARE, seed=0)
    for _ in range(3):
        assert np.array_equal(pixels(transform(image)), flip(np.asarray(image)))


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_random_policies_vary_and_repeat_with_the_seed(policy: str) -> None:
    config = AugmentConfig(preset="none", random_policy=policy)  # no crop: only the policy varies
    image = demo_image()

    def outputs(seed: int) -> list[torch.Tensor]:
        transform = create_train_transform(config, SETTINGS, seed=seed)
        return [transform(image) for _ in range(8)]

    first = outputs(seed=3)
    distinct = {output.numpy().tobytes() for output in first}
    assert len(distinct) >= 5
    assert all(torch.equal(a, b) for a, b in zip(first, outputs(seed=3), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, outputs(seed=4), strict=True))


def test_randaugment_applies_its_number_of_operations() -> None:
    config = AugmentConfig(preset="none", random_policy="randaugment", random_policy_ops=3)
    transform = create_train_transform(config, SETTINGS, seed=0)
    assert isinstance(transform, TrainTransform)
    for _ in range(10):
        _, operations = transform.explain(demo_image())
        # Three policy operations between the resize (outside albumentations) and normalising.
        assert len(operations) == 3 + 2 and operations[-2:] == ("Normalize", "ToTensorV2")


def test_steps_draw_independently_of_each_other() -> None:
    # Compose(seed=...) would give each step a generator with the same seed, so both flips
    # of equal probability would always fire together.
    config = AugmentConfig(preset="light", **{**WHOLE, "horizontal_flip": 0.5, "vertical_flip": 0.5})
    transform = create_train_transform(config, SQUARE, seed=0)
    seen = {transform.explain(noise_image())[1][1:-2] for _ in range(40)}
    assert seen == {(), ("HorizontalFlip",), ("VerticalFlip",), ("HorizontalFlip", "VerticalFlip")}


class _Repeated(Dataset):
    """The same image, augmented again for every index."""

    def __init__(self, transform: object, image: Image.Image, length: int = 8) -> None:
        self.transform, self.image, self.length = transform, image, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def test_loader_workers_draw_different_augmentations_reproducibly() -> None:
    transform = create_train_transform(AugmentConfig(preset="light"), SQUARE)
    dataset = _Repeated(transform, noise_image())

    def load(seed: int) -> torch.Tensor:
        loader = DataLoader(dataset, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(loader))

    first = load(seed=0)
    # Batches 0 and 1 come from workers 0 and 1: forked copies of one random state would match.
    assert not torch.equal(first[0], first[2]) and not torch.equal(first[1], first[3])
    assert torch.equal(first, load(seed=0))
    assert not torch.equal(first, load(seed=1))  # e.g. a second feature view of the same images

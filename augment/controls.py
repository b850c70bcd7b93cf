"""Augmentation presets and their controls: the effective value of each control, from a preset and the config.

Plain data (no albumentations, no torch), so forms can show and check the controls;
``augment.transforms`` builds the pipeline they describe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.core.config import AugmentConfig
from engine.core.errors import ConfigError

_DEFAULT_CROP_RATIO = (3 / 4, 4 / 3)
# (operations, magnitude) a random policy gets when augment leaves them null.
_POLICY_DEFAULTS = {"none": (0, 0.0), "randaugment": (2, 0.5), "trivialaugment": (1, 1.0)}


@dataclass(frozen=True)
class AugmentControls:
    """The effective value of every augmentation control: the preset's, or the config's override.

    Attributes:
        crop_scale: random resized crop, range of the image area kept; None means no
            random crop (resize and centre-crop as in evaluation).
        crop_ratio: random resized crop, range of aspect ratios (width / height).
        horizontal_flip: chance of a left-right flip.
        vertical_flip: chance of an upside-down flip.
        rotation_degrees: largest rotation either way, in degrees (0 = none).
        color_jitter: brightness, contrast and saturation factors in ``1 +- strength``;
            hue shifts by up to a quarter of it (in turns of the colour wheel).
        blur: chance of a Gaussian blur (sigma 0.1 to 2 pixels).
        noise: chance of Gaussian noise (standard deviation 2% to 10% of the full range).
        cutout: chance of cutting holes, filled with the mean colour (zero after normalising).
        cutout_holes: range of the number of holes.
        cutout_size: range of hole sides, as fractions of the image side.
        random_policy: ``none``, ``randaugment`` or ``trivialaugment``.
        random_policy_ops: operations per image (0 without a policy, 1 for trivialaugment).
        random_policy_magnitude: randaugment's fixed strength, or trivialaugment's
            largest (its strength is drawn from ``[0, magnitude]``), 0 to 1.
    """

    crop_scale: tuple[float, float] | None
    crop_ratio: tuple[float, float]
    horizontal_flip: float
    vertical_flip: float
    rotation_degrees: float
    color_jitter: float
    blur: float
    noise: float
    cutout: float
    cutout_holes: tuple[int, int]
    cutout_size: tuple[float, float]
    random_policy: str
    random_policy_ops: int
    random_policy_magnitude: float

    @property
    def changes_images(self) -> bool:
        """Whether any control is on; when none is, training uses the eval transform."""
        return self.crop_scale is not None or any(
            value > 0 for value in (self.horizontal_flip, self.vertical_flip, self.rotation_degrees,
                                    self.color_jitter, self.blur, self.noise, self.cutout)
        ) or self.random_policy != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML types, in field order (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


def _preset(**changes: Any) -> AugmentControls:
    off = AugmentControls(
        crop_scale=None, crop_ratio=_DEFAULT_CROP_RATIO, horizontal_flip=0.0, vertical_flip=0.0,
        rotation_degrees=0.0, color_jitter=0.0, blur=0.0, noise=0.0, cutout=0.0, cutout_holes=(1, 2),
        cutout_size=(0.1, 0.25), random_policy="none", random_policy_ops=0, random_policy_magnitude=0.0,
    )
    return dataclasses.replace(off, **changes)


_PRESETS: dict[str, AugmentControls] = {
    "none": _preset(),
    "light": _preset(crop_scale=(0.35, 1.0), horizontal_flip=0.5),
    "standard": _preset(crop_scale=(0.25, 1.0), horizontal_flip=0.5, rotation_degrees=15.0, color_jitter=0.3,
                        cutout=0.3),
    "strong": _preset(crop_scale=(0.15, 1.0), horizontal_flip=0.5, rotation_degrees=20.0, color_jitter=0.4,
                      blur=0.2, noise=0.2, cutout=0.5, cutout_holes=(1, 3), cutout_size=(0.15, 0.35),
                      random_policy="randaugment", random_policy_ops=_POLICY_DEFAULTS["randaugment"][0],
                      random_policy_magnitude=_POLICY_DEFAULTS["randaugment"][1]),
}


def list_presets() -> tuple[str, ...]:
    """Names of the augmentation presets, weakest first."""
    return tuple(_PRESETS)


def get_preset(name: str) -> AugmentControls:
    """The controls of a preset before any override.

    Raises:
        ConfigError: an unknown preset (named as ``augment.preset``).
    """
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"augment.preset: must be one of {', '.join(_PRESETS)}, got {name!r}") from None


def resolve_controls(augment: AugmentConfig) -> AugmentControls:
    """The effective controls: each control the config leaves null takes the preset's value.

    Random-policy operations and magnitude default per policy (randaugment 2 at 0.5,
    trivialaugment 1 up to 1.0), so switching the policy also switches its defaults.

    Raises:
        ConfigError: an unknown preset or policy, or a control set where it can have no
            effect (e.g. ``augment.cutout_size`` while cutout is 0, or
            ``augment.random_policy_ops`` with no random policy); the message names the field.
    """
    preset = get_preset(augment.preset)
    overrides = {
        item.name: getattr(augment, item.name)
        for item in dataclasses.fields(AugmentControls)
        if getattr(augment, item.name) is not None
    }
    controls = dataclasses.replace(preset, **overrides)
    policy = controls.random_policy
    if policy not in _POLICY_DEFAULTS:
        raise ConfigError(f"augment.random_policy: must be one of {', '.join(_POLICY_DEFAULTS)}, got {policy!r}")
    ops, magnitude = _POLICY_DEFAULTS[policy]
    for name in ("random_policy_ops", "random_policy_magnitude"):
        _require_effect(augment, name, policy != "none",
                        f"there is no random policy (preset {augment.preset}, augment.random_policy"
                        f" {augment.random_policy or 'null'}): set augment.random_policy to randaugment or"
                        " trivialaugment")
    if policy == "trivialaugment" and augment.random_policy_ops not in (None, 1):
        raise ConfigError(f"augment.random_policy_ops: trivialaugment applies exactly one operation per image,"
                          f" got {augment.random_policy_ops}; leave it null or use randaugment")
    for name in ("cutout_holes", "cutout_size"):
        _require_effect(augment, name, controls.cutout > 0,
                        f"cutout is off (preset {augment.preset}, augment.cutout {augment.cutout or 'null'}):"
                        " set augment.cutout too, e.g. 0.5")
    _require_effect(augment, "crop_ratio", controls.crop_scale is not None,
                    f"preset {augment.preset} has no random crop: set augment.crop_scale too, e.g. [0.35, 1.0]")
    return dataclasses.replace(
        controls,
        random_policy_ops=ops if augment.random_policy_ops is None else augment.random_policy_ops,
        random_policy_magnitude=magnitude if augment.random_policy_magnitude is None
        else augment.random_policy_magnitude,
    )


def _require_effect(augment: AugmentConfig, name: str, effective: bool, reason: str) -> None:
    if getattr(augment, name) is not None and not effective:
        value = getattr(augment, name)
        shown = list(value) if isinstance(value, tuple) else value
        raise ConfigError(f"augment.{name}: has no effect, as {reason}; got {shown!r}")

"""RandAugment and TrivialAugment built from albumentations operations.

Both draw from the same 14 operations as torchvision's RandAugment; a magnitude of 1
is the strongest setting of each (torchvision's bin 30 of 31, timm's level 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeAlias

import albumentations as A
import cv2

from engine.core.config import RANDOM_POLICIES
from engine.core.errors import ConfigError

# Largest change of each operation, reached at magnitude 1 (torchvision's RandAugment).
_MAX_ROTATE_DEGREES = 30.0
_MAX_SHEAR = 0.3  # shear factor, i.e. atan(0.3) ~ 16.7 degrees
_MAX_TRANSLATE = 0.45  # fraction of the image side (150/331 in the paper)
_MAX_FACTOR_CHANGE = 0.9  # brightness, contrast and saturation factors in 1 +- 0.9 m
_MAX_POSTERIZE_BITS_DROPPED = 4

Transform: TypeAlias = A.BasicTransform | A.BaseCompose
_SignedRange = tuple[float, float]


def create_random_policy(
    policy: str, ops: int, magnitude: float, *, fill: tuple[int, int, int]
) -> Transform:
    """One albumentations block applying a random policy to a uint8 RGB image.

    Args:
        policy: ``randaugment`` (``ops`` operations drawn with replacement, each at
            exactly ``magnitude`` with a random sign) or ``trivialaugment`` (one
            operation at a magnitude drawn uniformly from ``[0, magnitude]``).
        ops: operations per image (randaugment only; trivialaugment applies one).
        magnitude: strength in ``[0, 1]``.
        fill: RGB colour of the pixels that shear, shift and rotation uncover.

    Raises:
        ConfigError: an unknown policy (named by field).
    """
    if policy == "randaugment":
        return A.SomeOf(_operations(magnitude, magnitude, fill), n=ops, replace=True, p=1.0)
    if policy == "trivialaugment":
        return A.OneOf(_operations(0.0, magnitude, fill), p=1.0)
    choices = ", ".join(name for name in RANDOM_POLICIES if name != "none")
    raise ConfigError(f"augment.random_policy: must be one of {choices} here, got {policy!r}")


def _operations(low: float, high: float, fill: tuple[int, int, int]) -> list[Transform]:
    """The 14 operations, each at a magnitude drawn from ``[low, high]`` (a fixed one when equal)."""

    def affine(**kwargs: object) -> A.Affine:
        return A.Affine(**kwargs, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=fill, p=1.0)

    def factor(signed: _SignedRange) -> _SignedRange:
        return 1.0 + _MAX_FACTOR_CHANGE * signed[0], 1.0 + _MAX_FACTOR_CHANGE * signed[1]

    neutral = (1.0, 1.0)
    bits_low = 8 - round(_MAX_POSTERIZE_BITS_DROPPED * high)
    bits_high = 8 - round(_MAX_POSTERIZE_BITS_DROPPED * low)
    return [
        A.NoOp(p=1.0),
        A.AutoContrast(p=1.0),
        A.Equalize(p=1.0),
        _signed(low, high, lambda r: A.Rotate(
            limit=(_MAX_ROTATE_DEGREES * r[0], _MAX_ROTATE_DEGREES * r[1]), interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_CONSTANT, fill=fill, p=1.0)),
        _signed(low, high, lambda r: affine(shear={"x": _shear_degrees(r), "y": (0.0, 0.0)})),
        _signed(low, high, lambda r: affine(shear={"x": (0.0, 0.0), "y": _shear_degrees(r)})),
        _signed(low, high, lambda r: affine(translate_percent={"x": _scaled(r, _MAX_TRANSLATE), "y": (0.0, 0.0)})),
        _signed(low, high, lambda r: affine(translate_percent={"x": (0.0, 0.0), "y": _scaled(r, _MAX_TRANSLATE)})),
        _signed(low, high, lambda r: A.ColorJitter(
            brightness=factor(r), contrast=neutral, saturation=neutral, hue=(0.0, 0.0), p=1.0)),
        _signed(low, high, lambda r: A.ColorJitter(
            brightness=neutral, contrast=factor(r), saturation=neutral, hue=(0.0, 0.0), p=1.0)),
        _signed(low, high, lambda r: A.ColorJitter(
            brightness=neutral, contrast=neutral, saturation=factor(r), hue=(0.0, 0.0), p=1.0)),
        # Sharpen only sharpens; torchvision's negative sharpness (a blur) is left to augment.blur.
        A.Sharpen(alpha=(_MAX_FACTOR_CHANGE * low, _MAX_FACTOR_CHANGE * high), lightness=(1.0, 1.0), p=1.0),
        A.Posterize(num_bits=(bits_low, bits_high), p=1.0),
        A.Solarize(threshold_range=(1.0 - high, 1.0 - low), p=1.0),
    ]


def _signed(low: float, high: float, make: Callable[[_SignedRange], Transform]) -> Transform:
    """An operation whose magnitude in ``[low, high]`` takes either sign with equal chance.

    ``make`` receives a range of signed magnitudes. With ``low == 0`` the range
    ``[-high, high]`` already is a random sign times a uniform magnitude; otherwise
    the two signs are two ranges, one of which ``OneOf`` picks.
    """
    if low == 0.0:
        return make((-high, high))
    return A.OneOf([make((low, high)), make((-high, -low))], p=1.0)


def _scaled(signed: _SignedRange, scale: float) -> _SignedRange:
    return scale * signed[0], scale * signed[1]


def _shear_degrees(signed: _SignedRange) -> _SignedRange:
    return math.degrees(math.atan(_MAX_SHEAR * signed[0])), math.degrees(math.atan(_MAX_SHEAR * signed[1]))

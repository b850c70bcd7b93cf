"""What a backbone asks of its images: size, normalisation, resizing and crop, as timm resolves them.

Kept in the data layer, as timm keeps ``resolve_data_config`` in ``timm.data``: transforms and
loaders need these settings, and must not import the models package to get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from engine.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

_T = TypeVar("_T")


def _three(field: str, values: tuple[_T, ...]) -> tuple[_T, _T, _T]:
    """Return ``values`` as a triple: (channels, height, width), or one value per RGB channel.

    Raises:
        ConfigError: there are not exactly 3 values.
    """
    if len(values) != 3:
        raise ConfigError(f"data_settings.{field}: expected 3 values, got {list(values)}")
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class DataSettings:
    """How images must be prepared for a backbone: size, normalisation, resizing and crop.

    Attributes:
        input_size: (channels, height, width) of the model input, in pixels.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after subtracting the mean.
        interpolation: resize filter, e.g. ``"bicubic"``.
        crop_pct: fraction of the resized image kept by the evaluation centre crop.
        crop_mode: timm's crop mode, e.g. ``"center"``.
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    crop_mode: str

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON/YAML types (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSettings:
        """Build settings from ``to_dict()`` output (lists or tuples).

        Raises:
            ConfigError: a field is missing, unknown, or of the wrong type.
        """
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"data_settings.{unknown[0]}: unknown field")
        try:
            input_size = tuple(int(value) for value in data["input_size"])
            mean = tuple(float(value) for value in data["mean"])
            std = tuple(float(value) for value in data["std"])
            interpolation = str(data["interpolation"])
            crop_pct = float(data["crop_pct"])
            crop_mode = str(data["crop_mode"])
        except KeyError as error:
            raise ConfigError(f"data_settings.{error.args[0]}: missing") from error
        except (TypeError, ValueError) as error:
            raise ConfigError(f"data_settings: expected numbers and strings as written by to_dict ({error})") from error
        return cls(
            input_size=_three("input_size", input_size),
            mean=_three("mean", mean),
            std=_three("std", std),
            interpolation=interpolation,
            crop_pct=crop_pct,
            crop_mode=crop_mode,
        )


def resolve_data_settings(model: nn.Module, input_size: int | None = None) -> DataSettings:
    """Return the data settings of a timm model, from its resolved pretrained config.

    Args:
        model: a model made by timm (it carries ``pretrained_cfg``).
        input_size: square input size in pixels replacing the model's own; the crop
            fraction stays the model's.

    Raises:
        ConfigError: ``input_size`` is not positive, or differs from the size of a model
            that only accepts its own input size.
    """
    # Imported here: a caller holds a timm model, so timm is loaded already, and DataSettings alone
    # (plain data the GUI reads from checkpoint metadata) stays importable without torch.
    from timm.data import resolve_data_config

    config = resolve_data_config(model=model)
    if input_size is not None:
        if input_size <= 0:
            raise ConfigError(f"input_size: must be a positive number of pixels, got {input_size}")
        channels, height, width = config["input_size"]
        pretrained_cfg = getattr(model, "pretrained_cfg", {}) or {}
        if pretrained_cfg.get("fixed_input_size", False) and (height, width) != (input_size, input_size):
            raise ConfigError(
                f"input_size: backbone '{pretrained_cfg.get('architecture', type(model).__name__)}' only accepts "
                f"{height}x{width} images, got {input_size}"
            )
        config = resolve_data_config(args={"input_size": (channels, input_size, input_size)}, model=model)
    return DataSettings(
        input_size=_three("input_size", tuple(int(value) for value in config["input_size"])),
        mean=_three("mean", tuple(float(value) for value in config["mean"])),
        std=_three("std", tuple(float(value) for value in config["std"])),
        interpolation=str(config["interpolation"]),
        crop_pct=float(config["crop_pct"]),
        crop_mode=str(config["crop_mode"]),
    )

"""The one run configuration, shared by the CLI, the GUI forms and every run folder.

Frozen dataclasses with a help text per field, ``to_dict``/``from_dict``, YAML
round-trip and validation whose messages start with the field path, e.g.
``optim.learning_rate: must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.atomic import atomic_write_text
from engine.errors import ConfigError

SCHEMA_VERSION = 1
MODES = ("feature_extraction", "fine_tune")
DEVICES = ("auto", "cpu", "cuda")
AUGMENT_PRESETS = ("none", "light")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split."""

    path: str = field(default="", metadata=_help(
        "dataset: a folder of class folders, a folder of train/val/test folders, or a CSV of path,label"))
    val_fraction: float = field(default=0.2, metadata=_help(
        "share of each class held out for validation when the data is not pre-split"))
    test_fraction: float = field(default=0.0, metadata=_help(
        "share of each class held out for a final test, never used while training"))
    split_seed: int = field(default=0, metadata=_help("seed of the stratified split: same seed, same split"))
    input_size: int | None = field(default=None, metadata=_help(
        "square input side in pixels; null uses the backbone's pretrained size"))
    num_workers: int = field(default=2, metadata=_help(
        "processes that decode images while the model trains (0 decodes in the training process)"))


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained backbone, and how much of it trains."""

    backbone: str = field(default="tf_efficientnet_lite0", metadata=_help(
        "timm model name; `python main.py backbones` lists them"))
    weights: str = field(default="auto", metadata=_help(
        "auto (offline package, else the hub) | hub | none (random init) | path to a .safetensors or .pth"))
    mode: str = field(default="feature_extraction", metadata=_help(
        "feature_extraction trains only a new head on cached features; fine_tune also trains the top stages"))
    trainable_stages: int = field(default=2, metadata=_help(
        "fine_tune: backbone stages that train, counted from the top; -1 trains every stage"))
    backbone_lr_scale: float = field(default=0.1, metadata=_help(
        "fine_tune: backbone learning rate as a fraction of the head's (pretrained layers need small steps)"))
    drop_rate: float = field(default=0.0, metadata=_help("dropout before the classifier, 0 to 1"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a cosine schedule and linear warmup."""

    learning_rate: float = field(default=3e-3, metadata=_help(
        "peak learning rate of the head (AdamW); the backbone gets model.backbone_lr_scale of it"))
    weight_decay: float = field(default=0.01, metadata=_help(
        "AdamW weight decay; never applied to biases and normalisation layers"))
    batch_size: int = field(default=32, metadata=_help("images per optimisation step"))
    epochs: int = field(default=10, metadata=_help("passes over the training images"))
    warmup_epochs: float = field(default=1.0, metadata=_help(
        "epochs of linear warmup from a small rate up to learning_rate (capped at optim.epochs)"))
    min_learning_rate: float = field(default=1e-6, metadata=_help("rate at the end of the cosine decay"))


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation."""

    preset: str = field(default="light", metadata=_help(
        "none | light (random resized crop and horizontal flip)"))
    feature_views: int = field(default=1, metadata=_help(
        "feature_extraction: cached views per training image; the first is unaugmented, the rest use the preset"))


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce a training run."""

    schema_version: int = field(default=SCHEMA_VERSION, metadata=_help("config format version"))
    seed: int = field(default=0, metadata=_help("seed for weights of new layers, shuffling and augmentation"))
    device: str = field(default="auto", metadata=_help("auto (CUDA when present) | cpu | cuda"))
    amp: bool = field(default=True, metadata=_help(
        "mixed precision on CUDA: bf16 where supported, else fp16 with loss scaling; ignored on CPU"))
    data: DataConfig = field(default_factory=DataConfig, metadata=_help("the images and their split"))
    model: ModelConfig = field(default_factory=ModelConfig, metadata=_help("backbone, weights and what trains"))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=_help("optimiser and schedule"))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=_help("training-time augmentation"))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, in field order, safe for YAML and JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build and validate a config from nested dicts; missing keys take defaults.

        Raises:
            ConfigError: an unknown key (with a did-you-mean), a value of the wrong
                type, or a value outside its range; the message starts with the field path.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"config: expected a mapping of sections, got {type(values).__name__}")
        version = values.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(f"schema_version: this Transfer Studio reads version {SCHEMA_VERSION}, got {version!r}")
        config = _build(cls, values, prefix="")
        validate(config)
        return config

    def with_changes(self, **changes: Any) -> RunConfig:
        """Return a copy with dotted-path changes applied, e.g. ``with_changes(**{"optim.epochs": 3})``."""
        values = self.to_dict()
        for dotted, value in changes.items():
            _assign(values, dotted, value)
        return RunConfig.from_dict(values)

    def digest(self) -> str:
        """Short, stable hash of the whole config (recorded in checkpoints)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "augment": AugmentConfig}


def validate(config: RunConfig) -> None:
    """Check every range and choice; raise ``ConfigError`` naming the first bad field."""
    d, m, o, a = config.data, config.model, config.optim, config.augment
    checks: list[tuple[bool, str, str, Any]] = [
        (config.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}", config.device),
        (0.0 <= d.val_fraction < 1.0, "data.val_fraction", "must be in [0, 1)", d.val_fraction),
        (0.0 <= d.test_fraction < 1.0, "data.test_fraction", "must be in [0, 1)", d.test_fraction),
        (d.val_fraction + d.test_fraction < 1.0, "data.test_fraction",
         "val_fraction + test_fraction must leave images to train on (< 1)", d.test_fraction),
        (d.input_size is None or 16 <= d.input_size <= 1024, "data.input_size",
         "must be null or between 16 and 1024", d.input_size),
        (d.num_workers >= 0, "data.num_workers", "must be >= 0", d.num_workers),
        (bool(m.backbone.strip()), "model.backbone", "must name a timm model", m.backbone),
        (bool(m.weights.strip()), "model.weights", "must be auto, hub, none or a file path", m.weights),
        (m.mode in MODES, "model.mode", f"must be one of {', '.join(MODES)}", m.mode),
        (m.trainable_stages >= -1, "model.trainable_stages", "must be -1 (all) or >= 0", m.trainable_stages),
        (0.0 <= m.backbone_lr_scale <= 1.0, "model.backbone_lr_scale", "must be in [0, 1]", m.backbone_lr_scale),
        (0.0 <= m.drop_rate < 1.0, "model.drop_rate", "must be in [0, 1)", m.drop_rate),
        (o.learning_rate > 0, "optim.learning_rate", "must be > 0", o.learning_rate),
        (o.weight_decay >= 0, "optim.weight_decay", "must be >= 0", o.weight_decay),
        (o.batch_size >= 1, "optim.batch_size", "must be >= 1", o.batch_size),
        (o.epochs >= 1, "optim.epochs", "must be >= 1", o.epochs),
        (o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0", o.warmup_epochs),
        (0 <= o.min_learning_rate <= o.learning_rate, "optim.min_learning_rate",
         f"must be in [0, optim.learning_rate={o.learning_rate}]", o.min_learning_rate),
        (a.preset in AUGMENT_PRESETS, "augment.preset", f"must be one of {', '.join(AUGMENT_PRESETS)}", a.preset),
        (a.feature_views >= 1, "augment.feature_views", "must be >= 1", a.feature_views),
    ]
    for ok, path, expectation, value in checks:
        if not ok:
            raise ConfigError(f"{path}: {expectation}, got {value!r}")


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds an invalid value.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{file}: cannot read config ({error.strerror or error})") from error
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML ({_first_line(error)})") from error
    try:
        return RunConfig.from_dict(values or {})
    except ConfigError as error:
        raise ConfigError(f"{file}: {error}") from error


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the config as commented YAML, atomically; ``load_config`` gives it back equal."""
    return atomic_write_text(path, to_yaml(config))


def to_yaml(config: RunConfig, *, comments: bool = True) -> str:
    """The config as YAML, with each field's help text as a comment when ``comments``."""
    lines = [f"# Transfer Studio run configuration (schema {SCHEMA_VERSION})"] if comments else []
    _emit(config, lines, indent="", comments=comments)
    return "\n".join(lines) + "\n"


def parse_override(assignment: str) -> tuple[str, Any]:
    """Parse a CLI ``--set key=value`` into a dotted path and a YAML-typed value."""
    key, separator, raw = assignment.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.learning_rate=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _emit(instance: Any, lines: list[str], *, indent: str, comments: bool) -> None:
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if comments:
            lines.append(f"{indent}# {item.metadata['help']}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{item.name}:")
            _emit(value, lines, indent=indent + "  ", comments=comments)
        else:
            dumped = yaml.safe_dump({item.name: value}, default_flow_style=True, width=10_000).strip()
            lines.append(f"{indent}{dumped[1:-1]}")  # strip the {} of flow style


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {item.name: item for item in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{path}: unknown setting{_did_you_mean(str(key), known)}")
        expected = hints[key]
        if dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a section of settings, got {value!r}")
            kwargs[key] = _build(expected, value, prefix=f"{path}.")
        else:
            kwargs[key] = _coerce(value, expected, path)
    return cls(**kwargs)


def _coerce(value: Any, expected: Any, path: str) -> Any:
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{path}: must be set ({_type_name(expected)}), got null")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
        if option is float and isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; people write rates that way.
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
        if option is str and isinstance(value, str):
            return value
    raise ConfigError(f"{path}: must be {_type_name(expected)}, got {value!r}")


def _type_name(expected: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null"}
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    return " or ".join(names.get(option, getattr(option, "__name__", str(option))) for option in options)


def _did_you_mean(key: str, known: dict[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; known settings: {', '.join(known)}"


def _assign(values: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, last = dotted.split(".")
    target = values
    for position, name in enumerate(sections):
        if not isinstance(target.get(name), dict):
            path = ".".join(sections[: position + 1])
            raise ConfigError(f"{path}: not a section of settings{_did_you_mean(name, target)}")
        target = target[name]
    target[last] = value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

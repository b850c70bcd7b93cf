"""The whole run configuration: ``RunConfig``, its validation, and the lookup of fields by dotted path.

Validation names the field path and what was expected, e.g.
``optim.learning_rate: must be > 0, got -1``; schedules and doctor checks are validated
against their registries, so a registered one can be chosen by a config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from engine.core.config.choices import (
    ACTIVATIONS,
    AUGMENT_PRESETS,
    CLASS_BALANCE,
    DEVICES,
    DOCTOR_CHECKS,
    HEADS,
    MODES,
    MONITORS,
    RANDOM_POLICIES,
    SCHEDULES,
    SCHEMA_VERSION,
    SEARCH_METRICS,
    SEARCH_SCALES,
    UNSEARCHABLE,
)
from engine.core.config.schema import assign, build, did_you_mean, help_text, plain, union_options
from engine.core.config.sections import (
    AugmentConfig,
    DataConfig,
    DoctorConfig,
    ModelConfig,
    OptimConfig,
    SearchConfig,
    SearchParameter,
)
from engine.core.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce a training run."""

    schema_version: int = field(default=SCHEMA_VERSION, metadata=help_text("config format version"))
    seed: int = field(default=0, metadata=help_text("seed for weights of new layers, shuffling and augmentation"))
    device: str = field(default="auto", metadata=help_text(
        "auto (CUDA, else Apple MPS, else CPU) | cpu | cuda | mps"))
    amp: bool = field(default=True, metadata=help_text(
        "mixed precision: on CUDA bf16 where supported, else fp16 with loss scaling; fp16 autocast on Apple"
        " MPS; ignored on CPU"))
    data: DataConfig = field(default_factory=DataConfig, metadata=help_text("the images and their split"))
    model: ModelConfig = field(default_factory=ModelConfig, metadata=help_text("backbone, weights and what trains"))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=help_text("optimiser and schedule"))
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata=help_text("training-time augmentation"))
    doctor: DoctorConfig = field(default_factory=DoctorConfig, metadata=help_text("checks that watch the run"))
    search: SearchConfig = field(default_factory=SearchConfig, metadata=help_text(
        "hyperparameter search (main.py search); training ignores it"))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, in field order, safe for YAML and JSON (tuples become lists)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: plain(v) for k, v in items})

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
        config = build(cls, values, prefix="")
        validate(config)
        return config

    def with_changes(self, **changes: Any) -> RunConfig:
        """Return a copy with dotted-path changes applied, e.g. ``with_changes(**{"optim.epochs": 3})``."""
        values = self.to_dict()
        for dotted, value in changes.items():
            assign(values, dotted, value)
        return RunConfig.from_dict(values)

    def digest(self) -> str:
        """Short, stable hash of the whole config (recorded in checkpoints)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def validate(config: RunConfig) -> None:
    """Check every range, choice and combination; raise ``ConfigError`` naming the first bad field."""
    for ok, path, expectation, value in _checks(config):
        if not ok:
            raise ConfigError(f"{path}: {expectation}, got {value!r}")


def _checks(config: RunConfig) -> list[tuple[bool, str, str, Any]]:
    d, m, o, a, doctor = config.data, config.model, config.optim, config.augment, config.doctor

    def one_of(path: str, value: str, choices: tuple[str, ...]) -> tuple[bool, str, str, Any]:
        return value in choices, path, f"must be one of {', '.join(choices)}", value

    def fraction(path: str, value: float | None, *, closed: bool = True) -> tuple[bool, str, str, Any]:
        inside = value is None or (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
        return inside, path, "must be in [0, 1]" if closed else "must be in [0, 1)", value

    def ordered_pair(path: str, pair: tuple | None, low: float, high: float) -> tuple[bool, str, str, Any]:
        ok = pair is None or low <= pair[0] <= pair[1] <= high
        return ok, path, f"must be [min, max] with {low} <= min <= max <= {high}", None if pair is None else list(pair)

    return [
        one_of("device", config.device, DEVICES),
        fraction("data.val_fraction", d.val_fraction, closed=False),
        fraction("data.test_fraction", d.test_fraction, closed=False),
        (d.val_fraction + d.test_fraction < 1.0, "data.test_fraction",
         "val_fraction + test_fraction must leave images to train on (< 1)", d.test_fraction),
        (d.input_size is None or 16 <= d.input_size <= 1024, "data.input_size",
         "must be null or between 16 and 1024", d.input_size),
        (d.num_workers == "auto" or (isinstance(d.num_workers, int) and d.num_workers >= 0), "data.num_workers",
         "must be auto or >= 0", d.num_workers),
        (d.decoded_cache_limit_gb is None or d.decoded_cache_limit_gb > 0, "data.decoded_cache_limit_gb",
         "must be null or > 0", d.decoded_cache_limit_gb),
        (bool(m.backbone.strip()), "model.backbone", "must name a timm model", m.backbone),
        (bool(m.weights.strip()), "model.weights", "must be auto, hub, none or a file path", m.weights),
        one_of("model.mode", m.mode, MODES),
        one_of("model.head", m.head, HEADS),
        (m.head_hidden >= 1, "model.head_hidden", "must be >= 1", m.head_hidden),
        one_of("model.head_activation", m.head_activation, ACTIVATIONS),
        fraction("model.head_dropout", m.head_dropout, closed=False),
        fraction("model.drop_path_rate", m.drop_path_rate, closed=False),
        (m.trainable_stages >= -1, "model.trainable_stages", "must be -1 (all) or >= 0", m.trainable_stages),
        (m.unfreeze_every >= 0, "model.unfreeze_every", "must be >= 0 (0 = off)", m.unfreeze_every),
        fraction("model.backbone_lr_scale", m.backbone_lr_scale),
        (m.layer_decay is None or 0.0 < m.layer_decay <= 1.0, "model.layer_decay", "must be null or in (0, 1]",
         m.layer_decay),
        (m.head_epochs >= 1, "model.head_epochs", "must be >= 1", m.head_epochs),
        (m.mode != "two_stage" or m.head_epochs < o.epochs, "model.head_epochs",
         f"must be fewer than optim.epochs ({o.epochs}) so that fine-tuning gets epochs too", m.head_epochs),
        (o.learning_rate > 0, "optim.learning_rate", "must be > 0", o.learning_rate),
        (o.reference_batch_size is None or o.reference_batch_size >= 1, "optim.reference_batch_size",
         "must be null or >= 1", o.reference_batch_size),
        (o.weight_decay >= 0, "optim.weight_decay", "must be >= 0", o.weight_decay),
        (o.batch_size == "auto" or (isinstance(o.batch_size, int) and o.batch_size >= 1), "optim.batch_size",
         "must be auto or >= 1", o.batch_size),
        (o.accumulate_steps >= 1, "optim.accumulate_steps", "must be >= 1 (1 = off)", o.accumulate_steps),
        (o.clip_grad_norm is None or o.clip_grad_norm > 0, "optim.clip_grad_norm", "must be null or > 0",
         o.clip_grad_norm),
        (o.epochs >= 1, "optim.epochs", "must be >= 1", o.epochs),
        (o.schedule in SCHEDULES, "optim.schedule", SCHEDULES.expectation(), o.schedule),
        (o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0", o.warmup_epochs),
        (0 <= o.min_learning_rate <= o.learning_rate, "optim.min_learning_rate",
         f"must be in [0, optim.learning_rate={o.learning_rate}]", o.min_learning_rate),
        (o.step_epochs > 0, "optim.step_epochs", "must be > 0", o.step_epochs),
        (0 < o.step_factor <= 1, "optim.step_factor", "must be in (0, 1]", o.step_factor),
        (o.restart_epochs > 0, "optim.restart_epochs", "must be > 0", o.restart_epochs),
        fraction("optim.label_smoothing", o.label_smoothing, closed=False),
        one_of("optim.class_balance", o.class_balance, CLASS_BALANCE),
        (0 < o.ema_decay < 1, "optim.ema_decay", "must be in (0, 1)", o.ema_decay),
        one_of("optim.monitor", o.monitor, MONITORS),
        (o.early_stopping_patience >= 0, "optim.early_stopping_patience", "must be >= 0 (0 = off)",
         o.early_stopping_patience),
        one_of("augment.preset", a.preset, AUGMENT_PRESETS),
        ordered_pair("augment.crop_scale", a.crop_scale, 0.01, 1.0),
        ordered_pair("augment.crop_ratio", a.crop_ratio, 0.1, 10.0),
        fraction("augment.horizontal_flip", a.horizontal_flip),
        fraction("augment.vertical_flip", a.vertical_flip),
        (a.rotation_degrees is None or 0 <= a.rotation_degrees <= 180, "augment.rotation_degrees",
         "must be in [0, 180]", a.rotation_degrees),
        fraction("augment.color_jitter", a.color_jitter),
        fraction("augment.blur", a.blur),
        fraction("augment.noise", a.noise),
        fraction("augment.cutout", a.cutout),
        ordered_pair("augment.cutout_holes", a.cutout_holes, 1, 64),
        ordered_pair("augment.cutout_size", a.cutout_size, 0.01, 0.9),
        (a.random_policy is None or a.random_policy in RANDOM_POLICIES, "augment.random_policy",
         f"must be null or one of {', '.join(RANDOM_POLICIES)}", a.random_policy),
        (a.random_policy_ops is None or 1 <= a.random_policy_ops <= 10, "augment.random_policy_ops",
         "must be null or in [1, 10]", a.random_policy_ops),
        fraction("augment.random_policy_magnitude", a.random_policy_magnitude),
        (a.mixup_alpha >= 0, "augment.mixup_alpha", "must be >= 0 (0 = off)", a.mixup_alpha),
        (a.cutmix_alpha >= 0, "augment.cutmix_alpha", "must be >= 0 (0 = off)", a.cutmix_alpha),
        (a.cutmix_alpha == 0 or m.mode != "feature_extraction", "augment.cutmix_alpha",
         "cutmix pastes pixels, and feature extraction trains on cached features: use augment.mixup_alpha,"
         " or model.mode fine_tune or two_stage", a.cutmix_alpha),
        fraction("augment.mix_probability", a.mix_probability),
        fraction("augment.mix_switch_probability", a.mix_switch_probability),
        (a.feature_views >= 1, "augment.feature_views", "must be >= 1", a.feature_views),
        (a.feature_views == 1 or a.preset != "none", "augment.feature_views",
         "extra views are augmented copies, so augment.preset must not be none", a.feature_views),
        (doctor.divergence_factor > 1, "doctor.divergence_factor", "must be > 1", doctor.divergence_factor),
        (doctor.flat_window >= 10, "doctor.flat_window", "must be >= 10 steps", doctor.flat_window),
        (doctor.update_ratio_every >= 1, "doctor.update_ratio_every", "must be >= 1", doctor.update_ratio_every),
        (0 < doctor.update_ratio_low < doctor.update_ratio_high, "doctor.update_ratio_low",
         f"must be > 0 and below doctor.update_ratio_high ({doctor.update_ratio_high})", doctor.update_ratio_low),
        *[(name in DOCTOR_CHECKS, f"doctor.checks[{index}]", DOCTOR_CHECKS.expectation(), name)
          for index, name in enumerate(doctor.checks)],
        *_search_checks(config.search),
    ]


def _search_checks(search: SearchConfig) -> list[tuple[bool, str, str, Any]]:
    checks = [
        (search.coarse_trials >= 1, "search.coarse_trials", "must be >= 1", search.coarse_trials),
        (search.coarse_epochs >= 1, "search.coarse_epochs", "must be >= 1", search.coarse_epochs),
        (search.fine_trials >= 0, "search.fine_trials", "must be >= 0 (0 = no fine stage)", search.fine_trials),
        (search.fine_epochs >= 1, "search.fine_epochs", "must be >= 1", search.fine_epochs),
        (search.top_k >= 1, "search.top_k", "must be >= 1", search.top_k),
        (search.metric in SEARCH_METRICS, "search.metric", f"must be one of {', '.join(SEARCH_METRICS)}",
         search.metric),
        (0 < search.edge_fraction < 0.5, "search.edge_fraction", "must be in (0, 0.5)", search.edge_fraction),
        (search.widen_fraction > 0, "search.widen_fraction", "must be > 0", search.widen_fraction),
        (search.pruner_startup_trials >= 0, "search.pruner_startup_trials", "must be >= 0",
         search.pruner_startup_trials),
        (search.pruner_warmup_epochs >= 0, "search.pruner_warmup_epochs", "must be >= 0",
         search.pruner_warmup_epochs),
    ]
    seen: set[str] = set()
    for index, parameter in enumerate(search.space):
        checks += _parameter_checks(f"search.space[{index}]", parameter, seen)
        seen.add(parameter.path)
    return checks


def _parameter_checks(prefix: str, parameter: SearchParameter, seen: set[str]) -> list[tuple[bool, str, str, Any]]:
    # Each check only makes sense once the ones before it hold, so the first failure is returned alone.
    p = parameter
    problem = _searchable_problem(p.path)
    ordered: list[tuple[bool, str, str, Any]] = [
        (problem is None, f"{prefix}.path", problem or "", p.path),
        (p.path not in seen, f"{prefix}.path", "is searched twice: give each field one entry", p.path),
    ]
    if p.choices is not None:
        ordered += [
            (p.low is None and p.high is None, f"{prefix}.choices",
             "give either choices or a low/high range, not both", list(p.choices)),
            (len(p.choices) >= 1, f"{prefix}.choices", "must list at least one value", list(p.choices)),
        ]
    else:
        kind = numeric_kind(p.path) if problem is None else None
        whole = kind is int
        ordered += [
            (p.low is not None and p.high is not None, f"{prefix}.{'low' if p.low is None else 'high'}",
             "a range needs both low and high (or give choices instead)", None),
            (kind is not None, f"{prefix}.path",
             "is not a number field: search it with choices, e.g. {path: model.head, choices: [linear, mlp]}",
             p.path),
            (p.scale in SEARCH_SCALES, f"{prefix}.scale", f"must be one of {', '.join(SEARCH_SCALES)}", p.scale),
            (p.low is None or p.high is None or p.low < p.high, f"{prefix}.high", f"must be > low ({p.low})", p.high),
            (p.scale != "log" or p.low is None or p.low > 0, f"{prefix}.low", "must be > 0 on a log scale", p.low),
            (not whole or all(value is None or float(value).is_integer() for value in (p.low, p.high)),
             f"{prefix}.low", f"{p.path} takes whole numbers: low and high must be whole", [p.low, p.high]),
            (not whole or p.scale != "log" or p.low is None or p.low >= 1, f"{prefix}.low",
             "must be >= 1 for whole numbers on a log scale", p.low),
        ]
    for check in ordered:
        if not check[0]:
            return [check]
    return []


def field_type(path: str) -> Any:
    """The declared type of the config field at dotted ``path`` (e.g. ``int`` for ``optim.epochs``).

    Raises:
        ConfigError: no such field; the message suggests the closest name.
    """
    owner: Any = RunConfig
    *sections, last = path.split(".")
    for position, name in enumerate([*sections, last]):
        known = {item.name: item for item in dataclasses.fields(owner)}
        if name not in known:
            where = ".".join([*sections, last][: position + 1])
            raise ConfigError(f"{where}: unknown setting{did_you_mean(name, known)}")
        expected = typing.get_type_hints(owner)[name]
        if position < len(sections):
            if not dataclasses.is_dataclass(expected):
                raise ConfigError(f"{where}: not a section of settings")
            owner = expected
    return expected


def _searchable_problem(path: str) -> str | None:
    """Why a search may not sample ``path``, or None when it may."""
    try:
        expected = field_type(path)
    except ConfigError as error:
        return f"must name a config field ({str(error).partition(': ')[2]})"
    if dataclasses.is_dataclass(expected):
        return "must name a field, not a section"
    if any(path == blocked or path.startswith(f"{blocked}.") for blocked in UNSEARCHABLE):
        return "cannot be searched (the dataset, the config version and the search itself stay fixed)"
    return None


def numeric_kind(path: str) -> type | None:
    """``int`` or ``float`` when the field at ``path`` holds a number (possibly null), else None."""
    expected = field_type(path)
    options = union_options(expected)
    for kind in (float, int):  # float first: a float field that also allows null is still a float
        if kind in options:
            return kind
    return None

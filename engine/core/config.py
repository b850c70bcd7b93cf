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

from engine.core.atomic import atomic_write_text
from engine.core.errors import ConfigError

SCHEMA_VERSION = 1
MODES = ("feature_extraction", "fine_tune", "two_stage")
DEVICES = ("auto", "cpu", "cuda")
AUGMENT_PRESETS = ("none", "light", "standard", "strong")
RANDOM_POLICIES = ("none", "randaugment", "trivialaugment")
HEADS = ("linear", "mlp")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu")
SCHEDULES = ("cosine", "constant", "step", "linear", "inverse_sqrt", "cosine_restarts")
CLASS_BALANCE = ("none", "weighted_loss", "balanced_sampler")
MONITORS = ("val_top1", "val_loss")
SEARCH_SCALES = ("linear", "log")
SEARCH_METRICS = ("val_loss", "val_top1")
SEARCH_CHOICE_TYPES = bool | int | float | str
# Fields a search never samples: what it searches on, and the search itself.
UNSEARCHABLE = ("schema_version", "data.path", "search")


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
    """Which pretrained backbone, which head, and how much of the network trains."""

    backbone: str = field(default="tf_efficientnet_lite0", metadata=_help(
        "timm model name; `python main.py backbones` lists them"))
    weights: str = field(default="auto", metadata=_help(
        "auto (offline package, else the hub) | hub | none (random init) | path to a .safetensors or .pth"))
    mode: str = field(default="feature_extraction", metadata=_help(
        "feature_extraction: only a new head trains, on cached features | fine_tune: the top stages train too"
        " | two_stage: head_epochs of feature extraction, then fine-tuning"))
    head: str = field(default="linear", metadata=_help(
        "linear, or mlp (one hidden layer) for features that a line cannot separate"))
    head_hidden: int = field(default=512, metadata=_help("mlp head: width of the hidden layer"))
    head_activation: str = field(default="relu", metadata=_help(
        "mlp head: relu | leaky_relu | elu | selu | gelu | silu (Kaiming init for the ReLU family, Xavier otherwise)"))
    head_batchnorm: bool = field(default=False, metadata=_help("mlp head: BatchNorm after the hidden layer"))
    head_dropout: float = field(default=0.0, metadata=_help(
        "dropout before the classifier, 0 to 1; raise it when the model overfits"))
    drop_path_rate: float = field(default=0.0, metadata=_help(
        "fine_tune: stochastic depth, the chance a residual block is skipped in training (e.g. 0.1)"))
    trainable_stages: int = field(default=2, metadata=_help(
        "fine_tune: backbone stages that train, counted from the top; -1 trains every stage"))
    unfreeze_every: int = field(default=0, metadata=_help(
        "fine_tune: gradual unfreezing, one more stage trains every this many epochs (0 = off)"))
    backbone_lr_scale: float = field(default=0.1, metadata=_help(
        "fine_tune: backbone learning rate as a fraction of the head's (pretrained layers need small steps)"))
    layer_decay: float | None = field(default=None, metadata=_help(
        "fine_tune: layer-wise rate decay (timm), e.g. 0.75: each stage lower down learns this much slower"))
    freeze_batchnorm: bool = field(default=False, metadata=_help(
        "fine_tune: keep every BatchNorm on its pretrained statistics (helps with batches under ~16)"))
    head_epochs: int = field(default=3, metadata=_help(
        "two_stage: epochs that train the head alone, before the backbone unfreezes"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, the learning-rate schedule, the loss, and when to stop."""

    learning_rate: float = field(default=3e-3, metadata=_help(
        "peak learning rate of the head (AdamW); the backbone gets model.backbone_lr_scale of it"))
    reference_batch_size: int | None = field(default=None, metadata=_help(
        "linear scaling rule: when set, the rate is scaled by batch_size / reference_batch_size"))
    weight_decay: float = field(default=0.01, metadata=_help(
        "AdamW weight decay; never applied to biases and normalisation layers"))
    batch_size: int = field(default=32, metadata=_help("images per optimisation step"))
    epochs: int = field(default=10, metadata=_help("passes over the training images"))
    schedule: str = field(default="cosine", metadata=_help(
        "cosine | constant | step | linear | inverse_sqrt | cosine_restarts (cycles for snapshot ensembles)"))
    warmup_epochs: float = field(default=1.0, metadata=_help(
        "epochs of linear warmup from a small rate up to learning_rate (capped at optim.epochs)"))
    min_learning_rate: float = field(default=1e-6, metadata=_help("rate at the end of the decay"))
    step_epochs: float = field(default=3.0, metadata=_help("step schedule: epochs between rate drops"))
    step_factor: float = field(default=0.1, metadata=_help("step schedule: the rate is multiplied by this"))
    restart_epochs: float = field(default=5.0, metadata=_help("cosine_restarts: epochs per cycle"))
    label_smoothing: float = field(default=0.0, metadata=_help(
        "share of each target spread over the other classes (e.g. 0.1) against over-confidence"))
    class_balance: str = field(default="none", metadata=_help(
        "none | weighted_loss (rare classes weigh more) | balanced_sampler (rare classes drawn more often)"))
    ema: bool = field(default=False, metadata=_help(
        "keep an exponential moving average (Polyak) of the weights, evaluated beside them every epoch"))
    ema_decay: float = field(default=0.998, metadata=_help("EMA: share of the average kept at each step"))
    monitor: str = field(default="val_top1", metadata=_help(
        "val_top1 | val_loss: which validation metric picks the best checkpoint and drives early stopping"))
    early_stopping_patience: int = field(default=0, metadata=_help(
        "stop after this many epochs without a better monitored metric (0 = never stop early)"))


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: a preset, whose every control can be overridden (null = the preset's)."""

    preset: str = field(default="light", metadata=_help(
        "none | light (crop, flip) | standard (+ colour, rotation, cutout) | strong (+ blur, noise, RandAugment)"))
    crop_scale: tuple[float, float] | None = field(default=None, metadata=_help(
        "random resized crop: range of the image area kept, e.g. [0.35, 1.0]"))
    crop_ratio: tuple[float, float] | None = field(default=None, metadata=_help(
        "random resized crop: range of aspect ratios, e.g. [0.75, 1.333]"))
    horizontal_flip: float | None = field(default=None, metadata=_help("chance of a left-right flip"))
    vertical_flip: float | None = field(default=None, metadata=_help(
        "chance of an upside-down flip (only for images with no up, e.g. microscopy)"))
    rotation_degrees: float | None = field(default=None, metadata=_help("largest random rotation, in degrees"))
    color_jitter: float | None = field(default=None, metadata=_help(
        "strength of random brightness, contrast and saturation changes, 0 to 1"))
    blur: float | None = field(default=None, metadata=_help("chance of a Gaussian blur"))
    noise: float | None = field(default=None, metadata=_help("chance of Gaussian noise"))
    cutout: float | None = field(default=None, metadata=_help(
        "chance of cutout: blank rectangles that make the model use the whole object"))
    cutout_holes: tuple[int, int] | None = field(default=None, metadata=_help("cutout: range of the number of holes"))
    cutout_size: tuple[float, float] | None = field(default=None, metadata=_help(
        "cutout: range of hole sides, as a fraction of the image side"))
    random_policy: str | None = field(default=None, metadata=_help(
        "none | randaugment | trivialaugment: random operations drawn per image"))
    random_policy_ops: int | None = field(default=None, metadata=_help("randaugment: operations per image"))
    random_policy_magnitude: float | None = field(default=None, metadata=_help(
        "randaugment: strength of each operation, 0 to 1"))
    mixup_alpha: float = field(default=0.0, metadata=_help(
        "mixup: blend pairs of images and labels; Beta(alpha, alpha) weights, 0 = off, 0.2 is typical"))
    cutmix_alpha: float = field(default=0.0, metadata=_help(
        "cutmix: paste a patch of one image into another; 0 = off, 1.0 is typical (needs pixels: not in"
        " feature extraction)"))
    mix_probability: float = field(default=1.0, metadata=_help("chance a batch is mixed at all"))
    mix_switch_probability: float = field(default=0.5, metadata=_help(
        "when both are on, chance of cutmix instead of mixup"))
    feature_views: int = field(default=1, metadata=_help(
        "feature_extraction: cached views per training image; the first is unaugmented, the rest use the preset"))


@dataclass(frozen=True)
class DoctorConfig:
    """The training doctor: checks that watch a run and explain what they see."""

    enabled: bool = field(default=True, metadata=_help("run the checks below during training"))
    checks: tuple[str, ...] = field(default=(
        "initial_loss", "divergence", "learning_rate_too_low", "learning_rate_collapsed", "update_ratio",
        "overfitting", "bad_start", "class_imbalance"),
        metadata=_help("checks to run, by name; `python main.py doctor --list` explains each"))
    divergence_factor: float = field(default=3.0, metadata=_help(
        "stop the run when the loss exceeds this many times its initial value (the larger of the first loss"
        " and ln C)"))
    flat_window: int = field(default=100, metadata=_help(
        "steps over which a loss that has not moved counts as flat"))
    update_ratio_every: int = field(default=20, metadata=_help("steps between update/weight ratio measurements"))
    update_ratio_low: float = field(default=1e-4, metadata=_help("update/weight ratios below this are too small"))
    update_ratio_high: float = field(default=0.1, metadata=_help(
        "update/weight ratios above this are too large (healthy AdamW runs measure 0.01-0.05 on a new head,"
        " ~1e-3 on a fine-tuned backbone)"))


@dataclass(frozen=True)
class SearchParameter:
    """One dimension of a hyperparameter search: a range of numbers, or a list of choices."""

    path: str = field(default="", metadata=_help(
        "the config field it sets, as a dotted path, e.g. optim.learning_rate"))
    low: float | None = field(default=None, metadata=_help("range: the smallest value"))
    high: float | None = field(default=None, metadata=_help("range: the largest value"))
    scale: str = field(default="linear", metadata=_help(
        "range: log (drawn evenly in the logarithm: rates, decays) | linear; whole-number fields draw"
        " whole numbers"))
    choices: tuple[SEARCH_CHOICE_TYPES, ...] | None = field(default=None, metadata=_help(
        "instead of a range: the values to pick from, e.g. [light, standard, strong]"))


@dataclass(frozen=True)
class SearchConfig:
    """Hyperparameter search (``main.py search``): what is searched, and the coarse and fine stages."""

    space: tuple[SearchParameter, ...] = field(default=(), metadata=_help(
        "parameters to search, each {path, low, high, scale} or {path, choices}; empty = the default space"
        " of model.mode (learning rate, weight decay, label smoothing, mixup, trainable stages, preset)"))
    coarse_trials: int = field(default=20, metadata=_help("trials of the coarse stage: many short runs"))
    coarse_epochs: int = field(default=3, metadata=_help("epochs of each coarse trial (1-5 is typical)"))
    fine_trials: int = field(default=10, metadata=_help(
        "trials of the fine stage, in ranges narrowed around the best coarse trials (0 = no fine stage)"))
    fine_epochs: int = field(default=10, metadata=_help("epochs of each fine trial"))
    top_k: int = field(default=5, metadata=_help("best coarse trials whose values define the fine ranges"))
    metric: str = field(default="val_loss", metadata=_help(
        "val_loss (minimised) | val_top1 (maximised): a trial's score, its best epoch's value"))
    edge_fraction: float = field(default=0.1, metadata=_help(
        "a best value in this outer share of its coarse range lies at the edge: the fine stage widens that side"))
    widen_fraction: float = field(default=0.25, metadata=_help(
        "how far past the edge the fine range reaches, as a share of the coarse range (on its scale)"))
    pruner_startup_trials: int = field(default=5, metadata=_help(
        "median pruner: finished trials needed before it stops any trial"))
    pruner_warmup_epochs: int = field(default=1, metadata=_help(
        "median pruner: first epochs of a trial that are never judged"))
    seed: int = field(default=0, metadata=_help("seed of the random sampler: same seed, same trial values"))


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
    doctor: DoctorConfig = field(default_factory=DoctorConfig, metadata=_help("checks that watch the run"))
    search: SearchConfig = field(default_factory=SearchConfig, metadata=_help(
        "hyperparameter search (main.py search); training ignores it"))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, in field order, safe for YAML and JSON (tuples become lists)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})

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
        (d.num_workers >= 0, "data.num_workers", "must be >= 0", d.num_workers),
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
        (o.batch_size >= 1, "optim.batch_size", "must be >= 1", o.batch_size),
        (o.epochs >= 1, "optim.epochs", "must be >= 1", o.epochs),
        one_of("optim.schedule", o.schedule, SCHEDULES),
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
    ordered = [
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
            raise ConfigError(f"{where}: unknown setting{_did_you_mean(name, known)}")
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
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    for kind in (float, int):  # float first: a float field that also allows null is still a float
        if kind in options:
            return kind
    return None


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
        elif value and isinstance(value, tuple) and dataclasses.is_dataclass(value[0]):
            lines.append(f"{indent}{item.name}:")
            for entry in value:
                lines.append(f"{indent}- {_flow(_non_default_fields(entry))}")
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


def _non_default_fields(instance: Any) -> dict[str, Any]:
    """A section's fields that differ from their defaults (all of them would bury a list entry's point)."""
    values = {}
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if value != item.default:
            values[item.name] = _plain(value)
    return values


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(value: Any, expected: Any, path: str) -> Any:
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{path}: must be set ({_type_name(expected)}), got null")
    for option in options:
        if typing.get_origin(option) is tuple:
            return _coerce_tuple(value, option, path, described=expected)
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
        if dataclasses.is_dataclass(option):
            if isinstance(value, option):
                return value
            if isinstance(value, dict):
                return _build(option, value, prefix=f"{path}.")
    raise ConfigError(f"{path}: must be {_type_name(expected)}, got {value!r}")


def _coerce_tuple(value: Any, expected: Any, path: str, *, described: Any) -> tuple:
    items = typing.get_args(expected)
    variadic = len(items) == 2 and items[1] is Ellipsis
    if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(items)):
        raise ConfigError(f"{path}: must be {_type_name(described)}, got {value!r}")
    kinds = [items[0]] * len(value) if variadic else list(items)
    pairs = enumerate(zip(value, kinds, strict=True))
    return tuple(_coerce(item, kind, f"{path}[{index}]") for index, (item, kind) in pairs)


def _type_name(expected: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null"}
    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    described = []
    for option in options:
        if typing.get_origin(option) is tuple:
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:
                item = items[0]
                if item in names:
                    described.append(f"a list of {names[item]}s")
                elif dataclasses.is_dataclass(item):
                    described.append(f"a list of mappings ({', '.join(f.name for f in dataclasses.fields(item))})")
                else:
                    described.append(f"a list of values ({_type_name(item)})")
            else:
                described.append(f"a list of {len(items)} ({', '.join(names[item] for item in items)})")
        elif dataclasses.is_dataclass(option):
            described.append(f"a mapping of {', '.join(item.name for item in dataclasses.fields(option))}")
        else:
            described.append(names.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(described)


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

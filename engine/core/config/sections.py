"""The sections of the run configuration: one frozen dataclass per part of a run, a help text per field."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.config.choices import DOCTOR_CHECKS, SEARCH_CHOICE_TYPES
from engine.core.config.schema import AUTO, Auto, help_text

AUTO_BATCH_FALLBACK = 32
"""The batch size of ``optim.batch_size: auto`` where no GPU memory probe runs (CPU, MPS)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how they are split."""

    path: str = field(default="", metadata=help_text(
        "dataset: a folder of class folders, a folder of train/val/test folders, or a CSV of path,label"))
    val_fraction: float = field(default=0.2, metadata=help_text(
        "share of each class held out for validation when the data is not pre-split"))
    test_fraction: float = field(default=0.0, metadata=help_text(
        "share of each class held out for a final test, never used while training"))
    split_seed: int = field(default=0, metadata=help_text("seed of the stratified split: same seed, same split"))
    input_size: int | None = field(default=None, metadata=help_text(
        "square input side in pixels; null uses the backbone's pretrained size"))
    num_workers: int | Auto = field(default=AUTO, metadata=help_text(
        "processes that decode images while the model trains: auto (from the CPU count and the measured"
        " decode speed) or a number (0 decodes in the training process)"))
    decoded_cache: bool = field(default=True, metadata=help_text(
        "fine_tune: after the first epoch, read images already decoded and resized from the project cache"
        " instead of the original files (when they fit in data.decoded_cache_limit_gb)"))
    decoded_cache_limit_gb: float | None = field(default=None, metadata=help_text(
        "largest size of the decoded-image cache, in GB; null = a tenth of the free disk space"))


@dataclass(frozen=True)
class ModelConfig:
    """Which pretrained backbone, which head, and how much of the network trains."""

    backbone: str = field(default="tf_efficientnet_lite0", metadata=help_text(
        "timm model name; `python main.py backbones` lists them"))
    weights: str = field(default="auto", metadata=help_text(
        "auto (offline package, else the hub) | hub | none (random init) | path to a .safetensors or .pth"))
    mode: str = field(default="feature_extraction", metadata=help_text(
        "feature_extraction: only a new head trains, on cached features | fine_tune: the top stages train too"
        " | two_stage: head_epochs of feature extraction, then fine-tuning"))
    head: str = field(default="linear", metadata=help_text(
        "linear, or mlp (one hidden layer) for features that a line cannot separate"))
    head_hidden: int = field(default=512, metadata=help_text("mlp head: width of the hidden layer"))
    head_activation: str = field(default="relu", metadata=help_text(
        "mlp head: relu | leaky_relu | elu | selu | gelu | silu (Kaiming init for the ReLU family, Xavier otherwise)"))
    head_batchnorm: bool = field(default=False, metadata=help_text("mlp head: BatchNorm after the hidden layer"))
    head_dropout: float = field(default=0.0, metadata=help_text(
        "dropout before the classifier, 0 to 1; raise it when the model overfits"))
    drop_path_rate: float = field(default=0.0, metadata=help_text(
        "fine_tune: stochastic depth, the chance a residual block is skipped in training (e.g. 0.1)"))
    trainable_stages: int = field(default=2, metadata=help_text(
        "fine_tune: backbone stages that train, counted from the top; -1 trains every stage"))
    unfreeze_every: int = field(default=0, metadata=help_text(
        "fine_tune: gradual unfreezing, one more stage trains every this many epochs (0 = off)"))
    backbone_lr_scale: float = field(default=0.1, metadata=help_text(
        "fine_tune: backbone learning rate as a fraction of the head's (pretrained layers need small steps)"))
    layer_decay: float | None = field(default=None, metadata=help_text(
        "fine_tune: layer-wise rate decay (timm), e.g. 0.75: each stage lower down learns this much slower"))
    freeze_batchnorm: bool = field(default=False, metadata=help_text(
        "fine_tune: keep every BatchNorm on its pretrained statistics (helps with batches under ~16)"))
    head_epochs: int = field(default=3, metadata=help_text(
        "two_stage: epochs that train the head alone, before the backbone unfreezes"))
    compile: bool = field(default=False, metadata=help_text(
        "torch.compile the model on CUDA: a slower first epoch, faster steps after it; ignored elsewhere"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, the learning-rate schedule, the loss, and when to stop."""

    learning_rate: float = field(default=3e-3, metadata=help_text(
        "peak learning rate of the head (AdamW); the backbone gets model.backbone_lr_scale of it"))
    reference_batch_size: int | None = field(default=None, metadata=help_text(
        "linear scaling rule: when set, the rate is scaled by batch_size / reference_batch_size"))
    weight_decay: float = field(default=0.01, metadata=help_text(
        "AdamW weight decay; never applied to biases and normalisation layers"))
    batch_size: int | Auto = field(default=32, metadata=help_text(
        "images per forward pass, or auto (on CUDA: the largest batch that fits in GPU memory; 32 elsewhere)"))
    accumulate_steps: int = field(default=1, metadata=help_text(
        "gradient accumulation: batches whose gradients add up before each step; a step then averages"
        " batch_size x accumulate_steps images (and the rate follows that effective batch)"))
    clip_grad_norm: float | None = field(default=None, metadata=help_text(
        "clip the gradients' total norm to this before each step (e.g. 1.0); null = off"))
    epochs: int = field(default=10, metadata=help_text("passes over the training images"))
    schedule: str = field(default="cosine", metadata=help_text(
        "after warmup, any registered schedule, e.g. cosine, constant, step, linear, inverse_sqrt,"
        " cosine_restarts (cycles for snapshot ensembles)"))
    warmup_epochs: float = field(default=1.0, metadata=help_text(
        "epochs of linear warmup from a small rate up to learning_rate (capped at optim.epochs)"))
    min_learning_rate: float = field(default=1e-6, metadata=help_text("rate at the end of the decay"))
    step_epochs: float = field(default=3.0, metadata=help_text("step schedule: epochs between rate drops"))
    step_factor: float = field(default=0.1, metadata=help_text("step schedule: the rate is multiplied by this"))
    restart_epochs: float = field(default=5.0, metadata=help_text("cosine_restarts: epochs per cycle"))
    label_smoothing: float = field(default=0.0, metadata=help_text(
        "share of each target spread over the other classes (e.g. 0.1) against over-confidence"))
    class_balance: str = field(default="none", metadata=help_text(
        "none | weighted_loss (rare classes weigh more) | balanced_sampler (rare classes drawn more often)"))
    ema: bool = field(default=False, metadata=help_text(
        "keep an exponential moving average (Polyak) of the weights, evaluated beside them every epoch"))
    ema_decay: float = field(default=0.998, metadata=help_text("EMA: share of the average kept at each step"))
    monitor: str = field(default="val_top1", metadata=help_text(
        "val_top1 | val_loss: which validation metric picks the best checkpoint and drives early stopping"))
    early_stopping_patience: int = field(default=0, metadata=help_text(
        "stop after this many epochs without a better monitored metric (0 = never stop early)"))

    def fixed_batch_size(self) -> int:
        """``batch_size`` as a number: ``AUTO_BATCH_FALLBACK`` where it is ``auto`` and no device has resolved it.

        A CUDA run replaces ``auto`` with the largest batch that fits before it builds anything
        (``engine.training.batch_probe``); everything else trains at the fallback.
        """
        return self.batch_size if isinstance(self.batch_size, int) else AUTO_BATCH_FALLBACK


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: a preset, whose every control can be overridden (null = the preset's)."""

    preset: str = field(default="light", metadata=help_text(
        "none | light (crop, flip) | standard (+ colour, rotation, cutout) | strong (+ blur, noise, RandAugment)"))
    crop_scale: tuple[float, float] | None = field(default=None, metadata=help_text(
        "random resized crop: range of the image area kept, e.g. [0.35, 1.0]"))
    crop_ratio: tuple[float, float] | None = field(default=None, metadata=help_text(
        "random resized crop: range of aspect ratios, e.g. [0.75, 1.333]"))
    horizontal_flip: float | None = field(default=None, metadata=help_text("chance of a left-right flip"))
    vertical_flip: float | None = field(default=None, metadata=help_text(
        "chance of an upside-down flip (only for images with no up, e.g. microscopy)"))
    rotation_degrees: float | None = field(default=None, metadata=help_text("largest random rotation, in degrees"))
    color_jitter: float | None = field(default=None, metadata=help_text(
        "strength of random brightness, contrast and saturation changes, 0 to 1"))
    blur: float | None = field(default=None, metadata=help_text("chance of a Gaussian blur"))
    noise: float | None = field(default=None, metadata=help_text("chance of Gaussian noise"))
    cutout: float | None = field(default=None, metadata=help_text(
        "chance of cutout: blank rectangles that make the model use the whole object"))
    cutout_holes: tuple[int, int] | None = field(default=None, metadata=help_text(
        "cutout: range of the number of holes"))
    cutout_size: tuple[float, float] | None = field(default=None, metadata=help_text(
        "cutout: range of hole sides, as a fraction of the image side"))
    random_policy: str | None = field(default=None, metadata=help_text(
        "none | randaugment | trivialaugment: random operations drawn per image"))
    random_policy_ops: int | None = field(default=None, metadata=help_text("randaugment: operations per image"))
    random_policy_magnitude: float | None = field(default=None, metadata=help_text(
        "randaugment: strength of each operation, 0 to 1"))
    mixup_alpha: float = field(default=0.0, metadata=help_text(
        "mixup: blend pairs of images and labels; Beta(alpha, alpha) weights, 0 = off, 0.2 is typical"))
    cutmix_alpha: float = field(default=0.0, metadata=help_text(
        "cutmix: paste a patch of one image into another; 0 = off, 1.0 is typical (needs pixels: not in"
        " feature extraction)"))
    mix_probability: float = field(default=1.0, metadata=help_text("chance a batch is mixed at all"))
    mix_switch_probability: float = field(default=0.5, metadata=help_text(
        "when both are on, chance of cutmix instead of mixup"))
    feature_views: int = field(default=1, metadata=help_text(
        "feature_extraction: cached views per training image; the first is unaugmented, the rest use the preset"))


@dataclass(frozen=True)
class DoctorConfig:
    """The training doctor: checks that watch a run and explain what they see."""

    enabled: bool = field(default=True, metadata=help_text("run the checks below during training"))
    # The default is every check registered as default, so a new built-in check is one new file.
    checks: tuple[str, ...] = field(default_factory=DOCTOR_CHECKS.default_names, metadata=help_text(
        "checks to run, by name; `python main.py doctor --list` explains each"))
    divergence_factor: float = field(default=3.0, metadata=help_text(
        "stop the run when the loss exceeds this many times its initial value (the larger of the first loss"
        " and ln C)"))
    flat_window: int = field(default=100, metadata=help_text(
        "steps over which a loss that has not moved counts as flat"))
    update_ratio_every: int = field(default=20, metadata=help_text("steps between update/weight ratio measurements"))
    update_ratio_low: float = field(default=1e-4, metadata=help_text("update/weight ratios below this are too small"))
    update_ratio_high: float = field(default=0.1, metadata=help_text(
        "update/weight ratios above this are too large (healthy AdamW runs measure 0.01-0.05 on a new head,"
        " ~1e-3 on a fine-tuned backbone)"))


@dataclass(frozen=True)
class SearchParameter:
    """One dimension of a hyperparameter search: a range of numbers, or a list of choices."""

    path: str = field(default="", metadata=help_text(
        "the config field it sets, as a dotted path, e.g. optim.learning_rate"))
    low: float | None = field(default=None, metadata=help_text("range: the smallest value"))
    high: float | None = field(default=None, metadata=help_text("range: the largest value"))
    scale: str = field(default="linear", metadata=help_text(
        "range: log (drawn evenly in the logarithm: rates, decays) | linear; whole-number fields draw"
        " whole numbers"))
    choices: tuple[SEARCH_CHOICE_TYPES, ...] | None = field(default=None, metadata=help_text(
        "instead of a range: the values to pick from, e.g. [light, standard, strong]"))


@dataclass(frozen=True)
class SearchConfig:
    """Hyperparameter search (``main.py search``): what is searched, and the coarse and fine stages."""

    space: tuple[SearchParameter, ...] = field(default=(), metadata=help_text(
        "parameters to search, each {path, low, high, scale} or {path, choices}; empty = the default space"
        " of model.mode (learning rate, weight decay, label smoothing, mixup, trainable stages, preset)"))
    coarse_trials: int = field(default=20, metadata=help_text("trials of the coarse stage: many short runs"))
    coarse_epochs: int = field(default=3, metadata=help_text("epochs of each coarse trial (1-5 is typical)"))
    fine_trials: int = field(default=10, metadata=help_text(
        "trials of the fine stage, in ranges narrowed around the best coarse trials (0 = no fine stage)"))
    fine_epochs: int = field(default=10, metadata=help_text("epochs of each fine trial"))
    top_k: int = field(default=5, metadata=help_text("best coarse trials whose values define the fine ranges"))
    metric: str = field(default="val_loss", metadata=help_text(
        "val_loss (minimised) | val_top1 (maximised): a trial's score, its best epoch's value"))
    edge_fraction: float = field(default=0.1, metadata=help_text(
        "a best value in this outer share of its coarse range lies at the edge: the fine stage widens that side"))
    widen_fraction: float = field(default=0.25, metadata=help_text(
        "how far past the edge the fine range reaches, as a share of the coarse range (on its scale)"))
    pruner_startup_trials: int = field(default=5, metadata=help_text(
        "median pruner: finished trials needed before it stops any trial"))
    pruner_warmup_epochs: int = field(default=1, metadata=help_text(
        "median pruner: first epochs of a trial that are never judged"))
    seed: int = field(default=0, metadata=help_text("seed of the random sampler: same seed, same trial values"))

"""Build what a run trains: the model, its head, the batches and the optimizer, from a RunConfig.

Training, the LR finder and the sanity check all start here, so that each of them
sees exactly the model, data and parameter groups a real run would. In a distributed run
each rank gets its share of the training batches and rank 0 alone the validation batches;
the learning rate follows the effective batch (``engine.training.optimizer.batch_scale``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.layers import freeze_batch_norm_2d
from timm.optim import create_optimizer_v2
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, WeightedRandomSampler

from augment import (
    create_eval_transform,
    create_train_transform,
    describe_train_transform,
    eval_source_side,
    train_source_side,
)
from engine.core.config import RunConfig
from engine.core.device import DevicePlan, plan_device
from engine.core.errors import DatasetError
from engine.core.events import FeaturesExtracted, FeaturesProgressed
from engine.data.decoded_cache import DecodedCache, decoded_cache_dir, limit_bytes
from engine.data.health import FileRecord
from engine.data.loader_sizing import size_loader
from engine.data.loading import (
    DecodedBatches,
    DistributedWeightedSampler,
    FeatureBatches,
    ImageDataset,
    SkippedImages,
    collate_with_failures,
)
from engine.data.prepare import PreparedDataset, prepare_dataset
from engine.models.backbones import (
    LoadedBackbone,
    classifier_of,
    create_model,
    resolve_data_settings,
    set_trainable_stages,
)
from engine.models.features import ExtractionResult, FeatureCache, FeatureView, extract_features
from engine.models.heads import create_head, install_head
from engine.training.callback import CancelFit
from engine.training.distributed import SINGLE_PROCESS, DistributedContext
from engine.training.optimizer import batch_scale, parameter_groups

Reporter = Callable[..., Any]


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    """A reporter that drops events."""


@dataclass
class TrainingSetup:
    """What a run trains, built from the config.

    Attributes:
        loaded: the backbone with its new head, weights source and data settings.
        loop_model: the module the loop optimises (the head alone in feature extraction).
        train_batches: re-iterable training batches ``(inputs, targets)``.
        val_batches: validation batches, or None without validation images.
        plan: device and precision of the loop.
        parts: trainable parameters by part, ``head`` and ``backbone``.
        train_targets: class index of every training item, for class weights.
        world_size: processes training together (1 outside a distributed run).
        train_sampler: in a distributed run, the sampler of this rank's share of the training
            items; call its ``set_epoch(epoch)`` before each epoch, on every rank.
    """

    loaded: LoadedBackbone
    loop_model: nn.Module
    train_batches: Any
    val_batches: Any
    plan: DevicePlan
    parts: dict[str, list[nn.Parameter]]
    train_targets: torch.Tensor
    world_size: int = 1
    train_sampler: Any = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (timm's Mixup draws from it) and torch, so a config repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_data(config: RunConfig) -> PreparedDataset:
    """Scan and split the config's dataset (``data.path``, fractions, split seed)."""
    return prepare_dataset(
        config.data.path, val_fraction=config.data.val_fraction, test_fraction=config.data.test_fraction,
        seed=config.data.split_seed,
    )


def build_training(
    config: RunConfig,
    dataset: PreparedDataset,
    *,
    mode: str | None = None,
    loaded: LoadedBackbone | None = None,
    trainable_stages: int | None = None,
    report: Reporter | None = None,
    check_stop: Callable[[], None] | None = None,
    distributed: DistributedContext = SINGLE_PROCESS,
    skipped: SkippedImages | None = None,
) -> TrainingSetup:
    """Create the model and the batches a run trains on.

    Args:
        config: the run's settings.
        dataset: scanned and split images.
        mode: ``feature_extraction`` or ``fine_tune`` (default: the config's; the two
            stages of ``two_stage`` ask for each in turn).
        loaded: a model to go on training (the second stage reuses the first's), or None
            for a new one from the config.
        trainable_stages: stages that train now (gradual unfreezing changes it per epoch).
        report: receives progress events (``features_progressed``, ``features_extracted``).
        check_stop: called between feature batches; raises ``CancelFit`` to stop.
        distributed: this process's place in a distributed run: training batches are its share
            (``train_sampler``), validation batches exist on rank 0 only, and the processes of
            a machine fill the feature cache together. The model is not wrapped here.
        skipped: where images that fail to decode are reported (once) and counted per pass; pass
            the run's own so that its stages report a file once (default: a new one on ``report``).
    """
    report = report or _ignore
    skipped = skipped if skipped is not None else SkippedImages(report)
    mode = mode or ("feature_extraction" if config.model.mode == "two_stage" else config.model.mode)
    if loaded is None:
        # The head owns its dropout (timm's drop_rate stays 0, or dropout would apply twice).
        loaded = create_model(
            config.model.backbone, num_classes=len(dataset.classes), weights=config.model.weights,
            drop_path_rate=config.model.drop_path_rate if mode == "fine_tune" else None,
        )
        install_head(loaded.model, create_head(config.model, loaded.num_features, len(dataset.classes)))
        if config.data.input_size is not None:
            loaded.data_settings = resolve_data_settings(loaded.model, config.data.input_size)
    class_index = {name: index for index, name in enumerate(dataset.classes)}
    if mode == "feature_extraction":
        return _feature_extraction_setup(config, dataset, loaded, class_index, report, check_stop, distributed,
                                         skipped)
    stages = config.model.trainable_stages if trainable_stages is None else trainable_stages
    return _fine_tune_setup(config, dataset, loaded, class_index, stages, distributed, skipped)


def _feature_extraction_setup(
    config: RunConfig,
    dataset: PreparedDataset,
    loaded: LoadedBackbone,
    class_index: dict[str, int],
    report: Reporter,
    check_stop: Callable[[], None] | None,
    distributed: DistributedContext,
    skipped: SkippedImages,
) -> TrainingSetup:
    image_plan = plan_device(config.device, amp=config.amp, images=True)
    backbone = image_plan.prepare_model(loaded.model)
    backbone.requires_grad_(False)
    classifier = classifier_of(loaded.model).requires_grad_(True)
    settings = loaded.data_settings
    eval_space = f"{loaded.backbone}|{loaded.weights_id}|eval|{settings.to_dict()}"
    train_space = f"{loaded.backbone}|{loaded.weights_id}|train|{describe_train_transform(config.augment, settings)}"
    eval_view = FeatureView(FeatureCache(eval_space), 0, create_eval_transform(settings), eval_source_side(settings))
    train_transform = create_train_transform(config.augment, settings, seed=config.seed)
    train_cache = FeatureCache(train_space)
    train_side = train_source_side(config.augment, settings)
    extra_views = [FeatureView(train_cache, n, train_transform, train_side)
                   for n in range(1, config.augment.feature_views)]

    def features_of(split: str, views: list[FeatureView]) -> tuple[torch.Tensor, torch.Tensor] | None:
        records = dataset.splits[split]

        def report_progress(done: int, total: int) -> None:
            if check_stop is not None:
                check_stop()
            report(FeaturesProgressed.event, split=split, done=done, total=total)

        def extract(chosen: tuple[FileRecord, ...]) -> ExtractionResult:
            return extract_features(
                backbone, [record.path for record in chosen], [_content_hash(record) for record in chosen],
                views=views, plan=image_plan, batch_size=max(config.optim.fixed_batch_size(), 32),
                num_workers=config.data.num_workers, progress=report_progress,
            )

        shared: ExtractionResult | None = None
        if distributed.enabled:
            shared = _fill_cache_together(distributed, records, extract)
            if split != "train" and not distributed.is_main:
                return None  # rank 0 validates for every rank
        result = extract(records)
        computed, reused, seconds = result.computed, result.reused, result.seconds
        if shared is not None:  # the vectors read back now were mostly computed by the processes together
            computed, reused, seconds = shared.computed, max(0, reused - shared.computed), seconds + shared.seconds
        report(
            FeaturesExtracted.event, split=split, computed=computed, reused=reused,
            failed=result.failed, seconds=round(seconds, 3), views=len(views),
        )
        for path, reason in result.failed:
            skipped.add(split, path, reason)
        # The failed images are left out of every epoch; counted once, on the rank whose sums are the run's.
        skipped.counts[split] = len(result.failed) if distributed.is_main else 0
        targets = torch.tensor([class_index[records[index].label] for index in result.kept], dtype=torch.long)
        return result.features, targets

    train = features_of("train", [eval_view, *extra_views])
    if train is None:
        raise RuntimeError("every rank extracts its own training features; only validation is left to rank 0")
    train_features, train_targets = train
    val_features, val_targets = features_of("val", [eval_view]) or (None, torch.empty(0, dtype=torch.long))
    if len(train_targets) == 0:
        raise DatasetError(f"{dataset.root}: no training image could be decoded")
    head_plan = plan_device(config.device, amp=config.amp, images=False)
    head = head_plan.prepare_model(classifier)
    batch_size = config.optim.fixed_batch_size()
    sample_weights = _balanced_weights(train_targets, len(class_index)) if _balanced(config) else None
    sampler = _distributed_sampler(config, distributed, train_targets, len(class_index))
    return TrainingSetup(
        loaded=loaded,
        loop_model=head,
        train_batches=FeatureBatches(train_features, train_targets, batch_size=batch_size, shuffle=True,
                                     seed=config.seed, sample_weights=sample_weights, sampler=sampler),
        val_batches=FeatureBatches(val_features, val_targets, batch_size=batch_size, shuffle=False)
        if len(val_targets) else None,
        plan=head_plan,
        parts={"head": list(head.parameters()), "backbone": []},
        train_targets=train_targets,
        world_size=distributed.world_size,
        train_sampler=sampler,
    )


def _content_hash(record: FileRecord) -> str:
    """The record's SHA-256, the feature cache key; the scan hashes every readable file, so usable ones have it."""
    if record.sha256 is None:
        raise DatasetError(f"{record.path}: no content hash to key its cached features by; scan the dataset again")
    return record.sha256


def _fill_cache_together(
    distributed: DistributedContext,
    records: tuple[FileRecord, ...],
    extract: Callable[[tuple[FileRecord, ...]], ExtractionResult],
) -> ExtractionResult:
    """Compute this process's share of a machine's missing feature vectors into the cache, then wait for the rest.

    Shares are split per machine, as machines need not share a cache. A stop during the
    work is agreed on by all ranks at the end, so that no rank waits for one that left.

    Returns:
        The vectors computed by all processes (``computed``) and the time this one took.
    """
    share = records[distributed.local_rank :: distributed.local_world_size]
    stopped: CancelFit | None = None
    result = ExtractionResult(features=torch.empty(0), kept=[])
    try:
        result = extract(share)
    except CancelFit as cancel:
        stopped = cancel
    # One collective waits for every share and tells each rank whether any of them stopped.
    totals = distributed.all_reduce_sum(torch.tensor([result.computed, stopped is not None], dtype=torch.float64))
    if totals[1] > 0:
        raise stopped or CancelFit("stopped", "stop requested in another process of the run")
    return ExtractionResult(features=torch.empty(0), kept=[], computed=int(totals[0]), seconds=result.seconds)


def _distributed_sampler(
    config: RunConfig, distributed: DistributedContext, train_targets: torch.Tensor, num_classes: int
) -> Sampler[int] | None:
    """This rank's share of the training items, the same split on every rank (None outside a distributed run)."""
    if not distributed.enabled:
        return None
    if _balanced(config):
        return DistributedWeightedSampler(_balanced_weights(train_targets, num_classes),
                                          num_replicas=distributed.world_size, rank=distributed.rank, seed=config.seed)
    return DistributedSampler(range(len(train_targets)), num_replicas=distributed.world_size,
                              rank=distributed.rank, shuffle=True, seed=config.seed)


def _fine_tune_setup(
    config: RunConfig,
    dataset: PreparedDataset,
    loaded: LoadedBackbone,
    class_index: dict[str, int],
    trainable_stages: int,
    distributed: DistributedContext,
    skipped: SkippedImages,
) -> TrainingSetup:
    plan = plan_device(config.device, amp=config.amp, images=True)
    parts = apply_trainable_stages(loaded.model, trainable_stages, config)
    model = plan.prepare_model(loaded.model)
    settings = loaded.data_settings
    train_records = dataset.splits["train"]
    train_targets = torch.tensor([class_index[r.label] for r in train_records], dtype=torch.long)
    shard = _distributed_sampler(config, distributed, train_targets, len(class_index))
    # Each rank draws its own augmentations (the shuffling seed stays common, in the sampler).
    augment_seed = config.seed + distributed.rank
    batch_size = config.optim.fixed_batch_size()
    cache: DecodedCache | None = None
    cache_limit = 0
    if config.data.decoded_cache:
        cache = DecodedCache(decoded_cache_dir(dataset.root))
        if distributed.local_rank == 0:
            cache.remove_stale_temp_files()  # one rank: the others' own temp files are live
        cache_limit = limit_bytes(config.data.decoded_cache_limit_gb, cache.root)

    def loader(split: str, transform: Any, train: bool, side: int) -> DecodedBatches | None:
        records = dataset.splits[split]
        if not records or (not train and not distributed.is_main):
            return None  # in a distributed run rank 0 validates for every rank
        paths = [r.path for r in records]
        keys = [(r.sha256, r.width, r.height) for r in records]
        use_cache = cache is not None and cache.admit(split, keys, side, cache_limit)
        # Items are tagged with their position, so that a failure names its file.
        images = ImageDataset(paths, range(len(records)), transform, side, cache=cache if use_cache else None,
                              hashes=[r.sha256 for r in records])
        generator = torch.Generator().manual_seed(augment_seed)
        sampler: Sampler[int] | None = None
        count = len(records)
        if train and shard is not None:
            sampler, count = shard, len(shard)
        elif train and _balanced(config):
            weights = _balanced_weights(train_targets, len(class_index))
            sampler = WeightedRandomSampler(weights, num_samples=len(records), generator=generator)
        sizing = size_loader(config.data.num_workers, images, batch_size=batch_size, cuda=plan.is_cuda,
                             pin_memory=plan.pin_memory)
        batches = DataLoader(
            images, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
            drop_last=train and count > batch_size, collate_fn=collate_with_failures, generator=generator,
            **sizing.loader_arguments(),
        )
        targets = torch.tensor([class_index[r.label] for r in records], dtype=torch.long)
        return DecodedBatches(batches, paths, targets, split, skipped)

    return TrainingSetup(
        loaded=loaded,
        loop_model=model,
        train_batches=loader("train", create_train_transform(config.augment, settings, seed=augment_seed), train=True,
                             side=train_source_side(config.augment, settings)),
        val_batches=loader("val", create_eval_transform(settings), train=False, side=eval_source_side(settings)),
        plan=plan,
        parts=parts,
        train_targets=train_targets,
        world_size=distributed.world_size,
        train_sampler=shard,
    )


def _balanced(config: RunConfig) -> bool:
    return config.optim.class_balance == "balanced_sampler"


def _balanced_weights(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights that draw every class equally often (inverse class frequency)."""
    counts = torch.bincount(targets, minlength=num_classes).clamp(min=1).double()
    return (1.0 / counts)[targets]


def apply_trainable_stages(model: nn.Module, trainable_stages: int, config: RunConfig) -> dict[str, list[nn.Parameter]]:
    """Freeze all but the top ``trainable_stages`` stages; return the trainable parameters by part.

    With ``model.freeze_batchnorm`` every BatchNorm then keeps its pretrained statistics
    and affine values (timm's ``freeze_batch_norm_2d`` turns them into buffers), which
    helps when batches are too small for reliable batch statistics.
    """
    parts = set_trainable_stages(model, trainable_stages)
    backbone = parts.backbone_parameters
    if config.model.freeze_batchnorm:
        freeze_batch_norm_2d(model)  # converts the children in place
        alive = {id(parameter) for parameter in model.parameters()}
        backbone = [parameter for parameter in backbone if id(parameter) in alive]
    return {"head": parts.head_parameters, "backbone": backbone}


def create_optimizer(setup: TrainingSetup, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW (through timm) over the setup's parameter groups, at the peak rate of its effective batch."""
    return create_optimizer_v2(
        parameter_groups(setup.loop_model, setup.parts, config, world_size=setup.world_size), opt="adamw",
        lr=batch_scale(config, setup.world_size).peak_learning_rate, weight_decay=config.optim.weight_decay,
    )

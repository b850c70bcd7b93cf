"""Build what a run trains: the model, its head, the batches and the optimizer, from a RunConfig.

Training, the LR finder and the sanity check all start here, so that each of them
sees exactly the model, data and parameter groups a real run would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader

from augment import create_eval_transform, create_train_transform, describe_train_transform
from engine.backbones import (
    LoadedBackbone,
    classifier_of,
    create_model,
    resolve_data_settings,
    set_trainable_stages,
)
from engine.config import RunConfig
from engine.data import FeatureBatches, ImageDataset, collate_decoded
from engine.device import DevicePlan, plan_device
from engine.errors import DatasetError
from engine.features import FeatureCache, FeatureView, extract_features
from engine.prepare import PreparedDataset

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
    """

    loaded: LoadedBackbone
    loop_model: nn.Module
    train_batches: Any
    val_batches: Any
    plan: DevicePlan
    parts: dict[str, list[nn.Parameter]]


def build_training(
    config: RunConfig,
    dataset: PreparedDataset,
    *,
    report: Reporter | None = None,
    check_stop: Callable[[], None] | None = None,
) -> TrainingSetup:
    """Create the model and the batches a run trains on.

    Args:
        config: the run's settings.
        dataset: scanned and split images.
        report: receives progress events (``features_progressed``, ``features_extracted``).
        check_stop: called between feature batches; raises ``CancelFit`` to stop.
    """
    report = report or _ignore
    loaded = create_model(
        config.model.backbone, num_classes=len(dataset.classes),
        weights=config.model.weights, drop_rate=config.model.head_dropout,
    )
    if config.data.input_size is not None:
        loaded.data_settings = resolve_data_settings(loaded.model, config.data.input_size)
    class_index = {name: index for index, name in enumerate(dataset.classes)}
    if config.model.mode == "feature_extraction":
        return _feature_extraction_setup(config, dataset, loaded, class_index, report, check_stop)
    return _fine_tune_setup(config, dataset, loaded, class_index)


def _feature_extraction_setup(
    config: RunConfig,
    dataset: PreparedDataset,
    loaded: LoadedBackbone,
    class_index: dict[str, int],
    report: Reporter,
    check_stop: Callable[[], None] | None,
) -> TrainingSetup:
    image_plan = plan_device(config.device, amp=config.amp, images=True)
    backbone = image_plan.prepare_model(loaded.model)
    backbone.requires_grad_(False)
    classifier = classifier_of(loaded.model).requires_grad_(True)
    _start_head_at_chance(classifier)
    settings = loaded.data_settings
    eval_space = f"{loaded.backbone}|{loaded.weights_id}|eval|{settings.to_dict()}"
    train_space = f"{loaded.backbone}|{loaded.weights_id}|train|{describe_train_transform(config.augment, settings)}"
    eval_view = FeatureView(FeatureCache(eval_space), 0, create_eval_transform(settings))
    train_transform = create_train_transform(config.augment, settings)
    train_cache = FeatureCache(train_space)
    extra_views = [FeatureView(train_cache, n, train_transform) for n in range(1, config.augment.feature_views)]

    def features_of(split: str, views: list[FeatureView]) -> tuple[torch.Tensor, torch.Tensor]:
        records = dataset.splits[split]

        def report_progress(done: int, total: int) -> None:
            if check_stop is not None:
                check_stop()
            report("features_progressed", split=split, done=done, total=total)

        result = extract_features(
            backbone, [record.path for record in records], [record.sha256 for record in records],
            views=views, plan=image_plan, batch_size=max(config.optim.batch_size, 32),
            num_workers=config.data.num_workers, progress=report_progress,
        )
        report(
            "features_extracted", split=split, computed=result.computed, reused=result.reused,
            failed=result.failed, seconds=round(result.seconds, 3), views=len(views),
        )
        targets = torch.tensor([class_index[records[index].label] for index in result.kept], dtype=torch.long)
        return result.features, targets

    train_features, train_targets = features_of("train", [eval_view, *extra_views])
    val_features, val_targets = features_of("val", [eval_view])
    if len(train_targets) == 0:
        raise DatasetError(f"{dataset.root}: no training image could be decoded")
    head_plan = plan_device(config.device, amp=config.amp, images=False)
    head = nn.Sequential(nn.Dropout(config.model.head_dropout), classifier)
    head = head_plan.prepare_model(head)
    batch_size = config.optim.batch_size
    return TrainingSetup(
        loaded=loaded,
        loop_model=head,
        train_batches=FeatureBatches(train_features, train_targets, batch_size=batch_size, shuffle=True,
                                     seed=config.seed),
        val_batches=FeatureBatches(val_features, val_targets, batch_size=batch_size, shuffle=False)
        if len(val_targets) else None,
        plan=head_plan,
        parts={"head": list(head.parameters()), "backbone": []},
    )


def _fine_tune_setup(
    config: RunConfig, dataset: PreparedDataset, loaded: LoadedBackbone, class_index: dict[str, int]
) -> TrainingSetup:
    plan = plan_device(config.device, amp=config.amp, images=True)
    parts = set_trainable_stages(loaded.model, config.model.trainable_stages)
    _start_head_at_chance(classifier_of(loaded.model))
    model = plan.prepare_model(loaded.model)
    settings = loaded.data_settings

    def loader(split: str, transform: Any, shuffle: bool) -> DataLoader | None:
        records = dataset.splits[split]
        if not records:
            return None
        images = ImageDataset([r.path for r in records], [class_index[r.label] for r in records], transform)
        workers = config.data.num_workers
        return DataLoader(
            images, batch_size=config.optim.batch_size, shuffle=shuffle,
            drop_last=shuffle and len(records) > config.optim.batch_size,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=plan.pin_memory,
            collate_fn=collate_decoded, generator=torch.Generator().manual_seed(config.seed),
        )

    return TrainingSetup(
        loaded=loaded,
        loop_model=model,
        train_batches=loader("train", create_train_transform(config.augment, settings), shuffle=True),
        val_batches=loader("val", create_eval_transform(settings), shuffle=False),
        plan=plan,
        parts={"head": parts.head_parameters, "backbone": parts.backbone_parameters},
    )


def _start_head_at_chance(classifier: nn.Module) -> None:
    """Zero the new linear head: the first loss is exactly ln(C), as it should be at chance.

    Pooled features of pretrained backbones are large, so a default-initialised head
    starts far above ln(C) and wastes its first epochs undoing random logits.
    """
    if isinstance(classifier, nn.Linear):
        nn.init.zeros_(classifier.weight)
        nn.init.zeros_(classifier.bias)


def create_optimizer(setup: TrainingSetup, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW (through timm) over the setup's trainable parts, head first."""
    return create_optimizer_v2(
        parameter_groups(setup.loop_model, setup.parts, config), opt="adamw",
        lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay,
    )


def parameter_groups(model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig) -> list[dict]:
    """Head groups first (its rate is the one logged); no weight decay on biases and norms (timm's rule)."""
    rates = {"head": config.optim.learning_rate,
             "backbone": config.optim.learning_rate * config.model.backbone_lr_scale}
    groups = []
    for part, parameters in parts.items():
        wanted = {id(parameter) for parameter in parameters}
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if id(parameter) in wanted and parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        for suffix, members, weight_decay in (("", decay, config.optim.weight_decay), ("_no_decay", no_decay, 0.0)):
            if members:
                groups.append({"params": members, "lr": rates[part], "weight_decay": weight_decay,
                               "name": part + suffix})
    return groups


def create_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, batches_per_epoch: int) -> Any:
    """The per-step learning-rate schedule (``t_in_epochs=False``)."""
    total_steps = config.optim.epochs * batches_per_epoch
    warmup_steps = min(round(config.optim.warmup_epochs * batches_per_epoch), total_steps)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=config.optim.min_learning_rate,
        warmup_t=warmup_steps,
        warmup_lr_init=config.optim.learning_rate * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )



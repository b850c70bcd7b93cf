"""Build what a run trains: the model, its head, the batches and the optimizer, from a RunConfig.

Training, the LR finder and the sanity check all start here, so that each of them
sees exactly the model, data and parameter groups a real run would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.layers import freeze_batch_norm_2d
from timm.optim import create_optimizer_v2, param_groups_layer_decay
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

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
from engine.heads import create_head, install_head
from engine.prepare import PreparedDataset, prepare_dataset
from engine.schedules import scaled_learning_rate

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
    """

    loaded: LoadedBackbone
    loop_model: nn.Module
    train_batches: Any
    val_batches: Any
    plan: DevicePlan
    parts: dict[str, list[nn.Parameter]]
    train_targets: torch.Tensor


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
    """
    report = report or _ignore
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
        return _feature_extraction_setup(config, dataset, loaded, class_index, report, check_stop)
    stages = config.model.trainable_stages if trainable_stages is None else trainable_stages
    return _fine_tune_setup(config, dataset, loaded, class_index, stages)


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
    settings = loaded.data_settings
    eval_space = f"{loaded.backbone}|{loaded.weights_id}|eval|{settings.to_dict()}"
    train_space = f"{loaded.backbone}|{loaded.weights_id}|train|{describe_train_transform(config.augment, settings)}"
    eval_view = FeatureView(FeatureCache(eval_space), 0, create_eval_transform(settings))
    train_transform = create_train_transform(config.augment, settings, seed=config.seed)
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
    head = head_plan.prepare_model(classifier)
    batch_size = config.optim.batch_size
    sample_weights = _balanced_weights(train_targets, len(class_index)) if _balanced(config) else None
    return TrainingSetup(
        loaded=loaded,
        loop_model=head,
        train_batches=FeatureBatches(train_features, train_targets, batch_size=batch_size, shuffle=True,
                                     seed=config.seed, sample_weights=sample_weights),
        val_batches=FeatureBatches(val_features, val_targets, batch_size=batch_size, shuffle=False)
        if len(val_targets) else None,
        plan=head_plan,
        parts={"head": list(head.parameters()), "backbone": []},
        train_targets=train_targets,
    )


def _fine_tune_setup(
    config: RunConfig,
    dataset: PreparedDataset,
    loaded: LoadedBackbone,
    class_index: dict[str, int],
    trainable_stages: int,
) -> TrainingSetup:
    plan = plan_device(config.device, amp=config.amp, images=True)
    parts = apply_trainable_stages(loaded.model, trainable_stages, config)
    model = plan.prepare_model(loaded.model)
    settings = loaded.data_settings
    train_records = dataset.splits["train"]
    train_targets = torch.tensor([class_index[r.label] for r in train_records], dtype=torch.long)

    def loader(split: str, transform: Any, train: bool) -> DataLoader | None:
        records = dataset.splits[split]
        if not records:
            return None
        images = ImageDataset([r.path for r in records], [class_index[r.label] for r in records], transform)
        generator = torch.Generator().manual_seed(config.seed)
        sampler = None
        if train and _balanced(config):
            weights = _balanced_weights(train_targets, len(class_index))
            sampler = WeightedRandomSampler(weights, num_samples=len(records), generator=generator)
        workers = config.data.num_workers
        return DataLoader(
            images, batch_size=config.optim.batch_size, shuffle=train and sampler is None, sampler=sampler,
            drop_last=train and len(records) > config.optim.batch_size,
            num_workers=workers, persistent_workers=workers > 0, pin_memory=plan.pin_memory,
            collate_fn=collate_decoded, generator=generator,
        )

    return TrainingSetup(
        loaded=loaded,
        loop_model=model,
        train_batches=loader("train", create_train_transform(config.augment, settings, seed=config.seed), train=True),
        val_batches=loader("val", create_eval_transform(settings), train=False),
        plan=plan,
        parts=parts,
        train_targets=train_targets,
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
    """AdamW (through timm) over the setup's parameter groups."""
    return create_optimizer_v2(
        parameter_groups(setup.loop_model, setup.parts, config), opt="adamw",
        lr=scaled_learning_rate(config.optim), weight_decay=config.optim.weight_decay,
    )


def parameter_groups(model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig) -> list[dict]:
    """Optimizer groups: no weight decay on biases and norms (timm's rule); rates by ``lr_scale``.

    Without layer decay there are always four groups, in this order (some may be
    empty): ``head``, ``head_no_decay``, ``backbone``, ``backbone_no_decay``; gradual
    unfreezing refills them in place (``refill_parameter_groups``), so the optimizer
    state and the schedule never change shape. With ``model.layer_decay`` the groups
    are timm's, one per layer.
    """
    learning_rate = scaled_learning_rate(config.optim)
    if config.model.layer_decay is not None and parts["backbone"]:
        groups = param_groups_layer_decay(model, weight_decay=config.optim.weight_decay,
                                          layer_decay=config.model.layer_decay)
        return [{**group, "lr": learning_rate, "name": f"layer_{index}"} for index, group in enumerate(groups)]
    scales = {"head": 1.0, "backbone": config.model.backbone_lr_scale}
    groups = []
    for part, parameters in parts.items():
        wanted = {id(parameter) for parameter in parameters}
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if id(parameter) in wanted and parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
        for suffix, members, weight_decay in (("", decay, config.optim.weight_decay), ("_no_decay", no_decay, 0.0)):
            # timm's schedulers multiply each group's rate by its lr_scale.
            groups.append({"params": members, "lr": learning_rate, "lr_scale": scales[part],
                           "weight_decay": weight_decay, "name": part + suffix})
    return groups


def refill_parameter_groups(
    optimizer: torch.optim.Optimizer, model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig
) -> None:
    """Point the optimizer's groups at newly trainable parameters (gradual unfreezing)."""
    for group, fresh in zip(optimizer.param_groups, parameter_groups(model, parts, config), strict=True):
        group["params"] = fresh["params"]

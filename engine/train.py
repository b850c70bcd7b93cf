"""Turn a RunConfig into a finished run folder: data, model, optimizer, loop, callbacks.

``train`` starts a run, ``resume`` continues one from its ``last`` checkpoint. Both
write every step of the way into the run folder (see ``engine.runfolder``), and any
failure is recorded there as ``run_failed`` before it propagates.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
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
from engine.callbacks import CheckpointSaver, EventReporter, LRSchedule, MetricsRecorder, ProgressBar, StopWatcher
from engine.checkpoint import load_checkpoint, read_checkpoint_metadata
from engine.config import RunConfig
from engine.data import FeatureBatches, ImageDataset, collate_decoded
from engine.device import DevicePlan, plan_device
from engine.errors import ConfigError, DatasetError
from engine.features import FeatureCache, FeatureView, extract_features
from engine.loop import Callback, CancelFit, Loop
from engine.paths import project_dir_for
from engine.prepare import PreparedDataset, prepare_dataset
from engine.runfolder import RunFolder, new_run_dir


@dataclass
class RunResult:
    """How a run ended.

    Attributes:
        run_dir: the run folder.
        state: ``finished`` or ``cancelled``.
        history: one metrics row per finished epoch.
        best_checkpoint: path of ``best``, if one was saved.
        reason: why a cancelled run stopped.
    """

    run_dir: Path
    state: str
    history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    reason: str | None = None


@dataclass
class _Setup:
    """What a run trains, built from the config."""

    loaded: LoadedBackbone
    loop_model: nn.Module
    train_batches: Any
    val_batches: Any
    plan: DevicePlan
    parts: dict[str, list[nn.Parameter]]


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    echo: TextIO | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train a new run.

    Args:
        config: the run's settings; ``config.data.path`` names the dataset.
        run_dir: folder for the run (default: a new folder under the dataset's project ``runs/``).
        echo: also print each event as a JSON line to this stream (the GUI's ``--events-only``).
        progress_bar: show tqdm bars on stderr.
        callbacks: extra loop callbacks.

    Raises:
        ConfigError, DatasetError, BackboneUnavailable, CheckpointError: bad input, before or
            during the run; a run folder that exists records it as ``run_failed``.
    """
    if not config.data.path:
        raise ConfigError("data.path: must name a dataset folder or CSV, got ''")
    folder_path = Path(run_dir) if run_dir else new_run_dir(project_dir_for(config.data.path), config.model.backbone)
    folder = RunFolder.create(folder_path, config)
    folder.echo = echo
    return _run(folder, config, resume_from=None, progress_bar=progress_bar, callbacks=callbacks)


def resume(
    run_dir: str | Path,
    *,
    echo: TextIO | None = None,
    progress_bar: bool = False,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Continue a stopped, killed or finished run from its ``last`` checkpoint, with its own config."""
    folder = RunFolder.open(run_dir)
    folder.echo = echo
    folder.clear_stop()
    return _run(folder, folder.load_config(), resume_from=folder.checkpoint_path("last"),
                progress_bar=progress_bar, callbacks=callbacks)


def _run(
    folder: RunFolder,
    config: RunConfig,
    *,
    resume_from: Path | None,
    progress_bar: bool,
    callbacks: Sequence[Callback],
) -> RunResult:
    stop_watcher = StopWatcher(folder)
    try:
        with stop_watcher.installed():
            return _train_in_folder(folder, config, resume_from, stop_watcher, progress_bar, callbacks)
    except CancelFit as cancel:
        # A stop before the loop began (e.g. during feature extraction): nothing to checkpoint yet.
        folder.write_event("run_cancelled", reason=cancel.reason, message=cancel.message, checkpoint=None)
        folder.write_status("cancelled", reason=cancel.reason)
        return RunResult(folder.path, "cancelled", reason=cancel.reason)
    except Exception as error:
        # The one place a run records its own failure; the caller decides how to show it.
        folder.write_event(
            "run_failed", error_type=type(error).__name__, message=str(error), traceback=traceback.format_exc()
        )
        folder.write_status("failed", error=str(error))
        raise


def _train_in_folder(
    folder: RunFolder,
    config: RunConfig,
    resume_from: Path | None,
    stop_watcher: StopWatcher,
    progress_bar: bool,
    extra_callbacks: Sequence[Callback],
) -> RunResult:
    _seed_everything(config.seed)
    dataset = prepare_dataset(
        config.data.path,
        val_fraction=config.data.val_fraction,
        test_fraction=config.data.test_fraction,
        seed=config.data.split_seed,
    )
    folder.write_event(
        "dataset_scanned", root=dataset.root, classes=list(dataset.classes),
        counts={split: len(records) for split, records in dataset.splits.items()},
        problems=len(dataset.report.problems), excluded=len(dataset.report.excluded_paths()),
    )
    setup = _build_setup(config, dataset, folder, stop_watcher)
    metadata = _checkpoint_metadata(config, dataset, setup.loaded)

    start_epoch, start_step, history, best_value = 1, 0, [], None
    if resume_from is not None:
        start_epoch, start_step, history, best_value = _restore(folder, resume_from, setup)

    optimizer = create_optimizer_v2(
        _parameter_groups(setup.loop_model, setup.parts, config), opt="adamw",
        lr=config.optim.learning_rate, weight_decay=config.optim.weight_decay,
    )
    if resume_from is not None:
        optimizer.load_state_dict(load_checkpoint(resume_from, with_training_state=True).optimizer_state)
    batches_per_epoch = len(setup.train_batches)
    scheduler = _create_scheduler(optimizer, config, batches_per_epoch)

    folder.write_event(
        "run_started", epoch=start_epoch, step=start_step, config=config.to_dict(), classes=list(dataset.classes),
        backbone=config.model.backbone, mode=config.model.mode, weights_source=setup.loaded.weights_source,
        device=setup.plan.describe(), data_settings=setup.loaded.data_settings.to_dict(),
        trainable_parameters=sum(p.numel() for part in setup.parts.values() for p in part),
        train_images=len(dataset.splits["train"]), val_images=len(dataset.splits["val"]),
        batches_per_epoch=batches_per_epoch, resumed_from=str(resume_from) if resume_from else None,
    )
    folder.write_status("running", epoch=start_epoch, num_epochs=config.optim.epochs)
    recorder = MetricsRecorder(list(dataset.classes), history)
    saver = CheckpointSaver(folder, setup.loaded.model, metadata, best_value=best_value)
    loop_callbacks: list[Callback] = [
        stop_watcher, LRSchedule(scheduler), recorder, saver,
        EventReporter(folder, every_steps=max(1, batches_per_epoch // 10), history=history),
        *extra_callbacks,
    ]
    if progress_bar:
        loop_callbacks.append(ProgressBar())
    loop = Loop(
        model=setup.loop_model, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(),
        train_batches=setup.train_batches, val_batches=setup.val_batches,
        device_plan=setup.plan, callbacks=loop_callbacks,
    )
    state = loop.fit(config.optim.epochs, start_epoch=start_epoch, start_step=start_step)

    best_path = folder.checkpoint_path("best")
    best = best_path if best_path.is_file() else None
    if state.cancel_reason is not None:
        folder.write_event(
            "run_cancelled", epoch=state.epoch, step=state.step, reason=state.cancel_reason,
            message=state.cancel_message, checkpoint=folder.checkpoint_path("last"),
        )
        folder.write_status("cancelled", reason=state.cancel_reason, epoch=state.epoch)
        return RunResult(folder.path, "cancelled", recorder.history, best, state.cancel_reason)
    folder.write_event(
        "run_finished", epoch=state.epoch, step=state.step, best_checkpoint=best,
        best_value=saver.best_value, best_epoch=saver.best_epoch, metric=saver.monitor,
    )
    folder.write_status("finished", epoch=state.epoch, best_value=saver.best_value)
    return RunResult(folder.path, "finished", recorder.history, best)


def _build_setup(config: RunConfig, dataset: PreparedDataset, folder: RunFolder, stop_watcher: StopWatcher) -> _Setup:
    loaded = create_model(
        config.model.backbone, num_classes=len(dataset.classes),
        weights=config.model.weights, drop_rate=config.model.head_dropout,
    )
    if config.data.input_size is not None:
        loaded.data_settings = resolve_data_settings(loaded.model, config.data.input_size)
    class_index = {name: index for index, name in enumerate(dataset.classes)}
    if config.model.mode == "feature_extraction":
        return _feature_extraction_setup(config, dataset, loaded, class_index, folder, stop_watcher)
    return _fine_tune_setup(config, dataset, loaded, class_index)


def _feature_extraction_setup(
    config: RunConfig,
    dataset: PreparedDataset,
    loaded: LoadedBackbone,
    class_index: dict[str, int],
    folder: RunFolder,
    stop_watcher: StopWatcher,
) -> _Setup:
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
            stop_watcher.check()
            folder.write_event("features_progressed", split=split, done=done, total=total)

        result = extract_features(
            backbone, [record.path for record in records], [record.sha256 for record in records],
            views=views, plan=image_plan, batch_size=max(config.optim.batch_size, 32),
            num_workers=config.data.num_workers, progress=report_progress,
        )
        folder.write_event(
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
    return _Setup(
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
) -> _Setup:
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

    return _Setup(
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


def _parameter_groups(model: nn.Module, parts: dict[str, list[nn.Parameter]], config: RunConfig) -> list[dict]:
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


def _create_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, batches_per_epoch: int) -> Any:
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


def _checkpoint_metadata(config: RunConfig, dataset: PreparedDataset, loaded: LoadedBackbone) -> dict[str, Any]:
    return {
        "classes": list(dataset.classes),
        "backbone": loaded.backbone,
        "weights_source": loaded.weights_source,
        "mode": config.model.mode,
        "data_settings": loaded.data_settings.to_dict(),
        "config_digest": config.digest(),
        "config": config.to_dict(),
    }


def _restore(folder: RunFolder, checkpoint_path: Path, setup: _Setup) -> tuple[int, int, list[dict], float | None]:
    checkpoint = load_checkpoint(checkpoint_path, with_training_state=True)
    setup.loaded.model.load_state_dict(checkpoint.model_state)
    if checkpoint.rng_state is not None:
        torch.set_rng_state(checkpoint.rng_state)
    completed = int(checkpoint.metadata["epoch"])
    history = [row for row in folder.read_metrics() if row.get("epoch") and row["epoch"] <= completed]
    best_path = folder.checkpoint_path("best")
    best_value = read_checkpoint_metadata(best_path).get("score") if best_path.is_file() else None
    return completed + 1, int(checkpoint.metadata["step"]), history, best_value


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

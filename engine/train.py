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
from torch import nn

from engine.backbones import LoadedBackbone
from engine.callbacks import CheckpointSaver, EventReporter, LRSchedule, MetricsRecorder, ProgressBar, StopWatcher
from engine.checkpoint import load_checkpoint, read_checkpoint_metadata
from engine.config import RunConfig
from engine.errors import ConfigError
from engine.loop import Callback, CancelFit, Loop
from engine.paths import project_dir_for
from engine.prepare import PreparedDataset, prepare_dataset
from engine.runfolder import RunFolder, new_run_dir
from engine.setup import TrainingSetup, build_training, create_optimizer, create_scheduler


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
    setup = build_training(config, dataset, report=folder.write_event, check_stop=stop_watcher.check)
    metadata = _checkpoint_metadata(config, dataset, setup.loaded)

    start_epoch, start_step, history, best_value = 1, 0, [], None
    if resume_from is not None:
        start_epoch, start_step, history, best_value = _restore(folder, resume_from, setup)

    optimizer = create_optimizer(setup, config)
    if resume_from is not None:
        optimizer.load_state_dict(load_checkpoint(resume_from, with_training_state=True).optimizer_state)
    batches_per_epoch = len(setup.train_batches)
    scheduler = create_scheduler(optimizer, config, batches_per_epoch)

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


def _restore(
    folder: RunFolder, checkpoint_path: Path, setup: TrainingSetup
) -> tuple[int, int, list[dict], float | None]:
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

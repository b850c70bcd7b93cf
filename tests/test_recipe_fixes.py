"""Issue 14 item 7 on real runs and the real callbacks: EMA and layer decay through gradual unfreezing,
the best checkpoint's tie-break by validation loss, and the batch scale with gradient accumulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from demo_photos import copy_demo
from timm.optim import param_groups_layer_decay

from engine.core.config import RunConfig
from engine.core.config.sections import AUTO_BATCH_FALLBACK
from engine.models.checkpoint import load_checkpoint, read_checkpoint_metadata
from engine.training.callback import EPOCH_METRICS, Callback, LoopState
from engine.training.callbacks import CheckpointSaver
from engine.training.optimizer import batch_scale
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import train


def unfreezing_config(data: Path, **changes: object) -> RunConfig:
    """Fine-tuning from the head alone, one more stage every epoch, on tiny images."""
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 32, "optim.batch_size": 8,
            "model.mode": "fine_tune", "model.trainable_stages": 0, "model.unfreeze_every": 1, "optim.epochs": 3,
            "doctor.enabled": False}
    return RunConfig().with_changes(**{**base, **changes})


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "data", {"bag": 8, "sneaker": 8, "trouser": 8})


class TrainedState(Callback):
    """The loop's model's whole state after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def after_step(self, state: LoopState) -> None:
        self.steps.append({key: value.detach().clone() for key, value in state.model.state_dict().items()})


@pytest.mark.parametrize("freeze_batchnorm", [False, True])
def test_ema_averages_every_tensor_through_gradual_unfreezing_in_fine_tuning(
    small_data: Path, tmp_path: Path, freeze_batchnorm: bool
) -> None:
    # Unfreezing a stage turns its FrozenBatchNorms (four buffers) back into BatchNorms (two parameters
    # and three buffers, num_batches_tracked added): timm's average pairs its tensors with the model's by
    # position, so without taking the model's new layout it lerps a conv weight into a BatchNorm's bias.
    decay = 0.9
    config = unfreezing_config(small_data, **{"optim.ema": True, "optim.ema_decay": decay,
                                              "model.freeze_batchnorm": freeze_batchnorm})
    trained = TrainedState()
    result = train(config, tmp_path / "run", callbacks=[trained])
    assert result.state == "finished"
    run = tmp_path / "run"
    assert [(event["epoch"], event["trainable_stages"]) for event in read_events(run)
            if event["event"] == "stages_unfrozen"] == [(2, 1), (3, 2)]
    assert [event["epoch"] for event in read_events(run)
            if event["event"] == "checkpoint_saved" and event["name"] == "ema"] == [1, 2, 3]
    assert all(row["ema_val_loss"] is not None for row in RunFolder(run).read_metrics())

    # Every floating tensor of the average is the exponential average of the trained ones, step by
    # step, including those of the stages that unfroze (whose frozen values the average held before).
    ema = load_checkpoint(run / "checkpoints" / "ema.safetensors").model_state
    raw = load_checkpoint(run / "checkpoints" / "last.safetensors").model_state
    assert ema.keys() == raw.keys() == trained.steps[-1].keys()
    expected = {key: value.double() for key, value in trained.steps[0].items() if value.is_floating_point()}
    for weights in trained.steps[1:]:
        expected = {key: decay * value + (1 - decay) * weights[key].double() for key, value in expected.items()}
    for key, value in expected.items():
        torch.testing.assert_close(ema[key].double(), value, rtol=1e-5, atol=1e-6, msg=key)
    moved = [key for key in expected if not key.startswith("classifier.")
             and not torch.equal(trained.steps[0][key], trained.steps[-1][key])]
    assert moved  # the unfrozen stages trained, and their averages above followed them


class GroupsAtEpochStart(Callback):
    """The optimizer's groups at the start of each training pass (after gradual unfreezing)."""

    def __init__(self) -> None:
        self.epochs: dict[int, list[dict]] = {}
        self.timm_scales: dict[int, dict[int, float]] = {}
        self.trainable: dict[int, set[int]] = {}

    def before_train(self, state: LoopState) -> None:
        self.epochs[state.epoch] = [
            {"name": group["name"], "lr": group["lr"], "lr_scale": group["lr_scale"],
             "initial_lr": group["initial_lr"], "params": {id(parameter) for parameter in group["params"]}}
            for group in state.optimizer.param_groups
        ]
        # timm's own groups of the model as it is now: the rates each trainable parameter should get.
        groups = param_groups_layer_decay(state.model, weight_decay=0.01, layer_decay=0.75)
        self.timm_scales[state.epoch] = {id(p): group["lr_scale"] for group in groups for p in group["params"]}
        self.trainable[state.epoch] = {id(p) for p in state.model.parameters() if p.requires_grad}


def test_layer_decay_groups_take_the_unfrozen_stages_at_their_layer_rates(small_data: Path, tmp_path: Path) -> None:
    config = unfreezing_config(small_data, **{"model.layer_decay": 0.75})
    seen = GroupsAtEpochStart()
    result = train(config, tmp_path / "run", callbacks=[seen])
    assert result.state == "finished"
    first = seen.epochs[1]
    held = {epoch: set().union(*(group["params"] for group in groups)) for epoch, groups in seen.epochs.items()}
    assert len(held[1]) < len(held[2]) < len(held[3])  # each unfreezing added parameters to the groups
    for epoch, groups in seen.epochs.items():
        # The groups keep their names, order and scales: the schedule goes on with the same shape.
        assert [(group["name"], group["lr_scale"], group["initial_lr"]) for group in groups] == [
            (group["name"], group["lr_scale"], group["initial_lr"]) for group in first]
        # Every trainable parameter is in one group, at the layer-decayed share timm gives it.
        assert held[epoch] == seen.trainable[epoch]
        assert sum(len(group["params"]) for group in groups) == len(held[epoch])
        for group in groups:
            for parameter in group["params"]:
                assert group["lr_scale"] == pytest.approx(seen.timm_scales[epoch][parameter]), group["name"]
        # One schedule: every group's rate is the same curve at its own share.
        top = max(groups, key=lambda group: group["lr_scale"])
        for group in groups:
            assert group["lr"] == pytest.approx(top["lr"] * group["lr_scale"] / top["lr_scale"])
    scales = sorted({group["lr_scale"] for group in first})
    assert len(scales) > 3 and scales[-1] == pytest.approx(1.0)  # layer by layer, the head at the full rate


def epoch_state(model: torch.nn.Module, epoch: int, top1: float, loss: float) -> LoopState:
    state = LoopState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=10,
                      batches_per_epoch=1, epoch=epoch, step=epoch)
    state.scratch[EPOCH_METRICS] = {"epoch": epoch, "val_top1": top1, "val_loss": loss}
    return state


def best_epochs(saver: CheckpointSaver, model: torch.nn.Module, rows: list[tuple[int, float, float]]) -> list[int]:
    """The best epoch after each of ``rows`` (epoch, val_top1, val_loss)."""
    bests = []
    for epoch, top1, loss in rows:
        saver.after_epoch(epoch_state(model, epoch, top1, loss))
        bests.append(int(read_checkpoint_metadata(saver.run_folder.checkpoint_path("best"))["epoch"]))
    return bests


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)


def test_best_checkpoint_breaks_a_top1_tie_by_the_lower_validation_loss(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints_dir.mkdir(parents=True)
    saver = CheckpointSaver(folder, tiny_model, {}, monitor="val_top1")
    rows = [
        (1, 0.5, 1.0),
        (2, 0.5, 0.8),  # same top-1, lower loss: the new best
        (3, 0.5, 0.9),  # same top-1, higher loss than the best's
        (4, 0.5, 0.8),  # an exact tie keeps the earlier epoch
        (5, 0.6, 2.0),  # a higher top-1 wins, whatever its loss
        (6, 0.55, 0.1),  # a lower top-1 never wins, however low its loss
    ]
    assert best_epochs(saver, tiny_model, rows) == [1, 2, 2, 2, 5, 5]
    best = read_checkpoint_metadata(folder.checkpoint_path("best"))
    assert best["score"] == 0.6 and best["metrics"]["val_loss"] == 2.0
    assert (saver.best_value, saver.best_epoch) == (0.6, 5)
    saved = [(event["epoch"], event["value"]) for event in read_events(folder.path)
             if event["event"] == "checkpoint_saved" and event["name"] == "best"]
    assert saved == [(1, 0.5), (2, 0.5), (5, 0.6)]  # the score stays the monitored metric


def test_a_resumed_saver_breaks_ties_against_the_best_checkpoint_loss(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints_dir.mkdir(parents=True)
    best_epochs(CheckpointSaver(folder, tiny_model, {}), tiny_model, [(1, 0.5, 1.0), (2, 0.7, 0.9)])
    # What the stage runner hands a resumed run: best's 'score' and 'epoch'.
    best = read_checkpoint_metadata(folder.checkpoint_path("best"))
    resumed = CheckpointSaver(folder, tiny_model, {}, best_value=best["score"], best_epoch=best["epoch"])
    assert best_epochs(resumed, tiny_model, [(3, 0.7, 1.2), (4, 0.7, 0.5), (5, 0.7, 0.6)]) == [2, 4, 4]


def test_validation_loss_monitor_is_unchanged(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.checkpoints_dir.mkdir(parents=True)
    saver = CheckpointSaver(folder, tiny_model, {}, monitor="val_loss")
    assert best_epochs(saver, tiny_model, [(1, 0.5, 1.0), (2, 0.9, 1.0), (3, 0.1, 0.7)]) == [1, 1, 3]
    assert saver.best_value == -0.7


def test_batch_scale_counts_accumulated_batches() -> None:
    config = RunConfig().with_changes(**{
        "optim.batch_size": 32, "optim.accumulate_steps": 4, "optim.learning_rate": 1e-3,
        "optim.reference_batch_size": 32,
    })
    scale = batch_scale(config, 2)
    assert scale.effective_batch_size == 256 and scale.accumulate_steps == 4
    assert scale.peak_learning_rate == pytest.approx(1e-3 * 256 / 32)
    assert scale.describe().startswith("2 processes x batch 32 x 4 accumulated = effective batch 256 images per step;")
    assert "learning rate 0.001 x 256 / 32 = 0.008 (linear scaling rule)" in scale.describe()
    assert scale.to_dict()["effective_batch_size"] == 256 and scale.to_dict()["accumulate_steps"] == 4

    single = batch_scale(config.with_changes(**{"optim.accumulate_steps": 1}))
    assert single.effective_batch_size == 32 and single.peak_learning_rate == pytest.approx(1e-3)
    assert single.describe().startswith("1 process x batch 32 = effective batch 32 images per step;")

    unscaled = batch_scale(config.with_changes(**{"optim.reference_batch_size": None}), 2)
    assert unscaled.peak_learning_rate == 1e-3 and "not scaled" in unscaled.describe()
    assert unscaled.effective_batch_size == 256


def test_batch_scale_of_an_automatic_batch_counts_its_fallback_size() -> None:
    config = RunConfig().with_changes(**{
        "optim.batch_size": "auto", "optim.accumulate_steps": 2, "optim.learning_rate": 1e-3,
        "optim.reference_batch_size": AUTO_BATCH_FALLBACK,
    })
    scale = batch_scale(config, 3)
    assert scale.batch_size == AUTO_BATCH_FALLBACK
    assert scale.effective_batch_size == AUTO_BATCH_FALLBACK * 2 * 3
    assert scale.peak_learning_rate == pytest.approx(1e-3 * 6)

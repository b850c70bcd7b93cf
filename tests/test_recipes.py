"""Training recipes on real runs: two-stage, gradual unfreezing, EMA, early stopping, mixing, heads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.models.checkpoint import load_checkpoint
from engine.training.callback import EPOCH_METRICS, Callback, CancelFit, LoopState
from engine.training.losses import ClassificationLoss
from engine.training.recipes import EarlyStopping
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import train


def small_config(data: Path, **changes: object) -> RunConfig:
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.batch_size": 8}
    return RunConfig().with_changes(**{**base, **changes})


def events(run_dir: Path, name: str) -> list[dict]:
    return [event for event in read_events(run_dir) if event["event"] == name]


@pytest.fixture
def three_classes(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "data", {"bag": 15, "sneaker": 15, "trouser": 15})


def test_two_stage_runs_both_stages_in_one_folder(three_classes: Path, tmp_path: Path) -> None:
    config = small_config(three_classes, **{"model.mode": "two_stage", "model.head_epochs": 2, "optim.epochs": 3})
    result = train(config, tmp_path / "run")
    assert result.state == "finished" and [row["epoch"] for row in result.history] == [1, 2, 3]
    started = events(tmp_path / "run", "run_started")[0]
    stage = events(tmp_path / "run", "stage_started")[0]
    assert (started["stage"], started["epoch"]) == ("feature_extraction", 1)
    assert (stage["stage"], stage["epoch"]) == ("fine_tune", 3)
    assert stage["trainable_parameters"] > 10 * started["trainable_parameters"]
    assert events(tmp_path / "run", "features_extracted")  # the head stage ran on cached features
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").metadata["stage"] == "fine_tune"


def test_gradual_unfreezing_grows_the_trainable_parameters_on_schedule(three_classes: Path, tmp_path: Path) -> None:
    config = small_config(three_classes, **{
        "model.mode": "fine_tune", "model.trainable_stages": 0, "model.unfreeze_every": 1, "optim.epochs": 3,
    })
    train(config, tmp_path / "run")
    unfrozen = events(tmp_path / "run", "stages_unfrozen")
    assert [(event["epoch"], event["trainable_stages"]) for event in unfrozen] == [(2, 1), (3, 2)]
    head_only = events(tmp_path / "run", "run_started")[0]["trainable_parameters"]
    counts = [head_only] + [event["trainable_parameters"] for event in unfrozen]
    assert counts == sorted(counts) and len(set(counts)) == 3


class TrainedWeights(Callback):
    """The loop's module's weights after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def after_step(self, state: LoopState) -> None:
        self.steps.append({key: value.detach().clone() for key, value in state.model.state_dict().items()})


def test_ema_weights_are_the_exponential_average_of_the_trained_weights(three_classes: Path, tmp_path: Path) -> None:
    decay = 0.9
    config = small_config(three_classes, **{"optim.ema": True, "optim.ema_decay": decay, "optim.epochs": 2})
    trained = TrainedWeights()
    result = train(config, tmp_path / "run", callbacks=[trained])
    rows = RunFolder(tmp_path / "run").read_metrics()
    assert all(row["ema_val_loss"] is not None and row["ema_val_top1"] is not None for row in rows)
    assert rows[-1]["ema_val_loss"] != rows[-1]["val_loss"]
    raw = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").model_state
    ema = load_checkpoint(tmp_path / "run" / "checkpoints" / "ema.safetensors").model_state
    differing = [key for key in raw if not torch.equal(raw[key], ema[key])]
    assert differing and all(key.startswith("classifier") for key in differing)  # only the head trained
    assert result.state == "finished"

    # timm's ModelEmaV3, told the step count, starts from the weights after step 1, then each step
    # keeps ``decay`` of the average: ema_k = decay * ema_(k-1) + (1 - decay) * w_k.
    steps = trained.steps
    assert len(steps) == 2 * 5  # 2 epochs of 36 training images in batches of 8
    expected = {key: value.double() for key, value in steps[0].items()}
    for weights in steps[1:]:
        expected = {key: decay * value + (1 - decay) * weights[key].double() for key, value in expected.items()}
    for key, value in expected.items():
        torch.testing.assert_close(ema[f"classifier.{key}"].double(), value, rtol=1e-5, atol=1e-7)
        assert torch.equal(raw[f"classifier.{key}"], steps[-1][key])  # ``last`` holds the raw weights
        assert not torch.allclose(value, steps[-1][key].double(), rtol=1e-3, atol=1e-6), key


class HeadWeights(Callback):
    """The head's weights after every optimizer step, by epoch, named as the head's own in both stages."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, dict[str, torch.Tensor]]] = []

    def after_step(self, state: LoopState) -> None:
        weights = state.model.state_dict()
        if any(key.startswith("classifier.") for key in weights):  # the whole network: fine-tuning
            weights = {key.removeprefix("classifier."): value for key, value in weights.items()
                       if key.startswith("classifier.")}
        self.steps.append((state.epoch, {key: value.detach().clone() for key, value in weights.items()}))


def test_ema_keeps_averaging_through_gradual_unfreezing_in_a_two_stage_run(tmp_path: Path) -> None:
    # Unfreezing a stage turns its frozen BatchNorms back into BatchNorms, whose state has one more
    # buffer: the average used to stop matching the model, a size mismatch at the first step after it.
    data = copy_demo(tmp_path / "data", {"bag": 8, "sneaker": 8, "trouser": 8})
    decay = 0.9
    config = small_config(data, **{
        "model.mode": "two_stage", "model.head_epochs": 1, "optim.epochs": 3, "model.trainable_stages": 0,
        "model.unfreeze_every": 1, "optim.ema": True, "optim.ema_decay": decay, "data.input_size": 32,
        "doctor.enabled": False,
    })
    head = HeadWeights()
    result = train(config, tmp_path / "run", callbacks=[head])
    assert result.state == "finished" and [row["epoch"] for row in result.history] == [1, 2, 3]
    assert [event["epoch"] for event in events(tmp_path / "run", "stages_unfrozen")] == [3]
    assert [event["epoch"] for event in events(tmp_path / "run", "checkpoint_saved") if event["name"] == "ema"] == [
        1, 2, 3]
    assert all(row["ema_val_loss"] is not None for row in RunFolder(tmp_path / "run").read_metrics())
    raw = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors").model_state
    ema = load_checkpoint(tmp_path / "run" / "checkpoints" / "ema.safetensors").model_state
    assert ema.keys() == raw.keys()

    # Each stage averages from the weights it starts with (the head stage's last); the average goes on
    # through the unfreezing at epoch 3 rather than starting again there.
    head_stage = [weights for epoch, weights in head.steps if epoch == 1]
    fine_tuning = [weights for epoch, weights in head.steps if epoch > 1]
    assert len(fine_tuning) > sum(1 for epoch, _ in head.steps if epoch == 3) > 0
    expected = {key: value.double() for key, value in head_stage[-1].items()}
    for weights in fine_tuning:
        expected = {key: decay * value + (1 - decay) * weights[key].double() for key, value in expected.items()}
    for key, value in expected.items():
        torch.testing.assert_close(ema[f"classifier.{key}"].double(), value, rtol=1e-5, atol=1e-7)
    unfrozen = [key for key in raw if not key.startswith("classifier.") and not torch.equal(raw[key], ema[key])]
    assert unfrozen  # the stage unfrozen at epoch 3 trained, and its average lags behind it


def test_early_stopping_ends_the_run_and_keeps_the_best(three_classes: Path, tmp_path: Path) -> None:
    # A learning rate far too high makes the validation loss climb after the first epoch.
    config = small_config(three_classes, **{
        "optim.learning_rate": 3.0, "optim.epochs": 12, "optim.monitor": "val_loss",
        "optim.early_stopping_patience": 2, "optim.warmup_epochs": 0.0, "data.input_size": None,
        "doctor.enabled": False,
    })
    result = train(config, tmp_path / "run")
    assert result.state == "finished" and result.reason == "early_stop"
    finished = events(tmp_path / "run", "run_finished")[0]
    assert finished["stopped_early"] and len(result.history) < 12
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.safetensors").metadata
    assert best["epoch"] == min(result.history, key=lambda row: row["val_loss"])["epoch"]


def test_a_two_stage_runs_head_epochs_set_the_best_to_beat_but_use_up_none_of_the_fine_tuning_patience() -> None:
    # The head alone peaks at its first epoch: three epochs without improvement before fine-tuning starts.
    head = [{"epoch": epoch, "val_loss": loss} for epoch, loss in ((1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8))]
    fine_tuning = EarlyStopping("val_loss", patience=3, history=head, counting_from=5)
    assert fine_tuning.best == 0.5 and fine_tuning.waited == 0
    model = torch.nn.Linear(2, 2)
    state = LoopState(model, torch.optim.SGD(model.parameters()), num_epochs=10, batches_per_epoch=1)
    for epoch, loss in ((5, 0.55), (6, 0.52), (7, 0.51)):
        fine_tuning.before_epoch(state)  # three fine-tuning epochs may try to beat the head
        state.scratch[EPOCH_METRICS] = {"epoch": epoch, "val_loss": loss}
        fine_tuning.after_epoch(state)
    with pytest.raises(CancelFit, match=r"val_loss has not improved for 3 epochs \(best 0.5 at epoch 1\)"):
        fine_tuning.before_epoch(state)
    # Resuming inside the fine-tuning stage counts its own epochs already done.
    resumed = EarlyStopping("val_loss", patience=3, history=[*head, {"epoch": 5, "val_loss": 0.55}], counting_from=5)
    assert resumed.waited == 1


def test_weighted_loss_matches_cross_entropy_for_hard_and_soft_targets() -> None:
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 0, 0, 1])
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = ClassificationLoss(class_weights=weights)
    one_hot = torch.nn.functional.one_hot(targets, 3).float()
    assert torch.allclose(loss(logits, targets), loss(logits, one_hot))
    assert torch.allclose(loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets, weight=weights))


def test_mlp_head_run_with_a_step_schedule_predicts_from_its_checkpoint(three_classes: Path, tmp_path: Path) -> None:
    from engine.evaluation.predict import Predictor

    config = small_config(three_classes, **{
        "model.head": "mlp", "model.head_hidden": 64, "model.head_batchnorm": True, "model.head_dropout": 0.2,
        "optim.schedule": "step", "optim.step_epochs": 1.0, "optim.epochs": 3, "data.input_size": None,
    })
    result = train(config, tmp_path / "run")
    rates = [row["learning_rate"] for row in result.history]
    assert rates[2] < rates[1] < rates[0]  # the step schedule drops the rate every epoch
    predictor = Predictor(result.best_checkpoint, device="cpu")
    images = sorted((three_classes / "trouser").glob("*.png"))[:5]
    assert [p.labels[0] for p in predictor.predict(images, top_k=2)].count("trouser") >= 4


@pytest.mark.parametrize(
    ("mode", "mixing"),
    [("feature_extraction", {"augment.mixup_alpha": 0.4}),
     ("fine_tune", {"augment.mixup_alpha": 0.4, "augment.cutmix_alpha": 1.0, "augment.preset": "standard"})],
)
def test_mixed_batches_train_with_soft_targets(three_classes: Path, tmp_path: Path, mode: str, mixing: dict) -> None:
    config = small_config(three_classes, **{"model.mode": mode, "optim.epochs": 1, "optim.label_smoothing": 0.1,
                                            **mixing})
    result = train(config, tmp_path / "run")
    row = result.history[0]
    assert result.state == "finished"
    assert row["train_top1"] is None  # accuracy is undefined on soft targets
    assert row["val_top1"] is not None and row["val_loss"] is not None

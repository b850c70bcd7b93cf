"""Model soups of real checkpoints: uniform and greedy averaging, and the refusals that keep them sound."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.core.errors import CheckpointError
from engine.data.prepare import prepare_configured_dataset
from engine.evaluation.predict import Predictor
from engine.evaluation.selection import accuracy
from engine.evaluation.soup import greedy_soup, uniform_soup
from engine.models.checkpoint import load_checkpoint, save_checkpoint
from engine.models.checkpoint_metadata import read_checkpoint_metadata
from engine.training.callback import Callback, LoopState
from engine.training.train import train


class _KeepEpochSnapshots(Callback):
    """Copies the run's ``last`` checkpoint after every epoch to ``epoch<N>``: snapshots of one run."""

    order = 50  # after CheckpointSaver (40) has written ``last``

    def __init__(self, checkpoints: Path) -> None:
        self.checkpoints = checkpoints

    def after_epoch(self, state: LoopState) -> None:
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(self.checkpoints / f"last{suffix}", self.checkpoints / f"epoch{state.epoch}{suffix}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch Lite0 fine-tuning run with per-epoch snapshots, and small random-init MobileNetV3 runs."""
    root = tmp_path_factory.mktemp("soup")
    data = copy_demo(root / "data", classes=5, per_class=30)
    fine_tune = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "model.mode": "fine_tune",
        "optim.batch_size": 8, "optim.epochs": 2,
    })
    run = root / "fine_tune"
    train(fine_tune, run, callbacks=[_KeepEpochSnapshots(run / "checkpoints")])
    mobilenet = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.epochs": 2,
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none",
    })
    random_runs = [train(mobilenet.with_changes(seed=seed), root / f"mobilenet{seed}").run_dir for seed in (0, 1)]
    return {"root": root, "config": fine_tune, "run": run, "random_runs": random_runs}


@pytest.mark.slow
def test_uniform_soup_of_two_snapshots_of_one_run_loads_and_predicts_above_chance(runs: dict) -> None:
    checkpoints = runs["run"] / "checkpoints"
    first, second = checkpoints / "epoch1.safetensors", checkpoints / "epoch2.safetensors"
    result = uniform_soup([first, second], runs["root"] / "soups" / "uniform.safetensors")

    soup = load_checkpoint(result.path)
    members = [load_checkpoint(first).model_state, load_checkpoint(second).model_state]
    floats = [key for key, value in soup.model_state.items() if value.is_floating_point()]
    changed = [key for key in floats if not torch.equal(members[0][key], members[1][key])]
    assert changed, "fine-tuning should have changed some weights between the epochs"
    for key in changed[:20]:
        torch.testing.assert_close(soup.model_state[key], (members[0][key] + members[1][key]) / 2)
    for key, value in soup.model_state.items():
        if not value.is_floating_point():  # num_batches_tracked: the first member's
            assert torch.equal(value, members[0][key]), key
    assert soup.metadata["name"] == "soup" and soup.metadata["soup_method"] == "uniform"
    assert [member["path"] for member in soup.metadata["soup_of"]] == [str(first), str(second)]
    assert "optimizer" not in soup.metadata and soup.metadata["backbone"] == "tf_efficientnet_lite0"

    dataset = prepare_configured_dataset(runs["config"].data)
    paths, targets = [record.path for record in dataset.splits["val"]], np.array(dataset.targets("val"))
    predicted = Predictor(result.path, device="cpu").predict_proba(paths)
    soup_accuracy = accuracy(predicted.probabilities, targets[predicted.kept])
    print(f"\nuniform soup of epochs 1 and 2: val top-1 {soup_accuracy:.3f}")
    assert soup_accuracy > 0.3  # 5 classes: chance is 0.2


@pytest.mark.slow
def test_greedy_soup_never_scores_below_its_best_member(runs: dict) -> None:
    checkpoints = runs["run"] / "checkpoints"
    candidates = [checkpoints / "epoch1.safetensors", checkpoints / "epoch2.safetensors", checkpoints / "best.json"]
    dataset = prepare_configured_dataset(runs["config"].data)

    result = greedy_soup(candidates, dataset, runs["root"] / "soups" / "greedy.safetensors", device="cpu")

    assert len(result.member_accuracy) == 3 and result.accuracy is not None
    assert result.accuracy >= max(result.member_accuracy.values())
    assert result.member_accuracy[str(result.members[0])] == max(result.member_accuracy.values())
    metadata = read_checkpoint_metadata(result.path)
    assert metadata["soup_method"] == "greedy" and metadata["metrics"] == {"val_top1": result.accuracy}
    # The written soup scores what the search measured.
    paths, targets = [record.path for record in dataset.splits["val"]], np.array(dataset.targets("val"))
    predicted = Predictor(result.path, device="cpu").predict_proba(paths)
    assert accuracy(predicted.probabilities, targets) == pytest.approx(result.accuracy)
    print(f"\ngreedy soup: members {result.member_accuracy}, soup {result.accuracy:.3f} of "
          f"{[path.name for path in result.members]}")


@pytest.mark.slow
def test_unrelated_architectures_are_refused_with_a_clear_message(runs: dict) -> None:
    with pytest.raises(CheckpointError) as raised:
        uniform_soup([runs["run"], runs["random_runs"][0]], runs["root"] / "never.safetensors")
    assert ("tf_efficientnet_lite0 and mobilenetv3_small_050 differ in architecture: weight averaging needs members "
            "of one architecture from the same starting weights; use a probability ensemble instead"
            ) in str(raised.value)
    assert str(runs["random_runs"][0] / "checkpoints" / "best.safetensors") in str(raised.value)
    assert not (runs["root"] / "never.safetensors").exists()


@pytest.mark.slow
def test_random_initialisations_of_different_seeds_are_refused(runs: dict) -> None:
    with pytest.raises(CheckpointError, match=r"random initialisation, but with different seeds \(0 vs 1\)"):
        uniform_soup(runs["random_runs"], runs["root"] / "never.safetensors")
    # Snapshots of one random-init run share their start: those average.
    checkpoints = runs["random_runs"][0] / "checkpoints"
    assert uniform_soup([checkpoints / "best.safetensors", checkpoints / "last.safetensors"],
                        runs["root"] / "soups" / "random.safetensors").path.is_file()


def head_keys(state: dict[str, torch.Tensor], classes: int) -> tuple[str, str]:
    """The names of the linear head's weight and bias."""
    (weight,) = [key for key, value in state.items()
                 if key.startswith("classifier.") and value.ndim == 2 and value.shape[0] == classes]
    return weight, weight.removesuffix("weight") + "bias"


def with_head(source: Path, target: Path, weight: torch.Tensor, bias: torch.Tensor) -> Path:
    """A copy of a real checkpoint with another head (the backbone, metadata and so the soup facts kept)."""
    checkpoint = load_checkpoint(source)
    state = dict(checkpoint.model_state)
    weight_key, bias_key = head_keys(state, len(checkpoint.metadata["classes"]))
    state[weight_key], state[bias_key] = weight, bias
    return save_checkpoint(target, model_state=state, metadata=checkpoint.metadata)


@pytest.mark.slow
def test_greedy_soup_keeps_the_members_that_help_and_leaves_out_the_one_that_hurts(
    runs: dict, tmp_path: Path
) -> None:
    source = runs["run"] / "checkpoints" / "best.safetensors"
    state = load_checkpoint(source).model_state
    weight_key, bias_key = head_keys(state, 5)
    weight, bias = state[weight_key], state[bias_key]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(weight.shape, generator=generator) * 8 * weight.std()
    bias_noise = torch.randn(bias.shape, generator=generator) * 8 * weight.std()
    # Two heads knocked off the trained one in opposite directions: each alone is worse, their mean is
    # the trained head exactly. A third, -3x the trained head, drags any soup it joins to -1/3 of it:
    # the least likely class wins, so it must be left out.
    plus = with_head(source, tmp_path / "plus.safetensors", weight + noise, bias + bias_noise)
    minus = with_head(source, tmp_path / "minus.safetensors", weight - noise, bias - bias_noise)
    hurtful = with_head(source, tmp_path / "hurtful.safetensors", -3 * weight, -3 * bias)
    dataset = prepare_configured_dataset(runs["config"].data)
    paths, targets = [record.path for record in dataset.splits["val"]], np.array(dataset.targets("val"))
    trained = Predictor(source, device="cpu").predict_proba(paths)
    trained_accuracy = accuracy(trained.probabilities, targets[trained.kept])

    result = greedy_soup([hurtful, plus, minus], dataset, tmp_path / "soup.safetensors", device="cpu")

    scores = {Path(path).name: value for path, value in result.member_accuracy.items()}
    print(f"\ntrained head {trained_accuracy:.3f}, members {scores}, soup {result.accuracy:.3f}")
    assert max(scores["plus.safetensors"], scores["minus.safetensors"]) < trained_accuracy  # each alone is worse
    assert scores["hurtful.safetensors"] < min(scores["plus.safetensors"], scores["minus.safetensors"])
    # Ranked best first, the second noisy head joins (the soup is the trained head), the hurtful one is refused.
    best_first = sorted([plus, minus], key=lambda path: -scores[path.name])
    assert list(result.members) == best_first
    assert result.accuracy == pytest.approx(trained_accuracy)
    soup = load_checkpoint(result.path).model_state
    torch.testing.assert_close(soup[weight_key], weight, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(soup[bias_key], bias, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(soup[key], value) for key, value in state.items() if key not in (weight_key, bias_key))


def test_a_soup_needs_two_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="at least two checkpoints, got 1"):
        uniform_soup([tmp_path / "one.safetensors"], tmp_path / "soup.safetensors")

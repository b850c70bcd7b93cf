"""Probability ensembles of real checkpoints: manifests, averaging, member results, greedy selection."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.core.errors import CheckpointError, ConfigError
from engine.data.prepare import prepare_dataset
from engine.evaluation.ensemble import Ensemble, build_greedy_manifest, load_probability_model
from engine.evaluation.manifest import build_manifest, is_manifest, load_manifest, save_manifest
from engine.evaluation.predict import Predictor
from engine.evaluation.selection import accuracy, greedy_selection, log_loss
from engine.evaluation.tta import TestTimeAugmentation
from engine.evaluation.validation_split import load_validation_split
from engine.models.checkpoint import load_checkpoint, save_checkpoint
from engine.training.train import train

# Three short feature-extraction runs that differ in seed, head and learning rate.
MEMBER_SETTINGS = (
    {"seed": 0},
    {"seed": 1, "model.head": "mlp", "model.head_hidden": 64},
    {"seed": 2, "optim.learning_rate": 1e-3},
)


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three real Lite0 feature-extraction runs on 5 demo classes x 30 photos, and their validation split."""
    root = tmp_path_factory.mktemp("ensemble")
    data = copy_demo(root / "data", classes=5, per_class=30)
    base = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.epochs": 4,
    })
    runs = [train(base.with_changes(**settings), root / f"run{index}").run_dir
            for index, settings in enumerate(MEMBER_SETTINGS)]
    dataset = prepare_dataset(data, val_fraction=0.2, seed=0)
    val = dataset.splits["val"]
    return {"root": root, "data": data, "runs": runs, "base": base,
            "val_paths": [record.path for record in val], "val_targets": np.array(dataset.targets("val"))}


@pytest.mark.slow
def test_ensemble_log_loss_is_no_worse_than_the_mean_of_its_members(members: dict) -> None:
    manifest_path = save_manifest(build_manifest(members["runs"]), members["root"] / "ensemble.json")
    ensemble = Ensemble(manifest_path, device="cpu")
    paths, targets = members["val_paths"], members["val_targets"]

    result = ensemble.predict_proba(paths)
    member_results = ensemble.member_probabilities(paths)

    assert ensemble.members == [f"run{index}/best" for index in range(3)] == list(member_results)
    assert result.probabilities.shape == (len(paths), 5) and result.probabilities.dtype == np.float32
    assert result.kept == list(range(len(paths))) and not result.failures
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The mean rule: the ensemble row is the plain average of the member rows.
    stacked = np.stack([member.probabilities for member in member_results.values()])
    np.testing.assert_allclose(result.probabilities, stacked.mean(axis=0), atol=1e-6)
    member_losses = [log_loss(member.probabilities, targets) for member in member_results.values()]
    ensemble_loss = log_loss(result.probabilities, targets)
    # Jensen: -log of an average is at most the average of -logs, so a failure is a bug.
    assert ensemble_loss <= float(np.mean(member_losses)) + 1e-9
    assert accuracy(result.probabilities, targets) > 0.5  # 5 classes: chance is 0.2
    # The members were computed once: asking again returns the cached results themselves.
    again = ensemble.member_probabilities(paths)
    assert all(again[name] is member_results[name] for name in member_results)
    print(f"\nval log-loss: members {[round(loss, 4) for loss in member_losses]}, ensemble {ensemble_loss:.4f}")


@pytest.mark.slow
def test_greedy_selection_is_never_worse_than_the_best_single_member(members: dict) -> None:
    ensemble = Ensemble(build_manifest(members["runs"]), device="cpu")
    # The split the members were validated on, rebuilt from their recorded configs.
    dataset = load_validation_split(members["runs"])
    assert [record.path for record in dataset.splits["val"]] == members["val_paths"]
    targets = np.array(dataset.targets("val"))
    probabilities = {name: result.probabilities
                     for name, result in ensemble.member_probabilities(members["val_paths"]).items()}

    for metric, score, better in (("log_loss", log_loss, np.less_equal), ("accuracy", accuracy, np.greater_equal)):
        counts = greedy_selection(probabilities, targets, metric=metric)
        assert list(counts) == list(probabilities) and sum(counts.values()) >= 1
        picked = sum(count * probabilities[name].astype(np.float64) for name, count in counts.items())
        picked /= sum(counts.values())
        best_single = min(score(rows, targets) for rows in probabilities.values()) if metric == "log_loss" else \
            max(score(rows, targets) for rows in probabilities.values())
        assert better(score(picked, targets), best_single), metric
        print(f"\ngreedy {metric}: counts {counts}, score {score(picked, targets):.4f} (best single {best_single:.4f})")

    # The counts are weights: a weighted ensemble of them predicts the greedy average.
    counts = greedy_selection(probabilities, targets, max_members=1)
    assert sum(1 for count in counts.values() if count) == 1
    weighted = Ensemble(ensemble.manifest.with_weights(counts), device="cpu")
    assert weighted.manifest.combine == "weighted"
    (only,) = [name for name, count in counts.items() if count]
    assert weighted.members == [only]
    np.testing.assert_allclose(weighted.predict_proba(members["val_paths"]).probabilities, probabilities[only])


@pytest.mark.slow
def test_manifest_round_trip_and_relative_paths_survive_a_move(members: dict, tmp_path: Path) -> None:
    project = tmp_path / "project"
    for run in members["runs"]:
        shutil.copytree(run / "checkpoints", project / run.name / "checkpoints")
    checkpoints = [project / run.name / "checkpoints" / "best.safetensors" for run in members["runs"]]
    manifest = build_manifest(checkpoints, weights=[2, 1, 0])
    path = save_manifest(manifest, project / "ensembles" / "mine.json")

    payload = json.loads(path.read_text())
    assert payload["kind"] == "transfer_studio_ensemble" and payload["schema_version"] == 1
    assert payload["combine"] == "weighted" and [member["weight"] for member in payload["members"]] == [2.0, 1.0]
    assert payload["members"][0]["path"] == "../run0/checkpoints/best.safetensors"
    assert len(payload["members"][0]["sha256"]) == 64
    assert load_manifest(path) == manifest
    assert is_manifest(path) and not is_manifest(checkpoints[0].with_suffix(".json"))
    assert manifest.normalized_weights() == {"run0/best": pytest.approx(2 / 3), "run1/best": pytest.approx(1 / 3)}

    moved = tmp_path / "moved"
    shutil.move(project, moved)
    reloaded = load_manifest(moved / "ensembles" / "mine.json")
    assert [member.path for member in reloaded.members] == [
        (moved / "run0" / "checkpoints" / "best.safetensors").resolve(),
        (moved / "run1" / "checkpoints" / "best.safetensors").resolve(),
    ]


@pytest.mark.slow
def test_a_changed_or_missing_member_is_refused_by_name(members: dict, tmp_path: Path) -> None:
    first, second = (tmp_path / "first.safetensors", tmp_path / "second.safetensors")
    shutil.copyfile(members["runs"][0] / "checkpoints" / "best.safetensors", first)
    shutil.copyfile(members["runs"][1] / "checkpoints" / "best.safetensors", second)
    path = save_manifest(build_manifest([first, second]), tmp_path / "ensemble.json")

    # Another real checkpoint copied over a member: same classes, other weights.
    shutil.copyfile(members["runs"][2] / "checkpoints" / "best.safetensors", first)
    with pytest.raises(CheckpointError, match=r"'first'.*first\.safetensors changed since the ensemble was built"):
        load_manifest(path)
    with pytest.raises(CheckpointError, match="changed since"):
        Ensemble(path, device="cpu")

    second.unlink()
    shutil.copyfile(members["runs"][0] / "checkpoints" / "best.safetensors", first)
    with pytest.raises(CheckpointError, match=r"'second'.*second\.safetensors is missing"):
        load_manifest(path)


@pytest.mark.slow
def test_members_of_other_classes_are_refused_naming_both_files(members: dict) -> None:
    data = copy_demo(members["root"] / "data4", classes=4, per_class=30)
    other = train(members["base"].with_changes(**{"data.path": str(data), "optim.epochs": 1}),
                  members["root"] / "four").run_dir
    first = members["runs"][0] / "checkpoints" / "best.safetensors"
    with pytest.raises(CheckpointError) as raised:
        build_manifest([members["runs"][0], other])
    message = str(raised.value)
    assert str(first) in message and str(other / "checkpoints" / "best.safetensors") in message
    assert "only in the first member: pullover" in message and "same classes in the same order" in message

    with pytest.raises(CheckpointError, match="same content"):
        build_manifest([members["runs"][0], first])


@pytest.mark.slow
def test_validation_split_refuses_members_validated_on_other_images(members: dict) -> None:
    other = train(members["base"].with_changes(**{"data.split_seed": 7, "optim.epochs": 1}),
                  members["root"] / "other_split").run_dir
    with pytest.raises(CheckpointError, match="validated on another split.*may be another's training images"):
        load_validation_split([members["runs"][0], other])
    # A moved dataset: the recorded split, rebuilt on the new location.
    moved = shutil.copytree(members["data"], members["root"] / "moved_data")
    dataset = load_validation_split(members["runs"], data=moved)
    assert [record.path.name for record in dataset.splits["val"]] == [path.name for path in members["val_paths"]]


@pytest.mark.slow
def test_an_unreadable_image_is_a_failure_of_the_ensemble(members: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    paths = [members["val_paths"][0], broken, members["val_paths"][1]]
    ensemble = Ensemble(build_manifest(members["runs"][:2]), device="cpu")
    seen: list[tuple[int, int]] = []

    result = ensemble.predict_proba(paths, progress=lambda done, total: seen.append((done, total)))
    predictions = ensemble.predict(paths, top_k=2)

    assert result.kept == [0, 2] and list(result.failures) == [1] and result.probabilities.shape == (2, 5)
    assert seen[-1] == (6, 6)
    assert predictions[1].error and not predictions[0].error and len(predictions[0].labels) == 2


@pytest.mark.slow
def test_load_probability_model_tells_manifests_from_checkpoints(members: dict) -> None:
    path = save_manifest(build_manifest(members["runs"][:2]), members["root"] / "two.json")
    assert isinstance(load_probability_model(path, device="cpu"), Ensemble)
    assert isinstance(load_probability_model(members["runs"][0], device="cpu"), Predictor)
    wrapped = load_probability_model(members["runs"][0], device="cpu", tta="flip")
    assert isinstance(wrapped, TestTimeAugmentation) and wrapped.classes == list(load_manifest(path).classes)


def test_log_loss_accuracy_and_greedy_selection_check_their_input() -> None:
    probabilities = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    targets = np.array([0, 0, 0])
    # The exact 0 is clipped at a tiny value: finite, and by far the largest term.
    assert 200 < log_loss(probabilities, targets) < 240
    assert log_loss(probabilities[:2], targets[:2]) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)
    assert accuracy(probabilities, np.array([0, 1, 1])) == pytest.approx(2 / 3)  # argmax of a tie is the first
    with pytest.raises(ConfigError, match="targets"):
        log_loss(probabilities, np.array([0, 2, 0]))
    with pytest.raises(ConfigError, match="metric"):
        greedy_selection({"a": probabilities}, targets, metric="f1")
    with pytest.raises(ConfigError, match=r"member_probabilities\['b'\]"):
        greedy_selection({"a": probabilities, "b": probabilities[:2]}, targets)
    with pytest.raises(CheckpointError, match="at least one checkpoint"):
        build_manifest([])


def rows_by_class(class0: Sequence[float], class1: Sequence[float]) -> np.ndarray:
    """A member's probabilities on 2 images of class 0 (each ``class0``) then 2 of class 1 (each ``class1``)."""
    return np.array([class0, class0, class1, class1], dtype=np.float64)


GREEDY_TARGETS = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(("metric", "members", "expected", "expected_score"), [
    # Two complementary experts (each sure of its class, unsure of the other) and a member that is
    # confidently wrong. The log-loss of t * a + (1 - t) * b is convex and symmetric about t = 1/2:
    # the 1:1 mix, 0.7 on every true class, is the best one, and adding the wrong member only hurts.
    ("log_loss", {"a": rows_by_class([.9, .1], [.5, .5]), "b": rows_by_class([.5, .5], [.1, .9]),
                  "bad": rows_by_class([.1, .9], [.9, .1])}, {"a": 1, "b": 1, "bad": 0}, -math.log(0.7)),
    # A weaker class-1 expert: the loss -(ln(.5 + .4t) + ln(.85 - .35t)) / 2 is lowest at t = 0.59,
    # and among count mixes 2:1 (t = 2/3) beats 1:1, 3:1 and 2:2: a is picked twice (with replacement).
    ("log_loss", {"a": rows_by_class([.9, .1], [.5, .5]), "b": rows_by_class([.5, .5], [.15, .85]),
                  "bad": rows_by_class([.1, .9], [.9, .1])}, {"a": 2, "b": 1, "bad": 0},
     -(math.log(2.3 / 3) + math.log(1.85 / 3)) / 2),
    # Accuracy: each expert gets one class right (1/2); their mean gets both (1); more copies of
    # either cannot beat 1, so selection stops there.
    ("accuracy", {"a": rows_by_class([.9, .1], [.6, .4]), "b": rows_by_class([.4, .6], [.1, .9]),
                  "bad": rows_by_class([.2, .8], [.8, .2])}, {"a": 1, "b": 1, "bad": 0}, 1.0),
], ids=["log_loss-symmetric", "log_loss-with_replacement", "accuracy"])
def test_greedy_selection_picks_complementary_members_with_the_right_counts(
    metric: str, members: dict[str, np.ndarray], expected: dict[str, int], expected_score: float
) -> None:
    score = log_loss if metric == "log_loss" else accuracy
    counts = greedy_selection(members, GREEDY_TARGETS, metric=metric)

    assert counts == expected
    mixed = sum(count * members[name] for name, count in counts.items()) / sum(counts.values())
    assert score(mixed, GREEDY_TARGETS) == pytest.approx(expected_score, rel=1e-12)
    singles = [score(rows, GREEDY_TARGETS) for rows in members.values()]
    if metric == "log_loss":
        assert expected_score < min(singles)  # strictly better than any single member
    else:
        assert expected_score > max(singles)
    # Limits: one distinct member, or no round after the first pick, leave the best single one.
    assert greedy_selection(members, GREEDY_TARGETS, metric=metric, max_members=1) == {"a": 1, "b": 0, "bad": 0}
    assert greedy_selection(members, GREEDY_TARGETS, metric=metric, rounds=0) == {"a": 1, "b": 0, "bad": 0}


def constant_member(source: Path, target: Path, probabilities: Sequence[float]) -> Path:
    """A copy of a real checkpoint whose linear head ignores the image: weights 0 and biases log p, so it
    predicts ``probabilities`` for every image."""
    checkpoint = load_checkpoint(source)
    state = dict(checkpoint.model_state)
    classes = len(checkpoint.metadata["classes"])
    (weight,) = [key for key, value in state.items()
                 if key.startswith("classifier.") and value.ndim == 2 and value.shape[0] == classes]
    bias = weight.removesuffix("weight") + "bias"
    state[weight] = torch.zeros_like(state[weight])
    state[bias] = torch.log(torch.tensor(probabilities, dtype=state[bias].dtype))
    return save_checkpoint(target, model_state=state, metadata=checkpoint.metadata)


@pytest.mark.slow
def test_greedy_manifest_keeps_the_complementary_pair_and_leaves_out_the_hurtful_member(
    members: dict, tmp_path: Path
) -> None:
    source = members["runs"][0] / "checkpoints" / "best.safetensors"
    # On 5 classes: two experts (0.6 on their class, 0.1 on each other) and a member sure of class 0.
    experts = [constant_member(source, tmp_path / f"expert{k}.safetensors", [.6 if c == k else .1 for c in range(5)])
               for k in (0, 1)]
    hurtful = constant_member(source, tmp_path / "hurtful.safetensors", [.96, .01, .01, .01, .01])
    targets = members["val_targets"]
    assert len(set(np.bincount(targets, minlength=5))) == 1  # the stratified split: every class equally often

    manifest, scores = build_greedy_manifest([*experts, hurtful], device="cpu")

    # Each expert alone: -ln .6 on a fifth of the images, -ln .1 on the rest. Their mean puts .35 on
    # two classes and .1 on three, a lower loss; a third copy of either expert ((1.3/3)(0.8/3) < .35^2)
    # and the hurtful member only raise it again.
    expert_loss = (-math.log(.6) - 4 * math.log(.1)) / 5
    pair_loss = (-2 * math.log(.35) - 3 * math.log(.1)) / 5
    assert [(score.name, score.picked) for score in scores] == [("expert0", 1), ("expert1", 1), ("hurtful", 0)]
    assert [score.log_loss for score in scores] == pytest.approx(
        [expert_loss, expert_loss, (-math.log(.96) - 4 * math.log(.01)) / 5], rel=1e-5)
    assert [score.accuracy for score in scores] == pytest.approx([0.2, 0.2, 0.2])
    assert manifest.combine == "weighted" and [member.name for member in manifest.members] == ["expert0", "expert1"]
    assert manifest.normalized_weights() == {"expert0": 0.5, "expert1": 0.5}
    result = Ensemble(manifest, device="cpu").predict_proba(members["val_paths"])
    np.testing.assert_allclose(result.probabilities, np.tile([.35, .35, .1, .1, .1], (len(targets), 1)), atol=1e-5)
    assert log_loss(result.probabilities, targets) == pytest.approx(pair_loss, rel=1e-5) and pair_loss < expert_loss

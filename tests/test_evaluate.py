"""Evaluation: exact metrics on hand-made probabilities, consistent metrics of real checkpoints, the CLI's work."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.core.errors import ConfigError, DatasetError
from engine.data.prepare import prepare_dataset
from engine.evaluation.evaluate import evaluate, evaluate_command
from engine.evaluation.manifest import build_manifest, save_manifest
from engine.evaluation.metrics import evaluate_probabilities
from engine.evaluation.predict import Predictor
from engine.evaluation.report import REPORT_FILES
from engine.models.checkpoint_metadata import read_checkpoint_metadata
from engine.training.train import train

CLASSES = ("ant", "bee", "cat", "dog", "eel")
PATHS = [Path(f"/images/{index}.png") for index in range(5)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two 3-epoch feature-extraction runs (different seeds) on 5 demo classes x 20 photos."""
    root = tmp_path_factory.mktemp("evaluate")
    data = copy_demo(root / "data", classes=5, per_class=20)
    run_dirs = []
    for seed in (1, 2):
        config = RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, "optim.epochs": 3,
                                             "seed": seed})
        run_dirs.append(train(config, root / f"run-{seed}").run_dir)
    return data, run_dirs


def test_perfect_predictions_score_exactly() -> None:
    probabilities = np.full((5, 5), 0.01, dtype=np.float32)
    probabilities[np.arange(5), np.arange(5)] = 0.96
    evaluation = evaluate_probabilities(probabilities, [0, 1, 2, 3, 4], CLASSES, PATHS)
    assert evaluation.top1 == 1.0 and evaluation.top5 == 1.0
    assert evaluation.log_loss == pytest.approx(-math.log(0.96), rel=1e-6)
    assert (evaluation.confusion == np.eye(5, dtype=int)).all()
    assert all(item.precision == item.recall == item.f1 == 1.0 and item.support == 1 for item in evaluation.per_class)
    assert evaluation.macro_f1 == 1.0
    assert evaluation.ece == pytest.approx(0.04, abs=1e-6)  # right every time at 96% confidence
    assert evaluation.top_losses == ()


def test_all_wrong_predictions_score_exactly() -> None:
    # Every image is given 0.7 for the next class and 0.3 / 4 for the others, its own included.
    probabilities = np.full((5, 5), 0.075, dtype=np.float32)
    probabilities[np.arange(5), (np.arange(5) + 1) % 5] = 0.7
    evaluation = evaluate_probabilities(probabilities, [0, 1, 2, 3, 4], CLASSES, PATHS, top_losses=3)
    assert evaluation.top1 == 0.0
    assert evaluation.top5 == 1.0  # with five classes the true one is always among the top five
    assert evaluation.log_loss == pytest.approx(-math.log(0.075), rel=1e-6)
    assert evaluation.confusion.trace() == 0 and evaluation.confusion.sum() == 5
    assert all(item.precision == item.recall == item.f1 == 0.0 for item in evaluation.per_class)
    assert evaluation.ece == pytest.approx(0.7, abs=1e-6) and evaluation.mce == pytest.approx(0.7, abs=1e-6)
    assert len(evaluation.top_losses) == 3
    first = evaluation.top_losses[0]
    assert (first.true_label, first.predicted_label) == ("ant", "bee")
    assert first.probability == pytest.approx(0.7) and first.loss == pytest.approx(-math.log(0.075), rel=1e-6)


def test_mixed_predictions_give_textbook_per_class_scores() -> None:
    classes = ("cat", "dog", "fox")
    # True: cat cat dog dog fox; predicted: cat dog dog dog cat.
    probabilities = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1],
                              [0.5, 0.1, 0.4]], dtype=np.float32)
    evaluation = evaluate_probabilities(probabilities, [0, 0, 1, 1, 2], classes, PATHS)
    assert evaluation.top1 == pytest.approx(0.6) and evaluation.top5 is None
    cat, dog, fox = evaluation.per_class
    assert (cat.precision, cat.recall, cat.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (dog.precision, dog.recall, dog.f1) == pytest.approx((2 / 3, 1.0, 0.8))
    assert fox.precision is None and fox.recall == 0.0 and fox.f1 == 0.0  # never predicted
    assert evaluation.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert evaluation.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # Top losses: misclassified only, highest loss (lowest p(true)) first.
    # The cat called dog had p(true) 0.3, the fox called cat 0.4.
    assert [(item.true_label, item.predicted_label) for item in evaluation.top_losses] == [("cat", "dog"),
                                                                                           ("fox", "cat")]
    assert [item.path for item in evaluation.top_losses] == [PATHS[1], PATHS[4]]
    assert evaluation.top_losses[0].loss == pytest.approx(-math.log(0.3), rel=1e-6)


def test_a_class_absent_from_the_images_has_no_recall_and_leaves_the_macro_average() -> None:
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]], dtype=np.float32)
    evaluation = evaluate_probabilities(probabilities, [0, 1], ("a", "b", "c"), PATHS[:2])
    absent = evaluation.per_class[2]
    assert absent.support == 0 and absent.recall is None and absent.precision is None and absent.f1 is None
    assert evaluation.macro_recall == 1.0


def test_inconsistent_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        evaluate_probabilities(np.full((2, 3), 1 / 3), [0, 1], ("a", "b"), PATHS[:2])
    with pytest.raises(ValueError, match="targets must be in"):
        evaluate_probabilities(np.full((2, 2), 0.5), [0, 2], ("a", "b"), PATHS[:2])
    with pytest.raises(ValueError, match="sum to 1"):
        evaluate_probabilities(np.full((2, 2), 0.3), [0, 1], ("a", "b"), PATHS[:2])


@pytest.mark.slow
def test_real_checkpoint_metrics_are_consistent_and_match_training(runs: tuple[Path, list[Path]]) -> None:
    data, (run, _) = runs
    dataset = prepare_dataset(data)
    records = dataset.splits["val"]
    predictor = Predictor(run, device="cpu")
    evaluation = evaluate(predictor, [r.path for r in records], [r.label for r in records])
    targets = np.array(dataset.targets("val"))
    assert evaluation.count == len(records) == 20 and evaluation.confusion.sum() == 20
    assert evaluation.top1 == pytest.approx(float((evaluation.probabilities.argmax(axis=1) == targets).mean()))
    rows = evaluation.confusion.sum(axis=1)
    for index, item in enumerate(evaluation.per_class):
        assert item.support == rows[index]
        assert item.recall == pytest.approx(evaluation.confusion[index, index] / rows[index])
    assert 0.0 <= evaluation.ece <= 1.0
    # The same images, model and preprocessing as the validation that chose the checkpoint.
    metrics = read_checkpoint_metadata(run)["metrics"]
    assert evaluation.top1 == pytest.approx(metrics["val_top1"])
    assert evaluation.log_loss == pytest.approx(metrics["val_loss"], rel=1e-4)
    assert evaluation.top1 > 0.5  # chance is 0.2
    # Labels by index, an unreadable file, and a second model compared beside the first.
    broken = data / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths = [r.path for r in records] + [broken]
    other = Predictor(runs[1][1], device="cpu")
    with_member = evaluate(predictor, paths, [*dataset.targets("val"), 0], classes=dataset.classes,
                           members={"other run": other})
    assert with_member.count == 20 and [item.path for item in with_member.unreadable] == [broken]
    assert with_member.top1 == evaluation.top1
    assert list(with_member.members) == ["other run"] and with_member.members["other run"].count == 20
    with pytest.raises(DatasetError, match="classes the model does not know: zebra"):
        evaluate(predictor, paths[:1], ["zebra"])


@pytest.mark.slow
def test_evaluate_command_writes_a_report_beside_the_run_and_fits_a_temperature(
    runs: tuple[Path, list[Path]],
) -> None:
    data, (run, _) = runs
    folder = evaluate_command(run, data, split="all", top_losses=4)
    assert folder.parent == run / "evaluation" and folder.name.startswith("all-")
    assert all((folder / name).is_file() for name in REPORT_FILES)
    report = json.loads((folder / "report.json").read_text())
    assert report["summary"]["images"] == 100 and len(report["images"]) == 100
    assert report["source"]["split"] == "all" and len(report["top_losses"]) <= 4

    copy = shutil.copytree(run, run.parent / "run-to-calibrate")  # the other tests keep the uncalibrated run
    calibrated = evaluate_command(copy, data, out_dir=run.parent / "calibrated", fit_temperature=True)
    report = json.loads((calibrated / "report.json").read_text())
    fit = report["temperature_fit"]
    assert fit["nll_after"] < fit["nll_before"] and report["summary"]["log_loss"] == pytest.approx(fit["nll_after"])
    saved = read_checkpoint_metadata(copy)["temperature"]
    assert saved == pytest.approx(fit["temperature"]) and "saved as temperature" in report["notes"][-1]
    with pytest.raises(DatasetError, match="the test split holds no images"):
        evaluate_command(run, data, split="test")
    with pytest.raises(ConfigError, match="split: expected one of"):
        evaluate_command(run, data, split="holdout")


@pytest.mark.slow
def test_an_ensemble_manifest_is_evaluated_with_each_member_beside_it(runs: tuple[Path, list[Path]]) -> None:
    data, run_dirs = runs
    manifest = save_manifest(build_manifest(run_dirs), run_dirs[0].parent / "pair.json")
    folder = evaluate_command(manifest, data)
    assert folder.parent == manifest.parent / "evaluation" and folder.name.startswith("pair-val-")
    report = json.loads((folder / "report.json").read_text())
    assert report["name"] == "ensemble" and len(report["members"]) == 2
    member_losses = [member["summary"]["log_loss"] for member in report["members"].values()]
    # Log-loss is convex in the probabilities: their average never scores worse than the members' mean.
    assert report["summary"]["log_loss"] <= np.mean(member_losses) + 1e-6
    page = (folder / "index.html").read_text()
    assert all(name in page for name in report["members"])

"""bench.quality's tasks (real photos, train and score sets apart, never Fashion-MNIST's test split) and its table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from bench.quality import (
    GOAL_TASK,
    Row,
    TaskResult,
    format_table,
    goal_lines,
    parse_budget,
    selected_tasks,
    write_results,
)
from bench.quality_tasks import (
    Pool,
    ReservedSplit,
    available_per_class,
    build_task,
    check_disjoint,
    digits_pool,
    fashion_mnist_installed,
    fashion_mnist_pool,
    pixel_key,
    split_pool,
)
from engine.core.errors import DatasetError


def _training_files(task_dir: Path) -> list[Path]:
    return sorted(task_dir.glob("*/*.png"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    """scikit-learn's digits as a pool of PNG class folders, written once for these tests."""
    return digits_pool(tmp_path_factory.mktemp("digits"))


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_digits_task_trains_and_scores_on_disjoint_real_photos(digits: Pool, tmp_path: Path):
    pool = digits
    assert sorted(pool) == [f"digit-{number}" for number in range(10)]
    assert sum(len(paths) for paths in pool.values()) > 1700  # scikit-learn's 1,797, repeats left out
    score, rest = split_pool(pool, 60)
    task = build_task("digits-20", "digits", score, rest, 20, seed=0, target=tmp_path / "seed-0")

    training = _training_files(task.train_dir)
    assert len(training) == task.train_count == 200
    assert len(task.score_paths) == 600 > len(training)
    assert {_size(path) for path in training[:5]} == {(8, 8)} and task.image_size == (8, 8)
    assert {path.parent.name for path in task.score_paths} == set(task.classes)
    assert [path.parent.name for path in task.score_paths] == list(task.score_labels)
    assert not {pixel_key(path) for path in training} & {pixel_key(path) for path in task.score_paths}

    # Another seed draws other training photos, but the score set stays the same photos.
    score_again, rest_again = split_pool(pool, 60)
    other = build_task("digits-20", "digits", score_again, rest_again, 20, seed=1, target=tmp_path / "seed-1")
    assert other.score_paths == task.score_paths
    assert {path.name for path in _training_files(other.train_dir)} != {path.name for path in training}


def test_build_task_refuses_too_few_photos_and_a_small_score_set(digits: Pool, tmp_path: Path):
    score, rest = split_pool(digits, 100)
    with pytest.raises(DatasetError, match="only"):
        build_task("digits-100", "digits", score, rest, available_per_class(rest) + 1, 0, tmp_path / "a")
    small_score, rest = split_pool(digits, 5)
    with pytest.raises(DatasetError, match="not more than"):
        build_task("digits-20", "digits", small_score, rest, 20, 0, tmp_path / "b")


def test_check_disjoint_catches_a_score_photo_that_is_a_training_photo(digits: Pool, tmp_path: Path):
    score, rest = split_pool(digits, 60)
    task = build_task("digits-20", "digits", score, rest, 20, 0, tmp_path / "task")
    copy = tmp_path / "copy.png"
    shutil.copy(_training_files(task.train_dir)[0], copy)  # same pixels, another file
    with pytest.raises(DatasetError, match="also training photos"):
        check_disjoint(task.train_dir, (*task.score_paths, copy))


def test_fashion_mnist_test_split_is_refused(tmp_path: Path):
    with pytest.raises(ReservedSplit, match="reserved"):
        fashion_mnist_pool(tmp_path / "pool", 10, split="test")
    assert not (tmp_path / "pool").exists()


@pytest.mark.skipif(not fashion_mnist_installed(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_task_comes_from_the_train_split_apart_from_its_score_set(tmp_path: Path):
    pool = fashion_mnist_pool(tmp_path / "pool", 40)
    assert pool is not None and len(pool) == 10
    assert all(len(paths) == 40 for paths in pool.values())  # no repeats among the first 40 of each class
    score, rest = split_pool(pool, 25)
    task = build_task("fashion-mnist-10", "Fashion-MNIST", score, rest, 10, 0, tmp_path / "task")
    training = _training_files(task.train_dir)
    assert len(training) == 100 and len(task.score_paths) == 250 and task.image_size == (28, 28)
    assert not {pixel_key(path) for path in training} & {pixel_key(path) for path in task.score_paths}


def _result(name: str, auto: Row) -> TaskResult:
    rows = [
        Row("feature_extraction", "feature extraction", accuracy=[0.80], log_loss=[0.61], wall_s=[41.0], note="fe"),
        Row("fine_tune", "fine-tuning", accuracy=[0.82, 0.84], log_loss=[0.5, 0.48], wall_s=[200.0, 210.0]),
        Row("two_stage", "two-stage", status="failed: exit code 1"),
        Row("recommended", "Recommended (fine-tune)", accuracy=[0.85], log_loss=[0.45], wall_s=[700.0]),
        auto,
        Row("plain_timm", "plain timm fine-tune", accuracy=[0.68], log_loss=[1.1], wall_s=[205.0]),
    ]
    return TaskResult(name, "Fashion-MNIST", 50, 500, 2000, (28, 28), [0, 1], rows)


def test_table_prints_a_row_per_recipe_and_the_goals():
    missing = Row("auto_10m", "Auto 10m", status="not available")
    result = _result(GOAL_TASK, missing)
    lines = format_table(result)
    assert lines[0].startswith(f"{GOAL_TASK}: 500 training photos (50 per class, 28x28")
    assert len(lines) == 2 + len(result.rows)
    feature = next(line for line in lines if "feature extraction" in line)
    assert feature.split()[2:5] == ["0.800", "0.610", "41.0"]
    assert "0.830" in next(line for line in lines if "fine-tuning" in line)  # the mean of two seeds
    assert "accuracy per seed 0.820 0.840" in next(line for line in lines if "fine-tuning" in line)
    assert any("two-stage" in line and "failed: exit code 1" in line for line in lines)
    assert any("Auto 10m" in line and "not available" in line for line in lines)

    goals = goal_lines(result, ["5m", "10m"])
    assert goals[0] == "ratio best recipe (Recommended (fine-tune)) / plain timm accuracy 1.250 (goal >= 1)"
    assert "not checked" in goals[-1]

    scored = Row("auto_10m", "Auto 10m", accuracy=[0.89], log_loss=[0.35], wall_s=[630.0])
    goals = goal_lines(_result(GOAL_TASK, scored), ["10m"])
    assert "ratio Auto 10m wall / budget 1.05 (goal <= 1.1)" in goals
    assert "ratio Auto 10m accuracy 0.890 (goal >= 0.88)" in goals
    # Recommended took 700 s, past the 10-minute budget and its 10%: fine-tuning is the best in Auto's time.
    assert goals[-1] == "ratio Auto 10m / best single recipe in its time (fine-tuning) accuracy 1.072 (goal >= 1)"


def test_results_are_written_as_json_and_csv(tmp_path: Path):
    result = _result("digits-20", Row("auto_5m", "Auto 5m", status="not available"))
    written = write_results(tmp_path / "quality.csv", {"benchmark": "bench.quality"}, [result], ["5m"])
    document = json.loads(written.read_text())
    assert written == tmp_path / "quality.json"
    assert document["tasks"][0]["rows"][1]["accuracy"] == [0.82, 0.84]
    assert document["tasks"][0]["table"] == format_table(result) + goal_lines(result, ["5m"])
    csv_lines = (tmp_path / "quality.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(result.rows)
    assert csv_lines[2].startswith("digits-20,50,500,2000,fine_tune,ok,0.8300")


def test_options_parse_budgets_and_task_names():
    assert parse_budget("5m") == 300 and parse_budget("1m30s") == 90 and parse_budget("1h") == 3600
    with pytest.raises(ValueError, match="budget"):
        parse_budget("ten minutes")
    assert selected_tasks(["fashion-mnist", "digits-50"], [20, 50]) == [
        ("fashion-mnist", 20), ("fashion-mnist", 50), ("digits", 50)]
    with pytest.raises(ValueError, match="--tasks"):
        selected_tasks(["cifar-10"], [20])

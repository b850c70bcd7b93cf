"""The sanity check on real demo photos: a pretrained model memorises a small sample; a broken one fails, saying why."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import pytest
from demo_photos import copy_demo

from engine.core.config import AugmentConfig, RunConfig, load_config
from engine.data.health import FileRecord
from engine.training.runfolder import RunFolder, read_events
from engine.training.sanity import run_sanity_check, select_sample


def demo_config(data: Path, **changes: object) -> RunConfig:
    # The demo photos are 64 px: a 64 px input loses nothing and costs a twelfth of 224.
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 64}
    return RunConfig().with_changes(**{**base, **changes})


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("sanity") / "data", classes=10, per_class=6)


def test_pretrained_features_memorise_twenty_photos_with_regularisation_switched_off(
    ten_classes: Path, tmp_path: Path
) -> None:
    # A recipe full of regularisers and augmentation: the check must switch every one off.
    config = demo_config(ten_classes, **{
        "augment.preset": "strong", "augment.horizontal_flip": 0.5, "augment.mixup_alpha": 0.2,
        "augment.feature_views": 2, "model.head_dropout": 0.5, "optim.weight_decay": 0.1,
        "optim.label_smoothing": 0.1, "optim.warmup_epochs": 2.0, "optim.ema": True,
    })
    echo = io.StringIO()
    result = run_sanity_check(config, num_images=20, max_steps=300, out_dir=tmp_path / "sanity", echo=echo)

    assert result.passed and result.ended == "memorised", result.message
    assert result.train_accuracy == 1.0 and result.steps < 300
    assert result.final_loss <= 0.1 * math.log(10) < result.initial_loss
    assert result.initial_loss == pytest.approx(math.log(10), abs=1e-3)  # the zeroed head starts at chance
    assert result.message.startswith("passed: memorised all 20 images") and result.likely_causes == []

    checked = load_config(tmp_path / "sanity" / "config.yaml")
    assert checked.augment == AugmentConfig(preset="none")  # every augmentation control off, mixup too
    assert (checked.model.head_dropout, checked.optim.weight_decay, checked.optim.label_smoothing) == (0, 0, 0)
    assert (checked.optim.schedule, checked.optim.warmup_epochs, checked.optim.ema) == ("constant", 0, False)
    assert checked.model == dataclasses.replace(config.model, head_dropout=0.0)  # nothing else changed
    assert checked.optim.learning_rate == config.optim.learning_rate

    events = [e for e in read_events(tmp_path / "sanity") if not e["event"].startswith("features_")]
    names = [e["event"] for e in events]
    assert names[0] == "sanity_started" and names[-1] == "sanity_finished"
    assert set(names[1:-1]) == {"sanity_progressed"}
    assert events[0]["num_images"] == 20 and set(events[0]["per_class"].values()) == {2}  # stratified
    measured_at = [e["step"] for e in events[1:-1]]  # before the first step, then every 5 steps
    assert measured_at == list(range(0, result.steps + 1, 5))
    finished = events[-1]
    assert finished["passed"] is True and finished["steps"] == result.steps and finished["message"] == result.message
    assert echo.getvalue() == (tmp_path / "sanity" / "events.jsonl").read_text()
    status = RunFolder(tmp_path / "sanity").read_status()
    assert status["state"] == "finished" and status["passed"] is True


def test_a_learning_rate_a_million_times_too_small_fails_and_names_the_cause(ten_classes: Path) -> None:
    # CS231n's first symptom: the loss does not go down. At 1e-9 AdamW moves each weight by
    # ~1e-9 a step, so after 60 steps the loss is still ln(10). (The photos are even ranked
    # right: accuracy ignores how small the weights are, which is why the check needs the loss too.)
    config = demo_config(ten_classes, **{"optim.learning_rate": 1e-9, "optim.min_learning_rate": 0.0})
    result = run_sanity_check(config, num_images=20, max_steps=60)

    assert not result.passed and result.ended == "out_of_steps" and result.steps == 60
    assert result.final_loss > 0.99 * result.initial_loss
    assert result.message.startswith("failed: could not memorise 20 images in 60 steps")
    assert "fix this first" in result.message
    assert result.likely_causes[0].startswith("learning rate too low (1e-09): the loss barely moved")
    assert any(cause.startswith("a bug in the head") for cause in result.likely_causes)
    assert result.out_dir is None


@pytest.mark.slow
def test_fine_tuning_memorises_a_few_photos_measured_in_eval_mode(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=6)
    config = demo_config(data, **{"model.mode": "fine_tune", "optim.batch_size": 8})
    result = run_sanity_check(config, num_images=8, max_steps=60)
    assert result.passed, result.message
    assert result.num_images == 8 and result.train_accuracy == 1.0


def records(counts: dict[str, int]) -> list[FileRecord]:
    return [FileRecord(path=Path(f"/data/{label}/{index:03d}.png"), label=label)
            for label, count in counts.items() for index in range(count)]


def test_the_sample_is_stratified_repeatable_and_sorted() -> None:
    pool = records({"cat": 10, "dog": 10, "owl": 3})
    sample = select_sample(pool, 8, seed=0)
    labels = [record.label for record in sample]
    assert sorted(labels.count(name) for name in ("cat", "dog", "owl")) == [2, 3, 3]
    assert list(sample) == sorted(sample, key=lambda record: str(record.path))
    assert select_sample(pool, 8, seed=0) == sample and select_sample(pool, 8, seed=1) != sample
    assert {record.label for record in select_sample(pool, 2)} == {"cat", "dog", "owl"}  # one per class at least
    assert len(select_sample(pool, 100)) == 23  # no more than there is

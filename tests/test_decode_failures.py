"""Images that pass the scan and fail to decode later never end a run, a prediction or an evaluation.

Each test damages real files after the scan (a file changed under the run), including
whole batches of them, and checks that the batch is skipped, each file is reported once,
and the numbers count only the images that decoded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demo_photos import copy_demo
from imagefactory import truncate

from engine.core.config import RunConfig
from engine.evaluation.evaluate import evaluate
from engine.evaluation.predict import Predictor
from engine.evaluation.tta import TestTimeAugmentation
from engine.training.callback import Callback, LoopState
from engine.training.runfolder import RunFolder, read_events
from engine.training.setup import build_training, prepare_run_data
from engine.training.train import train


class DamageBeforeFit(Callback):
    """Cuts files short once the run has scanned them and built its batches."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def before_fit(self, state: LoopState) -> None:
        for path in self.paths:
            truncate(path, keep=0.4)


class CountDecoded(Callback):
    """Counts the training images each epoch's batches really held."""

    def __init__(self) -> None:
        self.per_epoch: list[int] = []

    def before_epoch(self, state: LoopState) -> None:
        self.per_epoch.append(0)

    def after_batch(self, state: LoopState) -> None:
        if state.training:
            self.per_epoch[-1] += len(state.targets)


def _events(run_dir: Path, name: str) -> list[dict]:
    return [event for event in read_events(run_dir) if event["event"] == name]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "photos", classes=3, per_class=15)


def test_fine_tuning_skips_batches_whose_images_all_fail(photos: Path, tmp_path: Path) -> None:
    """Every training image but two and the last validation image (alone in its batch) break after the scan."""
    base = RunConfig().with_changes(**{
        "data.path": str(photos), "data.num_workers": 0, "data.input_size": 64, "model.mode": "fine_tune",
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none", "optim.epochs": 2, "seed": 1})
    dataset = prepare_run_data(base)
    train_paths = [record.path for record in dataset.splits["train"]]
    val_paths = [record.path for record in dataset.splits["val"]]
    batch_size = len(val_paths) - 1  # the last validation batch holds one image: the damaged one
    config = base.with_changes(**{"optim.batch_size": batch_size})
    damaged = [*train_paths[2:], val_paths[-1]]
    run_dir = tmp_path / "run"
    decoded = CountDecoded()

    result = train(config, run_dir, callbacks=[DamageBeforeFit(damaged), decoded])

    assert RunFolder(run_dir).read_status()["state"] == "finished"
    assert len(result.history) == 2
    skipped = _events(run_dir, "image_skipped")
    assert sorted(event["path"] for event in skipped) == sorted(str(path) for path in damaged)  # once, not per epoch
    assert {event["split"] for event in skipped if event["path"] == str(val_paths[-1])} == {"val"}
    assert all("truncated" in event["reason"] or "decode" in event["reason"] for event in skipped)
    drawn = len(train_paths) // batch_size * batch_size  # the last partial training batch is dropped
    for row, seen in zip(result.history, decoded.per_epoch, strict=True):
        assert seen <= 2
        assert row["train_skipped"] + seen == drawn
        assert row["val_skipped"] == 1
        # Accuracy is a share of the images that decoded: a whole number of them.
        decoded_val = len(val_paths) - 1
        assert row["val_top1"] * decoded_val == pytest.approx(round(row["val_top1"] * decoded_val), abs=1e-6)
    metrics = RunFolder(run_dir).read_metrics()
    assert [row["val_skipped"] for row in metrics] == [1.0, 1.0]


def test_feature_extraction_leaves_out_images_damaged_after_the_scan(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last training batch of 32 fails whole; cached features of the same photos must not hide it."""
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    config = RunConfig().with_changes(**{"data.path": str(photos), "data.num_workers": 0, "optim.batch_size": 32})
    dataset = prepare_run_data(config)
    train_records, val_records = dataset.splits["train"], dataset.splits["val"]
    assert len(train_records) == 36
    damaged = [record.path for record in [*train_records[32:], val_records[-1]]]
    for path in damaged:
        truncate(path, keep=0.4)
    events: list[tuple[str, dict]] = []

    setup = build_training(config, dataset, report=lambda name, **payload: events.append((name, payload)))

    assert len(setup.train_targets) == 32
    assert sum(len(targets) for _, targets in setup.val_batches) == len(val_records) - 1
    train_features, _ = next(iter(setup.train_batches))
    assert train_features.shape[1] == setup.loaded.num_features
    reported = sorted(payload["path"] for name, payload in events if name == "image_skipped")
    assert reported == sorted(str(path) for path in damaged)


@pytest.fixture
def damaged_tail(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """30 readable photos, then 3 cut short: the last batch of 32, and the last two batches of 2, fail whole."""
    data = copy_demo(tmp_path / "eval", classes=3, per_class=11)
    paths = sorted(data.rglob("*.png"))
    for path in paths[-3:]:
        truncate(path, keep=0.3)
    return paths, [path.parent.name for path in paths]


def test_prediction_and_tta_report_each_damaged_file(demo_run: Path,
                                                     damaged_tail: tuple[list[Path], list[str]]) -> None:
    paths, _ = damaged_tail
    predictor = Predictor(demo_run / "checkpoints" / "best.safetensors", device="cpu")
    for model in (predictor, TestTimeAugmentation(predictor, "flip")):
        result = model.predict_proba(paths, batch_size=2)
        assert result.kept == list(range(30))
        assert sorted(result.failures) == [30, 31, 32]
        assert result.probabilities.shape == (30, len(predictor.classes))
        assert torch.allclose(torch.from_numpy(result.probabilities).sum(dim=1), torch.ones(30), atol=1e-5)
    predictions = predictor.predict(paths, batch_size=2)
    assert [bool(p.error) for p in predictions] == [False] * 30 + [True] * 3
    assert all(p.path.name in p.error for p in predictions[30:])


def test_evaluation_scores_only_the_images_that_decode(demo_run: Path,
                                                       damaged_tail: tuple[list[Path], list[str]]) -> None:
    paths, labels = damaged_tail
    predictor = Predictor(demo_run / "checkpoints" / "best.safetensors", device="cpu")
    evaluation = evaluate(TestTimeAugmentation(predictor, "flip"), paths, labels)  # batches of 32: the last fails
    assert evaluation.count == 30
    assert sorted(str(item.path) for item in evaluation.unreadable) == sorted(str(path) for path in paths[-3:])


def test_the_run_log_names_a_skipped_file_once_and_counts_them_per_epoch() -> None:
    from gui.pages.train.run_log import describe_event

    text, tone = describe_event({"event": "image_skipped", "split": "val", "path": "/photos/bag/b1.png",
                                 "reason": "/photos/bag/b1.png: cannot decode the image: image file is truncated"})
    assert tone == "warning"
    assert text == ("Left out of the run (val image, reported once): /photos/bag/b1.png: cannot decode the image: "
                    "image file is truncated")
    epoch, _ = describe_event({"event": "epoch_finished", "metrics": {
        "epoch": 2, "train_loss": 0.5, "val_top1": 0.75, "train_skipped": 2, "val_skipped": 1, "seconds": 3.0}})
    assert epoch == "Epoch 2: train loss 0.5, val accuracy 75.0%, 3 unreadable images left out, 3.0 s"

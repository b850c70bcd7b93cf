"""TensorBoard logs of real runs, read back with TensorBoard's own event reader; runs without TensorBoard still work.

The runs are tiny (three demo classes, 64-pixel images, a small backbone without
pretrained weights, 2 epochs): the files are the point, not what the model learns.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.training.callback import Callback, LoopState
from engine.training.callbacks.tensorboard import LOGS_OFF, TENSORBOARD_DIR, metric_tag
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import resume, train

if TYPE_CHECKING:  # imported in the tests that need it: one test runs without TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def small_config(data: Path, **changes: object) -> RunConfig:
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "optim.batch_size": 4,
            "model.backbone": "mobilenetv3_small_050", "model.weights": "none", "optim.epochs": 2,
            "doctor.update_ratio_every": 2}
    return RunConfig().with_changes(**{**base, **changes})


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes, one three times the others: the doctor's ``class_imbalance`` check speaks before training."""
    return copy_demo(tmp_path_factory.mktemp("tensorboard") / "data", {"bag": 18, "sneaker": 6, "trouser": 6})


def read_logs(run_dir: Path) -> EventAccumulator:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    return accumulator.Reload()


def scalars(logs: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in logs.Scalars(tag)]


def text(logs: EventAccumulator, tag: str) -> list[str]:
    return [event.tensor_proto.string_val[0].decode("utf-8") for event in logs.Tensors(f"{tag}/text_summary")]


def events(run_dir: Path, name: str) -> list[dict]:
    return [event for event in read_events(run_dir) if event["event"] == name]


def test_a_run_writes_its_metrics_rates_diagnoses_and_config_for_tensorboard(imbalanced: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the logs extra is not installed")
    from tensorboard.plugins.hparams import api_pb2, metadata

    config = small_config(imbalanced)
    run_dir = tmp_path / "run"
    assert train(config, run_dir).state == "finished"
    assert len(list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 1
    logs = read_logs(run_dir)

    # Every number of metrics.csv, at the step its epoch ended.
    rows = RunFolder.open(run_dir).read_metrics()
    epoch_steps = [event["step"] for event in events(run_dir, "epoch_finished")]
    assert len(rows) == len(epoch_steps) == 2
    columns = [column for column in rows[0] if rows[0][column] is not None]
    assert {"epoch", "train_loss", "val_loss", "train_top1", "val_top1", "learning_rate"} <= set(columns)
    for column in columns:
        expected = [(step, pytest.approx(row[column], rel=1e-5)) for step, row in zip(epoch_steps, rows, strict=True)]
        assert scalars(logs, metric_tag(column)) == expected, column
    assert metric_tag("val_loss") == "loss/val" and metric_tag("learning_rate") == "epoch/learning_rate"
    per_class = events(run_dir, "epoch_finished")[-1]["metrics"]["val_per_class_top1"]
    for name, accuracy in per_class.items():
        assert scalars(logs, f"per_class_top1/val/{name}")[-1] == (epoch_steps[-1], pytest.approx(accuracy))

    # The rate and loss of every step; the rate agrees with the progress events.
    rates = dict(scalars(logs, "step/learning_rate"))
    assert list(rates) == list(range(1, epoch_steps[-1] + 1))
    assert len(scalars(logs, "step/train_loss")) == len(rates)
    for event in events(run_dir, "batch_finished"):
        assert rates[event["step"]] == pytest.approx(event["learning_rate"], rel=1e-6)

    measured = events(run_dir, "update_ratio_measured")
    assert measured and scalars(logs, "update_ratio/head") == [
        (event["step"], pytest.approx(event["ratios"]["head"], rel=1e-5)) for event in measured]

    (diagnosis,) = events(run_dir, "diagnosis_raised")
    assert diagnosis["check"] == "class_imbalance"
    (shown,) = text(logs, "doctor/class_imbalance")
    assert shown.startswith("**warning: Imbalanced classes**") and diagnosis["message"] in shown
    assert "`optim.class_balance: weighted_loss`" in shown

    (config_text,) = text(logs, "config")
    assert config_text.startswith("```yaml\n") and config_text.endswith("```")
    assert RunConfig.from_dict(yaml.safe_load(config_text.removeprefix("```yaml\n").removesuffix("```"))) == config

    def plugin_data(tag: str) -> bytes:
        return logs.SummaryMetadata(f"_hparams_/{tag}").plugin_data.content

    started = metadata.parse_session_start_info_plugin_data(plugin_data("session_start_info")).hparams
    assert started["optim.learning_rate"].number_value == pytest.approx(config.optim.learning_rate)
    assert started["model.backbone"].string_value == "mobilenetv3_small_050"
    assert json.loads(started["doctor.checks"].string_value) == list(config.doctor.checks)
    assert not any(name.startswith("search.") for name in started)
    experiment = metadata.parse_experiment_plugin_data(plugin_data("experiment"))
    assert {"loss/val", "top1/val", "loss/train"} <= {info.name.tag for info in experiment.metric_infos}
    ended = metadata.parse_session_end_info_plugin_data(plugin_data("session_end_info"))
    assert ended.status == api_pb2.STATUS_SUCCESS


class StopAfterFirstEpoch(Callback):
    """Asks for a clean stop, as the GUI does, once the first epoch is done."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = RunFolder(run_dir)

    def after_epoch(self, state: LoopState) -> None:
        if state.epoch == 1:
            self.folder.request_stop()


def test_a_stopped_run_keeps_its_logs_and_its_resumption_continues_them(imbalanced: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the logs extra is not installed")
    run_dir = tmp_path / "run"
    assert train(small_config(imbalanced), run_dir, callbacks=[StopAfterFirstEpoch(run_dir)]).state == "cancelled"
    stopped = read_logs(run_dir)
    assert [epoch for _, epoch in scalars(stopped, "epoch")] == [1]  # closed whole by the stop
    assert "_hparams_/session_end_info" not in stopped.summary_metadata  # not a finished run (yet)

    assert resume(run_dir).state == "finished"
    assert len(list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    logs = read_logs(run_dir)
    assert [epoch for _, epoch in scalars(logs, "epoch")] == [1, 2]
    steps = [step for step, _ in scalars(logs, "step/learning_rate")]
    assert steps == sorted(set(steps)) and steps[-1] == events(run_dir, "epoch_finished")[-1]["step"]
    assert "_hparams_/session_end_info" in logs.summary_metadata


def test_a_run_without_tensorboard_trains_and_says_so_once(
    imbalanced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The logs extra not installed: None in sys.modules makes an import raise ModuleNotFoundError.
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
    config = small_config(imbalanced, **{"model.mode": "two_stage", "model.head_epochs": 1})  # two fits, one note
    with caplog.at_level(logging.WARNING):
        result = train(config, tmp_path / "run")
    assert result.state == "finished" and len(result.history) == 2
    assert [record.getMessage() for record in caplog.records].count(LOGS_OFF) == 1
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()

"""The doctor on whole runs of the demo photos with the real Lite0 backbone: silent when healthy, right when not.

Feature extraction reuses the session's feature cache, so after the first run each one
trains in a second or two.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.models.checkpoint import load_checkpoint
from engine.training.doctor import DIAGNOSIS_EVENT, Diagnosis
from engine.training.runfolder import read_events
from engine.training.train import RunResult, train


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole demo (10 classes x 50 photos), copied so that runs never write into resources/."""
    return copy_demo(tmp_path_factory.mktemp("doctor-demo") / "data", classes=10, per_class=50)


def run_config(data: Path, **changes: Any) -> RunConfig:
    base = {"data.path": str(data), "data.num_workers": 0}
    return RunConfig().with_changes(**{**base, **changes})


def train_with_doctor(config: RunConfig, run_dir: Path) -> tuple[RunResult, list[Diagnosis], list[dict]]:
    """Train with the doctor watching, as a run does; returns the result, its diagnoses and all events."""
    result = train(config, run_dir)  # the doctor is part of every run
    events = read_events(run_dir)
    diagnoses = [Diagnosis.from_dict(event) for event in events if event["event"] == DIAGNOSIS_EVENT]
    return result, diagnoses, events


def alarms(diagnoses: list[Diagnosis]) -> list[str]:
    return [f"{d.check}: {d.message}" for d in diagnoses if d.severity in ("warning", "error")]


@pytest.mark.slow
def test_a_healthy_run_raises_no_alarm(demo_copy: Path, tmp_path: Path) -> None:
    result, diagnoses, events = train_with_doctor(run_config(demo_copy), tmp_path / "run")
    assert result.state == "finished"
    assert diagnoses == [], alarms(diagnoses)
    (initial,) = [event for event in events if event["event"] == "initial_loss_measured"]
    assert initial["loss"] == pytest.approx(math.log(10), abs=1e-5)
    ratios = [event["ratios"]["head"] for event in events if event["event"] == "update_ratio_measured"]
    assert len(ratios) == 6 and max(ratios) < 0.1


@pytest.mark.slow
def test_rate_10_diverges_and_stops_cleanly_with_a_checkpoint(demo_copy: Path, tmp_path: Path) -> None:
    result, diagnoses, events = train_with_doctor(run_config(demo_copy, **{"optim.learning_rate": 10.0}),
                                                  tmp_path / "run")
    assert (result.state, result.reason) == ("cancelled", "diverged")
    (diverged,) = [d for d in diagnoses if d.check == "divergence"]
    assert diverged.severity == "error" and diverged.fix == {"optim.learning_rate": 1.0}
    (cancelled,) = [event for event in events if event["event"] == "run_cancelled"]
    assert cancelled["reason"] == "diverged" and cancelled["step"] <= 10
    assert cancelled["message"] == diverged.message
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert last.metadata["stopped"] == "diverged" and last.metadata["step"] == cancelled["step"]
    assert events[-1]["event"] == "run_cancelled"


@pytest.mark.slow
def test_rate_1e7_is_too_low(demo_copy: Path, tmp_path: Path) -> None:
    config = run_config(demo_copy, **{"optim.learning_rate": 1e-7, "optim.min_learning_rate": 0.0})
    result, diagnoses, _ = train_with_doctor(config, tmp_path / "run")
    assert result.state == "finished"
    (too_low,) = [d for d in diagnoses if d.check == "learning_rate_too_low"]
    assert too_low.severity == "warning" and too_low.evidence["steps"] == 100
    assert too_low.fix["optim.learning_rate"] >= 1e-6
    assert "divergence" not in {d.check for d in diagnoses}
    too_low.apply(config)


@pytest.mark.slow
def test_a_small_fine_tune_raises_no_alarm(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=3, per_class=20)
    config = run_config(data, **{"model.mode": "fine_tune", "data.input_size": 64, "optim.epochs": 2})
    result, diagnoses, events = train_with_doctor(config, tmp_path / "run")
    assert result.state == "finished"
    assert diagnoses == [], alarms(diagnoses)
    (initial,) = [event for event in events if event["event"] == "initial_loss_measured"]
    assert initial["loss"] == pytest.approx(math.log(3), abs=1e-5)


@pytest.mark.slow
def test_a_rate_that_collapses_early_is_diagnosed_and_its_fix_trains_on(demo_copy: Path, tmp_path: Path) -> None:
    # A step schedule that steps every epoch instead of every few: below 0.5 % of the peak from epoch 5 of 10.
    config = run_config(demo_copy, **{"optim.schedule": "step", "optim.step_epochs": 1.0})
    result, diagnoses, _ = train_with_doctor(config, tmp_path / "stalled")
    assert result.state == "finished"
    (collapsed,) = [d for d in diagnoses if d.check == "learning_rate_collapsed"]
    assert collapsed.severity == "warning" and collapsed.fix == {"optim.schedule": "cosine"}
    assert collapsed.evidence["share_of_peak"] < 0.005 and collapsed.evidence["steps_remaining"] >= 130 / 4
    assert alarms(diagnoses) == alarms([collapsed])  # the only alarm

    fixed, diagnoses, _ = train_with_doctor(collapsed.apply(config), tmp_path / "fixed")
    assert diagnoses == [], alarms(diagnoses)
    stalled_loss, fixed_loss = result.history[-1]["train_loss"], fixed.history[-1]["train_loss"]
    assert fixed_loss < 0.7 * stalled_loss, (stalled_loss, fixed_loss)

"""Auto mode: budgets, the plan's decisions, the time cap, refused data, and whole Auto runs that stop and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_photos import DEMO, copy_demo

import main
from cli.parsing import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.auto.budget import format_seconds, parse_budget
from engine.auto.plan import MIN_FINE_TUNE_EPOCHS, DataFacts, DeviceSpeed, plan_fine_tuning
from engine.auto.state import AutoFolder
from engine.auto.time_cap import TimeCap
from engine.core.errors import ConfigError
from engine.data.health import HealthReport
from engine.evaluation.ensemble import load_probability_model
from engine.evaluation.manifest import is_manifest
from engine.training.callback import CancelFit, LoopState
from engine.training.run_summary import read_run

ROOT = Path(__file__).resolve().parents[1]
# A small model from random weights on small inputs, decoding in the process: the plan and its budget are the point.
SMALL = ("--backbone", "mobilenetv3_small_050", "--set", "model.weights=none", "--set", "data.input_size=64",
         "--set", "data.num_workers=0")
LAST_LINE = "recommended model: "


# --- budgets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("90", 90), ("10m", 600), ("1h30m", 5400), ("2m30s", 150), ("1.5h", 5400), (" 10M ", 600),
])
def test_budgets_are_read_in_seconds_and_written_back(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds
    assert parse_budget(format_seconds(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "m10", "30m1h", "1h1h", "-10m", "5s"])
def test_a_budget_it_cannot_read_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="^--budget: "):
        parse_budget(text)


def test_the_command_refuses_an_unreadable_budget_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["auto", str(tmp_path), "--budget", "ten minutes"])
    assert exited.value.code == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--budget" in error and "'ten minutes'" in error


# --- the plan ------------------------------------------------------------------------------------------------


def small_data_report(per_class: int = 50) -> HealthReport:
    return HealthReport(root=Path("photos"), layout="class_folders", classes=("a", "b"),
                        class_counts={"a": per_class, "b": per_class}, records=(), problems=(), imbalance_ratio=1.0)


FACTS = DataFacts(classes=2, train_images=80, val_images=20, images_per_class=50, median_side=64, size="small")
SPEED = DeviceSpeed(device="cpu", input_size=224, resizable=True, train_seconds=0.05, eval_seconds=0.02,
                    decode_seconds=0.003, startup_seconds=2.0)


def test_a_budget_too_small_for_fine_tuning_plans_none_and_says_which_budget_would_do() -> None:
    steps, notes = plan_fine_tuning(FACTS, SPEED, 10.0, small_data_report(), budget_seconds=60)
    assert steps == []
    assert notes[0].startswith("fine-tuning skipped") and "the best this budget allows" in notes[0]
    assert "a budget of ~" in notes[0]


def test_fine_tuning_gets_the_epochs_that_fit_and_a_second_member_only_with_time_to_spare() -> None:
    one, notes = plan_fine_tuning(FACTS, SPEED, 60.0, small_data_report())
    assert [step.name for step in one] == ["two_stage"]
    assert MIN_FINE_TUNE_EPOCHS <= one[0].fine_tune_epochs < 15 and one[0].seconds <= 60
    assert one[0].changes["optim.ema"] is True and one[0].changes["model.mode"] == "two_stage"
    assert any("fine-tuning epochs fit" in note for note in notes)

    two, _ = plan_fine_tuning(FACTS, SPEED, 600.0, small_data_report(), seed=4)
    assert [step.name for step in two] == ["two_stage", "fine_tune_seed5"]
    assert two[0].fine_tune_epochs == 15 and two[1].changes["seed"] == 5
    assert two[1].changes["model.mode"] == "fine_tune" and "model.head_epochs" not in two[1].changes
    # The recipe's patience: early stopping counts it from each stage's first epoch (test_recipes.py).
    assert two[0].changes["optim.early_stopping_patience"] == two[1].changes["optim.early_stopping_patience"] == 3
    assert sum(step.seconds for step in two) <= 600


def test_tiny_photos_are_fine_tuned_at_a_smaller_side_when_the_backbones_own_does_not_fit() -> None:
    slow = DeviceSpeed(**{**SPEED.to_dict(), "train_seconds": 0.2})
    steps, notes = plan_fine_tuning(FACTS, slow, 50.0, small_data_report())
    assert steps and steps[0].changes["data.input_size"] == 128  # twice the photos' 64 px
    assert any("at 128 px instead of 224" in note for note in notes)
    kept, _ = plan_fine_tuning(FACTS, slow, 50.0, small_data_report(), chosen_side=224)
    assert kept == []  # a side the user chose is not changed


# --- the time cap --------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_time_cap_stops_before_an_epoch_that_would_end_late_and_once_time_is_up() -> None:
    clock = Clock()
    cap = TimeCap(deadline=25.0, clock=clock)
    state = LoopState(model=None, optimizer=None, num_epochs=10, batches_per_epoch=4)  # type: ignore[arg-type]
    cap.before_fit(state)
    cap.before_epoch(state)
    clock.now = 10.0
    cap.before_epoch(state)  # epoch 2 would end at 20: in time
    clock.now = 20.0
    with pytest.raises(CancelFit) as cancel:
        cap.before_epoch(state)  # epoch 3 would end at 30
    assert cancel.value.reason == "budget" and cap.epoch_seconds() == 10.0
    cap.before_fit(state)  # the next stage of a two_stage run
    clock.now = 24.0
    cap.before_epoch(state)
    cap.before_batch(state)
    clock.now = 25.0
    with pytest.raises(CancelFit, match="time for this step is up"):
        cap.before_batch(state)


# --- the Auto folder -----------------------------------------------------------------------------------------


def test_the_budget_spent_adds_up_the_sessions_a_killed_one_and_a_torn_line_included(tmp_path: Path) -> None:
    folder = AutoFolder.create(tmp_path / "project", {"data": "photos", "budget_seconds": 60, "steps": []})
    started = time.monotonic()
    folder.record("session_started", started - 10)
    folder.record("step_started", started - 12, step="baseline")  # killed here, 12 s in
    folder.record("session_started", started - 5)
    folder.record("session_ended", started - 5, state="finished")
    with (folder.path / "progress.jsonl").open("a") as progress:
        progress.write('{"event": "session_sta')  # torn by a kill
    assert folder.spent_seconds() == pytest.approx(17, abs=0.5)
    assert AutoFolder.open(folder.path).read_plan()["budget_seconds"] == 60
    with pytest.raises(ConfigError, match="--resume: .* is not an Auto folder"):
        AutoFolder.open(tmp_path)


# --- refused data --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("classes", "expected"), [
    ({"bag": 6}, "at least 2 classes with usable images are needed"),
    ({"bag": 6, "coat": 6, "trouser": 1}, "class 'trouser': only 1 usable image"),
])
def test_unusable_data_is_refused_with_the_doctors_message_before_any_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], classes: dict[str, int], expected: str,
) -> None:
    data = copy_demo(tmp_path / "photos", classes=classes)
    project = tmp_path / "project"
    code = main.main(["auto", str(data), "--budget", "1m", "--project-dir", str(project)])
    error = capsys.readouterr().err
    assert code == EXIT_FAILED
    refusal = [line for line in error.splitlines() if line.startswith("error: ")]
    assert len(refusal) == 1 and expected in refusal[0]
    assert not (project / "runs").exists() and not (project / "auto").exists()


# --- whole Auto runs -----------------------------------------------------------------------------------------


def auto_command(data: Path, project: Path, budget: str) -> list[str]:
    return [sys.executable, "main.py", "auto", str(data), "--budget", budget, "--project-dir", str(project), *SMALL]


def recommended(stdout: str) -> Path:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(LAST_LINE), stdout
    return Path(last.removeprefix(LAST_LINE))


@pytest.mark.slow
def test_auto_ends_within_its_budget_with_ordinary_runs_a_report_and_a_usable_model(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=10)
    project = tmp_path / "project"
    budget = 25.0
    began = time.monotonic()
    done = subprocess.run(auto_command(data, project, "25s"), cwd=ROOT, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - began
    assert done.returncode == EXIT_OK, done.stderr
    assert wall <= 1.1 * budget, done.stdout

    model = recommended(done.stdout)
    if model.suffix == ".json":
        assert is_manifest(model) and model.parent == project / "ensembles"
    else:
        assert model.name == "best.safetensors" and model.parents[2] == project / "runs"
    probabilities = load_probability_model(model, device="cpu").predict_proba(sorted(data.glob("*/*.png"))[:2])
    assert probabilities.probabilities.shape == (2, 3)

    runs = sorted((project / "runs").iterdir())
    assert len(runs) >= 1 and all(read_run(run).state in ("finished", "cancelled") for run in runs)
    [auto_dir] = (project / "auto").iterdir()
    report = json.loads((auto_dir / "report.json").read_text())
    assert report["state"] == "finished" and report["recommended"] == str(model)
    assert report["steps"][0]["name"] == "baseline" and report["steps"][0]["status"].startswith("finished")
    assert {step["run_dir"] for step in report["steps"] if step.get("run_dir")} == {str(run) for run in runs}
    assert all(step["status"] != "not run" for step in report["steps"])
    assert "## Recommended" in (auto_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_stop_keeps_the_best_model_so_far_and_resume_finishes_the_plan_without_redoing_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=10)
    project = tmp_path / "project"
    child = subprocess.Popen(auto_command(data, project, "60s"), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line)
        if line.startswith("two_stage: "):  # the first fine-tuning run is starting
            os.killpg(child.pid, signal.SIGTERM)
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == EXIT_FAILED, errors
    assert "Traceback" not in errors and "to go on: python main.py auto --resume" in errors
    stdout = "".join(seen) + rest
    [auto_dir] = (project / "auto").iterdir()
    report = json.loads((auto_dir / "report.json").read_text())
    assert (report["state"], report["stopped_at"]) == ("stopped", "two_stage")
    baseline = report["steps"][0]
    assert recommended(stdout) == Path(baseline["best_checkpoint"])  # the best model so far
    baseline_events = Path(baseline["run_dir"]) / "events.jsonl"
    untouched = baseline_events.stat().st_mtime_ns
    stopped_run = report["steps"][1]["run_dir"]

    code = main.main(["auto", "--resume", str(auto_dir)])
    resumed = capsys.readouterr().out
    assert code == EXIT_OK
    assert recommended(resumed).is_file()
    assert "baseline:" not in resumed  # finished steps are not run again
    assert baseline_events.stat().st_mtime_ns == untouched
    report = json.loads((auto_dir / "report.json").read_text())
    assert report["state"] == "finished" and report["sessions"] == 2
    assert report["stops"] == [{"session": 1, "step": "two_stage", "message": "SIGTERM received"}]
    steps = {step["name"]: step for step in report["steps"]}
    assert steps["two_stage"]["run_dir"] == stopped_run  # the stopped run went on in its own folder
    assert steps["two_stage"]["status"] in ("finished", "finished early (validation had stopped improving)",
                                            "cut by its time cap (its best epoch is kept)")
    assert len(list((project / "runs").iterdir())) == len([step for step in steps.values() if step.get("run_dir")])
    assert "was stopped during two_stage (SIGTERM received) and resumed" in (auto_dir / "report.md").read_text()
    assert not (DEMO / ".transfer-studio").exists()


@pytest.mark.slow  # the shared demo project: two feature-extraction runs on real Lite0 weights
def test_the_choice_is_an_ensemble_only_when_it_beats_every_single_checkpoint_on_validation_log_loss(
    demo_project: Path, tmp_path: Path,
) -> None:
    from engine.auto.choice import choose_model
    from engine.core.paths import project_dir_for

    candidates = sorted((project_dir_for(demo_project) / "runs").glob("*/checkpoints/best.safetensors"))
    assert len(candidates) == 2
    choice = choose_model(candidates, tmp_path / "auto.json", score=True, device="cpu")
    singles = [candidate["val_log_loss"] for candidate in choice.candidates]
    assert len(singles) == 2 and all(0 < candidate["val_accuracy"] <= 1 for candidate in choice.candidates)
    if choice.kind == "ensemble":
        assert is_manifest(choice.path) and choice.val_log_loss < min(singles)
        assert sum(1 for candidate in choice.candidates if candidate["picked"]) == 2
    else:
        assert choice.val_log_loss == min(singles) and not (tmp_path / "auto.json").exists()
        assert str(choice.path) == min(choice.candidates, key=lambda candidate: candidate["val_log_loss"])["path"]
    unscored = choose_model(candidates, tmp_path / "unused.json", score=False, unscored_because="Auto was stopped")
    assert unscored.kind == "checkpoint" and "Auto was stopped" in unscored.reason

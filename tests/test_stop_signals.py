"""A stop signal to the whole process group, as ``timeout``, SLURM's ``scancel`` or a closed terminal send it.

The DataLoader workers get the signal too; they leave stopping to the training process
(``engine.data.loader_sizing.leave_stopping_to_the_trainer``), which stops at the next batch
with a checkpoint, so the run ends ``cancelled`` without a traceback and resumes to the end.
A second signal, as an impatient scheduler or user sends, changes nothing of that.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_photos import copy_demo

from engine.models.checkpoint import load_checkpoint
from engine.training.runfolder import read_events

ROOT = Path(__file__).resolve().parents[1]


def start_fine_tuning(data: Path, run_dir: Path) -> subprocess.Popen[str]:
    """``main.py train`` fine-tuning with two DataLoader workers, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "main.py", "train", str(data), "--run-dir", str(run_dir), "--mode", "fine_tune",
         "--epochs", "2", "--batch-size", "2", "--events-only", "--set", "data.input_size=48",
         "--set", "data.num_workers=2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


@pytest.mark.slow  # a fine-tuning run with real workers, stopped, then resumed to its end
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_to_the_process_group_stops_cleanly_and_resumes(tmp_path: Path, signal_name: str) -> None:
    data = copy_demo(tmp_path / "data", classes=3, per_class=12)
    run_dir = tmp_path / "run"
    child = start_fine_tuning(data, run_dir)
    assert child.stdout is not None and child.stderr is not None
    for line in child.stdout:  # the child prints each event as it happens
        event = json.loads(line)
        if event["event"] == "batch_finished" and event["epoch"] == 1:
            os.killpg(child.pid, getattr(signal, signal_name))  # the training process and its workers
            break
    rest, errors = child.communicate(timeout=120)  # reads both pipes to the end and closes them
    assert child.returncode == 0, errors
    assert "Traceback" not in errors and "killed by signal" not in errors, errors
    assert json.loads(rest.strip().splitlines()[-1])["event"] == "run_cancelled"
    status = json.loads((run_dir / "status.json").read_text())
    assert (status["state"], status["reason"]) == ("cancelled", "stopped")
    cancelled = [event for event in read_events(run_dir) if event["event"] == "run_cancelled"][-1]
    assert cancelled["message"] == f"{signal_name} received"
    load_checkpoint(run_dir / "checkpoints" / "last.safetensors", with_training_state=True)
    if signal_name != "SIGTERM":
        return  # a stop is a stop, whatever the signal: one resume shows where it leads

    resumed = subprocess.run([sys.executable, "main.py", "train", "--resume", str(run_dir)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert read_events(run_dir)[-1]["event"] == "run_finished"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


@pytest.mark.slow  # a fine-tuning run with real workers, stopped twice
def test_a_second_stop_signal_leaves_the_stop_and_its_checkpoint_whole(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=3, per_class=12)
    run_dir = tmp_path / "run"
    child = start_fine_tuning(data, run_dir)
    assert child.stdout is not None
    for line in child.stdout:
        if json.loads(line)["event"] == "batch_finished":
            os.killpg(child.pid, signal.SIGTERM)
            # The second comes while the checkpoint is written or the process ends, as the timing falls.
            time.sleep(0.3)
            with contextlib.suppress(ProcessLookupError):  # it may be gone already
                os.killpg(child.pid, signal.SIGTERM)
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == 0, errors  # not killed by the second signal, whenever it came
    assert "Traceback" not in errors and "killed by signal" not in errors, errors
    assert json.loads(rest.strip().splitlines()[-1])["event"] == "run_cancelled"
    cancelled = [event for event in read_events(run_dir) if event["event"] == "run_cancelled"]
    assert [event["message"] for event in cancelled] == ["SIGTERM received"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"
    load_checkpoint(run_dir / "checkpoints" / "last.safetensors", with_training_state=True)

"""SIGKILL a training process at ten moments, then resume: nothing published is lost, and the run ends as planned.

In the spirit of SQLite's crash tests. A two-stage run (one epoch of the head on cached
features, then fine-tuning) is killed outright, as a power cut or the OOM killer would:
at eight write sites through the fault hook of ``engine.core.atomic`` (the process kills
itself once a temporary file is complete, before it replaces the old one), once during
validation and once at a seeded random moment. After each kill every published
checkpoint must load; a resume must finish the run, leave no temporary file, and keep
the metrics of the epochs saved before the kill as they were. The runs are processes forked
from a server that imported torch once, so that ten kills cost ten runs, not ten imports.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from demo_photos import copy_demo

from engine.core.atomic import FAULTS_ENV_VAR
from engine.core.paths import CACHE_ENV_VAR
from engine.models.checkpoint import load_checkpoint
from engine.training.runfolder import EventTail, RunFolder, read_events
from engine.training.train import resume

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
# Where the process kills itself: the write of a file matching GLOB, the Nth time (see engine.core.atomic).
WRITE_MOMENTS = {
    "the first event": "*/events.jsonl@1",
    "the feature-cache fill": "*/features/*@5",
    "the first status": "*/status.json@1",
    "the first checkpoint's weights": "*/checkpoints/last.safetensors@1",
    "between weights and their readable copy": "*/checkpoints/last.json@1",
    "a best checkpoint": "*/checkpoints/best.safetensors@2",
    "a metrics row": "*/metrics.csv@2",
    "a fine-tuning checkpoint": "*/checkpoints/last.safetensors@3",
}
TIMED_MOMENTS = ("validation", "a seeded random moment")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("faults") / "photos", classes=3, per_class=10)


@pytest.fixture(scope="module")
def processes() -> multiprocessing.context.ForkServerContext:
    """Training processes forked from a server that imported torch, timm and the engine once (not per kill)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["main", "engine.training.train"])
    return context


def run_main(argv: list[str], env: dict[str, str]) -> None:
    """A child's whole life: ``python main.py ARGV`` with ``env`` added to its environment."""
    os.environ.update(env)
    import main

    sys.exit(main.main(argv))


def start_run(processes: multiprocessing.context.ForkServerContext, data: Path, run_dir: Path, cache: Path,
              fault: str | None, epochs: int = EPOCHS) -> multiprocessing.process.BaseProcess:
    """A two-stage training process, with an empty feature cache of its own."""
    cache.mkdir()
    weights = Path(os.environ[CACHE_ENV_VAR], "weights")  # converted once per session
    weights.mkdir(parents=True, exist_ok=True)
    (cache / "weights").symlink_to(weights)
    env = {CACHE_ENV_VAR: str(cache), FAULTS_ENV_VAR: f"SIGKILL:{fault}" if fault else ""}
    argv = ["train", str(data), "--run-dir", str(run_dir), "--mode", "two_stage", "--epochs", str(epochs),
            "--batch-size", "8", "--set", "model.head_epochs=1", "--set", "data.input_size=64",
            "--set", "data.num_workers=0", "--set", "seed=3"]
    child = processes.Process(target=run_main, args=(argv, env))
    child.start()
    return child


def wait_for_event(child: multiprocessing.process.BaseProcess, run_dir: Path,
                   found: Callable[[int, dict[str, Any]], bool]) -> None:
    """Follow the run's events until ``found(number, event)`` says so (or the child has ended)."""
    tail = EventTail(run_dir / "events.jsonl")
    number = 0
    while child.is_alive():
        for event in tail.read_new():
            number += 1
            if found(number, event):
                return
        time.sleep(0.02)


def kill_when(child: multiprocessing.process.BaseProcess, run_dir: Path, moment: str) -> None:
    """SIGKILL the child at ``moment``: during the fine-tuning's validation, or after a seeded number of events."""
    last_event = random.Random(15).randint(5, 25)  # a run writes about 40 events

    def found(number: int, event: dict[str, Any]) -> bool:
        if moment == "validation":  # the epoch's training is done; its validation runs
            return event["event"] == "batch_finished" and event["epoch"] == 2 and event["batch"] == event["batches"]
        return number == last_event

    wait_for_event(child, run_dir, found)
    child.kill()


@pytest.mark.slow  # ten training processes killed, each resumed to its end
def test_a_run_killed_at_any_of_ten_moments_resumes_to_its_end_losing_nothing(
    processes: multiprocessing.context.ForkServerContext, photos: Path, tmp_path: Path,
) -> None:
    moments = [*WRITE_MOMENTS, *TIMED_MOMENTS]
    for number, moment in enumerate(moments):
        run_dir = tmp_path / f"run-{number}"
        child = start_run(processes, photos, run_dir, tmp_path / f"cache-{number}", WRITE_MOMENTS.get(moment))
        if moment in TIMED_MOMENTS:
            kill_when(child, run_dir, moment)
        child.join(timeout=300)
        assert child.exitcode == -signal.SIGKILL, f"{moment}: the run was not killed ({child.exitcode})"

        folder = RunFolder(run_dir)
        before = {row["epoch"]: row for row in folder.read_metrics()}
        saved_epoch = 0
        for name in ("last", "best"):
            if folder.checkpoint_path(name).is_file():
                checkpoint = load_checkpoint(folder.checkpoint_path(name), with_training_state=name == "last")
                saved_epoch = max(saved_epoch, int(checkpoint.metadata["epoch"])) if name == "last" else saved_epoch

        result = resume(run_dir)

        assert result.state == "finished", moment
        assert read_events(run_dir)[-1]["event"] == "run_finished", moment
        after = {row["epoch"]: row for row in folder.read_metrics()}
        assert sorted(after) == [1.0, 2.0, 3.0], moment
        for epoch in range(1, saved_epoch + 1):
            if epoch in before:
                assert after[epoch] == before[epoch], f"{moment}: epoch {epoch}'s metrics changed"
        assert list(run_dir.rglob("*.tmp")) == [], moment
        load_checkpoint(folder.checkpoint_path("last"), with_training_state=True)


@pytest.mark.slow  # two processes
def test_a_second_process_is_refused_a_run_that_another_writes(
    processes: multiprocessing.context.ForkServerContext, photos: Path, tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    writer = start_run(processes, photos, run_dir, tmp_path / "cache", None, epochs=50)
    wait_for_event(writer, run_dir, lambda _, event: event["event"] == "run_started")

    second = subprocess.run([sys.executable, "main.py", "train", "--resume", str(run_dir)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    RunFolder(run_dir).request_stop()
    writer.join(timeout=120)

    assert second.returncode == 2
    assert second.stderr.splitlines() == [
        f"error: {run_dir}: process {writer.pid} on {socket.gethostname()} is writing this run; "
        "stop it first, or wait for it to end"]
    assert read_events(run_dir)[-1]["event"] == "run_cancelled"  # the writer went on, undisturbed, to its stop

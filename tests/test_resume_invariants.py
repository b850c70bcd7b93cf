"""Resuming is invisible: a stopped or killed run, resumed, ends as the run that was never interrupted.

Feature extraction on real demo photos and the real Lite0 backbone (features come from the
session's cache after the first run), with a dropout head so that the random state matters
too. A probe callback copies the head's weights, the optimizer's state and the learning rate
before the first training batch of every epoch; the resumed run's first copy must equal the
checkpoint it resumed from and the uninterrupted run's copy at the same step, and its end
must equal the uninterrupted run's end.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from demo_photos import copy_demo

from engine.core.config import RunConfig
from engine.models.checkpoint import Checkpoint, load_checkpoint
from engine.training.callback import Callback, LoopState
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import RunResult, resume, train

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12
BATCH_SIZE = 8
HEAD_PREFIX = "classifier."  # where EfficientNet keeps the head in the checkpoint's state dict


@dataclass
class Snapshot:
    """The training state just before a batch: what the next update starts from."""

    epoch: int
    step: int
    head: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    learning_rates: list[float]


@dataclass
class Probe(Callback):
    """Copies the training state before the first training batch of every epoch."""

    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    order = 100  # after the schedule (-50) has set this step's rate

    def before_batch(self, state: LoopState) -> None:
        if state.training and state.batch_index == 0:
            self.snapshots[state.epoch] = Snapshot(
                epoch=state.epoch, step=state.step,
                head={key: value.detach().clone() for key, value in state.model.state_dict().items()},
                optimizer=copy.deepcopy(state.optimizer.state_dict()),
                learning_rates=[group["lr"] for group in state.optimizer.param_groups],
            )


class StopAfterEpoch(Callback):
    """Asks for a stop (the ``STOP`` file) once an epoch has finished and been saved."""

    order = 100  # after the checkpoint saver (40) and the events (50)

    def __init__(self, run_dir: Path, epoch: int) -> None:
        self.run_dir, self.epoch = run_dir, epoch

    def after_epoch(self, state: LoopState) -> None:
        if state.epoch == self.epoch:
            RunFolder(self.run_dir).request_stop()


def resume_config(data: Path) -> RunConfig:
    return RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "optim.epochs": EPOCHS, "optim.batch_size": BATCH_SIZE,
        "model.head_dropout": 0.3,
    })


@dataclass
class Reference:
    data: Path
    config: RunConfig
    result: RunResult
    probe: Probe


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """An uninterrupted run of ``resume_config``, probed at the start of every epoch."""
    root = tmp_path_factory.mktemp("resume")
    data = copy_demo(root / "data", classes=4, per_class=20)
    probe = Probe()
    config = resume_config(data)
    result = train(config, root / "uninterrupted", callbacks=[probe])
    assert result.state == "finished" and sorted(probe.snapshots) == list(range(1, EPOCHS + 1))
    return Reference(data, config, result, probe)


def head_of(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    return {key.removeprefix(HEAD_PREFIX): value for key, value in checkpoint.model_state.items()
            if key.startswith(HEAD_PREFIX)}


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str,
                        *, atol: float = 0.0) -> None:
    assert actual.keys() == expected.keys(), what
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0.0, atol=atol, msg=f"{what}: {key}")


def assert_same_optimizer_state(actual: dict[str, Any], expected: dict[str, Any], what: str, *,
                                atol: float = 0.0) -> None:
    """The same per-parameter state (AdamW's step count and moments) and the same rates."""
    assert actual["state"].keys() == expected["state"].keys(), what
    for index, values in expected["state"].items():
        assert actual["state"][index].keys() == values.keys(), f"{what}: parameter {index}"
        assert_same_tensors(actual["state"][index], values, f"{what}: parameter {index}", atol=atol)
    assert [group["lr"] for group in actual["param_groups"]] == pytest.approx(
        [group["lr"] for group in expected["param_groups"]], rel=1e-9, abs=0.0), f"{what}: rates"


def assert_resumed_as_if_never_stopped(run_dir: Path, checkpoint: Checkpoint, reference: Reference,
                                       resumed_probe: Probe, resumed: RunResult) -> None:
    """The invariants of a resume from ``checkpoint`` (``run_dir``'s ``last`` before it), whatever epoch it holds."""
    completed = checkpoint.metadata["epoch"]
    first = resumed_probe.snapshots[min(resumed_probe.snapshots)]
    expected = reference.probe.snapshots[completed + 1]
    assert (first.epoch, first.step) == (completed + 1, checkpoint.metadata["step"]) == (expected.epoch, expected.step)

    # The first resumed update starts from the checkpoint's weights, optimizer state and rate ...
    assert_same_tensors(first.head, head_of(checkpoint), "weights at the resumed start vs the checkpoint")
    assert_same_optimizer_state(first.optimizer, checkpoint.optimizer_state, "optimizer vs the checkpoint")
    assert first.learning_rates == pytest.approx([group["lr"] for group in checkpoint.optimizer_state["param_groups"]],
                                                 rel=1e-9, abs=0.0)
    # ... which are those the uninterrupted run had at the same step.
    assert_same_tensors(first.head, expected.head, "weights vs the uninterrupted run", atol=1e-6)
    assert_same_optimizer_state(first.optimizer, expected.optimizer, "optimizer vs the uninterrupted run", atol=1e-6)
    assert first.learning_rates == pytest.approx(expected.learning_rates, rel=1e-9, abs=0.0)

    # It ends where the uninterrupted run ended: same weights, same epochs, same metrics, same best epoch.
    assert resumed.state == "finished"
    last = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    reference_last = load_checkpoint(reference.result.run_dir / "checkpoints" / "last.safetensors")
    assert last.metadata["step"] == reference_last.metadata["step"] == EPOCHS * len_of_epoch(reference)
    assert_same_tensors(head_of(last), head_of(reference_last), "final weights vs the uninterrupted run", atol=1e-5)
    rows, reference_rows = RunFolder(run_dir).read_metrics(), RunFolder(reference.result.run_dir).read_metrics()
    assert [row["epoch"] for row in rows] == [row["epoch"] for row in reference_rows] == list(range(1, EPOCHS + 1))
    for row, reference_row in zip(rows, reference_rows, strict=True):
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "learning_rate"):
            assert row[key] == pytest.approx(reference_row[key], rel=1e-4, abs=1e-6), (row["epoch"], key)
    best = load_checkpoint(run_dir / "checkpoints" / "best.safetensors").metadata
    reference_best = load_checkpoint(reference.result.run_dir / "checkpoints" / "best.safetensors").metadata
    assert (best["epoch"], best["score"]) == (reference_best["epoch"], pytest.approx(reference_best["score"]))


def len_of_epoch(reference: Reference) -> int:
    snapshots = reference.probe.snapshots
    return snapshots[2].step - snapshots[1].step


def test_a_stopped_and_resumed_run_ends_as_if_never_stopped(reference: Reference, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stopped = train(reference.config, run_dir, callbacks=[StopAfterEpoch(run_dir, 5)])
    assert (stopped.state, stopped.reason) == ("cancelled", "stopped")
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.safetensors", with_training_state=True)
    assert checkpoint.metadata["epoch"] == 5

    probe = Probe()
    resumed = resume(run_dir, callbacks=[probe])
    assert min(probe.snapshots) == 6
    assert_resumed_as_if_never_stopped(run_dir, checkpoint, reference, probe, resumed)


@pytest.mark.slow
def test_a_sigkilled_cli_run_resumes_from_its_last_checkpoint_as_if_never_killed(
    reference: Reference, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "main.py", "train", str(reference.data), "--run-dir", str(run_dir),
         "--epochs", str(EPOCHS), "--batch-size", str(BATCH_SIZE), "--events-only",
         "--set", "data.num_workers=0", "--set", "model.head_dropout=0.3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    killed = False
    for line in child.stdout:  # the child prints each event as it happens
        event = json.loads(line)
        if event["event"] == "checkpoint_saved" and event["name"] == "last" and event["epoch"] == 2:
            child.kill()  # SIGKILL: no handler runs, no checkpoint is written on the way out
            killed = True
            break
    child.wait(timeout=60)
    stderr = child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert killed and child.returncode == -9, stderr
    assert RunFolder.open(run_dir).load_config() == reference.config  # the CLI trained the reference's recipe
    events = read_events(run_dir)
    assert "run_finished" not in {event["event"] for event in events}
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.safetensors", with_training_state=True)
    completed = checkpoint.metadata["epoch"]
    assert 2 <= completed < EPOCHS, "the kill came too late to test a resume"

    probe = Probe()
    resumed = resume(run_dir, callbacks=[probe])
    started = [event for event in read_events(run_dir) if event["event"] == "run_started"][-1]
    assert started["resumed_from"].endswith("last.safetensors") and started["epoch"] == completed + 1
    assert_resumed_as_if_never_stopped(run_dir, checkpoint, reference, probe, resumed)
    assert not list(run_dir.rglob("*.tmp"))

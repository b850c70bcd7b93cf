"""Distributed data-parallel training: real torchrun, two Gloo workers on the CPU, the real ``main.py train``.

Each run is launched the way ``main.py train --nproc 2`` launches it (``engine.training.distributed.launch_training``
in a child process, which runs torchrun over ``main.py``), on real demo photos.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from demo_photos import copy_demo
from torch.utils.data import DistributedSampler

from engine.core.config import RunConfig, save_config
from engine.core.errors import CheckpointError, ConfigError
from engine.core.paths import project_dir_for
from engine.data.loading import DistributedWeightedSampler, FeatureBatches
from engine.evaluation.predict import Predictor
from engine.models.checkpoint import load_checkpoint
from engine.training.distributed import LaunchOptions, launch_training, torchrun_arguments, worker_arguments
from engine.training.optimizer import batch_scale
from engine.training.runfolder import RunFolder, read_events
from engine.training.schedules import scaled_learning_rate
from engine.training.setup import prepare_run_data

ROOT = Path(__file__).resolve().parents[1]
# What main.py's train handler does with --nproc 2, for scripts other than main.py that call engine.training.train.
LAUNCHER = ("import sys\nfrom engine.training.distributed import LaunchOptions, launch_training\n"
            "sys.exit(launch_training(LaunchOptions(nproc=2), sys.argv[1], [*sys.argv[2:], '--nproc', '2'],"
            " run_dir=None))")
FEATURES = ("--epochs", "3", "--batch-size", "8", "--lr", "0.01", "--set", "data.num_workers=0",
            "--set", "optim.reference_batch_size=32")
FINE_TUNE = ("--mode", "fine_tune", "--backbone", "mobilenetv3_small_050", "--batch-size", "8",
             "--set", "model.weights=none", "--set", "data.input_size=64", "--set", "data.num_workers=0")


def launch_command(script: str | Path, *arguments: str) -> list[str]:
    if str(script) == "main.py":
        return [sys.executable, "main.py", *arguments, "--nproc", "2"]
    return [sys.executable, "-c", LAUNCHER, str(script), *arguments]


def launch_two(*arguments: str, script: str | Path = "main.py") -> subprocess.CompletedProcess:
    return subprocess.run(launch_command(script, *arguments), cwd=ROOT, capture_output=True, text=True, timeout=300)


def events_of(run_dir: Path, name: str) -> list[dict]:
    return [event for event in read_events(run_dir) if event["event"] == name]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("distributed") / "photos", classes=3, per_class=20)


@pytest.fixture(scope="module")
def feature_run(data: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Feature extraction on 2 processes, without --run-dir: the ranks must agree on one folder."""
    completed = launch_two("train", str(data), *FEATURES)
    assert completed.returncode == 0, completed.stderr
    runs = sorted((project_dir_for(data) / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0], completed


@pytest.mark.slow
def test_feature_extraction_on_two_processes(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    run_dir, completed = feature_run
    assert "distributed: 2 processes x batch 8 = effective batch 16" in completed.stdout
    assert "0.01 x 16 / 32 = 0.005 (linear scaling rule)" in completed.stdout
    (started,) = events_of(run_dir, "run_started")
    assert started["world_size"] == 2 and started["backend"] == "gloo"
    assert started["effective_batch_size"] == 16 and started["peak_learning_rate"] == pytest.approx(0.005)
    assert started["batches_per_epoch"] == 3  # 48 training images: 24 per rank, in batches of 8
    # Rank 1 wrote nothing: every event, row and checkpoint exists once.
    assert len(events_of(run_dir, "epoch_finished")) == 3 and len(events_of(run_dir, "run_finished")) == 1
    assert [row["epoch"] for row in RunFolder(run_dir).read_metrics()] == [1.0, 2.0, 3.0]
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors"]

    # The validation metrics are those one process computes with the saved weights on the same images.
    config = RunFolder(run_dir).load_config()
    classes = started["classes"]
    val = prepare_run_data(config).splits["val"]
    last = run_dir / "checkpoints" / "last.safetensors"
    assert load_checkpoint(last).metadata["world_size"] == 2
    predictor = Predictor(last, device="cpu")
    probabilities = torch.from_numpy(predictor.predict_proba([record.path for record in val]).probabilities)
    targets = torch.tensor([classes.index(record.label) for record in val])
    loss = float(torch.nn.functional.nll_loss(probabilities.log(), targets))
    top1 = float((probabilities.argmax(dim=1) == targets).float().mean())
    last_row = RunFolder(run_dir).read_metrics()[-1]
    assert last_row["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert last_row["val_top1"] == pytest.approx(top1, abs=1e-6)
    assert top1 > 1 / 3  # real pretrained features: above chance
    assert Predictor(run_dir, device="cpu").predict([val[0].path], top_k=1)[0].labels


@pytest.mark.slow
def test_fine_tune_on_two_processes_loads_and_predicts(data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    completed = launch_two("train", str(data), "--run-dir", str(run_dir), "--epochs", "1", *FINE_TUNE)
    assert completed.returncode == 0, completed.stderr
    assert "effective batch 16" in completed.stdout
    assert events_of(run_dir, "run_finished") and events_of(run_dir, "run_started")[0]["world_size"] == 2
    predictions = Predictor(run_dir, device="cpu").predict(sorted((data / "bag").glob("*.png"))[:3], top_k=2)
    assert all(len(prediction.labels) == 2 and not prediction.error for prediction in predictions)


SYNC_CHECK = '''
import sys

import torch
import torch.distributed as dist

from engine.core.config import load_config
from engine.training.callback import Callback
from engine.training.train import train


class SameWeightsEverywhere(Callback):
    """After each epoch, every parameter must be equal on both ranks (compared by its sum)."""

    def after_epoch(self, state):
        model = state.model.module  # the DDP wrapper of the fit
        sums = torch.stack([parameter.detach().double().sum() for parameter in model.parameters()])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        trainable = sum(parameter.requires_grad for parameter in model.parameters())
        if dist.get_rank() == 0:
            print(f"epoch {state.epoch}: {trainable} trainable, in sync: {bool(torch.equal(low, high))}")


train(load_config(sys.argv[1]), sys.argv[2], callbacks=[SameWeightsEverywhere()])
'''


@pytest.mark.slow
def test_gradual_unfreezing_keeps_ranks_in_sync(data: Path, tmp_path: Path) -> None:
    """training.train.train under torchrun, as a search trial would call it; DDP is rebuilt as stages unfreeze."""
    script = tmp_path / "sync_check.py"
    script.write_text(SYNC_CHECK, encoding="utf-8")
    config = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 64, "model.mode": "fine_tune",
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none", "model.trainable_stages": 1,
        "model.unfreeze_every": 1, "optim.epochs": 2, "optim.batch_size": 8, "seed": 3})
    config_path = tmp_path / "config.yaml"
    save_config(config, config_path)
    completed = subprocess.run(launch_command(script, str(config_path), str(tmp_path / "run")), cwd=ROOT,
                               capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(line.endswith("in sync: True") for line in lines), completed.stdout
    first, second = (int(line.split()[2]) for line in lines)
    assert second > first  # a stage was unfrozen, and its parameters stayed in sync too
    assert events_of(tmp_path / "run", "stages_unfrozen")


@pytest.mark.slow
def test_stop_file_stops_every_rank(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess],
                                    tmp_path: Path) -> None:
    """Only rank 0 reads STOP; rank 1 stops because the ranks agree before each batch."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunFolder(run_dir).request_stop()  # before the run starts
    completed = launch_two("train", str(data), "--run-dir", str(run_dir), *FEATURES)
    assert completed.returncode == 0, completed.stderr
    (cancelled,) = events_of(run_dir, "run_cancelled")
    assert cancelled["reason"] == "stopped" and cancelled["message"] == "stop requested"
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").metadata["stopped"] == "stopped"


@pytest.mark.slow
def test_divergence_stops_every_rank(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess],
                                     tmp_path: Path) -> None:
    """Every rank sees the same (all-reduced) loss, so the doctor's divergence stop fires on all at once."""
    run_dir = tmp_path / "run"
    completed = launch_two("train", str(data), "--run-dir", str(run_dir), *FEATURES, "--lr", "1e4",
                           "--set", "optim.warmup_epochs=0", "--epochs", "5")
    assert completed.returncode == 0, completed.stderr
    (cancelled,) = events_of(run_dir, "run_cancelled")
    assert cancelled["reason"] == "diverged"
    assert [event["check"] for event in events_of(run_dir, "diagnosis_raised")] == ["divergence"]


def start_events_only(data: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        launch_command("main.py", "train", str(data), "--run-dir", str(run_dir), *FEATURES, "--epochs", "1000",
                       "--events-only"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def worker_pids(launcher: int) -> list[int]:
    tasks = Path(f"/proc/{launcher}/task").iterdir()
    return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]


def environment_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def wait_for_epoch(child: subprocess.Popen) -> None:
    for line in child.stdout:  # rank 0 alone echoes each event as it happens
        if json.loads(line)["event"] == "epoch_finished":
            return
    raise AssertionError(f"no epoch finished: {child.stderr.read()}")


@pytest.mark.slow
def test_sigterm_stops_every_rank_cleanly(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess],
                                          tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    child = start_events_only(data, run_dir)
    wait_for_epoch(child)
    child.send_signal(signal.SIGTERM)  # torchrun forwards it to the workers
    _, errors = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, errors
    (cancelled,) = events_of(run_dir, "run_cancelled")
    assert cancelled["message"] == "SIGTERM received"
    last = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    assert last.metadata["stopped"] == "stopped" and last.metadata["epoch"] >= 1


@pytest.mark.slow
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").is_file(),
                    reason="finds the workers through Linux's /proc/PID/task/TID/children")
def test_a_dead_rank_ends_the_run(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess],
                                  tmp_path: Path) -> None:
    """SIGKILL rank 1 mid-run: rank 0 must not wait for it; the run ends as failed, and torchrun exits 1."""
    run_dir = tmp_path / "run"
    child = start_events_only(data, run_dir)
    wait_for_epoch(child)
    (rank_1,) = [pid for pid in worker_pids(child.pid) if environment_of(pid).get("RANK") == "1"]
    os.kill(rank_1, signal.SIGKILL)
    _, errors = child.communicate(timeout=120)
    assert child.returncode == 1, errors
    assert read_events(run_dir)[-1]["event"] == "run_failed"


@pytest.mark.slow
@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").is_file()
                    or not hasattr(os, "pidfd_open"), reason="finds and waits for the workers the Linux way")
def test_workers_of_a_killed_launcher_stop_cleanly(data: Path, feature_run: tuple[Path, subprocess.CompletedProcess],
                                                   tmp_path: Path) -> None:
    """SIGKILL the launcher (as the GUI does after its grace period): its workers must not train on unseen."""
    run_dir = tmp_path / "run"
    child = start_events_only(data, run_dir)
    wait_for_epoch(child)
    workers = [os.pidfd_open(pid) for pid in worker_pids(child.pid)]  # not our children: wait on them so
    child.kill()
    child.communicate(timeout=60)
    for worker in workers:
        ended, _, _ = select.select([worker], [], [], 60)
        os.close(worker)
        assert ended, "a worker of the killed launcher still runs"
    (cancelled,) = events_of(run_dir, "run_cancelled")
    assert cancelled["message"] == "the torchrun launcher is gone"
    assert load_checkpoint(run_dir / "checkpoints" / "last.safetensors").metadata["stopped"] == "stopped"


def test_worker_arguments_drop_the_launch_options() -> None:
    argv = ["train", "photos", "--nproc", "2", "--epochs", "3", "--master-port=29600", "--set", "seed=1",
            "--nnodes", "2", "--rdzv-endpoint", "host:29400"]
    assert worker_arguments(argv, run_dir="/runs/a") == [
        "train", "photos", "--epochs", "3", "--set", "seed=1", "--run-dir", "/runs/a"]
    assert worker_arguments(["train", "--resume", "/runs/a", "--nproc=4"], run_dir=None) == ["train", "--resume",
                                                                                             "/runs/a"]


def test_torchrun_arguments() -> None:
    assert torchrun_arguments(LaunchOptions(nproc=2), "main.py", ["train", "photos"]) == [
        "--nproc-per-node=2", "--standalone", "main.py", "train", "photos"]
    several = LaunchOptions(nproc=4, nnodes="2", node_rank=1, master_addr="10.0.0.1", master_port=29500)
    assert torchrun_arguments(several, "main.py", ["train"]) == [
        "--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29500",
        "main.py", "train"]
    assert "2 processes per machine" in LaunchOptions(nproc=2, rdzv_backend="c10d").describe()
    with pytest.raises(ConfigError, match="--nproc: must be >= 1"):
        LaunchOptions(nproc=0)
    parsed = argparse.Namespace(nproc=None, nnodes="2", node_rank=None, data="photos")
    with pytest.raises(ConfigError, match="--nnodes: configures torchrun, so it needs --nproc"):
        LaunchOptions.from_namespace(parsed)
    assert LaunchOptions.from_namespace(argparse.Namespace(nproc=None, data="photos")) is None
    assert LaunchOptions.from_namespace(argparse.Namespace(nproc=3, master_port=29501)) == LaunchOptions(
        nproc=3, master_port=29501)


def test_launching_into_a_used_run_folder_fails_before_any_process_starts(tmp_path: Path) -> None:
    RunFolder.create(tmp_path / "run", RunConfig())
    with pytest.raises(CheckpointError, match="already holds a run"):
        launch_training(LaunchOptions(nproc=2), "main.py", ["train", "photos"], run_dir=tmp_path / "run")


def test_batch_scale_follows_the_effective_batch() -> None:
    config = RunConfig().with_changes(**{"optim.learning_rate": 1e-3, "optim.batch_size": 32,
                                         "optim.reference_batch_size": 64})
    assert batch_scale(config).peak_learning_rate == scaled_learning_rate(config.optim)
    scale = batch_scale(config, 4)
    assert scale.effective_batch_size == 128 and scale.peak_learning_rate == pytest.approx(2e-3)
    assert "4 processes x batch 32 = effective batch 128" in scale.describe()
    unscaled = batch_scale(RunConfig(), 2)
    assert unscaled.peak_learning_rate == RunConfig().optim.learning_rate and "not scaled" in unscaled.describe()


def test_ranks_share_out_each_epoch() -> None:
    features, targets = torch.randn(21, 2, 4), torch.arange(21) % 3
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(range(21), num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(3)
        batches = FeatureBatches(features, targets, batch_size=4, shuffle=True, sampler=sampler)
        assert len(batches) == 3  # 11 items each (one repeated to even the shares): 4 + 4 + 3
        seen.append(torch.cat([batch_targets for _, batch_targets in batches]))
    assert len(seen[0]) == len(seen[1]) == 11
    weights = torch.tensor([1.0] * 20 + [19.0])  # item 20 is half of every draw
    shares = [DistributedWeightedSampler(weights, num_replicas=2, rank=rank, seed=1) for rank in (0, 1)]
    draws = [list(share) for share in shares]
    assert len(draws[0]) == len(draws[1]) == 11 and draws[0] != draws[1]
    assert 6 <= (draws[0] + draws[1]).count(20) <= 17
    shares[0].set_epoch(1)
    assert list(shares[0]) != draws[0]


def test_an_attached_run_folder_writes_nothing(tmp_path: Path) -> None:
    RunFolder.create(tmp_path / "run", RunConfig()).request_stop()
    view = RunFolder.attach(tmp_path / "run")
    view.write_event("epoch_finished", epoch=1, metrics={})
    view.write_status("running")
    view.write_metrics([{"epoch": 1, "train_loss": 1.0}])
    view.clear_stop()
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["STOP", "checkpoints", "config.yaml"]
    assert not view.stop_requested() and RunFolder(tmp_path / "run").stop_requested()
    assert view.load_config() == RunConfig()  # reads still work

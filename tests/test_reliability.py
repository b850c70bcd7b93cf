"""Runs that were killed, locked, torn or refused by their disk: readers and resume still make sense of them.

Short feature-extraction runs on real demo photos and the real Lite0 backbone, in this
process. Disk faults come from the fault hook of ``engine.core.atomic``
(``TRANSFER_STUDIO_INJECT_FAULTS``), which every write site calls; a read-only data folder
is a fault there too, since root (which runs the tests in CI) ignores permission bits.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import filelock
import pytest
from demo_photos import copy_demo

from engine.core.atomic import FAULTS_ENV_VAR
from engine.core.config import RunConfig, load_config
from engine.core.errors import CheckpointError, ConfigError, RunLocked, StorageError
from engine.core.paths import PROJECT_FOLDER_NAME, choose_project_dir, project_dir_for, user_data_dir
from engine.data.decoded_cache import DecodedCache
from engine.export.exporter import export_model
from engine.models.checkpoint import load_checkpoint
from engine.training.run_lock import LOCK_FILE, lock_held
from engine.training.run_summary import read_run
from engine.training.runfolder import RunFolder, read_events
from engine.training.train import resume, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("reliability") / "photos", classes=3, per_class=8)


def quick_config(data: Path, epochs: int = 2) -> RunConfig:
    return RunConfig().with_changes(**{"data.path": str(data), "data.num_workers": 0, "optim.epochs": epochs,
                                       "optim.batch_size": 8})


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*.tmp")]


def test_the_status_names_its_writer_and_the_lock_ends_with_the_run(photos: Path, tmp_path: Path) -> None:
    result = train(quick_config(photos), tmp_path / "run")
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "finished"
    assert (status["pid"], status["host"]) == (os.getpid(), socket.gethostname())
    assert isinstance(status["heartbeat"], float) and status["started"]
    assert lock_held(result.run_dir) is False
    assert read_run(result.run_dir).state == "finished"


def test_a_run_killed_before_its_first_checkpoint_starts_again_on_resume(photos: Path, tmp_path: Path) -> None:
    # What a kill during data preparation leaves: a config, a "running" status, no checkpoint.
    folder = RunFolder.create(tmp_path / "run", quick_config(photos))
    folder.write_event("dataset_scanned", root=photos, classes=["a"], counts={}, problems=0, excluded=0)
    folder.write_status("running", epoch=1, num_epochs=2)
    assert read_run(folder.path).state == "interrupted"

    result = resume(folder.path)

    assert result.state == "finished"
    names = [event["event"] for event in read_events(folder.path)]
    assert names.index("run_restarted") < names.index("run_started")
    assert [row["epoch"] for row in folder.read_metrics()] == [1.0, 2.0]


def test_a_finished_run_says_how_to_train_further_and_does(photos: Path, tmp_path: Path) -> None:
    run_dir = train(quick_config(photos), tmp_path / "run").run_dir

    with pytest.raises(CheckpointError, match=r"finished all 2 epochs; .* --resume .* --epochs 3"):
        resume(run_dir)
    with pytest.raises(ConfigError, match="--epochs: the run already has 2 epochs"):
        resume(run_dir, epochs=2)
    result = resume(run_dir, epochs=3)

    assert result.state == "finished"
    assert [row["epoch"] for row in RunFolder(run_dir).read_metrics()] == [1.0, 2.0, 3.0]
    assert load_config(run_dir / "config.yaml").optim.epochs == 3


def test_a_run_another_process_writes_is_refused_naming_it(photos: Path, tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", quick_config(photos))
    (folder.path / "status.json").write_text(json.dumps({"state": "running", "pid": 4242, "host": "gpu-node-7"}))
    with filelock.FileLock(folder.path / LOCK_FILE):  # another FileLock of this process conflicts, as a process would
        assert read_run(folder.path).state == "running"
        with pytest.raises(RunLocked, match="process 4242 on gpu-node-7 is writing this run"):
            resume(folder.path)
        refused = subprocess.run([sys.executable, "main.py", "train", "--resume", str(folder.path)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {folder.path}: process 4242 on gpu-node-7 is writing this run; stop it first, or wait for it to end"]
    assert read_run(folder.path).state == "interrupted"  # the lock is gone: its writer ended without a final event


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", ""])
def test_a_garbage_status_or_lock_reads_as_interrupted(photos: Path, tmp_path: Path, garbage: str) -> None:
    folder = RunFolder.create(tmp_path / "run", quick_config(photos))
    (folder.path / "status.json").write_text(garbage)
    (folder.path / LOCK_FILE).write_bytes(b"\x00garbage")
    summary = read_run(folder.path)
    assert (summary.state, summary.reason) == ("interrupted", summary.reason)
    assert "resume it" in summary.reason


def test_a_torn_last_line_is_skipped_by_readers_and_cut_by_resume(photos: Path, tmp_path: Path) -> None:
    run_dir = train(quick_config(photos, epochs=1), tmp_path / "run").run_dir
    folder = RunFolder(run_dir)
    complete = read_events(run_dir)
    with open(folder.events_path, "ab") as handle:  # a power cut in the middle of an append
        handle.write(b'{"schema": 1, "event": "epoch_fin')
    metrics = folder.metrics_path.read_text()
    folder.metrics_path.write_text(metrics + "2,0.5,0.")

    assert read_events(run_dir) == complete
    assert [row["epoch"] for row in folder.read_metrics()] == [1.0]
    assert read_run(run_dir).state == "finished"

    resume(run_dir, epochs=2)
    lines = folder.events_path.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [row["epoch"] for row in folder.read_metrics()] == [1.0, 2.0]


# Every file a run writes, the write that fails (the first or a later one), and whether a
# "last" checkpoint is published before it.
WRITE_SITES = [
    ("*/checkpoints/last.safetensors@2", True),
    ("*/checkpoints/last.json@1", True),  # the weights are published, their readable copy is not
    ("*/checkpoints/last.json@2", True),  # the same at the last epoch: resume only writes the end
    ("*/checkpoints/best.safetensors@1", False),
    ("*/metrics.csv@2", True),
    ("*/status.json@3", False),
    ("*/events.jsonl@4", False),
    ("*/" + PROJECT_FOLDER_NAME + "/health.json@1", False),
]


@pytest.mark.parametrize(("site", "published"), WRITE_SITES, ids=[site for site, _ in WRITE_SITES])
@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EIO"])
def test_a_disk_fault_at_any_write_fails_the_run_in_one_line_and_loses_nothing(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: str, published: bool, code: str,
) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=8) if "health" in site else photos
    run_dir = tmp_path / "run"
    monkeypatch.setenv(FAULTS_ENV_VAR, f"{code}:{tmp_path}/{site}")

    with pytest.raises(StorageError) as raised:
        train(quick_config(data), run_dir)

    assert raised.value.errno == getattr(errno, code)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("cannot write ") and " free of " in message
    assert temp_files(tmp_path) == []
    if published:
        load_checkpoint(run_dir / "checkpoints" / "last.safetensors", with_training_state=True)
    monkeypatch.delenv(FAULTS_ENV_VAR)
    if run_dir.exists():
        summary = read_run(run_dir)
        assert summary.state in ("failed", "interrupted")
        assert resume(run_dir).state == "finished"  # the disk has room again


def test_caches_that_cannot_be_written_are_one_warning_not_a_failed_run(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(FAULTS_ENV_VAR, "ENOSPC:*/features/*")
    with caplog.at_level(logging.WARNING):
        result = train(quick_config(photos).with_changes(**{"data.input_size": 160}), tmp_path / "run")
    assert result.state == "finished"
    assert len([record for record in caplog.records if "feature cache" in record.getMessage()]) == 1

    caplog.clear()
    cache = DecodedCache(tmp_path / "decoded")
    monkeypatch.setenv(FAULTS_ENV_VAR, f"ENOSPC:{tmp_path}/decoded/*")
    image = __import__("PIL.Image", fromlist=["Image"]).new("RGB", (8, 8))
    with caplog.at_level(logging.WARNING):
        for sha in ("a" * 64, "b" * 64):
            cache.put(sha, 8, image)
    assert len(caplog.records) == 1 and "no space left on device" in caplog.records[0].getMessage()
    assert temp_files(tmp_path) == []


def test_a_read_only_data_folder_gets_its_project_in_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=8)
    read_only = f"EROFS:{data}/*"
    monkeypatch.setenv(FAULTS_ENV_VAR, read_only)
    project = project_dir_for(data)
    assert project.parent == user_data_dir("projects") and project.name.startswith("photos-")

    scanned = subprocess.run([sys.executable, "main.py", "scan", str(data)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, check=False, env={**os.environ, FAULTS_ENV_VAR: read_only})
    assert scanned.returncode == 0, scanned.stderr
    assert scanned.stderr.strip() == f"project folder: {project} ({data} cannot be written)"
    assert (project / "health.json").is_file()

    result = train(quick_config(data, epochs=1), None)
    assert result.state == "finished" and result.run_dir.parent == project / "runs"
    assert not (data / PROJECT_FOLDER_NAME).exists()

    monkeypatch.delenv(FAULTS_ENV_VAR)  # writable again later: the runs are found where they were
    assert project_dir_for(data) == project


def test_a_chosen_project_folder_is_remembered_and_bad_ones_are_refused(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=8)
    chosen = tmp_path / "elsewhere"
    assert choose_project_dir(data, chosen) == chosen
    assert project_dir_for(data) == chosen
    assert project_dir_for(data / "bag") == data / "bag" / PROJECT_FOLDER_NAME  # another folder is unaffected
    assert choose_project_dir(data, None) == data / PROJECT_FOLDER_NAME

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    read_only = tmp_path / "read-only"
    for bad, expected in ((a_file, f"{a_file} is a file, not a folder"), (read_only, f"cannot write in {read_only}")):
        env = {**os.environ, FAULTS_ENV_VAR: f"EROFS:{read_only}/*"}
        refused = subprocess.run([sys.executable, "main.py", "scan", str(data), "--project-dir", str(bad)], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60, check=False, env=env)
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1 and refused.stderr.startswith("error: --project-dir: ")
        assert expected in refused.stderr


def test_an_export_the_disk_refuses_keeps_the_previous_export_and_leaves_no_staging(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = train(quick_config(photos, epochs=1), tmp_path / "run").run_dir
    out = tmp_path / "exports"
    export_model(run_dir, out, ["timm"])
    published = {path: path.read_bytes() for path in (out / "timm").iterdir()}

    monkeypatch.setenv(FAULTS_ENV_VAR, f"ENOSPC:{out}/.timm.staging-*/model.safetensors")
    with pytest.raises(StorageError, match=r"no space left on device \(disk .* free of "):
        export_model(run_dir, out, ["timm"])

    assert sorted(path.name for path in out.iterdir()) == ["timm"]
    assert {path: path.read_bytes() for path in (out / "timm").iterdir()} == published

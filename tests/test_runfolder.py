"""Run folder format and checkpoints: atomic writes, event tailing, safetensors round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from engine.core.config import RunConfig
from engine.core.errors import CheckpointError
from engine.core.events import EpochFinished, ImageSkipped
from engine.models.checkpoint import load_checkpoint, read_checkpoint_metadata, resolve_checkpoint_path, save_checkpoint
from engine.training.runfolder import EventTail, RunFolder, read_events


def test_events_are_whole_lines_and_tail_skips_a_partial_line(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", RunConfig())
    folder.write_event(ImageSkipped.event, epoch=1, step=0, split="train", path=tmp_path, reason="truncated")
    tail = EventTail(folder.events_path)
    first = tail.read_new()
    assert [event["event"] for event in first] == [ImageSkipped.event]
    assert first[0]["schema"] == 1 and first[0]["path"] == str(tmp_path)
    with open(folder.events_path, "a") as handle:
        handle.write('{"event": "epoch_fin')  # a writer caught mid-line
    assert tail.read_new() == []
    with open(folder.events_path, "a") as handle:
        handle.write('ished", "epoch": 1, "metrics": {}}\n')
    assert [event["event"] for event in tail.read_new()] == [EpochFinished.event]
    assert [event["event"] for event in read_events(folder.path)] == [ImageSkipped.event, EpochFinished.event]


def test_create_refuses_an_existing_run_and_open_needs_one(tmp_path: Path) -> None:
    RunFolder.create(tmp_path / "run", RunConfig())
    with pytest.raises(CheckpointError, match="already holds a run; resume it"):
        RunFolder.create(tmp_path / "run", RunConfig())
    with pytest.raises(CheckpointError, match="not a run folder"):
        RunFolder.open(tmp_path / "elsewhere")


def test_metrics_csv_and_status(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", RunConfig())
    folder.write_metrics([{"epoch": 1, "train_loss": 1.5, "val_loss": 1.2, "val_top1": 0.5, "val_top5": None}])
    assert folder.metrics_path.read_text().splitlines()[0].startswith("epoch,train_loss,train_top1,val_loss,val_top1")
    assert folder.read_metrics()[0]["val_top1"] == 0.5
    folder.write_status("running", epoch=1)
    assert folder.read_status()["state"] == "running"
    assert not list(folder.path.glob("*.tmp"))


def test_checkpoint_round_trip_with_optimizer_state(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "last.safetensors", model_state=model.state_dict(),
                           metadata={"classes": ["a", "b", "c"]}, optimizer_state=optimizer.state_dict())
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["a", "b", "c"]
    loaded = load_checkpoint(path, with_training_state=True)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model_state[key], value)
    restored = torch.optim.AdamW(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).parameters(), lr=0.1)
    restored.load_state_dict(loaded.optimizer_state)
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert read_checkpoint_metadata(tmp_path / "last.json")["format_version"] == 1


def test_checkpoint_loading_refuses_temp_foreign_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="temporary file"):
        resolve_checkpoint_path(tmp_path / "last.safetensors.123.tmp")
    with pytest.raises(CheckpointError, match="never loaded"):
        (tmp_path / "model.pth").write_bytes(b"x")
        resolve_checkpoint_path(tmp_path / "model.pth")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a Transfer Studio checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    (tmp_path / "damaged.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        load_checkpoint(tmp_path / "damaged.safetensors")
    save_checkpoint(tmp_path / "best.safetensors", model_state={"w": torch.ones(1)}, metadata={})
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "best.safetensors", with_training_state=True)

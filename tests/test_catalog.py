"""The project's model list: checkpoints of runs with their scores, ensembles, damaged files."""

from __future__ import annotations

from pathlib import Path

from engine.core.paths import project_dir_for
from engine.evaluation.catalog import describe_checkpoint, describe_manifest, list_models


def test_lists_every_checkpoint_newest_run_first_then_ensembles(demo_project: Path) -> None:
    entries = list_models(project_dir_for(demo_project))

    checkpoints = [entry for entry in entries if entry.kind == "checkpoint"]
    assert checkpoints[0].run_dir.name.startswith("20261124-100001")  # the newer run first
    assert checkpoints[0].name == "best"
    assert {entry.name for entry in checkpoints} >= {"best", "last"}
    assert all(0 <= entry.val_top1 <= 1 and entry.val_loss > 0 for entry in checkpoints)
    assert all(len(entry.classes) == 4 for entry in entries)
    ensemble = entries[-1]
    assert ensemble.kind == "ensemble" and ensemble.label == "ensemble · pair (2 members)"
    assert all(member.is_file() for member in ensemble.members)


def test_damaged_files_are_listed_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "runs" / "r" / "checkpoints" / "best.safetensors"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    manifest = tmp_path / "ensembles" / "odd.json"
    manifest.parent.mkdir()
    manifest.write_text('{"kind": "something else"}')

    entries = list_models(tmp_path)

    assert [entry.kind for entry in entries] == ["unreadable", "unreadable"]
    assert "best.safetensors" in entries[0].problem
    assert "odd.json" in describe_manifest(manifest).problem
    assert not describe_checkpoint(broken).is_usable


def test_a_project_without_models_lists_nothing(tmp_path: Path) -> None:
    assert list_models(tmp_path / "missing") == []

"""The project's model list: checkpoints of runs with their scores, ensembles, damaged files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
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


def test_listing_and_reading_models_never_loads_torch(demo_project: Path) -> None:
    # The GUI lists, describes and shows models in its own process, which must start without torch.
    script = textwrap.dedent(f"""
        import sys
        from engine.core.paths import project_dir_for
        from engine.evaluation.activation_map import ActivationMap, overlay
        from engine.evaluation.catalog import list_models
        from engine.evaluation.manifest import load_manifest
        from engine.evaluation.predictions import Prediction, ProbabilityModel, write_predictions_csv
        from engine.models.backbone_info import WEIGHTS_AUTO, BackboneInfo
        from engine.models.checkpoint_metadata import read_checkpoint_metadata

        entries = list_models(project_dir_for({str(demo_project)!r}))
        manifest = load_manifest(entries[-1].path)
        assert read_checkpoint_metadata(manifest.members[0].path)["classes"] == list(manifest.classes)
        heavy = sorted({{"torch", "torchvision", "timm", "albumentations"}} & set(sys.modules))
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr


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

"""The recipe commands through the real CLI: preview, sanity, lr-find."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from demo_photos import copy_demo, demo_classes
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo photos of every class (a copy: the commands write their scan and project files beside the photos)."""
    return copy_demo(tmp_path_factory.mktemp("cli") / "demo", classes=len(demo_classes()), per_class=12)


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_preview_writes_a_grid(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = run_cli("preview", str(demo), "--out", str(out), "--samples", "8", "--set", "augment.preset=strong")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as grid:
        assert grid.width > 400 and grid.height > 200


def test_sanity_passes_on_the_demo_with_the_pretrained_backbone(demo: Path, tmp_path: Path) -> None:
    result = run_cli("sanity", str(demo), "--images", "20", "--out", str(tmp_path / "sanity"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("passed: memorised all 20 images")


def test_lr_find_streams_events_and_ends_with_a_suggestion(demo: Path, tmp_path: Path) -> None:
    result = run_cli("lr-find", str(demo), "--steps", "40", "--out", str(tmp_path / "sweep"), "--events-only")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [event["event"] for event in events]
    assert "lr_find_started" in names and names.count("lr_find_step") >= 10 and names[-1] == "lr_find_finished"
    assert events[-1]["suggestion"] > 0 and events[-1]["reason"]
    assert (tmp_path / "sweep" / "lr_find.png").is_file() and (tmp_path / "sweep" / "lr_find.csv").is_file()

"""The command line itself (parsing and refusing before torch loads) and the recipe commands through it:
preview, sanity, lr-find."""

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


# Modules that take seconds to import: the command line must be parsed and refused without them.
HEAVY_MODULES = ("torch", "torchvision", "timm", "albumentations")


def test_building_the_parser_imports_nothing_heavy() -> None:
    script = ("import json, sys, cli\n"
              "cli.build_parser().parse_args(['train', 'photos', '--mode', 'fine_tune', '--set', 'optim.epochs=3'])\n"
              "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "cli.train" in loaded and not loaded & set(HEAVY_MODULES)


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        (("train", "resources/demo", "--set", "bad"),
         "error: --set 'bad': expected key=value, e.g. optim.learning_rate=3e-4"),
        (("train", "resources/demo", "--set", "optim.learning_rat=1"),
         "error: optim.learning_rat: unknown setting; did you mean 'learning_rate'?"),
        (("train", "resources/demo", "--set", "optim.learning_rate=-1"),
         "error: optim.learning_rate: must be > 0, got -1.0"),
        (("train", "resources/demo", "--set", "doctor.checks=[initial_los]"),
         "error: doctor.checks[0]: must be one of the registered doctor checks (initial_loss, divergence, "
         "learning_rate_too_low, learning_rate_collapsed, update_ratio, overfitting, bad_start, class_imbalance), "
         "got 'initial_los'"),
        (("lr-find", "/no/such/folder", "--lr", "0.1"), "error: data folder not found: /no/such/folder"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_torch_loads(arguments: tuple[str, ...], refusal: str) -> None:
    # -X importtime writes a line per imported module to stderr: the refusal must be the only other line.
    result = subprocess.run([sys.executable, "-X", "importtime", "main.py", *arguments], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2
    assert said == [refusal]
    assert "cli.options" in imported and not set(imported) & set(HEAVY_MODULES)


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

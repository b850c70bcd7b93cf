"""Shared fixtures: offscreen Qt, no network, a private user cache for the whole session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports Qt, albumentations or huggingface_hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
# Weights a developer downloaded earlier must not hide the offline path from the tests.
_private_hub = tempfile.mkdtemp(prefix="transfer-studio-test-hub-")
os.environ["HF_HOME"] = os.path.join(_private_hub, "huggingface")
os.environ["TORCH_HOME"] = os.path.join(_private_hub, "torch")
os.environ.setdefault("TRANSFER_STUDIO_CACHE_DIR", tempfile.mkdtemp(prefix="transfer-studio-test-cache-"))

import engine  # noqa: E402,F401  (applies the torchvision fix before any test imports timm)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished feature-extraction run on the bundled demo with default settings (real Lite0 weights)."""
    from engine.config import RunConfig
    from engine.train import train

    demo = Path(__file__).resolve().parents[1] / "resources" / "demo"
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    config = RunConfig().with_changes(**{"data.path": str(demo), "data.num_workers": 0})
    train(config, run_dir)
    return run_dir


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small project with history: 4 demo classes x 25 photos, two finished runs and an ensemble of both.

    The runs are feature extraction on real Lite0 weights (seeds 0 and 1, 3 epochs), written
    where the app keeps them (``DATA/.transfer-studio/runs``); the manifest is in
    ``DATA/.transfer-studio/ensembles/pair.json``. Tests must not add runs to it.
    """
    from demo_photos import copy_demo

    from engine.catalog import ensembles_folder
    from engine.config import RunConfig
    from engine.ensemble import build_manifest, save_manifest
    from engine.paths import project_dir_for
    from engine.train import train

    data = copy_demo(tmp_path_factory.mktemp("project") / "photos", classes=4, per_class=25)
    project = project_dir_for(data)
    runs = []
    for seed in (0, 1):
        config = RunConfig().with_changes(**{
            "data.path": str(data), "data.num_workers": 0, "optim.epochs": 3, "seed": seed})
        runs.append(train(config, project / "runs" / f"20261124-10000{seed}-tf_efficientnet_lite0").best_checkpoint)
    save_manifest(build_manifest(runs), ensembles_folder(project) / "pair.json")
    return data

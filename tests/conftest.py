"""Shared fixtures: offscreen Qt, no network, a private user cache and data folder, and a repository no test may change.

Every test works on temporary copies: a file added, changed or removed under the
repository fails the test that did it, and the session (so ``make test`` fails too).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
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
# Per-user projects (of read-only data folders) and chosen project folders: never the developer's own.
os.environ["TRANSFER_STUDIO_DATA_DIR"] = tempfile.mkdtemp(prefix="transfer-studio-test-data-")

from demo_photos import copy_whole_demo  # noqa: E402
from screenshots import SCREENSHOT_DIR  # noqa: E402

import engine  # noqa: E402,F401  (applies the torchvision fix before any test imports timm)

REPOSITORY = Path(__file__).resolve().parents[1]
# `make mutants` runs the tests in mutmut's copy of the tree, where mutmut writes its results as they come.
_WATCHED = REPOSITORY.name != "mutants"
# Tools' own folders, and where a developer asked for screenshots (TRANSFER_STUDIO_SCREENSHOTS).
_NOT_WATCHED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".import_linter_cache"}


def _repository_state() -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime)}`` of every file and folder of the working tree."""
    state: dict[str, tuple[int, int]] = {}
    for folder, subfolders, files in os.walk(REPOSITORY):
        subfolders[:] = [name for name in subfolders if name not in _NOT_WATCHED and not name.endswith(".egg-info")
                         and Path(folder, name) != SCREENSHOT_DIR]
        for name in subfolders:
            if Path(folder, name) not in SCREENSHOT_DIR.parents:  # made to hold the screenshots
                state[os.path.relpath(os.path.join(folder, name), REPOSITORY) + os.sep] = (0, 0)
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            state[os.path.relpath(os.path.join(folder, name), REPOSITORY)] = (info.st_size, info.st_mtime_ns)
    return state


def _changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    added = [f"added {path}" for path in sorted(after.keys() - before.keys())]
    removed = [f"removed {path}" for path in sorted(before.keys() - after.keys())]
    changed = [f"changed {path}" for path in sorted(before.keys() & after.keys()) if before[path] != after[path]]
    return added + removed + changed


def _describe(changes: list[str]) -> str:
    more = f" (and {len(changes) - 5} more)" if len(changes) > 5 else ""
    return "; ".join(changes[:5]) + more


def pytest_sessionstart(session: pytest.Session) -> None:
    if _WATCHED:
        session.config.stash[_SESSION_STATE] = _repository_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_SESSION_STATE, None)
    changes = _changes(before, _repository_state()) if before is not None else []
    if changes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"FAILED: the tests changed the repository: {_describe(changes)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SESSION_STATE = pytest.StashKey[dict[str, tuple[int, int]]]()


@pytest.fixture(scope="module", autouse=True)
def _repository_unchanged() -> Iterator[None]:
    """Fail the module whose tests wrote into the repository (session fixtures are caught at the session's end)."""
    before = _repository_state() if _WATCHED else {}
    yield
    changes = _changes(before, _repository_state()) if _WATCHED else []
    if changes:
        pytest.fail(f"these tests changed the repository: {_describe(changes)}", pytrace=False)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished feature-extraction run on a copy of the bundled demo with default settings (real Lite0 weights)."""
    from engine.core.config import RunConfig
    from engine.training.train import train

    demo = copy_whole_demo(tmp_path_factory.mktemp("demo") / "photos")
    run_dir = demo.parent / "run"
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

    from engine.core.config import RunConfig
    from engine.core.paths import project_dir_for
    from engine.evaluation.catalog import ensembles_folder
    from engine.evaluation.ensemble import build_manifest, save_manifest
    from engine.training.train import train

    data = copy_demo(tmp_path_factory.mktemp("project") / "photos", classes=4, per_class=25)
    project = project_dir_for(data)
    runs = []
    for seed in (0, 1):
        config = RunConfig().with_changes(**{
            "data.path": str(data), "data.num_workers": 0, "optim.epochs": 3, "seed": seed})
        runs.append(train(config, project / "runs" / f"20261124-10000{seed}-tf_efficientnet_lite0").best_checkpoint)
    save_manifest(build_manifest(runs), ensembles_folder(project) / "pair.json")
    return data


@pytest.fixture(scope="module")
def user_settings_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where QSettings built from organisation and application names go, for a module's tests: a temporary folder."""
    from PySide6.QtCore import QSettings

    folder = tmp_path_factory.mktemp("qsettings")
    for settings_format in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
            QSettings.setPath(settings_format, scope, str(folder))
    return folder


MAIN_WINDOW_SCAN_TIMEOUT_MS = 30_000


@pytest.fixture
def main_windows(qtbot, qapp) -> Iterator[list]:
    """Main windows a test made (it appends them), in the app's style; closed after it once their scans stopped."""
    from PySide6.QtWidgets import QApplication

    from gui.style import apply_style

    apply_style(qapp)
    made: list = []
    yield made
    for window in made:
        window.close()
        # Scans are aborted on close; let their threads end before tmp_path goes.
        assert window.scanner.wait_for_done(MAIN_WINDOW_SCAN_TIMEOUT_MS)
        window.deleteLater()
    QApplication.processEvents()

"""``main.py cache info|clear``: the decoded-image cache from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.decoded_cache import DecodedCache, decoded_cache_dir

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _cached_dataset(tmp_path: Path) -> Path:
    data = tmp_path / "photos"
    (data / "cats").mkdir(parents=True)
    image = data / "cats" / "a.jpg"
    Image.fromarray(np.full((120, 160, 3), 90, dtype=np.uint8)).save(image)
    DecodedCache(decoded_cache_dir(data)).load(image, "ab" * 32, 64)
    return data


def test_info_then_clear(tmp_path: Path) -> None:
    data = _cached_dataset(tmp_path)
    info = run_cli("cache", "info", str(data))
    assert info.returncode == 0, info.stderr
    assert "1 decoded images" in info.stdout
    cleared = run_cli("cache", "clear", str(data))
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared 1 decoded images" in cleared.stdout
    assert DecodedCache(decoded_cache_dir(data)).usage().entries == 0
    assert (data / "cats" / "a.jpg").exists()


def test_missing_data_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("cache", "clear", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nowhere" in result.stderr


def test_unknown_action_is_a_usage_error() -> None:
    result = run_cli("cache", "shrink")
    assert result.returncode == 2 and "shrink" in result.stderr

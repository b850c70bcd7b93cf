"""The data doctor (``engine.review``, ``main.py review``) on real demo photos and the offline Lite0 weights.

Each dataset is reviewed once per module; the features of the demo photos are computed once per
session into the test cache, so later reviews read them back.
"""

from __future__ import annotations

import csv
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PIL import Image, ImageDraw

from engine.review.features import review_features
from engine.review.finding import FINDING_KINDS
from engine.review.findings import ReviewReport, review_dataset

ROOT = Path(__file__).resolve().parents[1]
FLIPPED_SHARE = 0.1
# Measured with these photos and seed: precision 1.0, recall 0.5 (seeds 1 and 2: 1.0 and 0.7, 1.0 and 0.4). Only
# 10 flipped photos among 100: the bench (bench.label_noise) measures the goal on 500 and more.
PRECISION_FLOOR = 0.7
RECALL_FLOOR = 0.3


def _flip_labels(root: Path, share: float, seed: int) -> set[str]:
    """Move a seeded ``share`` of the photos into another class's folder; returns their new paths."""
    rng = random.Random(seed)
    classes = sorted(folder.name for folder in root.iterdir())
    photos = sorted(root.glob("*/*.png"))
    moved = set()
    for photo in rng.sample(photos, round(share * len(photos))):
        target = root / rng.choice([name for name in classes if name != photo.parent.name]) / photo.name
        shutil.move(photo, target)
        moved.add(str(target))
    return moved


def _draw_shapes(path: Path) -> None:
    """A photo of another kind: bright coloured shapes, nothing like a grey garment on black."""
    image = Image.new("RGB", (64, 64), (250, 240, 30))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, 34, 34), fill=(220, 20, 60))
    draw.rectangle((30, 28, 60, 60), fill=(30, 90, 230))
    draw.polygon([(5, 60), (25, 38), (40, 62)], fill=(20, 180, 60))
    image.save(path)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReviewReport, set[str]]:
    root = copy_demo(tmp_path_factory.mktemp("flipped") / "photos", classes=5, per_class=20)
    moved = _flip_labels(root, FLIPPED_SHARE, seed=0)
    return review_dataset(root), moved


@pytest.fixture(scope="module")
def presplit(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReviewReport, Path, Path, Path]:
    """Train and val folders; a resized JPEG copy of a train photo in val, and a drawn photo in train."""
    root = tmp_path_factory.mktemp("presplit") / "photos"
    copy_demo(root / "train", classes=3, per_class=15)
    copy_demo(root / "val", classes=3, per_class=5, skip=15)
    # Of the 45 train photos, 44 keep 0.94 or more similarity through this change (one falls to 0.915,
    # below the closest two distinct demo photos at 0.931); the first is one of the 44.
    original = sorted((root / "train").glob("*/*.png"))[0]
    copy = root / "val" / original.parent.name / "resized_copy.jpg"
    image = Image.open(original).convert("RGB")
    image.resize((96, 96), Image.Resampling.BILINEAR).save(copy, quality=90)
    outlier = root / "train" / original.parent.name / "shapes.png"
    _draw_shapes(outlier)
    return review_dataset(root), original, copy, outlier


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReviewReport, Path]:
    """A class of 1 photo, a class of 2 (too few for 5 folds) and one of 6."""
    root = copy_demo(tmp_path_factory.mktemp("small") / "photos", classes={"bag": 1, "coat": 2, "dress": 6})
    return review_dataset(root), root


def _found(report: ReviewReport, kind: str) -> list:
    return [finding for finding in report.findings if finding.kind == kind]


def test_flipped_labels_are_found(flipped: tuple[ReviewReport, set[str]]) -> None:
    report, moved = flipped
    issues = _found(report, "label_issue")
    found = {issue.path for issue in issues}
    assert len(found & moved) / len(found) >= PRECISION_FLOOR
    assert len(found & moved) / len(moved) >= RECALL_FLOOR
    assert [issue.rank for issue in issues] == list(range(1, len(issues) + 1))
    assert all(issue.suggested_label != issue.given_label for issue in issues)
    assert issues[0].reason.startswith(f"looks like '{issues[0].suggested_label}' to a model that never saw it: ")
    assert report.folds == 5


def test_resized_copy_is_a_near_duplicate_across_splits(presplit: tuple[ReviewReport, Path, Path, Path]) -> None:
    report, original, copy, _ = presplit
    duplicates = _found(report, "near_duplicate")
    # Exactly the planted pair: distinct demo photos are never this similar.
    assert [(Path(item.path), Path(item.other_path), item.relation) for item in duplicates] == [
        (copy, original, "across_splits")]
    assert duplicates[0].suggested_label == original.parent.name
    assert duplicates[0].split == "val"


def test_a_different_kind_of_photo_is_the_first_outlier(presplit: tuple[ReviewReport, Path, Path, Path]) -> None:
    report, _, _, outlier = presplit
    outliers = _found(report, "outlier")
    assert Path(outliers[0].path) == outlier
    assert outliers[0].rank == 1
    assert "far from the other" in outliers[0].reason


def test_tiny_classes_are_named_and_need_fewer_folds(small: tuple[ReviewReport, Path]) -> None:
    report, _ = small
    assert report.photos == 9
    assert report.folds == 2
    assert any("'bag' has only 1 photo" in note for note in report.skipped)
    assert any("2 folds instead of 5" in note and "'coat'" in note for note in report.skipped)
    assert all(finding.given_label != "bag" for finding in _found(report, "label_issue"))
    assert "reviewed 9 photos of 3 classes" in report.summary()


def test_cli_writes_the_findings_csv(small: tuple[ReviewReport, Path], tmp_path: Path) -> None:
    _, root = small
    csv_path, json_path = tmp_path / "findings.csv", tmp_path / "findings.json"
    result = subprocess.run(
        [sys.executable, "main.py", "review", str(root), "--csv", str(csv_path), "--json", str(json_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with csv_path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert {"path", "kind", "given_label", "suggested_label", "score", "other_path", "reason"} <= set(rows[0] or {})
    assert all(row["kind"] in FINDING_KINDS for row in rows)
    assert json_path.is_file()
    assert f"findings saved to {csv_path}" in result.stdout


def test_cli_refuses_missing_data_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "main.py", "review", str(tmp_path / "nowhere")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_a_damaged_photo_is_named_and_skipped(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "photos", classes=3, per_class=6)
    damaged = sorted((data / "bag").glob("*.png"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])  # the header reads, the pixels do not

    features = review_features(data)

    assert damaged not in features.paths and len(features.paths) == 17
    assert [note for note in features.notes if note.startswith(f"{damaged}: ")], features.notes

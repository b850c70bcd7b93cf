"""The dataset map's layout (``engine.review.projection``) and reading a saved review back (``saved_review``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.core.errors import DatasetError
from engine.review.finding import Finding, MapPoint
from engine.review.findings import ReviewReport
from engine.review.projection import MAP_CACHE_NAME, cached_projection, project_features
from engine.review.saved_review import read_review


def _blobs(per_blob: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated clusters in 64 dimensions, and which cluster each row is from."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (3, 64)) * 4
    membership = np.repeat(np.arange(3), per_blob)
    return (centres[membership] + rng.normal(0, 0.3, (3 * per_blob, 64))).astype(np.float32), membership


def test_the_layout_keeps_clusters_apart_and_is_repeatable() -> None:
    features, membership = _blobs()
    layout = project_features(features, seed=0)
    assert layout.shape == (75, 2) and np.abs(layout).max() == pytest.approx(1.0)
    centres = np.array([layout[membership == blob].mean(axis=0) for blob in range(3)])
    spread = max(np.linalg.norm(layout[membership == blob] - centres[blob], axis=1).mean() for blob in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert min(gaps) > 3 * spread, "each cluster is a separate island"
    np.testing.assert_array_equal(layout, project_features(features, seed=0))
    assert project_features(features[:2]).shape == (2, 2)
    assert project_features(features[:10]).shape == (10, 2), "too few for t-SNE: PCA's plane"


def test_the_layout_is_cached_by_features_and_a_read_only_project_is_no_error(tmp_path: Path) -> None:
    features, _ = _blobs(per_blob=5)  # few enough for PCA's plane: the cache is what is tested here
    first = cached_projection(features, tmp_path)
    cache = tmp_path / MAP_CACHE_NAME
    stored = json.loads(cache.read_text())
    stored["xy"] = [0.5] * len(stored["xy"])  # what the cache says is what comes back for these features
    cache.write_text(json.dumps(stored))
    assert (cached_projection(features, tmp_path) == 0.5).all()
    np.testing.assert_allclose(cached_projection(features * 2, tmp_path), first, atol=1e-4), "other features: anew"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert cached_projection(features, not_a_folder).shape == (15, 2)


def test_a_saved_review_reads_back_and_a_damaged_one_names_its_file(tmp_path: Path) -> None:
    finding = Finding("/data/cat/a.png", "label_issue", "cat", "dog", 0.9, 1, split="train", reason="looks like dog")
    points = [MapPoint("/data/cat/a.png", 0, "train", 0.25, -0.5), MapPoint("/data/dog/b.png", 1, "val", -1.0, 1.0)]
    report = ReviewReport("/data", "tf_efficientnet_lite0", 2, ("cat", "dog"), [finding], [], 2, map=points)
    file = report.save_json(tmp_path / "review.json")
    saved = read_review(file)
    assert saved.findings == [finding] and saved.map == points and saved.classes == ("cat", "dog")
    assert saved.counts == {"label_issue": 1, "near_duplicate": 0, "outlier": 0}
    payload = json.loads(file.read_text())
    payload["map"]["labels"] = [0, 7]
    file.write_text(json.dumps(payload))
    with pytest.raises(DatasetError, match=r"review\.json: not a review that can be read"):
        read_review(file)
    file.write_text("{")
    with pytest.raises(DatasetError, match=r"review\.json"):
        read_review(file)

"""The dataset map: every photo's features laid out in 2-D, so that classes, clusters and strays can be seen.

Features are scaled to unit length (cosine geometry, as the other findings use), reduced by PCA to at
most 50 dimensions for speed, then laid out by openTSNE (FFT-accelerated t-SNE: 20,000 photos in
under a minute on two cores, and no numba). The layout is cached in the project keyed by the
features' bytes, so a review of unchanged photos reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

from engine.core.atomic import atomic_write_json
from engine.review.similarity import unit_length

MAP_CACHE_NAME = "review_map.json"
_PCA_DIMENSIONS = 50
_SMALLEST_FOR_TSNE = 20  # below this t-SNE has too few neighbours to say anything; PCA's plane is shown


def project_features(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Lay out ``(N, D)`` features in 2-D; returns ``(N, 2)`` float32 coordinates, scaled to [-1, 1].

    Args:
        features: one row per photo.
        seed: the same seed gives the same layout of the same features.
    """
    from sklearn.decomposition import PCA  # heavy, and only needed here

    count = len(features)
    if count < 3:
        return np.zeros((count, 2), dtype=np.float32)
    unit = unit_length(features.astype(np.float32))
    components = min(_PCA_DIMENSIONS, count - 1, unit.shape[1])
    reduced = PCA(components, random_state=seed).fit_transform(unit)
    if count < _SMALLEST_FOR_TSNE:
        layout = reduced[:, :2] if components >= 2 else np.pad(reduced, ((0, 0), (0, 1)))
    else:
        from openTSNE import TSNE

        # Perplexity must stay well below the number of neighbours a point has.
        perplexity = min(30.0, (count - 1) / 3)
        layout = np.asarray(TSNE(perplexity=perplexity, n_jobs=2, random_state=seed).fit(reduced))
    span = np.abs(layout).max()
    return (layout / span if span > 0 else layout).astype(np.float32)


def cached_projection(features: np.ndarray, project_dir: Path | None, *, seed: int = 0) -> np.ndarray:
    """``project_features``, read from the project's cache when these exact features were laid out before.

    A cache that cannot be read or written is ignored: the layout is computed (and returned) all the same.
    """
    key = hashlib.sha256(np.ascontiguousarray(features, dtype=np.float32).tobytes()).hexdigest() + f":{seed}"
    file = project_dir / MAP_CACHE_NAME if project_dir is not None else None
    if file is not None:
        try:
            cached = json.loads(file.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                coordinates = np.asarray(cached["xy"], dtype=np.float32).reshape(-1, 2)
                if len(coordinates) == len(features):
                    return coordinates
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no cache yet, or a damaged one: computed anew below
    coordinates = project_features(features, seed=seed)
    if file is not None:
        # A read-only project: the map is still shown, only computed again next time.
        with contextlib.suppress(OSError):
            atomic_write_json(file, {"key": key, "xy": np.round(coordinates, 5).ravel().tolist()})
    return coordinates

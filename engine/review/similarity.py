"""Near-duplicates, outliers and confusable class pairs, from the cosine similarity of pooled features.

No model is trained: every finding here is a fact about the geometry of the feature vectors, so it
costs one matrix product per block of photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Measured on the 500 demo photos with Lite0 features: the closest two distinct photos reach 0.931; copies
# resized x1.5 and saved as JPEG (quality 90) average 0.97 but a few of 45 fall to 0.915-0.942, copies cropped by
# 1 px a side keep 0.959 or more. Harsher changes (x2 at quality 75, 2 px crops) average 0.95 but dip below the
# line: on 64 px garments the two distributions overlap, and the line favours not flagging distinct photos.
NEAR_DUPLICATE_SIMILARITY = 0.94
OUTLIER_NEIGHBOURS = 5
# A robust z-score above this is an outlier (Iglewicz and Hoaglin's usual cut-off for modified z-scores).
OUTLIER_SCORE = 3.5
# Neighbours counted per photo to measure how much two classes overlap.
OVERLAP_NEIGHBOURS = 10
_ROWS_PER_BLOCK = 1024
RELATIONS = ("across_classes", "across_splits", "within_class")


@dataclass(frozen=True)
class NearDuplicate:
    """Two photos whose features are almost the same.

    Attributes:
        first: row of one photo.
        second: row of the other (later in the dataset's order).
        similarity: cosine similarity of their features, in [-1, 1].
        relation: ``across_classes`` (a labelling conflict), ``across_splits`` (leakage between
            training and evaluation), or ``within_class``; the first that applies.
    """

    first: int
    second: int
    similarity: float
    relation: str


@dataclass(frozen=True)
class Outlier:
    """A photo far from the other photos of its class.

    Attributes:
        index: its row.
        distance: mean cosine distance to its nearest neighbours in its class.
        score: that distance as a robust z-score within the class (median and MAD).
    """

    index: int
    distance: float
    score: float


@dataclass(frozen=True)
class ConfusablePair:
    """Two classes whose photos lie among each other's.

    Attributes:
        first: class index.
        second: class index.
        overlap: the mean over both classes of the share of a photo's nearest neighbours that
            belong to the other class, in [0, 1].
    """

    first: int
    second: int
    overlap: float


def unit_length(features: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, as float32 (zero rows stay zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def find_near_duplicates(
    features: np.ndarray,
    labels: np.ndarray,
    splits: Sequence[str],
    *,
    threshold: float = NEAR_DUPLICATE_SIMILARITY,
) -> list[NearDuplicate]:
    """Every pair of photos at or above ``threshold`` cosine similarity, most similar first.

    Args:
        features: ``(N, D)`` pooled features.
        labels: ``(N,)`` class indices.
        splits: each photo's split.
        threshold: the least cosine similarity of a near-duplicate.
    """
    unit = unit_length(features)
    pairs = []
    for start in range(0, len(unit), _ROWS_PER_BLOCK):
        block = unit[start:start + _ROWS_PER_BLOCK] @ unit.T
        for row, column in zip(*np.nonzero(block >= threshold), strict=True):
            first = start + int(row)
            if int(column) > first:
                pairs.append(NearDuplicate(first, int(column), float(block[row, column]),
                                           _relation(first, int(column), labels, splits)))
    return sorted(pairs, key=lambda pair: -pair.similarity)


def _relation(first: int, second: int, labels: np.ndarray, splits: Sequence[str]) -> str:
    if labels[first] != labels[second]:
        return "across_classes"
    if splits[first] != splits[second]:
        return "across_splits"
    return "within_class"


def find_outliers(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    neighbours: int = OUTLIER_NEIGHBOURS,
    least_score: float = OUTLIER_SCORE,
) -> list[Outlier]:
    """The photos far from their own class, most outlying first.

    Each photo's distance is its mean cosine distance to its ``neighbours`` nearest photos of the
    same class (fewer in a small class); the score is that distance's robust z-score among the
    class's photos. Classes with fewer than 3 photos have no meaningful spread and are left out.

    Args:
        features: ``(N, D)`` pooled features.
        labels: ``(N,)`` class indices.
        neighbours: neighbours per photo (k).
        least_score: photos scoring below this are not returned.
    """
    unit = unit_length(features)
    outliers = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 3:
            continue
        distances = 1.0 - unit[rows] @ unit[rows].T
        np.fill_diagonal(distances, np.inf)
        k = min(neighbours, len(rows) - 1)
        mean_distance = np.sort(distances, axis=1)[:, :k].mean(axis=1)
        median = np.median(mean_distance)
        # 1.4826 x MAD estimates the standard deviation of normal data; the floor keeps a class of
        # near-identical photos from turning tiny differences into huge scores.
        spread = max(1.4826 * float(np.median(np.abs(mean_distance - median))), 1e-6)
        for row, distance in zip(rows.tolist(), mean_distance.tolist(), strict=True):
            score = (distance - median) / spread
            if score >= least_score:
                outliers.append(Outlier(row, float(distance), float(score)))
    return sorted(outliers, key=lambda outlier: -outlier.score)


def confusable_pairs(
    features: np.ndarray, labels: np.ndarray, *, neighbours: int = OVERLAP_NEIGHBOURS, top: int = 5
) -> list[ConfusablePair]:
    """The class pairs that overlap most in feature space, most overlapping first.

    Args:
        features: ``(N, D)`` pooled features.
        labels: ``(N,)`` class indices.
        neighbours: nearest neighbours of each photo looked at (fewer in a small dataset).
        top: pairs returned at most; pairs with no overlap are never returned.
    """
    unit = unit_length(features)
    k = min(neighbours, len(unit) - 1)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    # shares[a, b]: share of the neighbours of class a's photos that are of class b.
    shares = np.zeros((num_classes, num_classes))
    for start in range(0, len(unit), _ROWS_PER_BLOCK):
        similarity = unit[start:start + _ROWS_PER_BLOCK] @ unit.T
        for row in range(len(similarity)):
            similarity[row, start + row] = -np.inf
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k > 0 else np.empty((len(similarity), 0))
        for row, neighbour_rows in enumerate(nearest):
            np.add.at(shares[labels[start + row]], labels[neighbour_rows.astype(np.int64)], 1.0 / max(k, 1))
    sizes = np.bincount(labels, minlength=num_classes)
    shares /= np.maximum(sizes, 1)[:, None]
    pairs = [ConfusablePair(first, second, float((shares[first, second] + shares[second, first]) / 2))
             for first in range(num_classes) for second in range(first + 1, num_classes)]
    return sorted((pair for pair in pairs if pair.overlap > 0), key=lambda pair: -pair.overlap)[:top]

"""One finding of the data doctor: a suspicious photo, why, and what it may be instead; light enough for the GUI."""

from __future__ import annotations

from dataclasses import dataclass, fields

FINDING_KINDS = ("label_issue", "near_duplicate", "outlier")

@dataclass(frozen=True)
class Finding:
    """One suspicious photo, a row of the review's CSV.

    Attributes:
        path: the photo.
        kind: one of ``FINDING_KINDS``.
        given_label: its class as labelled.
        suggested_label: the class the out-of-fold model favours (label issue), the other photo's
            class (near-duplicate), or empty (outlier).
        score: higher is more suspicious; 1 - self-confidence (label issue), cosine similarity
            (near-duplicate), robust z-score of the distance to its class (outlier).
        rank: 1 for the most suspicious finding of its kind.
        other_path: the other photo of a near-duplicate, else empty.
        relation: of a near-duplicate, ``across_classes``, ``across_splits`` or ``within_class``.
        split: the photo's split.
        reason: in words.
    """

    path: str
    kind: str
    given_label: str
    suggested_label: str
    score: float
    rank: int
    other_path: str = ""
    relation: str = ""
    split: str = ""
    reason: str = ""


CSV_COLUMNS = tuple(item.name for item in fields(Finding))


@dataclass(frozen=True)
class MapPoint:
    """One photo on the dataset map.

    Attributes:
        path: the photo.
        label: its class as labelled (index into the review's classes).
        split: ``train``, ``val`` or ``test``.
        x: its place on the map, in [-1, 1].
        y: its place on the map, in [-1, 1].
    """

    path: str
    label: int
    split: str
    x: float
    y: float

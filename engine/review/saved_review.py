"""Read back a review saved as JSON (``main.py review --json``), without loading any model code.

The GUI's Review page shows the review its child process wrote; this turns that file into findings
and map points, or one error line naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import DatasetError
from engine.review.finding import Finding, MapPoint


@dataclass(frozen=True)
class SavedReview:
    """A review as saved: what was reviewed, the findings and the map.

    Attributes:
        data_path: the dataset reviewed.
        backbone: the features' model.
        photos: photos reviewed.
        classes: class names; a map point's label indexes them.
        counts: findings per kind.
        findings: ranked, as in the CSV.
        map: every photo on the dataset map (empty for a review saved without one).
    """

    data_path: str
    backbone: str
    photos: int
    classes: tuple[str, ...]
    counts: dict[str, int]
    findings: list[Finding]
    map: list[MapPoint] = field(default_factory=list)


def read_review(file: str | Path) -> SavedReview:
    """Read a review JSON file.

    Raises:
        DatasetError: the file cannot be read or is not a review (the message names it).
    """
    file = Path(file)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        columns = payload.get("map") or {"paths": [], "labels": [], "splits": [], "xy": []}
        xy = [float(value) for value in columns["xy"]]
        points = [MapPoint(str(path), int(label), str(split), xy[2 * row], xy[2 * row + 1])
                  for row, (path, label, split) in enumerate(zip(columns["paths"], columns["labels"],
                                                                 columns["splits"], strict=True))]
        classes = tuple(str(name) for name in payload["classes"])
        if any(not 0 <= point.label < len(classes) for point in points):
            raise ValueError("a map point's class is out of range")
        return SavedReview(
            data_path=str(payload["data_path"]), backbone=str(payload["backbone"]), photos=int(payload["photos"]),
            classes=classes, counts={str(kind): int(count) for kind, count in payload["counts"].items()},
            findings=[Finding(**row) for row in payload["findings"]], map=points,
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise DatasetError(f"{file}: not a review that can be read ({type(error).__name__}: {error})") from error

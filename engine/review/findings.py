"""The review of a dataset: its findings as one table, saved as CSV and JSON, and summarised in words."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.core.atomic import atomic_write_json, atomic_write_text
from engine.review.features import DEFAULT_BACKBONE, ReviewFeatures, review_features
from engine.review.finding import CSV_COLUMNS, FINDING_KINDS, Finding, MapPoint
from engine.review.label_issues import find_label_issues
from engine.review.projection import cached_projection
from engine.review.similarity import (
    ConfusablePair,
    confusable_pairs,
    find_near_duplicates,
    find_outliers,
)

_RELATION_WORDS = {
    "across_classes": "labelled differently: a labelling conflict",
    "across_splits": "in another split: leakage between training and evaluation",
    "within_class": "in the same class and split",
}


@dataclass
class ReviewReport:
    """What the data doctor found in a dataset.

    Attributes:
        data_path: the reviewed dataset.
        backbone: the model whose features were used.
        photos: photos reviewed.
        classes: class names.
        findings: label issues, then near-duplicates, then outliers, each ranked.
        confusable: the class pairs that overlap most.
        folds: folds of the out-of-fold predictions (0 when labels were not checked).
        skipped: photos and classes left out, and other notes, in words.
        map: every reviewed photo on the dataset map (empty when it was not drawn).
    """

    data_path: str
    backbone: str
    photos: int
    classes: tuple[str, ...]
    findings: list[Finding]
    confusable: list[ConfusablePair]
    folds: int
    skipped: list[str] = field(default_factory=list)
    map: list[MapPoint] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind named."""
        counted = Counter(finding.kind for finding in self.findings)
        return {kind: counted[kind] for kind in FINDING_KINDS}

    def to_dict(self) -> dict[str, object]:
        """The report as plain JSON data."""
        return {
            "data_path": self.data_path, "backbone": self.backbone, "photos": self.photos,
            "classes": list(self.classes), "folds": self.folds, "counts": self.counts(),
            "confusable_pairs": [{"first": self.classes[pair.first], "second": self.classes[pair.second],
                                  "overlap": round(pair.overlap, 4)} for pair in self.confusable],
            "skipped": self.skipped, "findings": [asdict(finding) for finding in self.findings],
            # Columns rather than one object per point: a third of the size for 20,000 photos.
            "map": {"paths": [point.path for point in self.map], "labels": [point.label for point in self.map],
                    "splits": [point.split for point in self.map],
                    "xy": [value for point in self.map for value in (round(point.x, 5), round(point.y, 5))]},
        }

    def to_csv(self) -> str:
        """One row per finding, with a header of ``CSV_COLUMNS``."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(finding) for finding in self.findings)
        return buffer.getvalue()

    def save_csv(self, path: str | Path) -> Path:
        """Write ``to_csv()`` to ``path`` atomically."""
        return atomic_write_text(path, self.to_csv())

    def save_json(self, path: str | Path) -> Path:
        """Write ``to_dict()`` to ``path`` atomically."""
        return atomic_write_json(path, self.to_dict())

    def summary(self, top: int = 5) -> str:
        """Counts, the confusable pairs, what was skipped and the ``top`` findings of each kind, in words."""
        counts = self.counts()
        lines = [f"reviewed {self.photos} photos of {len(self.classes)} classes with {self.backbone}: "
                 + ", ".join(f"{counts[kind]} {kind.replace('_', ' ')}s" for kind in FINDING_KINDS)]
        if self.confusable:
            lines.append("classes that overlap most: " + ", ".join(
                f"{self.classes[pair.first]} / {self.classes[pair.second]} ({pair.overlap:.0%})"
                for pair in self.confusable))
        lines.extend(f"skipped: {note}" for note in self.skipped)
        for kind in FINDING_KINDS:
            chosen = [finding for finding in self.findings if finding.kind == kind][:top]
            if chosen:
                lines.append(f"\ntop {kind.replace('_', ' ')}s:")
                lines.extend(f"  {finding.rank}. {finding.path} ({finding.given_label}, score {finding.score:.2f}): "
                             f"{finding.reason}" for finding in chosen)
        return "\n".join(lines)


def review_dataset(
    data_path: str | Path,
    backbone: str = DEFAULT_BACKBONE,
    *,
    device: str = "auto",
    seed: int = 0,
    project_dir: Path | None = None,
    draw_map: bool = True,
    log: Callable[[str], None] | None = None,
) -> ReviewReport:
    """Compute (or reuse) the dataset's features and find its label issues, near-duplicates and outliers.

    Args:
        data_path: a folder of class folders, of train/val/test folders, or a CSV of labels.
        backbone: timm model name whose pooled features are used.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` for the features.
        seed: seed of the folds of the out-of-fold predictions and of the map.
        project_dir: where the map's layout is cached; None: not cached.
        draw_map: lay the photos out on the dataset map (``engine.review.projection``).
        log: receives progress lines.

    Raises:
        DatasetError: the data cannot be used.
        BackboneUnavailable: the backbone or its weights cannot be had.
    """
    features = review_features(data_path, backbone, device=device, log=log)
    report = report_of(features, str(data_path), seed=seed)
    if draw_map:
        (log or _ignore)(f"map: laying out {len(features.paths)} photos")
        report.map = map_of(features, project_dir, seed=seed)
    return report


def map_of(features: ReviewFeatures, project_dir: Path | None, *, seed: int = 0) -> list[MapPoint]:
    """Every photo of ``features`` on the dataset map (its layout cached in ``project_dir``)."""
    xy = cached_projection(features.features, project_dir, seed=seed)
    return [MapPoint(str(path), int(label), split, float(x), float(y))
            for path, label, split, (x, y) in zip(features.paths, features.labels, features.splits, xy, strict=True)]


def report_of(features: ReviewFeatures, data_path: str, *, seed: int = 0) -> ReviewReport:
    """The review of already computed features (``review_dataset`` without the backbone or the map)."""
    classes, labels, paths, splits = features.classes, features.labels, features.paths, features.splits
    label_issues = find_label_issues(features.features, labels, classes, seed=seed)
    findings = [
        Finding(str(paths[issue.index]), "label_issue", classes[issue.given], classes[issue.suggested],
                round(issue.score, 4), issue.rank, split=splits[issue.index], reason=issue.reason(classes))
        for issue in label_issues.issues
    ]
    for rank, pair in enumerate(find_near_duplicates(features.features, labels, splits), start=1):
        # The later photo is the suspect: in a pre-split dataset it is the val or test copy of a train photo.
        copy, original = pair.second, pair.first
        findings.append(Finding(
            str(paths[copy]), "near_duplicate", classes[labels[copy]], classes[labels[original]],
            round(pair.similarity, 4), rank, other_path=str(paths[original]), relation=pair.relation,
            split=splits[copy],
            reason=f"{pair.similarity:.1%} similar to {paths[original].name} ({classes[labels[original]]}, "
                   f"{splits[original]}), {_RELATION_WORDS[pair.relation]}",
        ))
    for rank, outlier in enumerate(find_outliers(features.features, labels), start=1):
        findings.append(Finding(
            str(paths[outlier.index]), "outlier", classes[labels[outlier.index]], "", round(outlier.score, 2), rank,
            split=splits[outlier.index],
            reason=f"far from the other '{classes[labels[outlier.index]]}' photos: "
                   f"{outlier.score:.1f} robust standard deviations beyond the class's usual distance",
        ))
    skipped = [f"{path}: features failed ({reason})" for path, reason in features.failed]
    return ReviewReport(
        data_path=data_path, backbone=features.backbone, photos=len(paths), classes=classes, findings=findings,
        confusable=confusable_pairs(features.features, labels), folds=label_issues.folds,
        skipped=[*features.notes, *skipped, *label_issues.notes],
    )


def _ignore(_line: str) -> None:
    """A log that drops its lines."""

"""The problems of a dataset as a whole that a health scan reports: duplicates across classes and
splits, classes a pre-split dataset cannot train, tiny or extreme images, small and imbalanced classes.

Each finder takes the scan's records and returns ``Problem``s; ``engine.data.health`` runs them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from engine.data.discovery import SPLITS, DatasetSource
from engine.data.health_report import FileRecord, Problem, relative_path

IMBALANCE_WARNING_RATIO = 3.0
"""Largest / smallest usable class size from which imbalance is reported."""


def _split_rank(record: FileRecord) -> int:
    return SPLITS.index(record.split) if record.split in SPLITS else -1


def content_problems(source: DatasetSource, readable: list[FileRecord]) -> list[Problem]:
    """Find identical files: under two labels, twice in a class, or in two splits."""
    shown_base = source.root.parent if source.layout == "csv" else source.root
    by_hash: dict[str, list[FileRecord]] = defaultdict(list)
    for record in readable:
        by_hash[record.sha256 or ""].append(record)
    problems = []
    for copies in by_hash.values():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda record: (_split_rank(record), str(record.path)))
        labels = sorted({record.label for record in copies})
        if len(labels) > 1:
            problems.append(
                Problem(
                    kind="conflicting_labels",
                    message=(
                        f"the same image is labelled {' and '.join(repr(label) for label in labels)}; "
                        "no copy can be trusted"
                    ),
                    paths=tuple(record.path for record in copies),
                    severity="error",
                    excluded=True,
                )
            )
            continue
        kept, *others = copies
        kept_name = relative_path(kept.path, shown_base)
        same_split = tuple(record.path for record in others if record.split == kept.split)
        if same_split:
            problems.append(
                Problem(
                    kind="duplicate_in_class",
                    message=f"identical to {kept_name}, which is kept; the copies would only add weight",
                    paths=same_split,
                    label=kept.label,
                    severity="info",
                    excluded=True,
                )
            )
        for split in SPLITS:
            leaked = tuple(record.path for record in others if record.split == split and split != kept.split)
            if leaked:
                problems.append(
                    Problem(
                        kind="split_leakage",
                        message=(
                            f"identical to {kept_name} in {kept.split}; a copy in {split} would "
                            "inflate the scores measured on it"
                        ),
                        paths=leaked,
                        label=kept.label,
                        severity="warning",
                        excluded=True,
                    )
                )
    return problems


def untrainable_presplit_classes(usable: list[FileRecord]) -> list[Problem]:
    by_label: dict[str, list[FileRecord]] = defaultdict(list)
    for record in usable:
        by_label[record.label].append(record)
    problems = []
    for label, records in sorted(by_label.items()):
        if any(record.split == "train" for record in records):
            continue
        problems.append(
            Problem(
                kind="empty_class",
                message=(
                    f"no usable images in train, so the class cannot be learnt; its {len(records)} images in "
                    f"{'/'.join(sorted({str(r.split) for r in records}))} are left out"
                ),
                paths=tuple(record.path for record in records),
                label=label,
                severity="warning",
                excluded=True,
            )
        )
    return problems


def image_shape_problems(usable: list[FileRecord], min_size: int, max_aspect_ratio: float) -> list[Problem]:
    problems = []
    for record in usable:
        if record.width is None or record.height is None:
            continue
        short, long = sorted((record.width, record.height))
        size = f"{record.width}×{record.height} pixels"
        if short < min_size:
            problems.append(
                Problem(
                    kind="too_small",
                    message=f"{size}, below {min_size} px on a side; upscaling it to the model's input blurs it",
                    paths=(record.path,),
                    label=record.label,
                )
            )
        if short > 0 and long / short > max_aspect_ratio:
            problems.append(
                Problem(
                    kind="extreme_aspect_ratio",
                    message=(
                        f"{size}, aspect ratio {long / short:.1f} above {max_aspect_ratio:g}; "
                        "resizing squashes it or cropping cuts most of it away"
                    ),
                    paths=(record.path,),
                    label=record.label,
                )
            )
    return problems


def class_problems(class_counts: Mapping[str, int], min_images: int, found: list[Problem]) -> list[Problem]:
    already_empty = {problem.label for problem in found if problem.kind == "empty_class"}
    problems = []
    for label, count in class_counts.items():
        if count == 0 and label not in already_empty:
            problems.append(
                Problem(
                    kind="empty_class",
                    message="no usable images; the class is left out of training",
                    label=label,
                )
            )
        elif 0 < count < min_images:
            problems.append(
                Problem(
                    kind="few_images",
                    message=(
                        f"only {count} usable image{'s' if count != 1 else ''}; at least {min_images} "
                        "are needed to learn and check a class"
                    ),
                    label=label,
                )
            )
    non_empty = {label: count for label, count in class_counts.items() if count > 0}
    if len(non_empty) >= 2:
        largest = max(non_empty, key=lambda label: (non_empty[label], label))
        smallest = min(non_empty, key=lambda label: (non_empty[label], label))
        ratio = non_empty[largest] / non_empty[smallest]
        if ratio >= IMBALANCE_WARNING_RATIO:
            problems.append(
                Problem(
                    kind="class_imbalance",
                    message=(
                        f"{largest!r} has {non_empty[largest]} usable images and {smallest!r} has "
                        f"{non_empty[smallest]}: ratio {ratio:.1f}; the model will favour {largest!r} "
                        "unless the loss or sampling is balanced"
                    ),
                )
            )
    return problems

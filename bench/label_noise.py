"""How well the data review finds flipped labels: precision and recall of its label issues, and what relabelling buys.

``python -m bench.label_noise`` takes real labelled photos, flips a seeded 10% of their
labels to another class, runs the review (``engine.review``: out-of-fold logistic regression
on Lite0 features, then cleanlab's confident learning) and compares its ``label_issue``
rows with the flipped set, at 20, 50 and 100 photos per class, three seeds each. The
features of a photo do not depend on its label, so they are computed once and each seed's
flips are given to the review as its labels; everything after the features is the review's
own code. A second figure trains a logistic regression on the noisy labels and on the labels
with the review's suggestions applied, and scores both on held-out photos with clean labels.

The photos: Fashion-MNIST's *train* split from Debian's ``dataset-fashion-mnist`` when it is
installed (never the test split), else the bundled demo photos (500, 50 per class), which
caps the sizes at 50 per class and leaves held-out photos only below that.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
DEMO = REPOSITORY / "resources" / "demo"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
NOISE = 0.10
SEEDS = (0, 1, 2)
PER_CLASS = (20, 50, 100)
GOAL = 0.7
FASHION_PER_CLASS = 200  # enough for the largest size plus held-out photos


def fashion_mnist_train(target: Path) -> Path | None:
    """Write Fashion-MNIST train images (``FASHION_PER_CLASS`` per class) as PNG class folders; None when absent."""
    from PIL import Image

    images_file = FASHION_MNIST / "train-images-idx3-ubyte.gz"
    labels_file = FASHION_MNIST / "train-labels-idx1-ubyte.gz"
    if not (images_file.is_file() and labels_file.is_file()):
        return None
    with gzip.open(labels_file) as handle:
        _, count = struct.unpack(">II", handle.read(8))
        labels = np.frombuffer(handle.read(count), dtype=np.uint8)
    with gzip.open(images_file) as handle:
        _, count, rows, columns = struct.unpack(">IIII", handle.read(16))
        images = np.frombuffer(handle.read(count * rows * columns), dtype=np.uint8).reshape(count, rows, columns)
    demo_bytes = {image.tobytes() for image in _demo_arrays()}
    for number, name in enumerate(CLASSES):
        folder = target / name
        folder.mkdir(parents=True)
        taken = 0
        for index in np.flatnonzero(labels == number):
            if images[index].tobytes() in demo_bytes:  # the demo's photos come from this split: not these
                continue
            Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
            taken += 1
            if taken == FASHION_PER_CLASS:
                break
    return target


def _demo_arrays() -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(path).convert("L").resize((28, 28))) for path in sorted(DEMO.glob("*/*.png"))]


def flipped(labels: np.ndarray, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, set[int]]:
    """The labels with a ``NOISE`` share moved to another class at random, and the indices moved."""
    noisy = labels.copy()
    moved = rng.choice(len(labels), round(NOISE * len(labels)), replace=False)
    for index in moved:
        noisy[index] = rng.choice([other for other in range(classes) if other != labels[index]])
    return noisy, {int(index) for index in moved}


def clean_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                   test_labels: np.ndarray) -> float:
    """Top-1 on clean held-out photos of a logistic regression trained on ``train_labels``."""
    from sklearn.linear_model import LogisticRegression

    from engine.review.similarity import unit_length

    model = LogisticRegression(C=1.0, max_iter=2000).fit(unit_length(train_features), train_labels)
    return float((model.predict(unit_length(test_features)) == test_labels).mean())


def main() -> int:
    from engine.review.features import review_features
    from engine.review.findings import report_of

    with tempfile.TemporaryDirectory(prefix="label-noise-") as scratch:
        data = fashion_mnist_train(Path(scratch) / "fashion-mnist-train")
        source = ("Fashion-MNIST train split" if data is not None
                  else "the demo photos (Fashion-MNIST is not installed)")
        started = time.perf_counter()
        everything = review_features(data if data is not None else DEMO)
        feature_seconds = time.perf_counter() - started
    labels = everything.labels
    available = int(np.bincount(labels).min())
    print(f"photos: {source}; {len(labels)} with features in {feature_seconds:.1f} s (cached after the first run)")
    shortfalls = []
    for per_class in PER_CLASS:
        if per_class > available:
            print(f"{per_class} per class: n/a (only {available} photos per class here)")
            continue
        precisions, recalls, seconds, before, after = [], [], [], [], []
        for seed in SEEDS:
            rng = np.random.default_rng(seed)
            chosen = np.concatenate([rng.choice(np.flatnonzero(labels == number), per_class, replace=False)
                                     for number in range(len(everything.classes))])
            held_out = np.setdiff1d(np.arange(len(labels)), chosen)
            noisy, moved = flipped(labels[chosen], len(everything.classes), rng)
            subset = dataclasses.replace(
                everything, paths=[everything.paths[index] for index in chosen], labels=noisy,
                splits=["train"] * len(chosen), features=everything.features[chosen])
            started = time.perf_counter()
            report = report_of(subset, "label-noise", seed=seed)
            seconds.append(time.perf_counter() - started)
            row_of = {str(path): row for row, path in enumerate(subset.paths)}
            issues = [finding for finding in report.findings if finding.kind == "label_issue"]
            found = {row_of[finding.path] for finding in issues}
            hits = len(found & moved)
            precisions.append(hits / max(1, len(found)))
            recalls.append(hits / len(moved))
            if len(held_out):
                relabelled = noisy.copy()
                for finding in issues:
                    relabelled[row_of[finding.path]] = everything.classes.index(finding.suggested_label)
                test_features, test_labels = everything.features[held_out], labels[held_out]
                before.append(clean_accuracy(subset.features, noisy, test_features, test_labels))
                after.append(clean_accuracy(subset.features, relabelled, test_features, test_labels))
        precision, recall = float(np.mean(precisions)), float(np.mean(recalls))
        print(f"{per_class} per class, {NOISE:.0%} flipped, seeds {list(SEEDS)}: "
              f"precision {' '.join(f'{value:.2f}' for value in precisions)}, "
              f"recall {' '.join(f'{value:.2f}' for value in recalls)}; review {np.mean(seconds):.2f} s")
        if before:
            print(f"  held-out top-1 ({len(held_out)} clean photos): {np.mean(before):.3f} trained on the noisy "
                  f"labels, {np.mean(after):.3f} after the suggested relabels")
        if per_class == 50:
            print(f"ratio label-issue precision {precision:.2f} (goal >= {GOAL})")
            print(f"ratio label-issue recall {recall:.2f} (goal >= {GOAL})")
            shortfalls += [name for name, value in (("precision", precision), ("recall", recall)) if value < GOAL]
    if shortfalls:
        print(f"below the goal: {', '.join(shortfalls)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tasks of ``bench.quality``: real labelled photos to train on, and a disjoint, larger set to score on.

A source (Fashion-MNIST's *train* split, scikit-learn's bundled 8x8 digits) is written once
as a pool of PNG class folders at its native size, with repeated pictures dropped. From the
pool a fixed, seeded score set is put aside first (the same for every size and seed, so rows
compare); a task's training photos are then drawn, seeded, from what is left. No recipe ever
sees a score photo: not in training, not in validation, not in any selection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

import bench.label_noise as label_noise
from engine.core.errors import DatasetError

SOURCES = ("fashion-mnist", "digits")
SCORE_SEED = 20261  # the score set's own seed: the same photos are scored whatever the run's seed
# Score photos per class: more than the largest training size that source offers, so the score
# set is the larger one (Fashion-MNIST: 2000 against at most 1000 training photos).
SCORE_PER_CLASS = {"fashion-mnist": 200, "digits": 100}
FASHION_TRAIN_POOL_PER_CLASS = 200  # photos per class that training sizes draw from (largest size: 100)

Pool = dict[str, list[Path]]
"""Class name -> the pool's image files of that class, each picture once."""


class ReservedSplit(ValueError):
    """Asked for data the benchmark must never tune on: Fashion-MNIST's test split."""


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: e.g. ``fashion-mnist-50``.
        source: where the photos come from, in words.
        per_class: training photos per class (recipes hold out their own validation share of them).
        train_dir: class folders of the photos recipes may see.
        score_paths: the unseen photos every model is scored on.
        score_labels: the class name of each score photo.
        classes: class names, sorted.
        image_size: native (width, height) of the photos.
    """

    name: str
    source: str
    per_class: int
    train_dir: Path
    score_paths: tuple[Path, ...]
    score_labels: tuple[str, ...]
    classes: tuple[str, ...]
    image_size: tuple[int, int]

    @property
    def train_count(self) -> int:
        """Training photos in ``train_dir``."""
        return len(self.classes) * self.per_class


def fashion_mnist_installed() -> bool:
    """Whether Debian's ``dataset-fashion-mnist`` train split is here."""
    return (label_noise.FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()


def fashion_mnist_pool(target: Path, per_class: int, *, split: str = "train") -> Pool | None:
    """Fashion-MNIST train photos (not the demo's) as PNG class folders in ``target``; None when not installed.

    Written by ``bench.label_noise.fashion_mnist_train``: the first ``per_class`` photos of each
    class in the split's order that are not among the demo's photos.

    Raises:
        ReservedSplit: ``split`` is not ``train``: the test split is kept for a final, untuned check.
    """
    if split != "train":
        raise ReservedSplit(f"split: Fashion-MNIST's {split!r} split is reserved and never used to tune or "
                            "compare recipes; this benchmark draws from the train split only")
    with _fashion_per_class(per_class):
        written = label_noise.fashion_mnist_train(target)
    return None if written is None else distinct_pool(written)


@contextmanager
def _fashion_per_class(per_class: int) -> Iterator[None]:
    """``bench.label_noise`` writes a fixed count per class; this benchmark needs more for its score set."""
    saved = label_noise.FASHION_PER_CLASS
    label_noise.FASHION_PER_CLASS = per_class
    try:
        yield
    finally:
        label_noise.FASHION_PER_CLASS = saved


def digits_pool(target: Path) -> Pool:
    """scikit-learn's bundled handwritten digits (1,797 photos, 8x8 grey, 10 classes) as PNG class folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)  # stored as 0..16 intensities
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = target / f"digit-{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return distinct_pool(target)


def distinct_pool(folder: Path) -> Pool:
    """The PNG class folders of ``folder``, leaving out any picture whose pixels repeat an earlier one's.

    A picture that appears twice (in one class or two) could otherwise land on both sides of the
    train/score line; keeping only its first copy makes the two sides disjoint by content.
    """
    seen: set[bytes] = set()
    pool: Pool = {}
    for class_folder in sorted(path for path in folder.iterdir() if path.is_dir()):
        kept = pool.setdefault(class_folder.name, [])
        for path in sorted(class_folder.glob("*.png")):
            key = pixel_key(path)
            if key not in seen:
                seen.add(key)
                kept.append(path)
    return pool


def pixel_key(path: Path) -> bytes:
    """The decoded pixels of an image, with its size, as bytes: equal for equal pictures."""
    with Image.open(path) as image:
        return repr(image.size).encode() + image.tobytes()


def split_pool(pool: Pool, score_per_class: int) -> tuple[Pool, Pool]:
    """``(score, rest)``: ``score_per_class`` photos of each class picked with ``SCORE_SEED``, and the others.

    Raises:
        DatasetError: a class has no more than ``score_per_class`` photos.
    """
    rng = np.random.default_rng(SCORE_SEED)
    score: Pool = {}
    rest: Pool = {}
    for name, paths in pool.items():
        if len(paths) <= score_per_class:
            raise DatasetError(f"class {name!r}: {len(paths)} photos, need more than the {score_per_class} "
                               "scored per class")
        chosen = set(rng.choice(len(paths), score_per_class, replace=False).tolist())
        score[name] = [path for index, path in enumerate(paths) if index in chosen]
        rest[name] = [path for index, path in enumerate(paths) if index not in chosen]
    return score, rest


def available_per_class(rest: Pool) -> int:
    """Training photos per class the smallest class can give."""
    return min(len(paths) for paths in rest.values())


def build_task(name: str, source: str, score: Pool, rest: Pool, per_class: int, seed: int, target: Path) -> Task:
    """Copy a seeded ``per_class`` draw of ``rest`` into ``target`` as class folders; score on ``score``.

    Raises:
        DatasetError: too few photos for ``per_class``, a score set no larger than the training
            set, or a score photo whose pixels equal a training photo's (never expected: the pool
            is distinct and the two sides are drawn apart; checked all the same).
    """
    if per_class > available_per_class(rest):
        raise DatasetError(f"{name}: {per_class} photos per class asked, only {available_per_class(rest)} "
                           "left beside the score set")
    score_count = sum(len(paths) for paths in score.values())
    if score_count <= per_class * len(rest):
        raise DatasetError(f"{name}: {score_count} score photos, not more than the {per_class * len(rest)} "
                           "training photos")
    rng = np.random.default_rng(seed)
    target.mkdir(parents=True)
    for class_name, paths in sorted(rest.items()):
        (target / class_name).mkdir()
        for index in sorted(rng.choice(len(paths), per_class, replace=False).tolist()):
            shutil.copy2(paths[index], target / class_name / paths[index].name)
    score_paths = tuple(path for _, paths in sorted(score.items()) for path in paths)
    score_labels = tuple(class_name for class_name, paths in sorted(score.items()) for _ in paths)
    check_disjoint(target, score_paths)
    with Image.open(score_paths[0]) as first:
        size = first.size
    return Task(name=name, source=source, per_class=per_class, train_dir=target, score_paths=score_paths,
                score_labels=score_labels, classes=tuple(sorted(rest)), image_size=size)


def check_disjoint(train_dir: Path, score_paths: tuple[Path, ...]) -> None:
    """Raise ``DatasetError`` if any score photo is a training photo, by file or by pixels."""
    training = list(train_dir.glob("*/*.png"))
    keys = {pixel_key(path) for path in training}
    resolved = {path.resolve() for path in training}
    shared = [path for path in score_paths if path.resolve() in resolved or pixel_key(path) in keys]
    if shared:
        raise DatasetError(f"{len(shared)} score photos are also training photos, e.g. {shared[0]}")


@dataclass(frozen=True)
class Source:
    """A source of real labelled photos: how to write its pool, and its score size."""

    name: str
    description: str
    write_pool: Callable[[Path], Pool | None]
    score_per_class: int


def sources() -> dict[str, Source]:
    """The sources this benchmark knows, by name (a source's pool may be None where it is not installed)."""
    fashion_pool = SCORE_PER_CLASS["fashion-mnist"] + FASHION_TRAIN_POOL_PER_CLASS
    return {
        "fashion-mnist": Source(
            "fashion-mnist",
            "Fashion-MNIST train split (Debian dataset-fashion-mnist, 28x28 grey), the demo's photos left out",
            lambda target: fashion_mnist_pool(target, fashion_pool), SCORE_PER_CLASS["fashion-mnist"]),
        "digits": Source(
            "digits", "scikit-learn's bundled handwritten digits (8x8 grey)", digits_pool, SCORE_PER_CLASS["digits"]),
    }

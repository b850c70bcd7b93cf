"""Torch datasets and batch iterables over scanned image records and cached features.

An image that passed the header scan can still fail to decode (damage past the
header, or a file changed under the run). Such an item is dropped from its batch, a
batch left empty is skipped, and the file is reported once per run (``SkippedImages``),
so a run never dies on a bad file. In a distributed run each rank iterates its own
share, chosen by a sampler that every rank seeds alike (``DistributedSampler``,
``DistributedWeightedSampler``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from engine.core.errors import DatasetError
from engine.core.events import ImageSkipped
from engine.data.decoded_cache import DecodedCache
from engine.data.images import load_rgb

log = logging.getLogger(__name__)

ImageTransform = Callable[[object], torch.Tensor]


class ImageDataset(Dataset):
    """Images from disk with their class indices.

    Each item is ``(image, target, error)``: the ``(3, H, W)`` tensor and an empty
    error, or ``None`` and the reason the file could not be decoded.

    Args:
        paths: image files.
        targets: class index (or any integer tag) of each file.
        transform: Pillow RGB image -> ``(3, H, W)`` tensor.
        min_side: the shorter side, in pixels, the transform needs of a source image
            (``augment.train_source_side``, ``augment.eval_source_side``): larger photos are
            decoded only that large (``load_rgb``); None decodes every image at full size.
        cache: with ``min_side``, read images from this decoded-image cache, and store those
            decoded here, shrunk to ``min_side``; None decodes the files every time.
        hashes: SHA-256 of each file (the cache key); a file without one is not cached.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: Sequence[int],
        transform: ImageTransform,
        min_side: int | None = None,
        *,
        cache: DecodedCache | None = None,
        hashes: Sequence[str | None] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.targets = list(targets)
        self.transform = transform
        self.min_side = min_side
        self.cache = cache if min_side is not None else None
        self.hashes = list(hashes) if hashes is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            if self.cache is not None and self.min_side is not None:
                image = self.cache.load(self.paths[index], self.hashes[index], self.min_side)
            else:
                image = load_rgb(self.paths[index], min_side=self.min_side)
        except DatasetError as error:
            return None, self.targets[index], str(error)
        return self.transform(image), self.targets[index], ""


def collate_with_failures(
    items: list[tuple[torch.Tensor | None, int, str]],
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Stack the decoded items; return ``(images, targets, [(target, reason) of failures])``."""
    decoded = [(image, target) for image, target, _ in items if image is not None]
    failures = [(target, reason) for image, target, reason in items if image is None]
    if not decoded:
        return torch.empty(0), torch.empty(0, dtype=torch.long), failures
    images, targets = default_collate(decoded)
    return images, targets, failures


class SkippedImages:
    """The images of a run that could not be decoded: each reported once, and counted per pass.

    A file is reported on its first failure only (a log line and an ``image_skipped`` event
    naming it, its split and the reason), however many epochs meet it again.
    ``counts[split]`` is the number of images the latest pass over that split left out, for
    the epoch's metrics.

    Args:
        report: receives ``(ImageSkipped.event, split=..., path=..., reason=...)``, or None.
    """

    def __init__(self, report: Callable[..., Any] | None = None) -> None:
        self.report = report
        self.counts: dict[str, int] = {}
        self._reported: set[str] = set()

    def add(self, split: str, path: Path | str, reason: str) -> None:
        """Record that ``path`` of ``split`` failed to decode, reporting it if it is new."""
        key = str(path)
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning("%s image left out of the run: %s", split, reason if key in reason else f"{key}: {reason}")
        if self.report is not None:
            self.report(ImageSkipped.event, split=split, path=key, reason=reason)


class DecodedBatches:
    """``(images, targets)`` batches of the images that decoded, from a loader over positions.

    The loader's dataset is an ``ImageDataset`` tagged with each file's position in
    ``paths`` and batched by ``collate_with_failures``; failures go to ``skipped`` and a
    batch with no decoded image is left out, so the model never sees an empty batch.

    Args:
        loader: yields ``(images, positions, [(position, reason)])``.
        paths: the files, by position.
        targets: ``(N,)`` class index of each position.
        split: the split's name, for reports and counts.
        skipped: where failures are reported and counted.
    """

    def __init__(
        self, loader: Iterable[Any], paths: Sequence[Path], targets: torch.Tensor, split: str, skipped: SkippedImages
    ) -> None:
        self.loader = loader
        self.paths = list(paths)
        self.targets = targets
        self.split = split
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped.counts[self.split] = 0
        for images, positions, failures in self.loader:
            for position, reason in failures:
                self.skipped.counts[self.split] += 1
                self.skipped.add(self.split, self.paths[position], reason)
            if len(positions):
                yield images, self.targets[positions]


class FeatureBatches:
    """Shuffled mini-batches of cached feature vectors, one random view per image each epoch.

    Args:
        features: ``(N, V, D)`` float32, V views of each of N images.
        targets: ``(N,)`` class indices.
        batch_size: vectors per batch.
        shuffle: reshuffle (and redraw views) every epoch.
        seed: seed of the shuffling generator.
        sample_weights: draw N items per epoch with replacement by these weights instead
            (the balanced sampler), or None.
        sampler: the item indices of each epoch instead, for one rank's share in a distributed
            run (with ``set_epoch``); its seed, not ``seed``, decides the order.
    """

    def __init__(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sample_weights: torch.Tensor | None = None,
        sampler: Sampler[int] | None = None,
    ) -> None:
        self.features = features
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.sample_weights = sample_weights
        self.sampler = sampler
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self._starts())

    def _starts(self) -> range:
        count = len(self.sampler) if self.sampler is not None else len(self.targets)
        # A training batch of one item breaks BatchNorm heads and gives a noisy step: drop it.
        end = count - 1 if self.shuffle and count % self.batch_size == 1 and count > 1 else count
        return range(0, end, self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, views = self.features.shape[:2]
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.long)
        elif self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, count, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(count, generator=self.generator)
        else:
            order = torch.arange(count)
        if views > 1 and self.shuffle:
            chosen_views = torch.randint(views, (count,), generator=self.generator)
        else:
            chosen_views = torch.zeros(count, dtype=torch.long)
        for start in self._starts():
            rows = order[start : start + self.batch_size]
            yield self.features[rows, chosen_views[rows]], self.targets[rows]


class DistributedWeightedSampler(Sampler[int]):
    """The balanced sampler of a distributed run: weighted draws with replacement, shared out among the ranks.

    Every rank draws the same ``num_replicas * ceil(N / num_replicas)`` indices from a
    generator seeded with ``seed + epoch`` and keeps every ``num_replicas``-th from its
    rank on, so the ranks together see one weighted draw per epoch, as one process would.

    Args:
        weights: ``(N,)`` per-item weights.
        num_replicas: processes in the run.
        rank: this process.
        seed: the same on every rank.
    """

    def __init__(self, weights: torch.Tensor, *, num_replicas: int, rank: int, seed: int = 0) -> None:
        self.weights = weights.double()
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Draw another sample for ``epoch`` (call it on every rank with the same epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples * self.num_replicas, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank :: self.num_replicas].tolist())

"""Torch datasets and batch iterables over scanned image records and cached features.

An image that passed the header scan can still fail to decode (damage past the
header). Such an item is dropped from its batch and reported once, so a run never
dies on one bad file. In a distributed run each rank iterates its own share, chosen by
a sampler that every rank seeds alike (``DistributedSampler``, ``DistributedWeightedSampler``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from engine.errors import DatasetError
from engine.images import load_rgb

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
    """

    def __init__(self, paths: Sequence[Path], targets: Sequence[int], transform: ImageTransform) -> None:
        self.paths = list(paths)
        self.targets = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            image = load_rgb(self.paths[index])
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


def collate_decoded(items: list[tuple[torch.Tensor | None, int, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the items that decoded; log and drop the others (training must go on)."""
    images, targets, failures = collate_with_failures(items)
    for _, reason in failures:
        log.warning("left out of this batch: %s", reason)
    return images, targets


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
        count = len(self.sampler) if self.sampler is not None else len(self.targets)  # type: ignore[arg-type]
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

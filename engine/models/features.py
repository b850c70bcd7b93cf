"""Pooled backbone features, computed once per image and view, kept in an on-disk cache.

Feature extraction trains only a head, so the frozen backbone's output for an
image never changes: it is computed once and stored under a key made of the
backbone, its weights, the transform (and view) and the image file's hash.
Later epochs, and later runs on the same data, read vectors from the cache.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from engine.core.atomic import atomic_write
from engine.core.device import DevicePlan
from engine.core.paths import user_cache_dir
from engine.data.loader_sizing import size_loader
from engine.data.loading import ImageDataset, collate_with_failures
from engine.models.backbones import extract_pooled_features

log = logging.getLogger(__name__)

ImageTransform = Callable[[object], torch.Tensor]


class FeatureCache:
    """Feature vectors of one (backbone, weights, transform) space, one ``.npy`` per image and view.

    Args:
        space: text naming backbone, weights and transform; hashed into the folder name.
        root: cache root (default: the user cache's ``features`` folder).
    """

    def __init__(self, space: str, root: Path | None = None) -> None:
        self.space = space
        digest = hashlib.sha256(space.encode()).hexdigest()[:20]
        self.folder = (root or user_cache_dir("features")) / digest
        self.writable = True  # False after a write failed: features are then computed every epoch

    def path_for(self, file_sha256: str, view: int) -> Path:
        """Where the vector of one image file (by content hash) and view lives."""
        return self.folder / file_sha256[:2] / f"{file_sha256}-{view}.npy"

    def get(self, file_sha256: str, view: int) -> np.ndarray | None:
        """The cached vector, or None when it was never computed (or is unreadable)."""
        path = self.path_for(file_sha256, view)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, file_sha256: str, view: int, vector: np.ndarray) -> None:
        """Store one vector atomically; the first failed write (a full or read-only disk) turns writing off.

        That failure is one warning, not a failed run: the vectors are then computed again when needed.
        """
        if not self.writable:
            return
        try:
            atomic_write(self.path_for(file_sha256, view), lambda temp: _save_npy(temp, vector))
        except OSError as error:
            self.writable = False
            log.warning("feature cache %s cannot be written (%s); going on without it", self.folder, error)


@dataclass(frozen=True)
class FeatureView:
    """One view of every image: a transform, and where its vectors are cached.

    Attributes:
        cache: the feature space of this transform.
        number: the view's number inside that space (augmented views 1, 2, ...).
        transform: Pillow RGB image -> ``(3, H, W)`` tensor.
        source_side: the shorter side the transform needs of a source image, so that photos are
            decoded only that large (``augment.eval_source_side``, ``augment.train_source_side``);
            None decodes them at full size.
    """

    cache: FeatureCache
    number: int
    transform: ImageTransform
    source_side: int | None = None


@dataclass
class ExtractionResult:
    """Features of a list of images.

    Attributes:
        features: ``(N, V, D)`` float32 for the images that decoded.
        kept: indices (into the input list) of those images, in order.
        computed: vectors computed by the backbone in this call.
        reused: vectors read from the cache.
        failed: ``(path, reason)`` of images that could not be decoded.
        seconds: wall time of the call.
    """

    features: torch.Tensor
    kept: list[int]
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def extract_features(
    model: nn.Module,
    paths: Sequence[Path],
    hashes: Sequence[str],
    *,
    views: Sequence[FeatureView],
    plan: DevicePlan,
    batch_size: int = 64,
    num_workers: int | str = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractionResult:
    """Fill the cache for every image and view that lacks a vector, then return them all.

    Args:
        model: the backbone (a timm model), already on ``plan.device``; it is put in eval mode.
        paths: image files.
        hashes: sha256 of each file's bytes (the cache key).
        views: the views to compute; the first is normally the unaugmented eval view.
        plan: device and precision.
        batch_size: images per backbone forward.
        num_workers: decoding processes, or ``auto`` to choose them from the CPUs and a measured
            decode rate (``engine.data.loader_sizing``).
        progress: called with (vectors done, vectors missing) while computing.
    """
    started = time.perf_counter()
    model.eval()
    vectors: dict[tuple[int, int], np.ndarray] = {}
    missing: dict[int, list[int]] = {position: [] for position in range(len(views))}
    for index, digest in enumerate(hashes):
        for position, view in enumerate(views):
            cached = view.cache.get(digest, view.number)
            if cached is None:
                missing[position].append(index)
            else:
                vectors[index, position] = cached
    reused = len(vectors)
    total_missing = sum(len(indices) for indices in missing.values())
    failed: dict[int, str] = {}
    done = 0
    for position, indices in missing.items():
        if not indices:
            continue
        view = views[position]
        dataset = ImageDataset([paths[i] for i in indices], indices, view.transform, view.source_side)
        sizing = size_loader(num_workers, dataset, batch_size=batch_size, cuda=plan.is_cuda,
                             pin_memory=plan.pin_memory)
        arguments = sizing.loader_arguments()
        # One pass over the images: workers kept alive after it would only hold memory.
        arguments["persistent_workers"] = False
        loader = DataLoader(
            dataset, batch_size=batch_size, collate_fn=collate_with_failures, **arguments,
            # Its own generator: drawing its seed from torch's would make the run that fills the cache
            # train (dropout, mixup) on other random numbers than the runs that find it full.
            generator=torch.Generator(),
        )
        for images, batch_indices, failures in loader:
            for image_index, reason in failures:
                failed[image_index] = reason
            if len(batch_indices):
                batch = plan.to_device(images)
                with torch.inference_mode(), plan.autocast():
                    pooled = extract_pooled_features(model, batch).float().cpu().numpy()
                for row, image_index in enumerate(batch_indices.tolist()):
                    vectors[image_index, position] = pooled[row]
                    view.cache.put(hashes[image_index], view.number, pooled[row])
            done += len(batch_indices) + len(failures)
            if progress is not None:
                progress(done, total_missing)
    kept = [index for index in range(len(paths)) if index not in failed]
    if kept:
        features = torch.from_numpy(
            np.stack([np.stack([vectors[index, position] for position in range(len(views))]) for index in kept])
        )
    else:
        features = torch.empty(0, len(views), 0)
    return ExtractionResult(
        features=features,
        kept=kept,
        computed=total_missing - len(failed),
        reused=reused,
        failed=[(str(paths[index]), reason) for index, reason in sorted(failed.items())],
        seconds=time.perf_counter() - started,
    )


def _save_npy(path: Path, vector: np.ndarray) -> None:
    # np.save appends ".npy" to names without it; write through a handle to keep the temp name.
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(vector, dtype=np.float32), allow_pickle=False)

"""Probability ensembles: members' softmax rows averaged into one model, and ensembles picked greedily on validation.

``Ensemble`` loads the members of a manifest (``engine.evaluation.manifest``) and averages
their softmax rows (then argmax: the lectures' rule), optionally weighted;
``build_greedy_manifest`` weights them by greedy selection (``engine.evaluation.selection``)
on the validation split the members share.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.evaluation.manifest import (
    EnsembleManifest,
    build_manifest,
    is_manifest,
    load_manifest,
    save_manifest,
    verify_members,
)
from engine.evaluation.predict import Predictor
from engine.evaluation.predictions import ProbabilityModel, ProbabilityResult, TopKPredictions
from engine.evaluation.selection import accuracy, greedy_selection, log_loss
from engine.evaluation.tta import TestTimeAugmentation, check_tta_mode
from engine.evaluation.validation_split import load_validation_split

__all__ = [
    "Ensemble", "MemberScore", "build_greedy_manifest", "load_probability_model",
    # Re-exported because the GUI, the CLI and the exporter import them from here; their homes are
    # engine.evaluation.manifest, predictions and validation_split.
    "EnsembleManifest", "ProbabilityModel", "build_manifest", "is_manifest", "load_manifest", "load_validation_split",
    "save_manifest",
]


class Ensemble(TopKPredictions):
    """Members' probabilities averaged into one model, usable wherever a ``Predictor`` is.

    Args:
        manifest: an ``EnsembleManifest`` or the path of a saved one (verified either way).
        device: ``auto``, ``cpu`` or ``cuda``, for every member.
        tta: test-time augmentation applied to each member: ``none``, ``flip`` or ``multicrop``.
            Averaging is linear, so this equals TTA over the whole ensemble.

    Raises:
        CheckpointError: a member is missing, changed or does not load.
        ConfigError: an unknown ``tta`` mode.
    """

    def __init__(self, manifest: EnsembleManifest | str | Path, *, device: str = "auto", tta: str = "none") -> None:
        check_tta_mode(tta)
        self.manifest_path: Path | None = None
        if isinstance(manifest, EnsembleManifest):
            verify_members(manifest)
        else:
            self.manifest_path = Path(manifest)
            manifest = load_manifest(manifest)
        self.manifest = manifest
        self.tta = tta
        self.classes: list[str] = list(manifest.classes)
        self.members: list[str] = [member.name for member in manifest.members]
        self.weights = manifest.normalized_weights()
        self.models: dict[str, ProbabilityModel] = {}
        # Each member's own checkpoint model, under its TTA wrapper if any (Grad-CAM needs the network itself).
        self.predictors: dict[str, Predictor] = {}
        for member in manifest.members:
            predictor = Predictor(member.path, device=device)
            self.predictors[member.name] = predictor
            self.models[member.name] = predictor if tta == "none" else TestTimeAugmentation(predictor, tta)
        self._cache_key: tuple | None = None
        self._cache: dict[str, ProbabilityResult] = {}

    def predict_proba(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> ProbabilityResult:
        """The weighted mean of the members' softmax rows for every file all members could read.

        Returns:
            ``probabilities`` ``(len(kept), C)`` float32 rows summing to 1, ``kept`` (indices
            into ``paths``) and ``failures`` (a file any member could not read fails here).
        """
        results = self.member_probabilities(paths, batch_size=batch_size, progress=progress)
        first = next(iter(results.values()))
        total = np.zeros(first.probabilities.shape, dtype=np.float64)
        for name, result in results.items():
            total += self.weights[name] * result.probabilities.astype(np.float64)
        return ProbabilityResult(total.astype(np.float32), list(first.kept), dict(first.failures))

    def predict_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The weighted mean of the members' softmax rows of decoded images (video frames)."""
        total = sum(self.weights[name] * model.predict_images(images).astype(np.float64)
                    for name, model in self.models.items())
        return np.asarray(total, dtype=np.float32)

    def member_probabilities(
        self,
        paths: Sequence[Path],
        *,
        batch_size: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, ProbabilityResult]:
        """Each member's probabilities, on the rows the ensemble keeps, in member order.

        The results of the latest ``paths`` are kept (keyed by path, size and modification
        time), so an evaluation that asks for the ensemble and then its members computes
        each member once.

        Args:
            paths: image files.
            batch_size: images per forward pass.
            progress: called with (member files done, members * files).
        """
        key = _cache_key(paths)
        if key == self._cache_key:
            if progress is not None:
                progress(len(self.models) * len(paths), len(self.models) * len(paths))
            return dict(self._cache)
        raw: dict[str, ProbabilityResult] = {}
        for position, (name, model) in enumerate(self.models.items()):
            offset = position * len(paths)

            def report(done: int, total: int, offset: int = offset) -> None:
                if progress is not None:
                    progress(offset + done, len(self.models) * total)

            raw[name] = model.predict_proba(paths, batch_size=batch_size, progress=report)
        self._cache = _align(raw, len(self.classes))
        self._cache_key = key
        return dict(self._cache)


def load_probability_model(path: str | Path, *, device: str = "auto", tta: str = "none") -> ProbabilityModel:
    """An ``Ensemble`` for a manifest, else a ``Predictor`` (a checkpoint or run folder), with TTA if asked.

    Raises:
        CheckpointError: nothing loadable at ``path``.
        ConfigError: an unknown ``tta`` mode.
    """
    check_tta_mode(tta)
    if is_manifest(path):
        return Ensemble(path, device=device, tta=tta)
    predictor = Predictor(path, device=device)
    return predictor if tta == "none" else TestTimeAugmentation(predictor, tta)


@dataclass(frozen=True)
class MemberScore:
    """How one member scored on the validation split during greedy selection."""

    name: str
    log_loss: float
    accuracy: float
    picked: int


def build_greedy_manifest(
    checkpoints: Sequence[str | Path],
    *,
    data: str | Path | None = None,
    metric: str = "log_loss",
    max_members: int | None = None,
    device: str = "auto",
) -> tuple[EnsembleManifest, list[MemberScore]]:
    """An ensemble whose weights greedy selection picked on the members' own validation split.

    Returns:
        The weighted manifest (members never picked are left out) and every member's scores.
    """
    manifest = build_manifest(checkpoints)
    dataset = load_validation_split(checkpoints, data=data)
    paths = [record.path for record in dataset.splits["val"]]
    targets = np.array(dataset.targets("val"))
    results = Ensemble(manifest, device=device).member_probabilities(paths)
    kept = targets[next(iter(results.values())).kept]
    counts = greedy_selection({name: result.probabilities for name, result in results.items()}, kept,
                              max_members=max_members, metric=metric)
    scores = [MemberScore(name, log_loss(result.probabilities, kept), accuracy(result.probabilities, kept),
                          counts[name]) for name, result in results.items()]
    return manifest.with_weights(counts), scores


def _cache_key(paths: Sequence[Path]) -> tuple:
    key: list[tuple[str, int | None, int | None]] = []
    for path in paths:
        try:
            stat = os.stat(path)
            key.append((str(path), stat.st_size, stat.st_mtime_ns))
        except OSError:
            key.append((str(path), None, None))
    return tuple(key)


def _align(results: Mapping[str, ProbabilityResult], num_classes: int) -> dict[str, ProbabilityResult]:
    """Restrict every member to the files all of them read: one member's failure is the ensemble's."""
    failures: dict[int, str] = {}
    for result in results.values():
        for index, reason in result.failures.items():
            failures.setdefault(index, reason)
    aligned: dict[str, ProbabilityResult] = {}
    for name, result in results.items():
        position = {index: row for row, index in enumerate(result.kept)}
        kept = [index for index in result.kept if index not in failures]
        rows = result.probabilities[[position[index] for index in kept]] if kept else np.zeros(
            (0, num_classes), dtype=np.float32)
        aligned[name] = ProbabilityResult(rows, kept, dict(sorted(failures.items())))
    return aligned

"""Which unlabelled photos to label next: those the model is least sure of, spread out so a batch holds no near-copies.

Uncertainty is the margin between the model's two most likely classes (smaller is less sure). Margin rather
than entropy: a label settles which of the classes the model hesitates between, and margin measures exactly
that hesitation, where entropy also grows with probability spread thinly over classes that are not in question
(both are reported). Diversity: the ``POOL_FACTOR`` x N least sure photos are candidates, and k-center greedy
on the model's pooled backbone features (L2-normalised) picks N of them: first the least sure, then each time
the candidate farthest from every photo picked so far, so near-copies of a picked photo come last. Photos the
dataset already holds (same SHA-256) are listed, flagged, and never picked. Ties go to the smaller margin, then
the path: the same photos and model give the same batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from augment import eval_source_side
from engine.core.atomic import atomic_write_text
from engine.core.errors import CheckpointError, ConfigError, DatasetError
from engine.data.labelling import labelled_hashes
from engine.evaluation.ensemble import Ensemble, is_manifest
from engine.evaluation.predict import Predictor
from engine.evaluation.predictions import ProbabilityModel, collect_image_paths
from engine.evaluation.suggestions import Suggestion, suggestions_csv
from engine.evaluation.tta import TestTimeAugmentation, check_tta_mode
from engine.models.features import FeatureCache, FeatureView, extract_features

# Candidates per photo asked for: enough room to skip near-copies, few enough that all of them are uncertain.
POOL_FACTOR = 4


@dataclass
class LabelNextRanking:
    """The unlabelled photos ranked for labelling.

    Attributes:
        suggestions: the picked batch in picking order (its first k are the batch that k would have given),
            then the other photos by margin, then those already labelled.
        failed: ``(photo, reason)`` of photos that could not be read; left out.
        candidates: how many of the least sure photos the batch was picked from.
    """

    suggestions: list[Suggestion]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    candidates: int = 0

    @property
    def picked(self) -> list[Suggestion]:
        """The photos to label next, in picking order."""
        return [suggestion for suggestion in self.suggestions if suggestion.picked]

    def save_csv(self, path: str | Path) -> Path:
        """Write every suggestion as a row of ``CSV_COLUMNS``, best first, atomically; ``label`` is left to fill in."""
        return atomic_write_text(path, suggestions_csv(self.suggestions))

    def summary(self) -> str:
        """A few lines: the batch, with each photo's guess and margin, and what was left out."""
        labelled = sum(suggestion.already_labelled is not None for suggestion in self.suggestions)
        lines = [f"{len(self.picked)} of {len(self.suggestions)} photos to label next, spread over the "
                 f"{self.candidates} the model is least sure of ({labelled} already labelled, "
                 f"{len(self.failed)} unreadable)"]
        lines += [f"{rank:>3}. {item.path}  guess {item.guess} {item.confidence:.0%}, margin {item.margin:.2f}"
                  for rank, item in enumerate(self.picked, start=1)]
        return "\n".join(lines)


def rank_unlabelled(
    data_path: str | Path,
    unlabelled: str | Path,
    model_path: str | Path,
    *,
    count: int,
    project_dir: str | Path,
    device: str = "auto",
    tta: str = "none",
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelNextRanking:
    """Rank the photos of ``unlabelled`` for labelling and pick a batch of ``count`` (see the module docstring).

    Args:
        data_path: the labelled dataset (a folder of class folders, of train/val/test folders, or a CSV).
        unlabelled: a folder of photos (searched recursively), or one photo.
        model_path: a ``.safetensors`` checkpoint, a run folder (its best) or an ensemble manifest.
        count: photos to pick (fewer when fewer are eligible).
        project_dir: the dataset's project folder (its scan cache is reused).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        tta: test-time augmentation of the predictions: ``none``, ``flip`` or ``multicrop``.
        log: receives progress lines.
        progress: called with (photos predicted, photos) while predicting.

    Raises:
        ConfigError: ``count`` below 1, or an unknown ``tta``.
        DatasetError: ``unlabelled`` holds no image, or the dataset cannot be used.
        CheckpointError: the model cannot be loaded (the message names the file).
    """
    if count < 1:
        raise ConfigError(f"count: must be at least 1, got {count}")
    log = log or _ignore
    found = collect_image_paths([os.path.abspath(unlabelled)])  # absolute: the CSV names photos wherever it goes
    model, network = _load_models(model_path, device=device, tta=tta)
    held = labelled_hashes(data_path, project_dir)
    failed: list[tuple[Path, str]] = []
    hashes: dict[Path, str] = {}
    for path in found:
        try:
            hashes[path] = _sha256(path)
        except OSError as error:
            failed.append((path, f"cannot be read ({error.strerror or error})"))
    paths = list(hashes)
    log(f"predicting {len(paths)} photos with {model_path}")
    result = model.predict_proba(paths, progress=progress)
    failed += [(paths[index], reason) for index, reason in sorted(result.failures.items())]
    kept = [paths[index] for index in result.kept]
    margins, entropies = uncertainty(result.probabilities)
    suggestions = [Suggestion(path, model.classes[int(result.probabilities[row].argmax())],
                              float(result.probabilities[row].max()), float(margins[row]), float(entropies[row]),
                              held.get(hashes[path]))
                   for row, path in enumerate(kept)]
    by_margin = sorted(range(len(suggestions)), key=lambda row: (suggestions[row].margin, str(suggestions[row].path)))
    eligible = [row for row in by_margin if suggestions[row].already_labelled is None]
    candidates = eligible[:POOL_FACTOR * count]
    picked: list[int] = []
    if candidates:
        log(f"spreading the batch over the {len(candidates)} photos the model is least sure of")
        features = _candidate_features(network, [kept[row] for row in candidates],
                                       [hashes[kept[row]] for row in candidates])
        picked = [candidates[position] for position in k_center_greedy(features, count)]
    chosen = set(picked)
    order = picked + [row for row in eligible if row not in chosen] + [
        row for row in by_margin if suggestions[row].already_labelled is not None]
    ranked = [replace(suggestions[row], picked=row in chosen) for row in order]
    return LabelNextRanking(ranked, failed, len(candidates))


def uncertainty(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margin (top-1 minus top-2 probability) and entropy (nats) of each row of ``(N, C)`` probabilities."""
    top_two = -np.partition(-probabilities.astype(np.float64), 1, axis=1)[:, :2]
    safe = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return top_two[:, 0] - top_two[:, 1], -(probabilities * np.log(safe)).sum(axis=1)


def k_center_greedy(features: np.ndarray, count: int) -> list[int]:
    """Pick ``count`` rows of ``(N, D)`` features: row 0 first, then each time the row farthest from all picked.

    Farthest is the largest Euclidean distance to the nearest picked row; ties go to the lower row (with rows
    sorted by margin, the less sure photo). Returns the picked rows in picking order (all rows when N <= count).
    """
    picked = [0]
    nearest = np.linalg.norm(features - features[0], axis=1)
    while len(picked) < min(count, len(features)):
        nearest[picked] = -1.0  # never again, even when every row left is a copy of a picked one (distance 0)
        row = int(np.argmax(nearest))
        picked.append(row)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[row], axis=1))
    return picked


def _load_models(model_path: str | Path, *, device: str, tta: str) -> tuple[ProbabilityModel, Predictor]:
    """The model that predicts, and the network whose features spread the batch (an ensemble's heaviest member).

    One member's features rather than every member's: spreading needs only a sense of which photos look
    alike, and each further member would cost a pass over the candidates.
    """
    check_tta_mode(tta)
    path = Path(model_path)
    if path.suffix.lower() == ".json" and not is_manifest(path) and not path.with_suffix(".safetensors").is_file():
        # Else the checkpoint loader would blame the .safetensors file that a checkpoint's .json stands for.
        raise CheckpointError(f"{path}: not a readable ensemble manifest, nor the metadata of a checkpoint beside it")
    if is_manifest(path):
        ensemble = Ensemble(model_path, device=device, tta=tta)
        heaviest = max(ensemble.members, key=lambda name: ensemble.weights[name])
        return ensemble, ensemble.predictors[heaviest]
    predictor = Predictor(model_path, device=device)
    return (predictor if tta == "none" else TestTimeAugmentation(predictor, tta)), predictor


def _candidate_features(network: Predictor, paths: Sequence[Path], hashes: Sequence[str]) -> np.ndarray:
    """``(N, D)`` L2-normalised pooled features of the candidates, cached per checkpoint file and photo content.

    The checkpoint's path, size and modification time name its cache, as its weights (fine-tuned ones too)
    shape the features; asking again with the same model, e.g. after labelling a batch, reads them back.
    """
    checkpoint = network.checkpoint_path
    stat = checkpoint.stat()
    settings = network.data_settings
    space = f"label-next|{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|eval|{settings.to_dict()}"
    view = FeatureView(FeatureCache(space), 0, network.transform, eval_source_side(settings))
    result = extract_features(network.model, paths, hashes, views=[view], plan=network.plan)
    if len(result.kept) != len(paths):
        # They decoded a moment ago for the predictions: a photo changed or went away meanwhile.
        raise DatasetError(f"{result.failed[0][0]}: could not be read again for its features ({result.failed[0][1]})")
    features = result.features[:, 0].numpy().astype(np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ignore(_line: str) -> None:
    """A log that drops its lines."""

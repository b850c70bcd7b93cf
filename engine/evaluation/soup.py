"""Model soups (Wortsman et al. 2022): average the weights of fine-tuned checkpoints into one checkpoint.

Averaging weights only makes sense for members of one architecture that started from
the same weights: checkpoints of one run (best, last, ema, snapshots), or runs of the
same backbone and head from the same pretrained weights (or, from random
initialisation, with the same seed). Anything else is refused; a probability ensemble
(``engine.evaluation.ensemble``) combines unrelated models instead. The soup is an ordinary
checkpoint that ``engine.evaluation.predict.Predictor`` loads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from engine.core.errors import CheckpointError, DatasetError
from engine.data.prepare import PreparedDataset
from engine.evaluation.manifest import file_sha256
from engine.evaluation.predict import Predictor
from engine.evaluation.selection import accuracy
from engine.models.checkpoint import MODEL_PREFIX, load_checkpoint, save_checkpoint
from engine.models.checkpoint_metadata import read_checkpoint_metadata, resolve_checkpoint_path

SOUP_RULE = ("weight averaging needs members of one architecture from the same starting weights; "
             "use a probability ensemble instead")
RANDOM_INITIALISATION = "random initialisation"
# Facts of the first member that do not describe the soup (its own scores, its optimizer, when it was saved).
_MEMBER_ONLY_METADATA = ("format_version", "optimizer", "metrics", "score", "stopped", "step", "saved")


@dataclass(frozen=True)
class SoupResult:
    """A written soup and how it was made.

    Attributes:
        path: the soup checkpoint.
        method: ``uniform`` or ``greedy``.
        members: the checkpoints averaged into it, in the order they were added.
        member_accuracy: validation top-1 (0 to 1) of every candidate, by file path (greedy only).
        accuracy: the soup's validation top-1 (greedy only).
    """

    path: Path
    method: str
    members: tuple[Path, ...]
    member_accuracy: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None


def check_soup_members(checkpoints: Sequence[str | Path]) -> list[Path]:
    """Refuse checkpoints whose weights cannot be averaged; return their resolved files.

    Every member must have the first one's backbone, head, classes, data settings,
    state-dict keys and shapes, and starting weights (``weights_source``; for random
    initialisation also the run seed). Only metadata and tensor headers are read.

    Raises:
        CheckpointError: fewer than two checkpoints, or a member that differs, saying how.
    """
    if len(checkpoints) < 2:
        raise CheckpointError(f"a soup averages at least two checkpoints, got {len(checkpoints)}")
    files = [resolve_checkpoint_path(checkpoint).resolve() for checkpoint in checkpoints]
    reference = _SoupFacts.read(files[0])
    for file in files[1:]:
        problem = reference.difference(_SoupFacts.read(file))
        if problem:
            raise CheckpointError(f"cannot average {file} with {files[0]}: {problem}")
    return files


def uniform_soup(checkpoints: Sequence[str | Path], out_path: str | Path) -> SoupResult:
    """Average every checkpoint's weights with equal shares and write the soup.

    Args:
        checkpoints: ``.safetensors`` files or run folders (their best), at least two.
        out_path: the soup's ``.safetensors`` file.

    Raises:
        CheckpointError: members that cannot be averaged (see ``check_soup_members``).
    """
    files = check_soup_members(checkpoints)
    state = _average_states(files)
    path = _write_soup(out_path, state, files, method="uniform")
    return SoupResult(path, "uniform", tuple(files))


def greedy_soup(
    checkpoints: Sequence[str | Path],
    validation: PreparedDataset | Sequence[str | Path],
    out_path: str | Path,
    *,
    targets: Sequence[int] | None = None,
    split: str = "val",
    device: str = "auto",
    batch_size: int = 32,
) -> SoupResult:
    """Wortsman et al.'s greedy soup: add members best-first while validation accuracy does not drop.

    Members are ranked by their own validation top-1; the soup starts as the best one and
    each next member joins if the uniform average with it scores at least as well.

    Args:
        checkpoints: ``.safetensors`` files or run folders (their best), at least two.
        validation: a prepared dataset (its ``split`` is used), or image files.
        out_path: the soup's ``.safetensors`` file.
        targets: class indices of the image files (only with files).
        split: which split of a prepared dataset to use.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: images per forward pass.

    Raises:
        CheckpointError: members that cannot be averaged, or a dataset of other classes.
        DatasetError: no validation images, targets missing or of the wrong length, or no
            image that decodes.
    """
    files = check_soup_members(checkpoints)
    classes = list(read_checkpoint_metadata(files[0])["classes"])
    paths, labels = _validation_data(validation, targets, split, classes)
    predictor = Predictor(files[0], device=device)

    def score(state: dict[str, torch.Tensor]) -> float:
        predictor.model.load_state_dict(state)
        result = predictor.predict_proba(paths, batch_size=batch_size)
        if not result.kept:
            raise DatasetError(f"none of the {len(paths)} validation images could be read")
        return accuracy(result.probabilities, labels[result.kept])

    member_accuracy = {str(file): score(load_checkpoint(file).model_state) for file in files}
    # Stable sort: equal scores keep the order they were given in.
    ranked = sorted(files, key=lambda file: -member_accuracy[str(file)])
    chosen = [ranked[0]]
    first = load_checkpoint(ranked[0]).model_state
    total = _to_float64(first)
    soup_accuracy = member_accuracy[str(ranked[0])]
    for candidate in ranked[1:]:
        trial = _add(total, load_checkpoint(candidate).model_state)
        trial_accuracy = score(_mean(trial, len(chosen) + 1, first))
        # ">=": Wortsman et al. keep an ingredient that does not hurt held-out accuracy.
        if trial_accuracy >= soup_accuracy:
            chosen.append(candidate)
            total, soup_accuracy = trial, trial_accuracy
    state = _mean(total, len(chosen), first)
    path = _write_soup(out_path, state, chosen, method="greedy", accuracy=soup_accuracy)
    return SoupResult(path, "greedy", tuple(chosen), member_accuracy, soup_accuracy)


@dataclass(frozen=True)
class _SoupFacts:
    """What must match for two checkpoints' weights to be averaged."""

    file: Path
    backbone: str
    head: Any
    classes: tuple[str, ...]
    data_settings: Any
    weights_source: str
    seed: Any
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def read(cls, file: Path) -> _SoupFacts:
        metadata = read_checkpoint_metadata(file)
        try:
            with safe_open(str(file), framework="pt") as handle:
                shapes = {key[len(MODEL_PREFIX):]: tuple(handle.get_slice(key).get_shape())
                          for key in handle.keys() if key.startswith(MODEL_PREFIX)}  # noqa: SIM118
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file}: damaged checkpoint ({error})") from error
        config = metadata.get("config") or {}
        return cls(
            file=file, backbone=str(metadata.get("backbone")), head=metadata.get("head"),
            classes=tuple(metadata.get("classes", ())), data_settings=metadata.get("data_settings"),
            weights_source=str(metadata.get("weights_source")), seed=config.get("seed"), shapes=shapes,
        )

    def difference(self, other: _SoupFacts) -> str:
        """Why ``other`` cannot join a soup with this member, or ''."""
        if other.backbone != self.backbone:
            return f"{self.backbone} and {other.backbone} differ in architecture: {SOUP_RULE}"
        if other.head != self.head:
            return f"their heads differ ({self.head} vs {other.head}), so their architectures do: {SOUP_RULE}"
        if other.classes != self.classes:
            return f"they predict different classes ({list(self.classes)} vs {list(other.classes)})"
        if other.shapes != self.shapes:
            return f"their weights differ ({_shape_difference(self.shapes, other.shapes)}): {SOUP_RULE}"
        if other.weights_source != self.weights_source:
            return (f"they started from different weights ({self.weights_source} vs {other.weights_source}): "
                    f"{SOUP_RULE}")
        if self.weights_source == RANDOM_INITIALISATION and other.seed != self.seed:
            return (f"both started from random initialisation, but with different seeds ({self.seed} vs "
                    f"{other.seed}), so their starting weights differ: {SOUP_RULE}")
        if other.data_settings != self.data_settings:
            return (f"they prepare images differently ({self.data_settings} vs {other.data_settings}); a soup has "
                    "one preprocessing, so train both with the same input size")
        return ""


def _shape_difference(first: dict[str, tuple[int, ...]], second: dict[str, tuple[int, ...]]) -> str:
    missing = sorted(set(first) - set(second))
    if missing:
        return f"{missing[0]} is missing from the second"
    extra = sorted(set(second) - set(first))
    if extra:
        return f"{extra[0]} is only in the second"
    key = next(key for key in first if first[key] != second[key])
    return f"{key} has shape {list(first[key])} vs {list(second[key])}"


def _average_states(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    first = load_checkpoint(files[0]).model_state
    total = _to_float64(first)
    for file in files[1:]:
        total = _add(total, load_checkpoint(file).model_state)
    return _mean(total, len(files), first)


def _to_float64(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Sums in float64: tens of float16/float32 members add up without losing the small differences.
    return {key: value.to(torch.float64) for key, value in state.items() if value.is_floating_point()}


def _add(total: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value + state[key].to(torch.float64) for key, value in total.items()}


def _mean(total: dict[str, torch.Tensor], count: int, first: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floats: the mean, in each tensor's own dtype; integer buffers (``num_batches_tracked``): the first member's."""
    return {key: (total[key] / count).to(value.dtype) if key in total else value.clone()
            for key, value in first.items()}


def _write_soup(
    out_path: str | Path,
    state: dict[str, torch.Tensor],
    members: Sequence[Path],
    *,
    method: str,
    accuracy: float | None = None,
) -> Path:
    metadata: dict[str, Any] = {key: value for key, value in read_checkpoint_metadata(members[0]).items()
                                if key not in _MEMBER_ONLY_METADATA}
    metadata.update({
        "name": "soup",
        "soup_method": method,
        "soup_of": [{"path": str(member), "sha256": file_sha256(member),
                     "name": read_checkpoint_metadata(member).get("name")} for member in members],
        "metrics": {} if accuracy is None else {"val_top1": accuracy},
        "saved": time.time(),
    })
    return save_checkpoint(out_path, model_state=state, metadata=metadata)


def _validation_data(
    validation: PreparedDataset | Sequence[str | Path],
    targets: Sequence[int] | None,
    split: str,
    classes: list[str],
) -> tuple[list[Path], np.ndarray]:
    if isinstance(validation, PreparedDataset):
        if targets is not None:
            raise DatasetError("greedy soup: targets come from the prepared dataset; pass image files to give them")
        if list(validation.classes) != classes:
            raise CheckpointError(f"{validation.root}: classes {list(validation.classes)} differ from the "
                                  f"checkpoints' {classes}")
        if split not in validation.splits:
            raise DatasetError(f"{validation.root}: no split {split!r}; expected one of "
                               f"{', '.join(validation.splits)}")
        paths = [record.path for record in validation.splits[split]]
        labels = validation.targets(split)
    else:
        paths = [Path(path) for path in validation]
        if targets is None or len(targets) != len(paths):
            raise DatasetError(f"greedy soup: expected one target per validation image ({len(paths)}), got "
                               f"{'none' if targets is None else len(targets)}")
        labels = list(targets)
    if not paths:
        raise DatasetError(f"greedy soup: the {split} images are needed to score members, and there are none")
    return paths, np.asarray(labels, dtype=np.int64)

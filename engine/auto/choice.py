"""The model Auto recommends: a greedy ensemble of its runs' checkpoints when it wins on validation, else one.

Every candidate (each run's ``best`` and ``ema``) predicts the validation split the runs share;
greedy ensemble selection (``engine.evaluation.selection``, as ``build_greedy_manifest`` does)
weights them by log-loss. The ensemble is recommended only when it has at least two members
and a lower validation log-loss than the best single checkpoint; otherwise that checkpoint is.
Without time to predict (or after a stop), the checkpoint with the best recorded score is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.evaluation.ensemble import Ensemble, build_manifest, load_validation_split, save_manifest
from engine.evaluation.manifest import file_sha256
from engine.evaluation.selection import accuracy, greedy_selection, log_loss
from engine.models.checkpoint_metadata import read_checkpoint_metadata


@dataclass(frozen=True)
class Choice:
    """What Auto recommends, and why.

    Attributes:
        path: the checkpoint (``.safetensors``) or ensemble manifest (``.json``).
        kind: ``checkpoint`` or ``ensemble``.
        reason: in a sentence.
        val_accuracy: top-1 on the validation split, in [0, 1] (recorded by training when not scored here).
        val_log_loss: log-loss on the validation split, when the candidates were scored here.
        candidates: each candidate's name, path, scores and greedy picks.
    """

    path: Path
    kind: str
    reason: str
    val_accuracy: float | None = None
    val_log_loss: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {**asdict(self), "path": str(self.path)}


def choose_model(
    candidates: Sequence[Path], manifest_path: Path, *, score: bool, unscored_because: str = "", device: str = "auto",
) -> Choice:
    """Pick the model to recommend among ``candidates`` (checkpoint files, best first within a run).

    Args:
        candidates: checkpoints of the Auto runs, all on one dataset split.
        manifest_path: where an ensemble's manifest goes, if one wins.
        score: predict the validation split with every candidate (False: take the best recorded score).
        unscored_because: why not, in words (``Auto was stopped``), when ``score`` is False.
        device: where the candidates predict.

    Raises:
        CheckpointError: no candidate, or one that does not load.
    """
    unique = _without_copies(candidates)
    if len(unique) == 1:
        only = unique[0]
        return Choice(only, "checkpoint", "the only model trained", _recorded_accuracy(only))
    if not score:
        best = max(unique, key=recorded_score)
        return Choice(best, "checkpoint", f"the best validation top-1 recorded during training ({unscored_because}, so "
                      "the candidates were not scored together)", _recorded_accuracy(best),
                      candidates=[{"path": str(path), "val_accuracy": _recorded_accuracy(path)} for path in unique])
    return _scored_choice(unique, manifest_path, device)


def _scored_choice(candidates: list[Path], manifest_path: Path, device: str) -> Choice:
    manifest = build_manifest(candidates)
    dataset = load_validation_split(candidates)
    paths = [record.path for record in dataset.splits["val"]]
    if not paths:
        best = max(candidates, key=recorded_score)
        return Choice(best, "checkpoint", "no validation images to score an ensemble on: the best recorded score",
                      _recorded_accuracy(best))
    results = Ensemble(manifest, device=device).member_probabilities(paths)
    targets = np.array(dataset.targets("val"))[next(iter(results.values())).kept]
    probabilities = {name: result.probabilities.astype(np.float64) for name, result in results.items()}
    picks = greedy_selection(probabilities, targets, metric="log_loss")
    rows: list[dict[str, Any]] = [
        {"name": member.name, "path": str(member.path), "val_log_loss": log_loss(probabilities[member.name], targets),
         "val_accuracy": accuracy(probabilities[member.name], targets), "picked": picks[member.name]}
        for member in manifest.members
    ]
    single = min(rows, key=lambda row: row["val_log_loss"])
    total = sum(picks.values())
    blend = sum(picks[name] * member_rows for name, member_rows in probabilities.items()) / total
    blend_loss, blend_accuracy = log_loss(blend, targets), accuracy(blend, targets)
    members = sum(1 for count in picks.values() if count)
    if members >= 2 and blend_loss < single["val_log_loss"]:
        path = save_manifest(manifest.with_weights(picks), manifest_path)
        return Choice(path, "ensemble",
                      f"a greedy ensemble of {members} of the {len(rows)} checkpoints: validation log-loss "
                      f"{blend_loss:.4f} against {single['val_log_loss']:.4f} for the best single one "
                      f"({single['name']})",
                      blend_accuracy, blend_loss, rows)
    return Choice(Path(single["path"]), "checkpoint",
                  f"the lowest validation log-loss of the {len(rows)} checkpoints ({single['val_log_loss']:.4f}); no "
                  "ensemble of them scored lower", single["val_accuracy"], single["val_log_loss"], rows)


def _without_copies(candidates: Sequence[Path]) -> list[Path]:
    """The candidates in order, each content once (a manifest refuses the same file twice)."""
    seen: set[str] = set()
    unique: list[Path] = []
    for path in candidates:
        digest = file_sha256(path)
        if digest not in seen:
            seen.add(digest)
            unique.append(Path(path))
    return unique


def recorded_score(path: Path) -> tuple[float, float]:
    """A checkpoint's validation (top-1, minus loss) recorded in training; higher is better, -inf where missing."""
    metrics = read_checkpoint_metadata(path).get("metrics") or {}
    top1, loss = metrics.get("val_top1"), metrics.get("val_loss")
    return (float(top1) if top1 is not None else -np.inf, -float(loss) if loss is not None else -np.inf)


def _recorded_accuracy(path: Path) -> float | None:
    """The checkpoint's validation top-1 recorded in training, if any."""
    top1 = recorded_score(path)[0]
    return top1 if np.isfinite(top1) else None

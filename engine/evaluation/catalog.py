"""The models a project holds: every checkpoint of its runs and searches, and its ensembles.

The Evaluate, Ensemble, Predict and Export pages offer these to choose from. Only
headers are read (checkpoint metadata, manifest JSON), so listing a project with
hundreds of checkpoints takes milliseconds; a damaged file is listed as unreadable
with the reason instead of stopping the listing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from engine.core.errors import TransferStudioError
from engine.evaluation.manifest import MANIFEST_KIND
from engine.models.checkpoint_metadata import read_checkpoint_metadata

ENSEMBLES_FOLDER = "ensembles"
# Where run folders live inside a project: plain runs, and the trials of searches.
_CHECKPOINT_GLOBS = ("runs/*/checkpoints/*.safetensors", "searches/*/trials/*/checkpoints/*.safetensors")
# Checkpoints a run writes, best first; snapshots (other names) come after, by name.
_NAME_ORDER = {"best": 0, "ema": 1, "last": 2}


@dataclass(frozen=True)
class ModelEntry:
    """One model a user can pick: a checkpoint or an ensemble manifest.

    Attributes:
        path: the ``.safetensors`` checkpoint or the manifest ``.json``.
        kind: ``checkpoint``, ``ensemble`` or ``unreadable``.
        label: a short name to show, e.g. ``20261124-101500-resnet18 · best``.
        run_dir: the run folder of a checkpoint; None for ensembles.
        name: the checkpoint's name (``best``, ``last``, ``ema``, a snapshot) or the manifest's stem.
        backbone: the timm model of a checkpoint; None for ensembles.
        mode: the training mode of a checkpoint; None for ensembles.
        classes: the class names the model predicts.
        epoch: the epoch a checkpoint was saved after.
        val_top1: validation top-1 accuracy (0 to 1) recorded when the checkpoint was saved.
        val_loss: validation loss recorded when the checkpoint was saved.
        members: the member checkpoints of an ensemble.
        modified: the file's modification time.
        problem: why an unreadable file cannot be used; "" otherwise.
    """

    path: Path
    kind: str
    label: str
    run_dir: Path | None = None
    name: str = ""
    backbone: str | None = None
    mode: str | None = None
    classes: tuple[str, ...] = ()
    epoch: int | None = None
    val_top1: float | None = None
    val_loss: float | None = None
    members: tuple[Path, ...] = field(default=())
    modified: datetime | None = None
    problem: str = ""

    @property
    def is_usable(self) -> bool:
        """Whether the model can be loaded (it was readable when listed)."""
        return self.kind != "unreadable"


def ensembles_folder(project_dir: str | Path) -> Path:
    """Where the app saves a project's ensemble manifests."""
    return Path(project_dir) / ENSEMBLES_FOLDER


def list_models(project_dir: str | Path) -> list[ModelEntry]:
    """Every checkpoint and ensemble manifest of a project, newest run first.

    Args:
        project_dir: the project folder (``engine.core.paths.project_dir_for(dataset)``).

    Returns:
        Checkpoints grouped by run (newest run first; best, ema, last, then snapshots),
        then the weight soups and the ensemble manifests in ``ensembles/``, newest first. Empty when the project
        has none, or does not exist yet.
    """
    project = Path(project_dir)
    checkpoints = [file for pattern in _CHECKPOINT_GLOBS for file in project.glob(pattern)]
    by_run: dict[Path, list[Path]] = {}
    for file in checkpoints:
        by_run.setdefault(file.parent.parent, []).append(file)
    entries = []
    for run_dir in sorted(by_run, key=lambda folder: folder.name, reverse=True):
        for file in sorted(by_run[run_dir], key=lambda path: (_NAME_ORDER.get(path.stem, 3), path.stem)):
            entries.append(describe_checkpoint(file))
    # Soups are checkpoints written beside the manifests, each with a readable .json copy of its metadata.
    folder = ensembles_folder(project)
    soups = sorted(folder.glob("*.safetensors"), key=_newest_first)
    manifests = sorted((file for file in folder.glob("*.json") if not file.with_suffix(".safetensors").exists()),
                       key=_newest_first)
    entries.extend(describe_checkpoint(file) for file in soups)
    entries.extend(describe_manifest(file) for file in manifests)
    return entries


def describe_checkpoint(path: str | Path) -> ModelEntry:
    """A checkpoint's entry, from its embedded metadata only (no tensors are read)."""
    file = Path(path)
    run_dir = file.parent.parent if file.parent.name == "checkpoints" else None
    label = f"{run_dir.name} · {file.stem}" if run_dir else file.stem
    try:
        metadata = read_checkpoint_metadata(file)
    except TransferStudioError as error:
        return ModelEntry(file, "unreadable", label, run_dir=run_dir, name=file.stem, problem=str(error))
    metrics = metadata.get("metrics") or {}
    return ModelEntry(
        path=file,
        kind="checkpoint",
        label=label,
        run_dir=run_dir,
        name=str(metadata.get("name") or file.stem),
        backbone=metadata.get("backbone"),
        mode=metadata.get("mode"),
        classes=tuple(metadata.get("classes") or ()),
        epoch=metadata.get("epoch"),
        val_top1=_number(metrics.get("val_top1")),
        val_loss=_number(metrics.get("val_loss")),
        modified=_modified(file),
    )


def describe_manifest(path: str | Path) -> ModelEntry:
    """An ensemble manifest's entry; member files are not opened."""
    file = Path(path)
    label = f"ensemble · {file.stem}"
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
        if payload.get("kind") != MANIFEST_KIND:
            raise ValueError(f"expected \"kind\": \"{MANIFEST_KIND}\"")
        members = tuple((file.parent / member["path"]).resolve() for member in payload["members"])
        classes = tuple(payload["classes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return ModelEntry(file, "unreadable", label, name=file.stem,
                          problem=f"{file}: not a readable ensemble manifest ({error})")
    return ModelEntry(file, "ensemble", f"{label} ({len(members)} members)", name=file.stem, classes=classes,
                      members=members, modified=_modified(file))


def _newest_first(file: Path) -> float:
    return -file.stat().st_mtime


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _modified(file: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(file.stat().st_mtime)
    except OSError:
        return None

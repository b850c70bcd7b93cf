"""Ensemble manifests: the JSON file naming an ensemble's member checkpoints, their hashes and weights.

A manifest names each member by path and sha256, so a changed or missing member is
refused rather than silently used. Only JSON and safetensors headers are read here (no
torch): the GUI lists and shows ensembles with this module alone; ``engine.evaluation.ensemble``
loads the members and averages their predictions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_write_json
from engine.core.errors import CheckpointError
from engine.models.checkpoint_metadata import read_checkpoint_metadata, resolve_checkpoint_path

MANIFEST_KIND = "transfer_studio_ensemble"
MANIFEST_SCHEMA_VERSION = 1
COMBINE_RULES = ("mean", "weighted")

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class EnsembleMember:
    """One checkpoint of an ensemble.

    Attributes:
        name: unique within the ensemble, e.g. ``20261124-101500-resnet18/best``.
        path: the ``.safetensors`` file (absolute once loaded or built).
        sha256: hex digest of the file's bytes when the ensemble was built.
        weight: relative weight, > 0 (used by the ``weighted`` rule).
    """

    name: str
    path: Path
    sha256: str
    weight: float = 1.0


@dataclass(frozen=True)
class EnsembleManifest:
    """The members of an ensemble and how their probabilities are combined.

    Attributes:
        classes: the class names every member predicts, in index order.
        members: at least one member.
        combine: ``mean`` (every member counts the same) or ``weighted`` (by ``weight``).
        schema_version: the manifest format version.
    """

    classes: tuple[str, ...]
    members: tuple[EnsembleMember, ...]
    combine: str = "mean"
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def normalized_weights(self) -> dict[str, float]:
        """Each member's share of the average, summing to 1."""
        raw = [1.0 if self.combine == "mean" else member.weight for member in self.members]
        total = sum(raw)
        return {member.name: value / total for member, value in zip(self.members, raw, strict=True)}

    def with_weights(self, weights: Mapping[str, float]) -> EnsembleManifest:
        """A ``weighted`` manifest of the members with a weight above 0 (e.g. ``greedy_selection``'s counts).

        Raises:
            CheckpointError: a name that is not a member, a negative weight, or no weight above 0.
        """
        unknown = sorted(set(weights) - {member.name for member in self.members})
        if unknown:
            raise CheckpointError(f"ensemble weights: {unknown[0]!r} is not a member; members are "
                                  f"{', '.join(member.name for member in self.members)}")
        for name, weight in weights.items():
            _check_weight(f"ensemble weights: {name}", weight)
        kept = tuple(replace(member, weight=float(weights[member.name])) for member in self.members
                     if weights.get(member.name, 0) > 0)
        if not kept:
            raise CheckpointError("ensemble weights: at least one member needs a weight above 0")
        return replace(self, members=kept, combine="weighted")

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """Plain JSON; member paths relative to ``relative_to`` where possible (portable folders)."""
        return {
            "kind": MANIFEST_KIND,
            "schema_version": self.schema_version,
            "classes": list(self.classes),
            "combine": self.combine,
            "members": [
                {"name": member.name, "path": _portable_path(member.path, relative_to), "sha256": member.sha256,
                 "weight": member.weight}
                for member in self.members
            ],
        }


def build_manifest(
    checkpoints: Sequence[str | Path],
    *,
    weights: Sequence[float] | None = None,
) -> EnsembleManifest:
    """Describe an ensemble of checkpoints: classes, member names, content hashes and weights.

    Members may be best checkpoints of different runs, or snapshots of one run (``best``,
    ``last``, ``ema``, cyclic-schedule snapshots): all that matters is that they predict
    the same classes. A run folder means its ``best``.

    Args:
        checkpoints: ``.safetensors`` files, their ``.json``, or run folders.
        weights: one relative weight (>= 0) per checkpoint, making the rule ``weighted``;
            members of weight 0 are left out. None: the plain ``mean``.

    Raises:
        CheckpointError: no checkpoint, a missing or foreign file, the same file twice,
            classes that differ (naming both files and their classes), or bad weights.
    """
    if not checkpoints:
        raise CheckpointError("ensemble: needs at least one checkpoint")
    if weights is not None and len(weights) != len(checkpoints):
        raise CheckpointError(f"ensemble weights: expected one per checkpoint ({len(checkpoints)}), got {len(weights)}")
    files = [resolve_checkpoint_path(checkpoint).resolve() for checkpoint in checkpoints]
    classes = _check_same_classes(files)
    digests: dict[str, Path] = {}
    names = _unique_names(files)
    members: list[EnsembleMember] = []
    for index, file in enumerate(files):
        digest = file_sha256(file)
        if digest in digests:
            raise CheckpointError(f"{file}: same content as {digests[digest]}; list a checkpoint once and give it a "
                                  "larger weight instead")
        digests[digest] = file
        weight = 1.0 if weights is None else _check_weight(f"ensemble weights: {file}", weights[index])
        members.append(EnsembleMember(names[index], file, digest, weight))
    manifest = EnsembleManifest(classes, tuple(members), "mean" if weights is None else "weighted")
    if weights is not None:
        manifest = manifest.with_weights({member.name: member.weight for member in members})
    return manifest


def save_manifest(manifest: EnsembleManifest, path: str | Path) -> Path:
    """Write the manifest as JSON, atomically; member paths are stored relative to it where possible."""
    target = Path(path)
    return atomic_write_json(target, manifest.to_dict(relative_to=target.resolve().parent))


def load_manifest(path: str | Path) -> EnsembleManifest:
    """Read a manifest and check that every member file is there, unchanged, with the manifest's classes.

    Only JSON is parsed here; members are read as safetensors headers.

    Raises:
        CheckpointError: not a manifest, an invalid field (named), or a member that is
            missing, changed since the ensemble was built (its sha256), or of other classes.
    """
    file = Path(path)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"{file}: cannot read ensemble manifest ({error.strerror or error})") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{file}: not valid JSON ({error})") from error
    manifest = _manifest_from_dict(payload, file)
    verify_members(manifest)
    return manifest


def is_manifest(path: str | Path) -> bool:
    """Whether ``path`` is an ensemble manifest (rather than a checkpoint, its ``.json`` or a run folder)."""
    file = Path(path)
    if not file.is_file() or file.suffix.lower() != ".json":
        return False
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(payload, dict) and payload.get("kind") == MANIFEST_KIND


def verify_members(manifest: EnsembleManifest) -> None:
    """Refuse a member file that is missing, has changed (sha256), or predicts other classes.

    Raises:
        CheckpointError: naming the member and its file.
    """
    for member in manifest.members:
        if not member.path.is_file():
            raise CheckpointError(f"ensemble member {member.name!r}: {member.path} is missing")
        digest = file_sha256(member.path)
        if digest != member.sha256:
            raise CheckpointError(
                f"ensemble member {member.name!r}: {member.path} changed since the ensemble was built (sha256 "
                f"{digest[:12]}..., expected {member.sha256[:12]}...); rebuild the ensemble to use the new weights"
            )
        classes = tuple(read_checkpoint_metadata(member.path).get("classes", ()))
        if classes != manifest.classes:
            raise CheckpointError(f"ensemble member {member.name!r}: {member.path} predicts {list(classes)}, the "
                                  f"ensemble {list(manifest.classes)}")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes.

    Raises:
        CheckpointError: the file cannot be read.
    """
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                sha.update(chunk)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from error
    return sha.hexdigest()


def _check_weight(field: str, weight: float) -> float:
    value = float(weight)
    if not math.isfinite(value) or value < 0:
        raise CheckpointError(f"{field}: a weight must be a finite number >= 0, got {weight!r}")
    return value


def _check_same_classes(files: Sequence[Path]) -> tuple[str, ...]:
    reference = files[0]
    classes = tuple(read_checkpoint_metadata(reference).get("classes", ()))
    for file in files[1:]:
        other = tuple(read_checkpoint_metadata(file).get("classes", ()))
        if other != classes:
            difference = _class_difference(other, classes, names=("this member", "the first member"))
            raise CheckpointError(f"{file} predicts classes {list(other)}, but the first member {reference} predicts "
                                  f"{list(classes)} ({difference}); ensemble members must predict the same "
                                  "classes in the same order")
    if not classes:
        raise CheckpointError(f"{reference}: its metadata names no classes")
    return classes


def _class_difference(first: Sequence[str], second: Sequence[str], *,
                      names: tuple[str, str]) -> str:
    missing, extra = sorted(set(first) - set(second)), sorted(set(second) - set(first))
    if not missing and not extra:
        return "the same classes in another order"
    parts = ([f"only in {names[0]}: {', '.join(missing)}"] if missing else []) + (
        [f"only in {names[1]}: {', '.join(extra)}"] if extra else [])
    return "; ".join(parts)


def _unique_names(files: Sequence[Path]) -> list[str]:
    """``RUN/best`` for checkpoints in a run's ``checkpoints`` folder, else the file's stem; made unique."""
    names: list[str] = []
    for file in files:
        base = f"{file.parent.parent.name}/{file.stem}" if file.parent.name == "checkpoints" else file.stem
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


def _portable_path(path: Path, relative_to: Path | None) -> str:
    if relative_to is None:
        return path.as_posix()
    try:
        return Path(os.path.relpath(path, relative_to)).as_posix()
    except ValueError:
        # Another drive on Windows: no relative path exists.
        return path.as_posix()


def _manifest_from_dict(payload: Any, file: Path) -> EnsembleManifest:
    if not isinstance(payload, dict) or payload.get("kind") != MANIFEST_KIND:
        raise CheckpointError(f"{file}: not an ensemble manifest (expected \"kind\": \"{MANIFEST_KIND}\")")
    version = payload.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise CheckpointError(f"{file}: schema_version: this Transfer Studio reads version "
                              f"{MANIFEST_SCHEMA_VERSION}, got {version!r}")
    classes = payload.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes):
        raise CheckpointError(f"{file}: classes: expected a non-empty list of class names, got {classes!r}")
    combine = payload.get("combine")
    if combine not in COMBINE_RULES:
        raise CheckpointError(f"{file}: combine: must be one of {', '.join(COMBINE_RULES)}, got {combine!r}")
    entries = payload.get("members")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{file}: members: expected a non-empty list, got {entries!r}")
    members: list[EnsembleMember] = []
    for index, entry in enumerate(entries):
        where = f"{file}: members[{index}]"
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("name", "path",
                                                                                            "sha256")):
            raise CheckpointError(f"{where}: expected name, path and sha256 strings and a weight, got {entry!r}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 \
                or not math.isfinite(weight):
            raise CheckpointError(f"{where}.weight: must be a number > 0, got {weight!r}")
        member_path = Path(entry["path"])
        if not member_path.is_absolute():
            member_path = file.resolve().parent / member_path
        members.append(EnsembleMember(entry["name"], member_path.resolve(), entry["sha256"], float(weight)))
    names = [member.name for member in members]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise CheckpointError(f"{file}: members: the name {duplicate!r} is used twice")
    return EnsembleManifest(tuple(classes), tuple(members), combine, version)

"""Probability ensembles: a JSON manifest of member checkpoints, their averaged predictions, greedy selection.

A manifest names each member by path and sha256, so a changed or missing member is
refused rather than silently used. ``Ensemble`` averages its members' softmax rows
(then argmax: the lectures' rule), optionally weighted; ``greedy_selection`` picks
the weights on validation (Caruana et al. 2004, forward selection with replacement).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.core.atomic import atomic_write_json
from engine.core.config import RunConfig
from engine.core.errors import CheckpointError, ConfigError
from engine.data.prepare import PreparedDataset
from engine.evaluation.predict import Prediction, Predictor, ProbabilityResult, TopKPredictions
from engine.evaluation.tta import TestTimeAugmentation, check_tta_mode
from engine.models.checkpoint import read_checkpoint_metadata, resolve_checkpoint_path
from engine.training.setup import prepare_run_data

MANIFEST_KIND = "transfer_studio_ensemble"
MANIFEST_SCHEMA_VERSION = 1
COMBINE_RULES = ("mean", "weighted")
GREEDY_METRICS = ("log_loss", "accuracy")

# Only an exact 0 is clipped: any larger float32 probability is above this, which keeps
# log-loss convex in the probabilities (so an average never scores worse than its members).
_SMALLEST_PROBABILITY = 1e-300
_HASH_CHUNK_BYTES = 1 << 20


class ProbabilityModel(Protocol):
    """What evaluation, prediction and the GUI need of a model or an ensemble."""

    classes: list[str]

    def predict_proba(
        self, paths: Sequence[Path], *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
    ) -> ProbabilityResult: ...

    def predict(self, paths: Sequence[Path], *, top_k: int = 3) -> list[Prediction]: ...


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
        for member in manifest.members:
            predictor = Predictor(member.path, device=device)
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


def load_validation_split(
    checkpoints: Sequence[str | Path], *, data: str | Path | None = None
) -> PreparedDataset:
    """The dataset split the checkpoints were validated on, rebuilt from their recorded run configs.

    Greedy selection and greedy soups must score members on images none of them trained
    on, so every member must come from the same split (data fractions and split seed).

    Args:
        checkpoints: ``.safetensors`` files or run folders (their best).
        data: the dataset, when it has moved since training (default: the recorded ``data.path``).

    Raises:
        CheckpointError: a checkpoint without a recorded config, members split differently,
            or a dataset whose classes differ from the checkpoints'.
        DatasetError: the dataset cannot be read.
    """
    if not checkpoints:
        raise CheckpointError("validation split: needs at least one checkpoint")
    files = [resolve_checkpoint_path(checkpoint) for checkpoint in checkpoints]
    splits: dict[tuple, Path] = {}
    configs: list[RunConfig] = []
    for file in files:
        metadata = read_checkpoint_metadata(file)
        try:
            config = RunConfig.from_dict(metadata["config"])
        except (KeyError, ConfigError) as error:
            raise CheckpointError(f"{file}: its metadata records no usable run config ({error})") from error
        split = (config.data.val_fraction, config.data.test_fraction, config.data.split_seed)
        if splits and split not in splits:
            other, first = next(iter(splits.items()))
            raise CheckpointError(
                f"{file} was validated on another split (val_fraction, test_fraction, split_seed = {split}) than "
                f"{first} ({other}): one member's validation images may be another's training images"
            )
        splits.setdefault(split, file)
        configs.append(config)
    config = configs[0].with_changes(**{"data.path": str(data)}) if data is not None else configs[0]
    dataset = prepare_run_data(config)
    classes = tuple(read_checkpoint_metadata(files[0]).get("classes", ()))
    if dataset.classes != classes:
        raise CheckpointError(f"{dataset.root}: classes {list(dataset.classes)} differ from {files[0]}'s "
                              f"{list(classes)}")
    return dataset


def log_loss(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-probability of the true class (cross-entropy), in nats; lower is better.

    Args:
        probabilities: ``(N, C)`` rows that sum to 1.
        targets: ``(N,)`` class indices.
    """
    rows, labels = _check_scores_input(probabilities, targets)
    picked = rows[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, _SMALLEST_PROBABILITY))))


def accuracy(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows whose largest probability is on the true class, in [0, 1]."""
    rows, labels = _check_scores_input(probabilities, targets)
    return float(np.mean(rows.argmax(axis=1) == labels))


def greedy_selection(
    member_probabilities: Mapping[str, np.ndarray],
    targets: np.ndarray,
    *,
    max_members: int | None = None,
    rounds: int = 50,
    metric: str = "log_loss",
) -> dict[str, int]:
    """Ensemble selection (Caruana et al. 2004): forward selection with replacement on validation.

    Starts from the best single member, then each round adds the member (possibly one
    already in) whose addition scores best, as long as it improves the score. The
    ensemble is the count-weighted mean, so its score is never worse than the best
    single member's.

    Args:
        member_probabilities: ``{name: (N, C) probabilities}`` on the same validation images.
        targets: ``(N,)`` class indices of those images.
        max_members: most distinct members to pick (None: no limit).
        rounds: most additions after the first member.
        metric: ``log_loss`` (lower is better) or ``accuracy`` (higher is better).

    Returns:
        ``{name: times picked}`` for every member (0 = not picked), in input order;
        usable as weights (``EnsembleManifest.with_weights``).

    Raises:
        ConfigError: no members, arrays of different shapes, an unknown metric, or limits below 1.
    """
    if metric not in GREEDY_METRICS:
        raise ConfigError(f"metric: must be one of {', '.join(GREEDY_METRICS)}, got {metric!r}")
    if not member_probabilities:
        raise ConfigError("member_probabilities: needs at least one member")
    if max_members is not None and max_members < 1:
        raise ConfigError(f"max_members: must be None or >= 1, got {max_members}")
    if rounds < 0:
        raise ConfigError(f"rounds: must be >= 0, got {rounds}")
    names = list(member_probabilities)
    stacked = [np.asarray(member_probabilities[name], dtype=np.float64) for name in names]
    for name, rows in zip(names, stacked, strict=True):
        if rows.shape != stacked[0].shape:
            raise ConfigError(f"member_probabilities[{name!r}]: shape {rows.shape}, expected {stacked[0].shape} "
                              f"like {names[0]!r}")
        _check_scores_input(rows, targets)

    # Lower is better for the search: accuracy is negated.
    def cost(rows: np.ndarray) -> float:
        return log_loss(rows, targets) if metric == "log_loss" else -accuracy(rows, targets)

    costs = [cost(rows) for rows in stacked]
    first = int(np.argmin(costs))
    counts = dict.fromkeys(names, 0)
    counts[names[first]] = 1
    total, size, current = stacked[first].copy(), 1, costs[first]
    for _ in range(rounds):
        distinct = sum(1 for count in counts.values() if count)
        allowed = [index for index, name in enumerate(names)
                   if max_members is None or distinct < max_members or counts[name]]
        trial = [(cost((total + stacked[index]) / (size + 1)), index) for index in allowed]
        best_cost, best_index = min(trial)
        if not best_cost < current:
            break
        counts[names[best_index]] += 1
        total += stacked[best_index]
        size += 1
        current = best_cost
    return counts


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


def _check_scores_input(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(targets)
    if rows.ndim != 2 or labels.shape != (rows.shape[0],) or rows.shape[0] == 0:
        raise ConfigError(f"probabilities {rows.shape} and targets {labels.shape}: expected (N, C) and (N,), N >= 1")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= rows.shape[1]:
        raise ConfigError(f"targets: expected class indices in [0, {rows.shape[1]}), got {labels.min()}.."
                          f"{labels.max()} ({labels.dtype})")
    return rows, labels.astype(np.int64)


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


def _cache_key(paths: Sequence[Path]) -> tuple:
    key = []
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

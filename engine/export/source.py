"""What is exported: a checkpoint, or the members of an ensemble, loaded as Predictors on the CPU and checked to
share their classes and preprocessing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import CheckpointError, ConfigError
from engine.data.settings import DataSettings
from engine.evaluation.ensemble import Ensemble, is_manifest
from engine.evaluation.predict import Predictor
from engine.export.formats import ExportSubject
from engine.export.graph import create_probability_graph
from engine.models.checkpoint import read_checkpoint_metadata


@dataclass
class ExportSource:
    """What is exported: one Predictor, or ensemble members with their weights."""

    label: str  # names the source in messages
    members: list[Predictor]
    weights: list[float]
    settings: list[DataSettings]
    heads: list[Mapping[str, Any] | None]
    data_paths: list[str]
    description: dict[str, Any]
    configs: list[dict[str, Any]]  # each member's run config as its checkpoint saved it
    # The ensemble to check against; None: the weighted average of the members' predictions.
    reference: Ensemble | None = None

    @property
    def is_ensemble(self) -> bool:
        """More than one member, or a manifest of one."""
        return len(self.members) > 1 or self.description.get("kind") == "ensemble"

    @property
    def classes(self) -> list[str]:
        """Label names, in output order (every member's)."""
        return self.members[0].classes

    def subject(self) -> ExportSubject:
        """The source as the formats write it, with its members joined into one probability graph."""
        models = [predictor.model for predictor in self.members]
        temperatures = [temperature_of(predictor) for predictor in self.members]
        weights = self.weights if len(models) > 1 else None
        return ExportSubject(
            label=self.label,
            graph=create_probability_graph(models, self.settings, weights, temperatures),
            models=models,
            heads=self.heads,
            temperatures=temperatures,
            classes=self.classes,
            settings=self.settings[0],
            is_ensemble=self.is_ensemble,
        )


def load_source(path: Path) -> ExportSource:
    """A checkpoint (or its ``.json``, or a run folder's best) or an ensemble manifest, loaded on the CPU.

    Raises:
        CheckpointError: it cannot be loaded, or an ensemble's members disagree.
    """
    if is_manifest(path):
        return _manifest_source(path)
    predictor = Predictor(path, device="cpu")
    metadata = read_checkpoint_metadata(predictor.checkpoint_path)
    description = {
        "kind": "model",
        "checkpoint": str(predictor.checkpoint_path),
        **{key: metadata.get(key) for key in ("backbone", "name", "epoch", "score", "config_digest")},
        "temperature": temperature_of(predictor),
    }
    return predictors_source([predictor], None, description)


def _manifest_source(path: Path) -> ExportSource:
    # Built without test-time augmentation: the exported graph is the plain weighted average.
    ensemble = Ensemble(path, device="cpu")
    members = [ensemble.models[name] for name in ensemble.members]
    predictors = [member for member in members if isinstance(member, Predictor)]
    if len(predictors) != len(members):
        raise CheckpointError(f"{path}: a member is itself an ensemble; an export needs each member to be one model")
    weights = [ensemble.weights[name] for name in ensemble.members]
    description = {"kind": "ensemble", "manifest": str(path)}
    source = predictors_source(predictors, weights, description)
    source.reference = ensemble
    return source


def predictors_source(predictors: list[Predictor], weights: Sequence[float] | None,
                      description: dict[str, Any]) -> ExportSource:
    """Loaded members as one source; ``weights`` are normalised to sum to 1 (None: equal).

    Raises:
        ConfigError: a member is not on the CPU, or the weights are not one finite non-negative number each.
        CheckpointError: no members, or members with other classes or another image size, resize or crop.
    """
    if not predictors:
        raise CheckpointError("export: no model to export (the ensemble has no members)")
    for predictor in predictors:
        if predictor.plan.device.type != "cpu":
            raise ConfigError(f"{predictor.checkpoint_path}: loaded on {predictor.plan.device}, but exports are "
                              "traced on the CPU; load it with Predictor(path, device='cpu')")
    metadata = [read_checkpoint_metadata(predictor.checkpoint_path) for predictor in predictors]
    settings = [DataSettings.from_dict(item["data_settings"]) for item in metadata]
    first = predictors[0]
    for predictor, member_settings in zip(predictors[1:], settings[1:], strict=True):
        if predictor.classes != first.classes:
            raise CheckpointError(
                f"{predictor.checkpoint_path}: classes {predictor.classes} differ from {first.classes} of "
                f"{first.checkpoint_path}; ensemble members must predict the same classes in the same order"
            )
        differing = [name for name in ("input_size", "interpolation", "crop_pct", "crop_mode")
                     if getattr(member_settings, name) != getattr(settings[0], name)]
        if differing:
            raise CheckpointError(
                f"{predictor.checkpoint_path}: its preprocessing ({', '.join(differing)}) differs from that of "
                f"{first.checkpoint_path}; one exported graph takes one image size, resize and crop"
            )
    normalised = normalise_weights(weights, len(predictors))
    if len(predictors) > 1:
        description = {**description, "members": [
            {"checkpoint": str(predictor.checkpoint_path), "backbone": item.get("backbone"), "weight": weight,
             "temperature": temperature_of(predictor)}
            for predictor, item, weight in zip(predictors, metadata, normalised, strict=True)
        ]}
    return ExportSource(
        label=description.get("manifest") or description.get("checkpoint") or str(first.checkpoint_path),
        members=predictors,
        weights=normalised,
        settings=settings,
        heads=[item.get("head") for item in metadata],
        data_paths=[str(((item.get("config") or {}).get("data") or {}).get("path") or "") for item in metadata],
        description=description,
        configs=[item.get("config") or {} for item in metadata],
    )


def normalise_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``count`` weights summing to 1: the given ones scaled, or equal ones for None."""
    if weights is None:
        return [1.0 / count] * count
    values = [float(weight) for weight in weights]
    if len(values) != count or any(not np.isfinite(value) or value < 0 for value in values) or sum(values) <= 0:
        raise ConfigError(
            f"ensemble weights: expected {count} finite non-negative numbers with a positive sum, got {values}"
        )
    total = sum(values)
    return [value / total for value in values]


def temperature_of(predictor: Predictor) -> float:
    """The predictor's calibration temperature; checkpoints without temperature scaling divide by 1."""
    return float(getattr(predictor, "temperature", 1.0))

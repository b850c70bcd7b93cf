"""Calibration: how far a model's confidence is from its accuracy, and temperature scaling to close the gap.

Expected calibration error over equal-width confidence bins (the bins draw the reliability
diagram), and temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
Networks"): one scalar ``T`` fitted on validation turns logits ``z`` into ``softmax(z / T)``,
which changes confidence but never the argmax. A fitted ``T`` is saved in the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.core.errors import CheckpointError, ConfigError
from engine.models.checkpoint import load_checkpoint, save_checkpoint
from engine.models.checkpoint_metadata import read_checkpoint_metadata

NUM_BINS = 15
# Probabilities are float32 softmax outputs: anything below the smallest normal float32 has
# underflowed. The floor keeps a log finite (a loss is at most 87.3 nats) and is otherwise exact,
# so a log-loss computed from probabilities equals the cross-entropy computed from logits.
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
# The search range of T. A barely trained head can need T ~ 0.05 (near-uniform outputs, right
# argmax); a fit that ends on a bound means there is no minimum inside: the validation images
# are separable (the NLL keeps falling as T -> 0) or the model knows nothing (T -> infinity).
TEMPERATURE_BOUNDS = (0.01, 100.0)
TEMPERATURE_KEY = "temperature"


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability diagram, ``(lower, upper]``.

    Attributes:
        lower: lower edge of the confidence range (excluded; the first bin includes 0).
        upper: upper edge (included).
        count: predictions whose confidence falls in the bin.
        confidence: their mean confidence (top-1 probability), or None for an empty bin.
        accuracy: the fraction of them that is right, or None for an empty bin.
    """

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None

    @property
    def gap(self) -> float:
        """``|accuracy - confidence|``, 0 for an empty bin."""
        if self.confidence is None or self.accuracy is None:
            return 0.0
        return abs(self.accuracy - self.confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"lower": self.lower, "upper": self.upper, "count": self.count,
                "confidence": self.confidence, "accuracy": self.accuracy}


@dataclass(frozen=True)
class TemperatureFit:
    """A temperature fitted on validation, with what it did there.

    Attributes:
        temperature: the fitted ``T`` for the probabilities it was fitted on.
        count: validation images it was fitted on.
        nll_before: validation log-loss (nats per image) before scaling.
        nll_after: the same, after.
        ece_before: validation expected calibration error before scaling.
        ece_after: the same, after.
        at_bound: the fit stopped at an end of ``TEMPERATURE_BOUNDS``: the validation set
            cannot pin ``T`` down, so the value should not be trusted or saved.
    """

    temperature: float
    count: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    at_bound: bool

    @property
    def worth_applying(self) -> bool:
        """Fitted inside the bounds, at least 1% away from 1, and no worse on validation ECE.

        The log-loss never gets worse (it is what the fit minimises), but on a few dozen
        images a tiny log-loss gain can come with a worse ECE; such a ``T`` is noise, and
        the model is better left as it is.
        """
        return not self.at_bound and abs(self.temperature - 1.0) >= 0.01 and self.ece_after <= self.ece_before

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"temperature": self.temperature, "count": self.count, "nll_before": self.nll_before,
                "nll_after": self.nll_after, "ece_before": self.ece_before, "ece_after": self.ece_after,
                "at_bound": self.at_bound, "worth_applying": self.worth_applying}


def reliability_bins(
    probabilities: np.ndarray, targets: np.ndarray, *, num_bins: int = NUM_BINS
) -> tuple[ReliabilityBin, ...]:
    """Group predictions into equal-width bins of confidence (their top-1 probability).

    Args:
        probabilities: ``(N, C)`` rows that sum to 1.
        targets: ``(N,)`` true class indices.
        num_bins: bins over [0, 1]; Guo et al. use 15.
    """
    probabilities, targets = _checked(probabilities, targets)
    confidences = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    # side="left" on the inner edges puts a confidence equal to an edge into the bin below:
    # bins are (lower, upper], as in Guo et al., with no floating-point surprises at the edges.
    index = np.searchsorted(edges[1:-1], confidences, side="left")
    bins = []
    for number in range(num_bins):
        members = index == number
        count = int(members.sum())
        bins.append(ReliabilityBin(
            lower=float(edges[number]), upper=float(edges[number + 1]), count=count,
            confidence=float(confidences[members].mean()) if count else None,
            accuracy=float(correct[members].mean()) if count else None,
        ))
    return tuple(bins)


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """ECE: the gap between accuracy and confidence, averaged over bins weighted by their counts; in [0, 1]."""
    total = sum(item.count for item in bins)
    if total == 0:
        return 0.0
    return float(sum(item.count * item.gap for item in bins) / total)


def maximum_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """MCE: the largest gap of any non-empty bin; in [0, 1]."""
    return float(max((item.gap for item in bins if item.count), default=0.0))


def negative_log_likelihood(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean ``-log p(true class)`` in nats (the log-loss); probabilities are floored at ``PROBABILITY_FLOOR``."""
    probabilities, targets = _checked(probabilities, targets)
    if not len(targets):
        return 0.0
    true = probabilities[np.arange(len(targets)), targets].astype(np.float64)
    return float(-np.log(np.maximum(true, PROBABILITY_FLOOR)).mean())


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log p`` as float64, floored: usable as logits (see ``fit_temperature``)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR))


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The temperature ``T`` that minimises the validation NLL of ``softmax(logits / T)``.

    Log-probabilities work as logits: ``log softmax(z) = z - logsumexp(z)`` differs from
    ``z`` by one constant per row, and softmax ignores a per-row constant even after the
    division by ``T``. So the probabilities of any model, or the averaged probabilities of
    an ensemble, can be scaled through ``log_probabilities``.

    The NLL as a function of ``b = 1/T`` is ``mean(logsumexp(b z) - b z_y)``: convex,
    because logsumexp is. Its derivative ``mean(E_b[z] - z_y)`` (softmax-weighted mean
    logit minus the true one) rises monotonically, with second derivative
    ``mean(Var_b[z]) >= 0``; Newton's method on it, kept inside a shrinking bracket,
    finds the unique minimum in a few steps, or stops at a bound when there is none inside.

    Args:
        logits: ``(N, C)`` logits or log-probabilities of the validation images, finite.
        targets: ``(N,)`` true class indices.
        bounds: the smallest and largest ``T`` allowed.

    Returns:
        ``T`` within ``bounds``; below 1 sharpens an under-confident model, above 1 softens
        an over-confident one.

    Raises:
        ValueError: the arrays are empty, mismatched, or not finite.
    """
    values = np.asarray(logits, dtype=np.float64)
    values, targets = _checked(values, targets, probabilities=False)
    if not len(targets):
        raise ValueError("fit_temperature: needs at least one validation image")
    # A per-row shift changes nothing (see above) and keeps exp() in range.
    values = values - values.max(axis=1, keepdims=True)
    true = values[np.arange(len(targets)), targets]
    low, high = 1.0 / bounds[1], 1.0 / bounds[0]  # bracket of b = 1/T

    def slope_and_curvature(inverse: float) -> tuple[float, float]:
        scaled = inverse * values
        weights = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        mean = (weights * values).sum(axis=1)
        variance = (weights * (values - mean[:, None]) ** 2).sum(axis=1)
        return float((mean - true).mean()), float(variance.mean())

    if slope_and_curvature(low)[0] >= 0:
        return float(bounds[1])
    if slope_and_curvature(high)[0] <= 0:
        return float(bounds[0])
    inverse = min(max(1.0, low), high)
    for _ in range(100):
        slope, curvature = slope_and_curvature(inverse)
        if slope > 0:
            high = inverse
        else:
            low = inverse
        step = inverse - slope / curvature if curvature > 0 else math.nan
        if not low < step < high:
            step = 0.5 * (low + high)  # Newton left the bracket: bisect instead
        converged = abs(step - inverse) <= 1e-10 * inverse
        inverse = step
        if converged or high - low <= 1e-12 * inverse:
            break
    return float(1.0 / inverse)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probabilities of the model's logits divided by ``T``.

    Args:
        probabilities: ``(N, C)`` softmax rows.
        temperature: ``T > 0``.

    Returns:
        ``(N, C)`` float32 rows; the argmax of every row is unchanged.
    """
    temperature = _checked_temperature(temperature, "temperature")
    scaled = log_probabilities(probabilities) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def calibrate(probabilities: np.ndarray, targets: np.ndarray, *, num_bins: int = NUM_BINS) -> TemperatureFit:
    """Fit a temperature on validation probabilities and measure NLL and ECE before and after.

    Args:
        probabilities: ``(N, C)`` validation softmax rows of the model as it is.
        targets: ``(N,)`` their true class indices.
        num_bins: bins of the ECE.
    """
    temperature = fit_temperature(log_probabilities(probabilities), targets)
    scaled = apply_temperature(probabilities, temperature)
    return TemperatureFit(
        temperature=temperature,
        count=len(targets),
        nll_before=negative_log_likelihood(probabilities, targets),
        nll_after=negative_log_likelihood(scaled, targets),
        ece_before=expected_calibration_error(reliability_bins(probabilities, targets, num_bins=num_bins)),
        ece_after=expected_calibration_error(reliability_bins(scaled, targets, num_bins=num_bins)),
        at_bound=temperature in TEMPERATURE_BOUNDS,
    )


def temperature_from_metadata(metadata: Mapping[str, Any], source: str | Path = "checkpoint") -> float:
    """The temperature saved in a checkpoint's metadata, or 1.0 when none was.

    Raises:
        CheckpointError: the saved value is not a finite number above 0.
    """
    value = metadata.get(TEMPERATURE_KEY)
    if value is None:
        return 1.0
    try:
        return _checked_temperature(value, f"{source}: metadata {TEMPERATURE_KEY!r}")
    except ConfigError as error:
        raise CheckpointError(str(error)) from error


def save_temperature(checkpoint_path: str | Path, temperature: float) -> Path:
    """Store ``T`` in a checkpoint's metadata (``metadata["temperature"]``), rewriting it atomically.

    Every tensor is kept as it was: model weights, and for a ``last`` checkpoint the
    optimizer state and the RNG state that resuming restores.

    Args:
        checkpoint_path: a ``.safetensors`` checkpoint, its ``.json`` or a run folder (its best).
        temperature: ``T > 0``, the factor the model's logits are divided by.

    Returns:
        The rewritten ``.safetensors`` file.

    Raises:
        ConfigError: ``temperature`` is not a finite number above 0.
        CheckpointError: the checkpoint is missing or damaged.
    """
    temperature = _checked_temperature(temperature, "temperature")
    resumable = "optimizer" in read_checkpoint_metadata(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, with_training_state=resumable)
    metadata = {**checkpoint.metadata, TEMPERATURE_KEY: temperature}
    # save_checkpoint stores the current torch RNG state beside optimizer state; put the saved
    # one in place for the write, and give the caller back its own afterwards.
    with torch.random.fork_rng(devices=[]):
        if checkpoint.rng_state is not None:
            torch.set_rng_state(checkpoint.rng_state)
        return save_checkpoint(checkpoint.path, model_state=checkpoint.model_state, metadata=metadata,
                               optimizer_state=checkpoint.optimizer_state)


def _checked_temperature(value: Any, field: str) -> float:
    try:
        temperature = float(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{field}: must be a number > 0, got {value!r}") from error
    if not math.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"{field}: must be a finite number > 0, got {value!r}")
    return temperature


def _checked(
    values: np.ndarray, targets: np.ndarray, *, probabilities: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if values.ndim != 2 or values.shape[0] != targets.shape[0]:
        raise ValueError(f"expected (N, C) values and N targets, got {values.shape} and {targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= values.shape[1]):
        raise ValueError(
            f"targets must be class indices in [0, {values.shape[1]}), got {targets.min()}..{targets.max()}"
        )
    if not np.isfinite(values).all():
        kind = "probabilities" if probabilities else "logits (use log_probabilities for probabilities with zeros)"
        raise ValueError(f"{kind} must be finite")
    return values, targets

"""Ensemble selection (Caruana et al. 2004) on validation probabilities, and the scores it ranks members by.

Pure numpy: members' ``(N, C)`` probability rows and the true classes in, pick counts
(usable as ensemble weights) out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.core.errors import ConfigError

GREEDY_METRICS = ("log_loss", "accuracy")

# Only an exact 0 is clipped: any larger float32 probability is above this, which keeps
# log-loss convex in the probabilities (so an average never scores worse than its members).
_SMALLEST_PROBABILITY = 1e-300


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


def _check_scores_input(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(targets)
    if rows.ndim != 2 or labels.shape != (rows.shape[0],) or rows.shape[0] == 0:
        raise ConfigError(f"probabilities {rows.shape} and targets {labels.shape}: expected (N, C) and (N,), N >= 1")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= rows.shape[1]:
        raise ConfigError(f"targets: expected class indices in [0, {rows.shape[1]}), got {labels.min()}.."
                          f"{labels.max()} ({labels.dtype})")
    return rows, labels.astype(np.int64)

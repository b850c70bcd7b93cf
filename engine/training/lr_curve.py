"""The curve of a learning-rate range test: its points, the rate it suggests and why, and its picture.

``LRFinderCurve`` holds what ``engine.training.lr_finder`` records, step by step;
``suggest_learning_rate`` reads a rate off it, in plain words; ``write_plot`` draws it
into a PNG that explains itself outside the app.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.core.atomic import atomic_write


@dataclass
class LRFinderCurve:
    """The loss against the learning rate, one point per optimizer step of the sweep.

    Attributes:
        learning_rates: the head's rate at each step (other groups keep their ratio to it).
        losses: training loss of each step's batch.
        smoothed_losses: exponentially smoothed, debiased ``losses``.
        ended: ``diverged`` (smoothed loss passed 3x its minimum, or became inf/nan),
            ``completed`` (every step ran) or ``stopped`` (another callback ended the fit).
    """

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed_losses: list[float] = field(default_factory=list)
    ended: str = "completed"

    @property
    def min_loss_rate(self) -> float | None:
        """The rate at which the smoothed loss was lowest, or None for an empty curve."""
        if not self.smoothed_losses:
            return None
        return self.learning_rates[int(np.argmin(self.smoothed_losses))]

    def to_csv(self) -> str:
        """``learning_rate,loss,smoothed_loss`` with one row per step."""
        lines = ["learning_rate,loss,smoothed_loss"]
        for rate, loss, smoothed in zip(self.learning_rates, self.losses, self.smoothed_losses, strict=True):
            lines.append(f"{rate:.6g},{loss:.6g},{smoothed:.6g}")
        return "\n".join(lines) + "\n"


def suggest_learning_rate(curve: LRFinderCurve) -> tuple[float, str]:
    """Pick a rate from a range-test curve, and say why in plain words.

    The rule: the rate where the smoothed loss falls fastest (most negative slope
    against log rate, before the minimum), but no more than a tenth of the rate at the
    minimum. The steepest fall is where training makes the most progress per step;
    the minimum is already on the edge of blowing up (the sweep got there in a few
    steps, a real run spends thousands), so a decade below it is the safe ceiling.
    The result is rounded to one significant digit.

    Returns:
        ``(rate, reason)``, e.g. ``(0.002, "the smoothed loss falls fastest at 2.1e-3 (and is
        lowest at 3.0e-2; a tenth of that is 3.0e-3): try 2e-3")``.

    Raises:
        ValueError: the curve is empty.
    """
    rates = np.asarray(curve.learning_rates, dtype=float)
    smoothed = np.asarray(curve.smoothed_losses, dtype=float)
    if len(rates) == 0:
        raise ValueError("an empty range-test curve suggests nothing")
    if len(rates) < 3:
        rate = _round_rate(rates[0] / 10)
        return rate, (
            f"the loss blew up within {len(rates)} steps, by {format_rate(rates[-1])}: the sweep started too "
            f"high; start it lower (a tenth of its start is {format_rate(rate, digits=1)})"
        )
    lowest = int(np.argmin(smoothed))
    min_rate = float(rates[lowest])
    tenth = min_rate / 10
    drop = smoothed[0] - smoothed[lowest]
    if lowest < 2 or drop <= 0.02 * abs(smoothed[0]):
        rate = _round_rate(tenth)
        return rate, (
            f"the loss never fell clearly (lowest at {format_rate(min_rate)}, only "
            f"{drop / max(abs(smoothed[0]), 1e-12):.0%} below its start): start the sweep lower, or run the "
            f"sanity check; a tenth of the lowest point is {format_rate(rate)}"
        )
    slopes = np.gradient(smoothed[: lowest + 1], np.log10(rates[: lowest + 1]))
    steepest = int(np.argmin(slopes[:lowest]))
    steepest_rate = float(rates[steepest])
    rate = _round_rate(min(steepest_rate, tenth))
    reason = (
        f"the smoothed loss falls fastest at {format_rate(steepest_rate)} (and is lowest at {format_rate(min_rate)}; "
        f"a tenth of that is {format_rate(tenth)}): try {format_rate(rate, digits=1)}"
    )
    if curve.ended == "completed" and lowest == len(rates) - 1:
        reason += "; the loss was still falling at the end of the sweep, so a higher end rate may show more"
    return rate, reason


def write_plot(
    curve: LRFinderCurve, path: str | Path, *, suggestion: float | None = None, reason: str = "", title: str = ""
) -> Path:
    """Draw the curve as a PNG, atomically: loss per step and smoothed loss against the rate (log axis).

    The lowest smoothed loss and the suggestion are marked, and ``reason`` is printed
    under the title, so the picture explains itself outside the app.
    """
    # The object API with the Agg canvas, not pyplot: no global backend switch, no GUI
    # event loop, safe in any process or thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rates = np.asarray(curve.learning_rates, dtype=float)
    losses = np.asarray(curve.losses, dtype=float)
    smoothed = np.asarray(curve.smoothed_losses, dtype=float)
    figure = Figure(figsize=(8, 5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(rates, losses, color="#a9c1dc", linewidth=1, label="loss per step")
    axes.plot(rates, smoothed, color="#1f4e79", linewidth=2.2, label="smoothed loss")
    if len(rates):
        lowest = int(np.argmin(smoothed))
        axes.plot(rates[lowest], smoothed[lowest], "o", color="#1f4e79", markersize=7,
                  label=f"lowest smoothed loss, at {format_rate(rates[lowest])}")
        # The blown-up tail would squash the useful part: cap the axis a little above the start.
        top = max(smoothed[: lowest + 1].max(), losses[: lowest + 1].max()) * 1.2
        bottom = min(smoothed.min(), losses[: lowest + 1].min())
        axes.set_ylim(max(0.0, bottom - 0.08 * (top - bottom)), top)
    if suggestion is not None:
        axes.axvline(suggestion, color="#c0392b", linestyle="--", linewidth=1.5)
        if len(rates):
            at = np.interp(np.log10(suggestion), np.log10(rates), smoothed)
            axes.plot(suggestion, at, "o", color="#c0392b", markersize=7,
                      label=f"suggested rate, {format_rate(suggestion, digits=1)}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate of the head (log scale)")
    axes.set_ylabel("training loss")
    figure.suptitle(f"Learning-rate range test{': ' + title if title else ''}", fontsize=12)
    if reason:
        lines = math.ceil(len(reason) / 115)  # as many lines as needed, of even length: no orphaned word
        axes.set_title("\n".join(textwrap.wrap(reason, math.ceil(len(reason) / lines) + 8)), fontsize=9,
                       color="#444444")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower left", frameon=True, framealpha=0.9, edgecolor="none")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write(path, lambda temp: temp.write_bytes(buffer.getvalue()))


def _round_rate(rate: float) -> float:
    """One significant digit: 2.6e-3 -> 3e-3."""
    return float(f"{rate:.0e}")


def format_rate(rate: float, *, digits: int = 2) -> str:
    """``2.1e-3`` (``digits`` significant digits), without the exponent's leading zeros and plus sign."""
    mantissa, exponent = f"{rate:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"

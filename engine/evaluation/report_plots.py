"""The report's plots as PNG bytes: confusion matrix, reliability diagram, F1 per class, top-loss images.

Drawn with matplotlib's object API on the Agg canvas (``engine.core.figures``: no pyplot,
no backend switch, safe in any thread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from engine.core.figures import new_figure, png_bytes
from engine.data.images import ImageFileError, load_rgb
from engine.evaluation.metrics import Evaluation, TopLoss

THUMBNAIL_PIXELS = 192
# Colours shared by the plots and the page.
INK, MUTED, ACCENT, WARN, GOOD = "#1f2933", "#616e7c", "#1f4e79", "#c0392b", "#2e7d32"


def draw_confusion(evaluation: Evaluation) -> bytes:
    """The confusion matrix as a PNG: counts in the cells, colour = share of the true class (row)."""
    classes = evaluation.classes
    count = len(classes)
    confusion = evaluation.confusion
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    side = min(18.0, max(5.5, 0.5 * count + 3.0))
    figure = new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    labels = [shorten(name, 18) for name in classes]
    axes.set_xticks(range(count), labels, rotation=45 if count > 3 else 0, ha="right" if count > 3 else "center",
                    rotation_mode="anchor", fontsize=_tick_size(count))
    axes.set_yticks(range(count), labels, fontsize=_tick_size(count))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if count <= 30:
        for row in range(count):
            for column in range(count):
                value = int(confusion[row, column])
                if value == 0 and row != column:
                    continue  # empty off-diagonal cells stay blank: the errors stand out
                axes.text(column, row, str(value), ha="center", va="center", fontsize=max(6, 11 - count // 4),
                          color="white" if shares[row, column] > 0.55 else INK)
    axes.set_xticks(np.arange(count + 1) - 0.5, minor=True)
    axes.set_yticks(np.arange(count + 1) - 0.5, minor=True)
    axes.grid(which="minor", color="white", linewidth=1.0)
    axes.tick_params(which="minor", length=0)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    colorbar.set_label("share of the true class's images")
    axes.set_title(f"Confusion matrix: {evaluation.count} images, top-1 {evaluation.top1:.1%}\n"
                   "rows: true class · columns: predicted class · diagonal: right", fontsize=11)
    return png_bytes(figure)


def draw_reliability(evaluation: Evaluation) -> bytes:
    """The reliability diagram as a PNG: accuracy against confidence per bin, and how many images each bin holds."""
    bins = evaluation.reliability
    width = 1.0 / len(bins) if bins else 1.0
    centres = np.array([(item.lower + item.upper) / 2 for item in bins])
    filled = np.array([item.count > 0 for item in bins], dtype=bool)
    accuracy = np.array([item.accuracy or 0.0 for item in bins])
    confidence = np.array([item.confidence if item.confidence is not None else 0.0 for item in bins])
    counts = np.array([item.count for item in bins])
    figure = new_figure(7.0, 8.0)
    grid = figure.add_gridspec(2, 1, height_ratios=(3.0, 1.0))
    axes = figure.add_subplot(grid[0])
    axes.bar(centres[filled], accuracy[filled], width=width * 0.92, color=ACCENT, alpha=0.85, edgecolor="white",
             label="accuracy of the bin's images")
    # The gap runs from a bin's accuracy to its mean confidence; hatched and unfilled, so that
    # where it lies over the accuracy bar (under-confidence) the bar still shows through.
    axes.bar(centres[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=width * 0.92,
             facecolor="none", edgecolor=WARN, hatch="///", linewidth=1.0, label="gap to the bin's mean confidence")
    axes.plot([0, 1], [0, 1], linestyle="--", color=MUTED, linewidth=1.2, label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.0)
    axes.set_ylabel("accuracy")
    axes.tick_params(labelbottom=False)
    axes.grid(alpha=0.25)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=9)
    figure.suptitle(f"Reliability: ECE {evaluation.ece:.3f}, MCE {evaluation.mce:.3f} "
                    f"({len(bins)} equal-width bins, {evaluation.count} images)\n{_calibration_verdict(evaluation)}",
                    fontsize=11)
    below = figure.add_subplot(grid[1], sharex=axes)
    share = counts / max(1, counts.sum())
    below.bar(centres, share, width=width * 0.92, color="#9fb3c8", edgecolor="white")
    below.axvline(evaluation.mean_confidence, color=WARN, linewidth=1.5,
                  label=f"mean confidence {evaluation.mean_confidence:.2f}")
    below.axvline(evaluation.top1, color=ACCENT, linewidth=1.5, linestyle=":", label=f"top-1 {evaluation.top1:.2f}")
    below.set_xlim(0, 1)
    below.set_ylim(0, max(0.05, float(share.max()) * 1.3))
    below.set_xlabel("confidence (probability of the predicted class)")
    below.set_ylabel("share of images")
    below.legend(loc="upper left", frameon=False, fontsize=8.5)
    return png_bytes(figure)


def draw_per_class(evaluation: Evaluation) -> bytes:
    """F1 of every class as horizontal bars, weakest at the top, with precision and recall marked."""
    # Classes absent from these images go last: they are not weak, there is nothing to measure.
    rows = sorted(evaluation.per_class,
                  key=lambda item: (item.support == 0, item.f1 if item.f1 is not None else 0.0, item.name))
    count = len(rows)
    figure = new_figure(8.0, min(30.0, max(3.0, 0.38 * count + 1.6)))
    axes = figure.add_subplot()
    positions = np.arange(count)[::-1]  # the first (weakest) row at the top
    f1 = np.array([item.f1 if item.f1 is not None else 0.0 for item in rows])
    colors = [WARN if value < 0.5 else "#e0a800" if value < 0.8 else ACCENT for value in f1]
    axes.barh(positions, f1, color=colors, height=0.7)
    precision = [item.precision for item in rows]
    recall = [item.recall for item in rows]
    axes.scatter([value for value in precision if value is not None],
                 [pos for pos, value in zip(positions, precision, strict=True) if value is not None],
                 marker="|", s=180, color=INK, linewidths=2, label="precision", zorder=3)
    axes.scatter([value for value in recall if value is not None],
                 [pos for pos, value in zip(positions, recall, strict=True) if value is not None],
                 marker="o", s=28, facecolor="white", edgecolor=INK, linewidths=1.3, label="recall", zorder=3)
    for position, item, value in zip(positions, rows, f1, strict=True):
        if item.support:
            text = f"{value:.2f}  (n={item.support})"
        else:
            text = "— (absent)" if item.f1 is None else f"{value:.2f}  (absent, {item.predicted} predicted)"
        axes.text(1.02, position, text, va="center", fontsize=8.5, color=INK if item.support else MUTED,
                  transform=axes.get_yaxis_transform())
    if evaluation.macro_f1 is not None:
        axes.axvline(evaluation.macro_f1, color=MUTED, linestyle="--", linewidth=1,
                     label=f"macro F1 {evaluation.macro_f1:.2f}")
    axes.set_yticks(positions, [shorten(item.name, 24) for item in rows], fontsize=_tick_size(count))
    axes.set_xlim(0, 1.03)  # room for markers at 1.0
    axes.set_ylim(-0.7, count - 0.3)
    axes.set_xlabel("score")
    figure.suptitle("F1 per class, weakest first (bars: F1 red below 0.5, amber below 0.8, blue above)",
                    fontsize=11)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False, fontsize=8.5)
    axes.grid(axis="x", alpha=0.3)
    return png_bytes(figure)


def draw_top_losses(top_losses: Sequence[TopLoss], *, columns: int = 4) -> bytes:
    """A grid of the most confidently wrong images, captioned ``true → predicted (p)`` and the loss."""
    if not top_losses:
        figure = new_figure(6.0, 1.6)
        figure.text(0.5, 0.5, "No misclassified images: nothing to show.", ha="center", va="center",
                    fontsize=12, color=MUTED)
        return png_bytes(figure)
    columns = min(columns, len(top_losses))
    rows = math.ceil(len(top_losses) / columns)
    figure = new_figure(2.7 * columns, 3.15 * rows)
    figure.suptitle("Top losses: the most confidently wrong images (true → predicted, probability)", fontsize=11)
    for index, item in enumerate(top_losses):
        axes = figure.add_subplot(rows, columns, index + 1)
        picture = thumbnail(item.path)
        if picture is None:
            axes.text(0.5, 0.5, "image unreadable", ha="center", va="center", color=MUTED)
        else:
            axes.imshow(np.asarray(picture))
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(WARN)
            spine.set_linewidth(1.5)
        caption = f"{shorten(item.true_label, 14)} → {shorten(item.predicted_label, 14)} ({item.probability:.2f})"
        axes.set_title(caption, fontsize=9, color=INK)
        axes.set_xlabel(f"loss {item.loss:.2f} · {shorten(item.path.name, 24)}", fontsize=7.5, color=MUTED)
    return png_bytes(figure)


def _calibration_verdict(evaluation: Evaluation) -> str:
    gap = evaluation.mean_confidence - evaluation.top1
    compared = f"mean confidence {evaluation.mean_confidence:.0%} vs top-1 {evaluation.top1:.0%}"
    if evaluation.ece <= 0.03:
        return f"well calibrated ({compared})"
    if gap >= 0.02:
        return f"over-confident: {compared}"
    if gap <= -0.02:
        return f"under-confident: {compared}"
    return f"{compared} agree overall, but single bins over- and undershoot"


def thumbnail(path: Path) -> Image.Image | None:
    """The image scaled to ``THUMBNAIL_PIXELS`` on its longer side, or None when it cannot be read."""
    try:
        image = load_rgb(path, min_side=THUMBNAIL_PIXELS)
    except ImageFileError:
        return None
    # Small images (the demo's are 64 px) are enlarged with a smooth filter, large ones reduced.
    scale = THUMBNAIL_PIXELS / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tick_size(count: int) -> float:
    return 10 if count <= 12 else 8 if count <= 30 else 6

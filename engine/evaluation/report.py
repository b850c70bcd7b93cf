"""Write an evaluation as a report folder: ``report.json``, PNG plots, and one self-contained ``index.html``.

Plots are drawn with matplotlib's object API on the Agg canvas (no pyplot, no backend
switch, safe in any thread); the HTML page embeds them as base64, so it can be mailed
or moved on its own and opens in any browser.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from engine.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from engine.core.errors import TransferStudioError
from engine.core.figures import new_figure, png_bytes
from engine.data.images import ImageFileError, load_rgb

if TYPE_CHECKING:

    from engine.evaluation.evaluate import Evaluation, TopLoss

REPORT_FILES = ("report.json", "confusion.png", "reliability.png", "per_class.png", "top_losses.png", "index.html")
THUMBNAIL_PIXELS = 192
# Colours shared by the plots and the page.
INK, MUTED, ACCENT, WARN, GOOD = "#1f2933", "#616e7c", "#1f4e79", "#c0392b", "#2e7d32"


def write_report(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    title: str,
    members: Mapping[str, Evaluation] | None = None,
) -> Path:
    """Write ``REPORT_FILES`` into ``out_dir`` (created if needed), each atomically.

    Args:
        evaluation: what to report.
        out_dir: the report folder.
        title: the page's heading, e.g. ``"run 20261124/best on photos (val)"``.
        members: evaluations to show beside this one (default: ``evaluation.members``, an
            ensemble's members).

    Returns:
        The report folder.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    members = dict(evaluation.members if members is None else members)
    payload = evaluation.to_dict()
    payload["title"] = title
    payload["members"] = {name: member.to_dict(images=False) for name, member in members.items()}
    atomic_write_json(folder / "report.json", payload)
    plots = {
        "confusion.png": draw_confusion(evaluation),
        "reliability.png": draw_reliability(evaluation),
        "per_class.png": draw_per_class(evaluation),
        "top_losses.png": draw_top_losses(evaluation.top_losses),
    }
    for name, png in plots.items():
        atomic_write_bytes(folder / name, png)
    atomic_write_text(folder / "index.html", render_html(evaluation, title=title, members=members, plots=plots,
                                                        folder=folder))
    return folder


def describe_report(folder: str | Path) -> str:
    """A few lines for a terminal from a report folder's ``report.json``: headline scores, members, notes, page.

    Raises:
        TransferStudioError: the folder holds no readable ``report.json``.
    """
    path = Path(folder) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TransferStudioError(f"{path}: not a readable evaluation report ({error})") from error

    def line(name: str, summary: Mapping[str, Any]) -> str:
        top5 = f", top-5 {summary['top5']:.1%}" if summary.get("top5") is not None else ""
        return (f"{name}: {summary['images']} images, top-1 {summary['top1']:.1%}{top5}, "
                f"log-loss {summary['log_loss']:.4f}, ECE {summary['ece']:.4f}, macro F1 "
                f"{_format(summary.get('macro_f1'), 'fixed')}")

    lines = [line(report.get("name", "model"), report["summary"])]
    lines += [f"  {line(name, member['summary'])}" for name, member in report.get("members", {}).items()]
    unreadable = report["summary"].get("unreadable") or 0
    if unreadable:
        noun = "image" if unreadable == 1 else "images"
        lines.append(f"{unreadable} {noun} could not be read (listed in the report)")
    lines += report.get("notes", [])
    lines.append(f"report: {Path(folder) / 'index.html'}")
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------------------


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
    labels = [_short(name, 18) for name in classes]
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
    axes.set_yticks(positions, [_short(item.name, 24) for item in rows], fontsize=_tick_size(count))
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
        thumbnail = _thumbnail(item.path)
        if thumbnail is None:
            axes.text(0.5, 0.5, "image unreadable", ha="center", va="center", color=MUTED)
        else:
            axes.imshow(np.asarray(thumbnail))
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(WARN)
            spine.set_linewidth(1.5)
        caption = f"{_short(item.true_label, 14)} → {_short(item.predicted_label, 14)} ({item.probability:.2f})"
        axes.set_title(caption, fontsize=9, color=INK)
        axes.set_xlabel(f"loss {item.loss:.2f} · {_short(item.path.name, 24)}", fontsize=7.5, color=MUTED)
    return png_bytes(figure)


# --- HTML ----------------------------------------------------------------------------------------


def render_html(
    evaluation: Evaluation,
    *,
    title: str,
    members: Mapping[str, Evaluation],
    plots: Mapping[str, bytes],
    folder: Path,
) -> str:
    """The report page: summary, member comparison, plots, per-class table, top losses, unreadable files.

    Args:
        evaluation: what to report.
        title: the page heading.
        members: evaluations shown beside this one.
        plots: PNG bytes by file name, embedded as base64.
        folder: the report folder, for links to the images relative to it.
    """
    parts = [
        f"<h1>{_escape(title)}</h1>",
        _source_line(evaluation),
        _notes(evaluation),
        "<h2>Summary</h2>",
        _comparison_table(evaluation, members) if members else _summary_table(evaluation),
        _temperature_section(evaluation),
        "<h2>Confusion matrix</h2>",
        "<p class='hint'>Each row is a true class, each column what the model predicted; the diagonal holds the "
        "right answers. The colour is the share of the row, so a pale diagonal cell marks a class the model "
        "often misses, and a dark cell off the diagonal a pair of classes it confuses.</p>",
        _figure_tag(plots["confusion.png"], "confusion.png", "Confusion matrix"),
        "<h2>Calibration</h2>",
        "<p class='hint'>Images are grouped by the model's confidence (the probability of its answer). For a "
        "well-calibrated model the bars (accuracy) reach the dashed diagonal: answers given with 80% confidence "
        "are right 80% of the time. Bars below the diagonal mean over-confidence, above it under-confidence. "
        "ECE is the gap averaged over the images.</p>",
        _figure_tag(plots["reliability.png"], "reliability.png", "Reliability diagram"),
        "<h2>Per class</h2>",
        _figure_tag(plots["per_class.png"], "per_class.png", "F1 per class"),
        _per_class_table(evaluation),
        "<h2>Top losses</h2>",
        _top_losses_section(evaluation, plots["top_losses.png"], folder),
        _unreadable_section(evaluation),
        "<footer>Files in this folder: "
        + ", ".join(f"<a href='{name}'>{name}</a>" for name in REPORT_FILES if name != "index.html")
        + ". Written by Transfer Studio.</footer>",
    ]
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


_STYLE = textwrap.dedent(f"""
    body {{ margin: 0; background: #f5f7fa; color: {INK};
           font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }}
    main {{ max-width: 1080px; margin: 0 auto; padding: 28px 32px 48px; background: white;
           box-shadow: 0 0 0 1px #e4e7eb; }}
    h1 {{ font-size: 26px; margin: 0 0 4px; }}
    h2 {{ font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #e4e7eb; }}
    .source {{ color: {MUTED}; font-size: 13px; margin: 0 0 12px; word-break: break-all; }}
    .hint {{ color: {MUTED}; font-size: 13.5px; max-width: 860px; }}
    .notes {{ background: #fff8e1; border-left: 4px solid #e0a800; padding: 8px 14px; margin: 14px 0; }}
    .notes p {{ margin: 4px 0; }}
    table {{ border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }}
    th, td {{ padding: 5px 12px; border-bottom: 1px solid #e4e7eb; text-align: right; }}
    th {{ background: #f0f4f8; font-weight: 600; }}
    th:first-child, td:first-child {{ text-align: left; }}
    td.text {{ text-align: left; color: {MUTED}; font-size: 13px; }}
    tr.main td {{ font-weight: 600; background: #eef4fb; }}
    td.best {{ color: {GOOD}; font-weight: 700; }}
    td.weak {{ color: {WARN}; }}
    .big {{ font-size: 17px; font-weight: 600; }}
    figure {{ margin: 10px 0 18px; }}
    figure img {{ max-width: 100%; height: auto; border: 1px solid #e4e7eb; }}
    figcaption {{ color: {MUTED}; font-size: 13px; }}
    .gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 14px; }}
    .card {{ border: 1px solid #e4e7eb; border-radius: 6px; padding: 8px; background: #fbfcfd; }}
    .card img {{ width: 100%; height: auto; image-rendering: auto; background: #eee; display: block; }}
    .card .label {{ margin-top: 6px; font-size: 14px; }}
    .card .true {{ color: {GOOD}; font-weight: 600; }}
    .card .wrong {{ color: {WARN}; font-weight: 600; }}
    .card .meta {{ color: {MUTED}; font-size: 12px; word-break: break-all; }}
    footer {{ margin-top: 36px; color: {MUTED}; font-size: 12.5px; }}
    a {{ color: {ACCENT}; }}
""")


def _source_line(evaluation: Evaluation) -> str:
    source = evaluation.source
    facts = []
    for key, label in (("model", "model"), ("data", "data"), ("split", "split"), ("tta", "test-time augmentation"),
                       ("evaluated", "evaluated")):
        if source.get(key) and not (key == "tta" and source[key] == "none"):
            facts.append(f"{label}: <code>{_escape(source[key])}</code>")
    facts.append(f"{evaluation.count} images" + (f", {len(evaluation.unreadable)} unreadable"
                                                 if evaluation.unreadable else ""))
    return f"<p class='source'>{' · '.join(facts)}</p>"


def _notes(evaluation: Evaluation) -> str:
    notes = list(evaluation.notes)
    if evaluation.unreadable:
        count = len(evaluation.unreadable)
        notes.append(f"{count} {'image' if count == 1 else 'images'} could not be read and "
                     f"{'was' if count == 1 else 'were'} not scored; see the list at the end.")
    if not notes:
        return ""
    return "<div class='notes'>" + "".join(f"<p>{_escape(note)}</p>" for note in notes) + "</div>"


_METRICS = (
    ("top1", "Top-1 accuracy", "share of images whose most probable class is right", "percent", True),
    ("top5", "Top-5 accuracy", "share whose true class is among the five most probable", "percent", True),
    ("macro_f1", "Macro F1", "F1 averaged over classes, each class counting the same", "fixed", True),
    ("macro_recall", "Balanced accuracy", "recall averaged over classes (macro recall)", "percent", True),
    ("log_loss", "Log-loss", "mean −log p(true class), in nats; lower is better, rewards honest confidence",
     "fixed", False),
    ("ece", "ECE", "expected calibration error: confidence vs accuracy gap; 0 is perfect", "fixed", False),
    ("mean_confidence", "Mean confidence", "average probability of the predicted class; compare with top-1",
     "percent", None),
)


def _summary_table(evaluation: Evaluation) -> str:
    summary = evaluation.summary()
    rows = []
    for key, label, meaning, style, _ in _METRICS:
        if summary.get(key) is None:
            continue
        rows.append(f"<tr><td>{label}</td><td class='big'>{_format(summary[key], style)}</td>"
                    f"<td class='text'>{_escape(meaning)}</td></tr>")
    unreadable = f"; {len(evaluation.unreadable)} unreadable, not scored" if evaluation.unreadable else ""
    rows.append(f"<tr><td>Images</td><td class='big'>{evaluation.count}</td>"
                f"<td class='text'>scored{unreadable}</td></tr>")
    return "<table><tr><th>Metric</th><th>Value</th><th>What it means</th></tr>" + "".join(rows) + "</table>"


def _comparison_table(evaluation: Evaluation, members: Mapping[str, Evaluation]) -> str:
    entries = [(evaluation.name, evaluation, True)] + [(name, member, False) for name, member in members.items()]
    metrics = [metric for metric in _METRICS if evaluation.summary().get(metric[0]) is not None]
    header = "<tr><th>Model</th><th>Images</th>" + "".join(
        f"<th title='{_escape(meaning)}'>{label}</th>" for _, label, meaning, _, _ in metrics) + "</tr>"
    best: dict[str, float] = {}
    for key, _, _, _, higher in metrics:
        values = [entry.summary()[key] for _, entry, _ in entries if entry.summary()[key] is not None]
        if higher is not None and values:
            best[key] = max(values) if higher else min(values)
    rows = []
    for name, entry, is_main in entries:
        summary = entry.summary()
        cells = []
        for key, _, _, style, _ in metrics:
            value = summary[key]
            marked = key in best and value is not None and math.isclose(value, best[key], abs_tol=1e-12)
            cells.append(f"<td{' class=best' if marked else ''}>{_format(value, style)}</td>")
        label = f"{_escape(name)}{' (ensemble)' if is_main and name != 'ensemble' else ''}"
        rows.append(f"<tr{' class=main' if is_main else ''}><td>{label}</td><td>{entry.count}</td>"
                    + "".join(cells) + "</tr>")
    return ("<p class='hint'>The first row combines the members below it; green marks the best value of each "
            "column. Hover a column name for its meaning.</p>"
            "<table>" + header + "".join(rows) + "</table>")


def _temperature_section(evaluation: Evaluation) -> str:
    fit = evaluation.temperature_fit
    if fit is None:
        return ""
    effect = "sharpens an under-confident" if fit.temperature < 1 else "softens an over-confident"
    if evaluation.temperature is None:
        effect = f"would {effect.replace('sharpens', 'sharpen').replace('softens', 'soften')}"
    applied = ("The scores on this page include it." if evaluation.temperature is not None else
               "It was <b>not applied</b>: the scores on this page are the model's own (the note above says why).")
    return (
        "<h2>Temperature scaling</h2>"
        f"<p class='hint'>One number T divides the model's logits before the softmax (Guo et al. 2017). It was "
        f"fitted on the {fit.count} validation images by minimising their log-loss; T = {fit.temperature:.3f} "
        f"{effect} model. The predicted class never changes, only the confidence, so top-1 and the confusion "
        f"matrix stay as they are. {applied}</p>"
        "<table><tr><th>On validation</th><th>Before</th><th>After</th></tr>"
        f"<tr><td>Log-loss</td><td>{fit.nll_before:.4f}</td><td>{fit.nll_after:.4f}</td></tr>"
        f"<tr><td>ECE</td><td>{fit.ece_before:.4f}</td><td>{fit.ece_after:.4f}</td></tr></table>"
    )


def _per_class_table(evaluation: Evaluation) -> str:
    confusion = evaluation.confusion
    rows = []
    for index, item in enumerate(evaluation.per_class):
        errors = confusion[index].copy()
        errors[index] = 0
        confused = ""
        if errors.max() > 0:
            other = int(errors.argmax())
            confused = f"{_escape(evaluation.classes[other])} ({int(errors[other])})"
        f1_class = " class=weak" if item.f1 is not None and item.f1 < 0.5 else ""
        rows.append(
            f"<tr><td>{_escape(item.name)}</td><td>{_format(item.precision, 'fixed')}</td>"
            f"<td>{_format(item.recall, 'fixed')}</td><td{f1_class}>{_format(item.f1, 'fixed')}</td>"
            f"<td>{item.support}</td><td>{item.predicted}</td><td class='text'>{confused}</td></tr>"
        )
    return (
        "<p class='hint'>Precision: of the images predicted as the class, the share that are. Recall: of the "
        "class's images, the share found. F1 combines both. — marks a score with nothing to count.</p>"
        "<table><tr><th>Class</th><th>Precision</th><th>Recall</th><th>F1</th><th>Images</th><th>Predicted</th>"
        "<th>Most often mistaken for</th></tr>" + "".join(rows) + "</table>"
    )


def _top_losses_section(evaluation: Evaluation, grid_png: bytes, folder: Path) -> str:
    if not evaluation.top_losses:
        return "<p>No image was misclassified.</p>"
    cards = []
    for item in evaluation.top_losses:
        thumbnail = _thumbnail(item.path)
        image = (f"<img alt='{_escape(item.path.name)}' src='data:image/png;base64,{_base64_png(thumbnail)}'>"
                 if thumbnail is not None else "<p class='meta'>image unreadable</p>")
        link = _relative_link(item.path, folder)
        cards.append(
            f"<div class='card'><a href='{_escape(link)}' title='{_escape(str(item.path))}'>{image}</a>"
            f"<div class='label'><span class='true'>{_escape(item.true_label)}</span> → "
            f"<span class='wrong'>{_escape(item.predicted_label)}</span> ({item.probability:.2f})</div>"
            f"<div class='meta'>p(true) {item.true_probability:.3f} · loss {item.loss:.2f}<br>"
            f"{_escape(item.path.name)}</div></div>"
        )
    wrong = int((evaluation.predictions != evaluation.targets).sum())
    return (
        f"<p class='hint'>The {len(evaluation.top_losses)} misclassified images (of {wrong}) with the highest "
        f"loss, i.e. the lowest probability on their true class: "
        f"<span class='true'>true class</span> → <span class='wrong'>prediction</span> (its probability). "
        f"Wrong labels in the data often show up here first. Click an image to open the file.</p>"
        f"<div class='gallery'>{''.join(cards)}</div>"
        f"<p class='hint'>The same images as one picture: <a href='top_losses.png'>top_losses.png</a>.</p>"
    )


def _unreadable_section(evaluation: Evaluation) -> str:
    if not evaluation.unreadable:
        return ""
    items = "".join(f"<li><code>{_escape(str(item.path))}</code>: {_escape(item.reason)}</li>"
                    for item in evaluation.unreadable)
    return f"<h2>Unreadable images</h2><ul>{items}</ul>"


def _figure_tag(png: bytes, name: str, caption: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt='{_escape(caption)}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{_escape(caption)} (<a href='{name}'>{name}</a>)</figcaption></figure>")


# --- helpers -------------------------------------------------------------------------------------


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


def _thumbnail(path: Path) -> Image.Image | None:
    try:
        image = load_rgb(path)
    except ImageFileError:
        return None
    # Small images (the demo's are 64 px) are enlarged with a smooth filter, large ones reduced.
    scale = THUMBNAIL_PIXELS / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)


def _base64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _relative_link(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        # Another drive on Windows: no relative path exists.
        return path.resolve().as_uri()


def _format(value: float | None, style: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if style == "percent" else f"{value:.3f}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tick_size(count: int) -> float:
    return 10 if count <= 12 else 8 if count <= 30 else 6


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)

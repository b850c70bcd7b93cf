"""The report page, ``index.html``: filled in from ``string.Template`` files in ``templates/``.

The page, its style and the sections with prose are template files; table rows, cards and
figures are the one-line templates below. Every value is HTML-escaped on its way in (class
names, file names and notes are user text) unless it is markup built here. Plots are
embedded as base64, so the page can be mailed or moved on its own and opens in any browser.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template

from PIL import Image

from engine.evaluation.metrics import Evaluation
from engine.evaluation.report_plots import ACCENT, GOOD, INK, MUTED, WARN, thumbnail

_ROW = Template("<tr$attributes><td>$label</td>$cells</tr>")
_CELL = Template("<td$attributes>$value</td>")
_HEADER = Template("<th title='$meaning'>$label</th>")
_SUMMARY = Template("<table><tr><th>Metric</th><th>Value</th><th>What it means</th></tr>$rows</table>")
_SUMMARY_ROW = Template("<tr><td>$label</td><td class='big'>$value</td><td class='text'>$meaning</td></tr>")
_FIGURE = Template("<figure><img alt='$caption' src='data:image/png;base64,$png'>"
                   "<figcaption>$caption (<a href='$name'>$name</a>)</figcaption></figure>")
_CARD = Template(
    "<div class='card'><a href='$link' title='$path'>$image</a>"
    "<div class='label'><span class='true'>$true_label</span> → <span class='wrong'>$predicted_label</span> "
    "($probability)</div><div class='meta'>p(true) $true_probability · loss $loss<br>$file_name</div></div>"
)
_THUMBNAIL = Template("<img alt='$file_name' src='data:image/png;base64,$png'>")
_SOURCE = Template("<p class='source'>$facts</p>")
_FACT = Template("$label: <code>$value</code>")
_NOTES = Template("<div class='notes'>$paragraphs</div>")
_PARAGRAPH = Template("<p>$text</p>")
_UNREADABLE = Template("<h2>Unreadable images</h2><ul>$items</ul>")
_UNREADABLE_ITEM = Template("<li><code>$path</code>: $reason</li>")
_LINK = Template("<a href='$name'>$name</a>")

# (summary key, label, meaning, format, higher is better; None: neither)
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
        plots: PNG bytes by file name (``confusion.png``, ``reliability.png``, ``per_class.png``,
            ``top_losses.png``), embedded as base64 and linked with ``report.json``.
        folder: the report folder, for links to the images relative to it.
    """
    style = _template("report.css").substitute(ink=INK, muted=MUTED, accent=ACCENT, warn=WARN, good=GOOD)
    return _fill(
        _template("report.html"),
        title=title,
        markup={
            "style": style,
            "source": _source_line(evaluation),
            "notes": _notes(evaluation),
            "summary": _comparison_table(evaluation, members) if members else _summary_table(evaluation),
            "temperature": _temperature_section(evaluation),
            "confusion_figure": _figure(plots["confusion.png"], "confusion.png", "Confusion matrix"),
            "reliability_figure": _figure(plots["reliability.png"], "reliability.png", "Reliability diagram"),
            "per_class_figure": _figure(plots["per_class.png"], "per_class.png", "F1 per class"),
            "per_class_rows": _per_class_rows(evaluation),
            "top_losses": _top_losses_section(evaluation, folder),
            "unreadable": _unreadable_section(evaluation),
            "files": ", ".join(_fill(_LINK, name=name) for name in ("report.json", *plots)),
        },
    )


def format_score(value: float | None, style: str) -> str:
    """A score as the report shows it: ``percent`` (``81.2%``) or ``fixed`` (``0.812``); ``—`` when undefined."""
    if value is None:
        return "—"
    return f"{value:.1%}" if style == "percent" else f"{value:.3f}"


@functools.cache
def _template(name: str) -> Template:
    return Template((resources.files(__package__) / "templates" / name).read_text(encoding="utf-8"))


def _fill(template: Template, *, markup: Mapping[str, str] | None = None, **text: object) -> str:
    """``template`` with every ``text`` value HTML-escaped, and the ``markup`` values (HTML built here) as they are."""
    return template.substitute({name: _escape(value) for name, value in text.items()}, **(markup or {}))


def _source_line(evaluation: Evaluation) -> str:
    source = evaluation.source
    facts = []
    for key, label in (("model", "model"), ("data", "data"), ("split", "split"), ("tta", "test-time augmentation"),
                       ("evaluated", "evaluated")):
        if source.get(key) and not (key == "tta" and source[key] == "none"):
            facts.append(_fill(_FACT, label=label, value=source[key]))
    unreadable = f", {len(evaluation.unreadable)} unreadable" if evaluation.unreadable else ""
    facts.append(_escape(f"{evaluation.count} images{unreadable}"))
    return _fill(_SOURCE, markup={"facts": " · ".join(facts)})


def _notes(evaluation: Evaluation) -> str:
    notes = list(evaluation.notes)
    if evaluation.unreadable:
        count = len(evaluation.unreadable)
        notes.append(f"{count} {'image' if count == 1 else 'images'} could not be read and "
                     f"{'was' if count == 1 else 'were'} not scored; see the list at the end.")
    if not notes:
        return ""
    return _fill(_NOTES, markup={"paragraphs": "".join(_fill(_PARAGRAPH, text=note) for note in notes)})


def _summary_table(evaluation: Evaluation) -> str:
    summary = evaluation.summary()
    rows = [_fill(_SUMMARY_ROW, label=label, value=format_score(summary[key], style), meaning=meaning)
            for key, label, meaning, style, _ in _METRICS if summary.get(key) is not None]
    unreadable = f"; {len(evaluation.unreadable)} unreadable, not scored" if evaluation.unreadable else ""
    rows.append(_fill(_SUMMARY_ROW, label="Images", value=evaluation.count, meaning=f"scored{unreadable}"))
    return _fill(_SUMMARY, markup={"rows": "".join(rows)})


def _comparison_table(evaluation: Evaluation, members: Mapping[str, Evaluation]) -> str:
    entries = [(evaluation.name, evaluation, True)] + [(name, member, False) for name, member in members.items()]
    metrics = [metric for metric in _METRICS if evaluation.summary().get(metric[0]) is not None]
    header = "<tr><th>Model</th><th>Images</th>" + "".join(
        _fill(_HEADER, meaning=meaning, label=label) for _, label, meaning, _, _ in metrics) + "</tr>"
    best: dict[str, float] = {}
    for key, _, _, _, higher in metrics:
        values = [entry.summary()[key] for _, entry, _ in entries if entry.summary()[key] is not None]
        if higher is not None and values:
            best[key] = max(values) if higher else min(values)
    rows = []
    for name, entry, is_main in entries:
        summary = entry.summary()
        cells = [_cell(entry.count)]
        for key, _, _, style, _ in metrics:
            value = summary[key]
            marked = key in best and value is not None and math.isclose(value, best[key], abs_tol=1e-12)
            cells.append(_cell(format_score(value, style), "best" if marked else ""))
        label = f"{name}{' (ensemble)' if is_main and name != 'ensemble' else ''}"
        rows.append(_row(label, cells, "main" if is_main else ""))
    return _fill(_template("comparison.html"), markup={"header": header, "rows": "".join(rows)})


def _temperature_section(evaluation: Evaluation) -> str:
    fit = evaluation.temperature_fit
    if fit is None:
        return ""
    effect = "sharpens an under-confident" if fit.temperature < 1 else "softens an over-confident"
    if evaluation.temperature is None:
        effect = f"would {effect.replace('sharpens', 'sharpen').replace('softens', 'soften')}"
    applied = ("The scores on this page include it." if evaluation.temperature is not None else
               "It was <b>not applied</b>: the scores on this page are the model's own (the note above says why).")
    return _fill(_template("temperature.html"), count=fit.count, temperature=f"{fit.temperature:.3f}", effect=effect,
                 nll_before=f"{fit.nll_before:.4f}", nll_after=f"{fit.nll_after:.4f}",
                 ece_before=f"{fit.ece_before:.4f}", ece_after=f"{fit.ece_after:.4f}", markup={"applied": applied})


def _per_class_rows(evaluation: Evaluation) -> str:
    confusion = evaluation.confusion
    rows = []
    for index, item in enumerate(evaluation.per_class):
        errors = confusion[index].copy()
        errors[index] = 0
        confused = ""
        if errors.max() > 0:
            other = int(errors.argmax())
            confused = f"{evaluation.classes[other]} ({int(errors[other])})"
        weak = item.f1 is not None and item.f1 < 0.5
        cells = [
            _cell(format_score(item.precision, "fixed")),
            _cell(format_score(item.recall, "fixed")),
            _cell(format_score(item.f1, "fixed"), "weak" if weak else ""),
            _cell(item.support),
            _cell(item.predicted),
            _cell(confused, "text"),
        ]
        rows.append(_row(item.name, cells))
    return "".join(rows)


def _top_losses_section(evaluation: Evaluation, folder: Path) -> str:
    if not evaluation.top_losses:
        return "<p>No image was misclassified.</p>"
    cards = []
    for item in evaluation.top_losses:
        picture = thumbnail(item.path)
        image = (_fill(_THUMBNAIL, file_name=item.path.name, png=_base64_png(picture)) if picture is not None
                 else "<p class='meta'>image unreadable</p>")
        cards.append(_fill(
            _CARD, link=_relative_link(item.path, folder), path=item.path, true_label=item.true_label,
            predicted_label=item.predicted_label, probability=f"{item.probability:.2f}",
            true_probability=f"{item.true_probability:.3f}", loss=f"{item.loss:.2f}", file_name=item.path.name,
            markup={"image": image},
        ))
    wrong = int((evaluation.predictions != evaluation.targets).sum())
    return _fill(_template("top_losses.html"), shown=len(evaluation.top_losses), wrong=wrong,
                 markup={"cards": "".join(cards)})


def _unreadable_section(evaluation: Evaluation) -> str:
    if not evaluation.unreadable:
        return ""
    items = "".join(_fill(_UNREADABLE_ITEM, path=item.path, reason=item.reason) for item in evaluation.unreadable)
    return _fill(_UNREADABLE, markup={"items": items})


def _row(label: str, cells: list[str], css_class: str = "") -> str:
    return _fill(_ROW, label=label, markup={"attributes": _class_attribute(css_class), "cells": "".join(cells)})


def _cell(value: object, css_class: str = "") -> str:
    return _fill(_CELL, value=value, markup={"attributes": _class_attribute(css_class)})


def _class_attribute(css_class: str) -> str:
    return f" class='{css_class}'" if css_class else ""


def _figure(png: bytes, name: str, caption: str) -> str:
    return _fill(_FIGURE, png=base64.b64encode(png).decode("ascii"), name=name, caption=caption)


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


def _escape(text: object) -> str:
    return html.escape(str(text), quote=True)

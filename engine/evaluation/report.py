"""Write an evaluation as a report folder: ``report.json``, PNG plots, and one self-contained ``index.html``.

The plots are ``engine.evaluation.report_plots``, the page ``engine.evaluation.report_html``
(filled in from templates); this module writes them and reads a folder back for a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from engine.core.errors import TransferStudioError
from engine.core.stop_signals import stops_deferred
from engine.evaluation.metrics import Evaluation
from engine.evaluation.report_html import format_score, render_html
from engine.evaluation.report_plots import draw_confusion, draw_per_class, draw_reliability, draw_top_losses

REPORT_FILES = ("report.json", "confusion.png", "reliability.png", "per_class.png", "top_losses.png", "index.html")


def write_report(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    title: str,
    members: Mapping[str, Evaluation] | None = None,
) -> Path:
    """Write ``REPORT_FILES`` into ``out_dir`` (created if needed), each atomically.

    Everything is drawn before the first file is written, and a stop signal waits for the last
    (``engine.core.stop_signals.stops_deferred``): a stop leaves the older report as it was, or
    finishes the new one.

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
    members = dict(evaluation.members if members is None else members)
    payload = evaluation.to_dict()
    payload["title"] = title
    payload["members"] = {name: member.to_dict(images=False) for name, member in members.items()}
    plots = {
        "confusion.png": draw_confusion(evaluation),
        "reliability.png": draw_reliability(evaluation),
        "per_class.png": draw_per_class(evaluation),
        "top_losses.png": draw_top_losses(evaluation.top_losses),
    }
    page = render_html(evaluation, title=title, members=members, plots=plots, folder=folder)
    with stops_deferred():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "report.json", payload)
        for name, png in plots.items():
            atomic_write_bytes(folder / name, png)
        atomic_write_text(folder / "index.html", page)
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
                f"{format_score(summary.get('macro_f1'), 'fixed')}")

    lines = [line(report.get("name", "model"), report["summary"])]
    lines += [f"  {line(name, member['summary'])}" for name, member in report.get("members", {}).items()]
    unreadable = report["summary"].get("unreadable") or 0
    if unreadable:
        noun = "image" if unreadable == 1 else "images"
        lines.append(f"{unreadable} {noun} could not be read (listed in the report)")
    lines += report.get("notes", [])
    lines.append(f"report: {Path(folder) / 'index.html'}")
    return "\n".join(lines)

"""The Auto report: what it tried, how each step scored on validation, what won and why, where it stopped.

Built from the Auto folder alone (``plan.json`` and ``progress.jsonl``), so a resumed session
writes the whole story again, earlier sessions included: ``report.json`` for programs and
``report.md`` for people, both written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.auto.budget import format_seconds
from engine.auto.state import AutoFolder
from engine.core.atomic import atomic_write_json, atomic_write_text

_STATUS_WORDS = {"finished": "finished", "budget": "cut by its time cap (its best epoch is kept)",
                 "early_stop": "finished early (validation had stopped improving)", "failed": "failed"}


def build_report(folder: AutoFolder) -> dict[str, Any]:
    """The report's content, from the folder's plan and progress records."""
    plan = folder.read_plan()
    records = folder.records()
    steps = {step["name"]: {"name": step["name"], "title": step["title"], "reason": step["reason"], "status": "not run"}
             for step in plan.get("steps", [])}
    report: dict[str, Any] = {
        "state": "running", "data": plan.get("data"), "budget_seconds": plan.get("budget_seconds"),
        "spent_seconds": folder.spent_seconds(), "sessions": 0, "data_facts": None, "doctor": [], "speed": None,
        "notes": [], "stopped_at": None, "stop_message": None, "stops": [], "choice": None, "recommended": None,
    }
    for entry in records:
        event = entry["event"]
        if event == "session_started":
            report["sessions"] += 1
            report["stopped_at"] = report["stop_message"] = None  # a resumed session goes on from the stop
        elif event == "scanned":
            report["data_facts"], report["doctor"] = entry["facts"], entry["warnings"]
        elif event == "measured":
            report["speed"] = entry["speed"]
        elif event == "planned":
            report["notes"] = entry["notes"]
        elif event in ("step_started", "step_finished", "step_skipped", "step_stopped"):
            _update_step(steps.setdefault(entry["step"], {"name": entry["step"], "title": entry["step"],
                                                          "reason": "", "status": "not run"}), entry)
        elif event == "stopped":
            report["stopped_at"], report["stop_message"] = entry["step"], entry["message"]
            report["stops"].append({"session": report["sessions"], "step": entry["step"], "message": entry["message"]})
        elif event == "chosen":
            report["choice"], report["recommended"] = entry["choice"], entry["choice"]["path"]
        elif event == "session_ended":
            report["state"] = entry["state"]
    report["steps"] = list(steps.values())
    return report


def _update_step(step: dict[str, Any], entry: dict[str, Any]) -> None:
    event = entry["event"]
    if event == "step_started":
        step.update(status="running", run_dir=entry.get("run_dir"), cap_seconds=entry.get("cap_seconds"),
                    epochs=entry.get("epochs"))
    elif event == "step_skipped":
        step.update(status="skipped", why=entry["reason"])
    elif event == "step_stopped":
        step.update(status="stopped", why=entry.get("message"))
    else:
        step.update(status=_STATUS_WORDS.get(entry.get("reason") or "finished", entry.get("reason") or "finished"),
                    seconds=entry.get("seconds"), val_top1=entry.get("val_top1"), epochs_done=entry.get("epochs_done"),
                    best_checkpoint=entry.get("best_checkpoint"), why=entry.get("message"))


def write_report(folder: AutoFolder) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into the Auto folder; returns both paths."""
    report = build_report(folder)
    json_path, text_path = folder.report_paths()
    atomic_write_json(json_path, report)
    atomic_write_text(text_path, to_markdown(report))
    return json_path, text_path


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: a short page."""
    budget, spent = report["budget_seconds"] or 0, report["spent_seconds"]
    lines = [f"# Auto: {report['data']}", "",
             f"Budget {format_seconds(budget)}, used {format_seconds(spent)} in {report['sessions']} session(s); "
             f"{report['state']}."]
    if report["stopped_at"]:
        lines.append(f"Stopped during **{report['stopped_at']}** ({report['stop_message']}); "
                     "`main.py auto --resume` goes on from there.")
    earlier = [stop for stop in report["stops"] if stop["session"] < report["sessions"]]
    lines += [f"Session {stop['session']} was stopped during {stop['step']} ({stop['message']}) and resumed."
              for stop in earlier]
    if report["data_facts"]:
        facts = report["data_facts"]
        lines += ["", "## Data", "", f"{facts['classes']} classes, {facts['train_images']} training and "
                  f"{facts['val_images']} validation images, ~{facts['images_per_class']:.0f} per class "
                  f"({facts['size']}), photos ~{facts['median_side']} px."]
        lines += [f"- doctor: {warning}" for warning in report["doctor"]]
    if report["speed"]:
        speed = report["speed"]
        lines += ["", f"Device: {speed['device']}: {1000 * speed['train_seconds']:.1f} ms per image to fine-tune, "
                  f"{1000 * speed['eval_seconds']:.1f} ms to predict, at {speed['input_size']} px."]
    lines += ["", "## Steps", ""]
    for step in report["steps"]:
        score = f", val top-1 {step['val_top1']:.1%}" if step.get("val_top1") is not None else ""
        took = f", {format_seconds(step['seconds'])}" if step.get("seconds") is not None else ""
        why = f" ({step['why']})" if step.get("why") else ""
        lines.append(f"- **{step['name']}**: {step['title']}: {step['status']}{took}{score}{why}. "
                     f"Why: {step['reason']}.")
        if step.get("run_dir"):
            lines.append(f"  run: `{step['run_dir']}`")
    if report["notes"]:
        lines += ["", "Plan notes:", *(f"- {note}" for note in report["notes"])]
    choice = report["choice"]
    if choice:
        accuracy = f", val top-1 {choice['val_accuracy']:.1%}" if choice.get("val_accuracy") is not None else ""
        lines += ["", "## Recommended", "", f"`{choice['path']}` ({choice['kind']}{accuracy}): {choice['reason']}."]
        for candidate in choice.get("candidates") or []:
            if candidate.get("val_log_loss") is not None:
                lines.append(f"- {candidate['name']}: val log-loss {candidate['val_log_loss']:.4f}, top-1 "
                             f"{candidate['val_accuracy']:.1%}, picked {candidate['picked']}x")
    else:
        lines += ["", "## Recommended", "", "No model yet: Auto stopped before its first run saved one."]
    return "\n".join(lines) + "\n"

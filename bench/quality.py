"""Model quality on real photos that no recipe ever saw: accuracy, log-loss and wall time of each recipe, per task.

``python -m bench.quality`` builds tasks from real labelled images that are not the demo's
(``bench.quality_tasks``): Fashion-MNIST's *train* split at 20, 50 and 100 photos per class,
and scikit-learn's bundled 8x8 digits, each at its native size and each scored on a disjoint,
larger set of photos from the same source (never Fashion-MNIST's test split). Per task it trains
and scores, each from a cold start (its own copy of the photos, its own cache; only the
converted pretrained weights are shared): feature extraction, fine-tuning, two-stage, the
Recommended recipe, Auto mode (``main.py auto``) at two budgets, and a plain timm fine-tune
(``bench.plain_timm``) given the fine-tuning row's wall time. It prints a table per task and the
goals' ratios, and writes the results as JSON (``--out``, default ``out/bench-quality.json``;
a ``.csv`` name writes the table as CSV and the JSON beside it). ``--quick`` runs one tiny task
with few epochs, to check the harness end to end in a few minutes.
Usage: ``python -m bench.quality [--tasks fashion-mnist,digits-50] [--per-class 20,50,100]
[--budgets 5m,10m] [--seeds N] [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import plain_timm
from bench.quality_tasks import (
    SOURCES,
    Pool,
    Source,
    Task,
    available_per_class,
    build_task,
    fashion_mnist_installed,
    sources,
    split_pool,
)
from engine.core.atomic import atomic_write_json
from engine.core.config import RunConfig
from engine.core.device import plan_device
from engine.core.errors import TransferStudioError
from engine.core.paths import CACHE_ENV_VAR, DATA_ENV_VAR, user_cache_dir
from engine.data.health import scan_dataset
from engine.evaluation.ensemble import load_probability_model
from engine.evaluation.selection import accuracy, log_loss
from engine.models.weights import get_weights_provider
from engine.training.recommended import explain_recipe, recommended_recipe
from engine.training.train import train

REPOSITORY = Path(__file__).resolve().parents[1]
MAIN = REPOSITORY / "main.py"
DEFAULT_OUT = REPOSITORY / "out" / "bench-quality.json"
PER_CLASS = (20, 50, 100)
BUDGETS = ("5m", "10m")
RECOMMENDED_MODE = "fine_tune"  # the Recommended button follows the chosen mode; fine-tuning is the one it suits
AUTO_PREFIX = "recommended model: "
# Goals of issue 18, checked on this task with Auto at the largest budget.
GOAL_TASK = "fashion-mnist-50"
GOAL_ACCURACY = 0.88
BUDGET_SLACK = 1.10  # Auto respects its budget within 10%
SINGLE_RECIPES = ("feature_extraction", "fine_tune", "two_stage", "recommended")


@dataclass(frozen=True)
class Settings:
    """How long each recipe trains, and at what size (the full benchmark's, or ``--quick``'s)."""

    feature_epochs: int = 10
    fine_tune_epochs: int = 8
    head_epochs: int = 3
    recommended_epochs: int | None = None  # None: the recipe's own
    input_size: int | None = None  # None: the backbone's pretrained size
    score_per_class: int | None = None  # None: the source's own (bench.quality_tasks.SCORE_PER_CLASS)


QUICK = Settings(feature_epochs=2, fine_tune_epochs=1, head_epochs=1, recommended_epochs=1, input_size=96,
                 score_per_class=30)
QUICK_PER_CLASS = (10,)
QUICK_BUDGETS = ("1m",)


@dataclass
class Row:
    """One recipe's results on one task, a value per seed.

    Attributes:
        key: e.g. ``fine_tune``, ``auto_5m``, ``plain_timm``.
        label: what the table calls it.
        status: ``ok``, ``not available`` or ``failed: <why>``.
        accuracy: top-1 on the score photos, per seed.
        log_loss: mean negative log-probability of the true class (nats), per seed.
        wall_s: training wall time in seconds (scoring not included), per seed.
        note: what the recipe was, in a few words.
    """

    key: str
    label: str
    status: str = "ok"
    accuracy: list[float] = field(default_factory=list)
    log_loss: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def scored(self) -> bool:
        """Whether the row has a result for every seed it ran."""
        return self.status == "ok" and bool(self.accuracy)

    def mean(self, metric: str) -> float:
        """Mean over seeds of ``accuracy``, ``log_loss`` or ``wall_s``; nan when none."""
        values = getattr(self, metric)
        return float(np.mean(values)) if values else math.nan

    def fail(self, reason: str) -> None:
        """Mark the row failed (the first reason is kept)."""
        if self.status == "ok":
            self.status = f"failed: {reason}"


@dataclass
class TaskResult:
    """A task and its rows."""

    name: str
    source: str
    per_class: int
    train_photos: int
    score_photos: int
    image_size: tuple[int, int]
    seeds: list[int]
    rows: list[Row]

    def row(self, key: str) -> Row | None:
        """The row with ``key``, if the task has one."""
        return next((row for row in self.rows if row.key == key), None)


class RowFailed(Exception):
    """One recipe could not be trained or scored; its row says why and the benchmark goes on."""


def parse_budget(text: str) -> float:
    """Seconds in a budget such as ``5m``, ``90s``, ``1h``, ``1m30s``.

    Raises:
        ValueError: not a budget.
    """
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text.strip().lower())
    if not parts or "".join(number + unit for number, unit in parts) != text.strip().lower():
        raise ValueError(f"budget: expected e.g. 5m, 90s or 1h, got {text!r}")
    return sum(float(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)


def single_recipes(settings: Settings, report: Any) -> list[tuple[str, str, dict[str, Any], str]]:
    """``(key, label, config changes, note)`` of the engine's single-run recipes for a scanned task."""
    recommended = recommended_recipe(RECOMMENDED_MODE, report)
    if settings.recommended_epochs is not None:
        recommended["optim.epochs"] = settings.recommended_epochs
        recommended.pop("model.head_epochs", None)
    return [
        ("feature_extraction", "feature extraction",
         {"model.mode": "feature_extraction", "optim.epochs": settings.feature_epochs},
         f"{_epochs(settings.feature_epochs)} on cached features, defaults"),
        ("fine_tune", "fine-tuning", {"model.mode": "fine_tune", "optim.epochs": settings.fine_tune_epochs},
         f"{_epochs(settings.fine_tune_epochs)}, top 2 stages, defaults"),
        ("two_stage", "two-stage",
         {"model.mode": "two_stage", "model.head_epochs": settings.head_epochs,
          "optim.epochs": settings.head_epochs + settings.fine_tune_epochs},
         f"{_epochs(settings.head_epochs)} head only, then {_epochs(settings.fine_tune_epochs)} fine-tuning"),
        ("recommended", f"Recommended ({RECOMMENDED_MODE.replace('_', '-')})", recommended,
         f"{_epochs(recommended['optim.epochs'])}; " + explain_recipe(recommended, report).split(":")[0]),
    ]


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


@contextmanager
def own_cache(folder: Path, weights: Path) -> Iterator[Path]:
    """Point the user cache at ``folder`` (cold: no features or decoded images), sharing only ``weights``."""
    folder.mkdir(parents=True)
    (folder / "weights").symlink_to(weights, target_is_directory=True)
    saved = os.environ.get(CACHE_ENV_VAR)
    os.environ[CACHE_ENV_VAR] = str(folder)
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV_VAR, None)
        else:
            os.environ[CACHE_ENV_VAR] = saved


def score(probabilities: np.ndarray, classes: Sequence[str], task: Task, kept: Sequence[int] | None = None) -> tuple[
        float, float]:
    """``(accuracy, log-loss)`` of softmax rows over ``classes`` against the task's score labels."""
    rows = list(range(len(task.score_paths))) if kept is None else list(kept)
    if len(rows) != len(task.score_paths):
        raise RowFailed(f"{len(task.score_paths) - len(rows)} score photos could not be read")
    targets = np.array([list(classes).index(task.score_labels[index]) for index in rows])
    return accuracy(probabilities, targets), log_loss(probabilities, targets)


def score_model(path: Path, task: Task) -> tuple[float, float]:
    """Score a checkpoint or ensemble manifest on the task's unseen photos."""
    model = load_probability_model(path)
    result = model.predict_proba(list(task.score_paths))
    return score(result.probabilities, model.classes, task, result.kept)


def train_recipe(task: Task, folder: Path, changes: dict[str, Any], weights: Path) -> tuple[Path, float]:
    """Train one recipe on a fresh copy of the task's photos; ``(model to score, wall seconds)``."""
    data = shutil.copytree(task.train_dir, folder / "data")
    config = RunConfig().with_changes(**{"data.path": str(data), **changes})
    with own_cache(folder / "cache", weights):
        started = time.perf_counter()
        result = train(config, folder / "run")
        seconds = time.perf_counter() - started
    if result.state != "finished":
        raise RowFailed(f"the run ended {result.state}: {result.reason}")
    checkpoint = result.best_checkpoint or folder / "run" / "checkpoints" / "last.safetensors"
    return checkpoint, seconds


def auto_available() -> bool:
    """Whether ``main.py`` has the ``auto`` command yet."""
    completed = subprocess.run([sys.executable, str(MAIN), "auto", "--help"], cwd=REPOSITORY,
                               capture_output=True, text=True, check=False)
    return completed.returncode == 0


def run_auto(task: Task, folder: Path, budget: str, settings: dict[str, Any], weights: Path) -> tuple[Path, float]:
    """Run ``main.py auto`` on a fresh copy of the task's photos; ``(recommended model, wall seconds)``.

    ``settings`` become ``--set`` options (the seed and split every row shares; the quick run's
    input size); the backbone is the other rows'.
    """
    data = shutil.copytree(task.train_dir, folder / "data")
    log = folder / "auto.log"  # stderr; stdout goes to auto.out
    command = [sys.executable, str(MAIN), "auto", str(data), "--budget", budget,
               "--project-dir", str(folder / "project")]
    for key, value in settings.items():
        command += ["--backbone", str(value)] if key == "model.backbone" else ["--set", f"{key}={value}"]
    limit = parse_budget(budget) * 1.5 + 120  # a hung child must not hold the benchmark forever
    with own_cache(folder / "cache", weights), log.open("w") as stderr:
        started = time.perf_counter()
        # A session of its own, so that a stop reaches Auto's data-loading workers too.
        with subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=stderr, text=True,
                              start_new_session=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")) as child:
            try:
                stdout, _ = child.communicate(timeout=limit)
            except subprocess.TimeoutExpired as error:
                _stop(child)
                raise RowFailed(f"still running after {limit:.0f} s, stopped (log: {log})") from error
        seconds = time.perf_counter() - started
    (folder / "auto.out").write_text(stdout)  # its plan and choices, beside the log
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if child.returncode != 0:
        raise RowFailed(f"exit code {child.returncode} (log: {log})")
    if not lines or not lines[-1].startswith(AUTO_PREFIX):
        raise RowFailed(f"its last line is not '{AUTO_PREFIX}<path>': {lines[-1] if lines else '(no output)'!r}")
    return Path(lines[-1][len(AUTO_PREFIX):].strip()), seconds


def _stop(child: subprocess.Popen[str]) -> None:
    """Stop an Auto child and its workers: SIGTERM (Auto saves what it has), SIGKILL after a grace minute."""
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()


def run_task(task: Task, seed: int, rows: dict[str, Row], settings: Settings, budgets: Sequence[str], backbone: str,
             auto: bool, weights: Path, work: Path) -> None:
    """Train and score every recipe of one task for one seed, adding to ``rows``."""
    common: dict[str, Any] = {"seed": seed, "data.split_seed": seed, "model.backbone": backbone}
    if settings.input_size is not None:
        common["data.input_size"] = settings.input_size
    report = scan_dataset(task.train_dir)
    for key, label, changes, note in single_recipes(settings, report):
        row = rows.setdefault(key, Row(key, label, note=note))
        progress(f"{task.name} seed {seed}: {label}")
        try:
            checkpoint, seconds = train_recipe(task, work / key, {**common, **changes}, weights)
            found = score_model(checkpoint, task)
        except (TransferStudioError, RowFailed) as error:
            row.fail(str(error))
            continue
        row.accuracy.append(found[0])
        row.log_loss.append(found[1])
        row.wall_s.append(seconds)
    for budget in budgets:
        row = rows.setdefault(f"auto_{budget}", Row(f"auto_{budget}", f"Auto {budget}",
                                                    note=f"main.py auto --budget {budget}"))
        if not auto:
            row.status = "not available"
            continue
        progress(f"{task.name} seed {seed}: Auto {budget}")
        try:
            model, seconds = run_auto(task, work / f"auto-{budget}", budget, common, weights)
            found = score_model(model, task)
        except (TransferStudioError, RowFailed) as error:
            row.fail(str(error))
            continue
        row.accuracy.append(found[0])
        row.log_loss.append(found[1])
        row.wall_s.append(seconds)
        row.note = f"main.py auto --budget {budget}: {'an ensemble' if model.suffix == '.json' else 'one checkpoint'}"
    fine_tune = rows["fine_tune"]
    plain = rows.setdefault("plain_timm", Row("plain_timm", "plain timm fine-tune",
                                              note="AdamW 3e-4, all layers, timm transforms, fine-tuning's time"))
    if len(fine_tune.wall_s) <= len(plain.wall_s):  # this seed's fine-tuning gave no time to match
        plain.fail("no fine-tuning time to match")
        return
    progress(f"{task.name} seed {seed}: plain timm for {fine_tune.wall_s[-1]:.0f} s")
    data = shutil.copytree(task.train_dir, work / "plain_timm" / "data")
    with own_cache(work / "plain_timm" / "cache", weights):
        trained = plain_timm.fine_tune(data, fine_tune.wall_s[-1], backbone=backbone, seed=seed,
                                       input_size=settings.input_size)
    found = score(trained.predict_proba(list(task.score_paths)), trained.classes, task)
    plain.accuracy.append(found[0])
    plain.log_loss.append(found[1])
    plain.wall_s.append(trained.seconds)
    plain.note = f"AdamW 3e-4, all layers, timm transforms, {trained.epochs:.1f} epochs in fine-tuning's time"


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def format_table(result: TaskResult) -> list[str]:
    """The task's heading and one line per row: accuracy, log-loss, wall time (means over seeds) and a note."""
    width, height = result.image_size
    held_out = RunConfig().data.val_fraction
    lines = [f"{result.name}: {result.train_photos} training photos ({result.per_class} per class, {width}x{height}; "
             f"recipes hold out {held_out:.0%} for validation), scored on {result.score_photos} unseen photos, "
             f"seeds {result.seeds}",
             f"  {'recipe':<26} {'accuracy':>8} {'log-loss':>8} {'wall s':>8}  note"]
    for row in result.rows:
        if not row.scored:
            lines.append(f"  {row.label:<26} {row.status}")
            continue
        note = row.note
        if len(row.accuracy) > 1:
            note += "; accuracy per seed " + " ".join(f"{value:.3f}" for value in row.accuracy)
        lines.append(f"  {row.label:<26} {row.mean('accuracy'):>8.3f} {row.mean('log_loss'):>8.3f} "
                     f"{row.mean('wall_s'):>8.1f}  {note}")
    return lines


def goal_lines(result: TaskResult, budgets: Sequence[str]) -> list[str]:
    """The ``ratio ... (goal ...)`` lines a task's rows support."""
    lines = []
    singles = [row for row in (result.row(key) for key in SINGLE_RECIPES) if row is not None and row.scored]
    plain = result.row("plain_timm")
    if singles and plain is not None and plain.scored:
        best = max(singles, key=lambda row: row.mean("accuracy"))
        lines.append(f"ratio best recipe ({best.label}) / plain timm accuracy "
                     f"{best.mean('accuracy') / plain.mean('accuracy'):.3f} (goal >= 1)")
    for budget in budgets:
        row = result.row(f"auto_{budget}")
        if row is not None and row.scored:
            lines.append(f"ratio Auto {budget} wall / budget {row.mean('wall_s') / parse_budget(budget):.2f} "
                         f"(goal <= {BUDGET_SLACK})")
    if result.name == GOAL_TASK and budgets:
        budget = max(budgets, key=parse_budget)
        auto = result.row(f"auto_{budget}")
        if auto is None or not auto.scored:
            lines.append(f"Auto {budget}: {auto.status if auto else 'not run'}; its goals (accuracy >= "
                         f"{GOAL_ACCURACY}, >= the best single recipe in the same time) are not checked")
        else:
            lines.append(f"ratio Auto {budget} accuracy {auto.mean('accuracy'):.3f} (goal >= {GOAL_ACCURACY})")
            within = [row for row in singles if row.mean("wall_s") <= parse_budget(budget) * BUDGET_SLACK]
            if within:
                best = max(within, key=lambda row: row.mean("accuracy"))
                lines.append(f"ratio Auto {budget} / best single recipe in its time ({best.label}) accuracy "
                             f"{auto.mean('accuracy') / best.mean('accuracy'):.3f} (goal >= 1)")
    return lines


def write_results(path: Path, header: dict[str, Any], results: Sequence[TaskResult], budgets: Sequence[str]) -> Path:
    """Write the results as JSON (or CSV plus the JSON beside it); returns the JSON's path."""
    # Each task's printed lines too, ready to paste into notes.
    document = {**header, "tasks": [{**asdict(result), "table": format_table(result) + goal_lines(result, budgets)}
                                    for result in results]}
    json_path = path.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(json_path, document)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "per_class", "train_photos", "score_photos", "recipe", "status", "accuracy",
                             "log_loss", "wall_s", "seeds", "note"])
            for result in results:
                for row in result.rows:
                    writer.writerow([result.name, result.per_class, result.train_photos, result.score_photos,
                                     row.key, row.status, _csv_number(row.mean("accuracy")),
                                     _csv_number(row.mean("log_loss")), _csv_number(row.mean("wall_s")),
                                     len(row.accuracy), row.note])
    return json_path


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def selected_tasks(names: Sequence[str], per_class: Sequence[int]) -> list[tuple[str, int]]:
    """``(source, per class)`` pairs for ``--tasks`` items: a source name (every ``per_class``) or ``SOURCE-N``.

    Raises:
        ValueError: an item that names no source.
    """
    chosen: list[tuple[str, int]] = []
    for name in names:
        match = re.fullmatch(r"(.+)-(\d+)", name)
        if name in SOURCES:
            chosen += [(name, size) for size in per_class]
        elif match and match.group(1) in SOURCES:
            chosen.append((match.group(1), int(match.group(2))))
        else:
            raise ValueError(f"--tasks: {name!r} is not one of {', '.join(SOURCES)} (optionally with -N per class)")
    return list(dict.fromkeys(chosen))


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=_names, help=f"comma-separated sources ({', '.join(SOURCES)}) or "
                        "SOURCE-N tasks (default: every source; --quick: the first installed)")
    parser.add_argument("--per-class", type=_numbers, help="training photos per class (default 20,50,100)")
    parser.add_argument("--budgets", type=_names, help="Auto budgets (default 5m,10m)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per task: different photos and runs (default 1)")
    parser.add_argument("--backbone", default=plain_timm.BACKBONE)
    parser.add_argument("--quick", action="store_true", help="one tiny task, few epochs: checks the harness")
    parser.add_argument("--out", type=Path,
                        help=f"results file, .json or .csv (default {DEFAULT_OUT.relative_to(REPOSITORY)})")
    parser.add_argument("--work-dir", type=Path, help="keep the photos and runs here (default: a temporary folder)")
    arguments = parser.parse_args(argv)
    settings = QUICK if arguments.quick else Settings()
    per_class = arguments.per_class or (QUICK_PER_CLASS if arguments.quick else PER_CLASS)
    budgets = arguments.budgets or (QUICK_BUDGETS if arguments.quick else BUDGETS)
    try:
        if arguments.seeds < 1:
            raise ValueError(f"--seeds: must be at least 1, got {arguments.seeds}")
        for budget in budgets:
            parse_budget(budget)
        known = sources()
        names = arguments.tasks or SOURCES
        if arguments.quick and not arguments.tasks:
            names = ("fashion-mnist" if fashion_mnist_installed() else "digits",)
        chosen = selected_tasks(names, per_class)
    except ValueError as error:
        parser.error(str(error))
    out = arguments.out or DEFAULT_OUT.with_name("bench-quality-quick.json" if arguments.quick else DEFAULT_OUT.name)

    provider = get_weights_provider(arguments.backbone)
    if provider is not None and provider.is_available():
        provider.safetensors_path()  # converted once, before any timing starts
    weights = user_cache_dir("weights")
    auto = auto_available()
    device = plan_device("auto").device
    header = {
        "benchmark": "bench.quality", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": arguments.quick,
        "backbone": arguments.backbone, "device": str(device), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "auto_available": auto,
        "settings": asdict(settings), "budgets": list(budgets),
    }
    print(f"bench.quality: {arguments.backbone} on {device} ({torch.get_num_threads()} torch threads), "
          f"seeds {list(range(arguments.seeds))}{', quick' if arguments.quick else ''}; Auto: "
          f"{'main.py auto' if auto else 'not available (main.py has no auto command yet)'}")
    results: list[TaskResult] = []
    saved_data_dir = os.environ.get(DATA_ENV_VAR)
    with _work_dir(arguments.work_dir) as work:
        # Chosen project folders (Auto's --project-dir) are remembered in the user data folder: not the user's own.
        os.environ[DATA_ENV_VAR] = str(work / "user-data")
        try:
            pools: dict[str, tuple[Pool, Pool] | None] = {}
            for source_name, size in chosen:
                source = known[source_name]
                if source_name not in pools:
                    pools[source_name] = _pool(source, settings.score_per_class or source.score_per_class, work)
                split = pools[source_name]
                name = f"{source_name}-{size}"
                if split is None:
                    continue
                score_pool, rest = split
                if size > available_per_class(rest):
                    print(f"{name}: n/a (only {available_per_class(rest)} photos per class beside the score set)")
                    continue
                rows: dict[str, Row] = {}
                task: Task | None = None
                for seed in range(arguments.seeds):
                    folder = work / name / f"seed-{seed}"
                    task = build_task(name, source.description, score_pool, rest, size, seed, folder / "photos")
                    run_task(task, seed, rows, settings, budgets, arguments.backbone, auto, weights, folder)
                assert task is not None  # --seeds is at least 1
                result = TaskResult(name, task.source, size, task.train_count, len(task.score_paths),
                                    task.image_size, list(range(arguments.seeds)), list(rows.values()))
                results.append(result)
                for line in format_table(result) + goal_lines(result, budgets):
                    print(line, flush=True)
                written = write_results(out, header, results, budgets)
        finally:
            if saved_data_dir is None:
                os.environ.pop(DATA_ENV_VAR, None)
            else:
                os.environ[DATA_ENV_VAR] = saved_data_dir
    if results:
        print(f"results: {written}" + (f" and {out}" if out.suffix.lower() == ".csv" else ""))
    return 0


def _pool(source: Source, score_per_class: int, work: Path) -> tuple[Pool, Pool] | None:
    """The source's pool split into score photos and the rest; None (and a line saying so) when not installed."""
    pool = source.write_pool(work / "pools" / source.name)
    if pool is None:
        print(f"{source.name}: not installed here ({source.description}); its tasks are skipped")
        return None
    score_pool, rest = split_pool(pool, score_per_class)
    count = sum(len(paths) for paths in pool.values())
    print(f"{source.name}: {source.description}; {count} distinct photos in {len(pool)} classes, "
          f"{score_per_class} per class kept aside for scoring, up to {available_per_class(rest)} per class "
          "to train on")
    return score_pool, rest


@contextmanager
def _work_dir(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        folder = chosen / time.strftime("%Y%m%d-%H%M%S")  # a new folder each time: task folders are made fresh
        folder.mkdir(parents=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        yield Path(scratch)


if __name__ == "__main__":
    sys.exit(main())

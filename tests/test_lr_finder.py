"""The learning-rate range test on real demo photos and the real pretrained backbone.

The sweep stops on its own rule, writes a curve the GUI can draw, leaves the model
untouched, and suggests a rate that a grid of real training runs agrees with.
"""

from __future__ import annotations

import copy
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from demo_photos import copy_demo
from PIL import Image
from screenshots import SCREENSHOT_DIR

from engine.core.config import RunConfig, load_config
from engine.core.device import plan_device
from engine.core.errors import DatasetError
from engine.data.prepare import prepare_dataset
from engine.training.callback import Callback, LoopState
from engine.training.loop import Loop
from engine.training.lr_finder import (
    LRFinder,
    LRFinderCurve,
    LRFinderResult,
    find_learning_rate,
    learning_rate_setting,
    lr_range_test,
    suggest_learning_rate,
)
from engine.training.runfolder import RunFolder, read_events
from engine.training.setup import build_training, create_optimizer
from engine.training.train import train


def demo_config(data: Path, **changes: object) -> RunConfig:
    # The demo photos are 64 px: a 64 px input loses nothing and costs a twelfth of 224.
    base = {"data.path": str(data), "data.num_workers": 0, "data.input_size": 64}
    return RunConfig().with_changes(**{**base, **changes})


@pytest.fixture(scope="module")
def ten_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All ten demo classes, 20 photos each: 160 to train on, too many for the head to memorise mid-sweep."""
    return copy_demo(tmp_path_factory.mktemp("lr") / "data", classes=10, per_class=20)


@pytest.fixture(scope="module")
def swept(ten_classes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LRFinderResult, str]:
    """One range test on the ten classes (feature extraction), with its echoed event lines."""
    out_dir = tmp_path_factory.mktemp("sweep") / "lr_find"
    echo = io.StringIO()
    result = find_learning_rate(demo_config(ten_classes), out_dir, echo=echo)
    return out_dir, result, echo.getvalue()


@pytest.mark.slow
def test_sweep_stops_at_three_times_the_minimum_and_writes_the_curve(
    ten_classes: Path, swept: tuple[Path, LRFinderResult, str]
) -> None:
    out_dir, result, echoed = swept
    curve = result.curve
    assert result.state == "finished" and curve.ended == "diverged"
    assert 20 < len(curve.losses) < 100  # stopped early, by the 3x rule, not by running out of steps
    assert curve.smoothed_losses[-1] > 3 * min(curve.smoothed_losses)
    assert all(value <= 3 * min(curve.smoothed_losses[:i + 1]) for i, value in enumerate(curve.smoothed_losses[:-1]))
    assert curve.losses[0] == pytest.approx(math.log(10), abs=1e-3)  # the zeroed head starts at chance
    assert curve.learning_rates[0] == pytest.approx(1e-7)
    ratios = np.diff(np.log(curve.learning_rates))
    assert np.allclose(ratios, math.log(1e8) / 99)  # exponential: 100 steps from 1e-7 to 10

    events = [e for e in read_events(out_dir) if not e["event"].startswith("features_")]
    names = [e["event"] for e in events]
    assert names == ["lr_find_started", *["lr_find_step"] * len(curve.losses), "lr_find_finished"]
    steps = [e for e in events if e["event"] == "lr_find_step"]
    assert [e["learning_rate"] for e in steps] == curve.learning_rates
    assert [e["smoothed_loss"] for e in steps] == curve.smoothed_losses
    finished = events[-1]
    assert finished["suggestion"] == result.suggestion and finished["reason"] == result.reason
    assert finished["min_loss_rate"] == curve.min_loss_rate
    assert echoed == (out_dir / "events.jsonl").read_text()  # --events-only prints every line

    rows = (out_dir / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "learning_rate,loss,smoothed_loss" and len(rows) == len(curve.losses) + 1
    assert [float(v) for v in rows[1].split(",")] == pytest.approx(
        [curve.learning_rates[0], curve.losses[0], curve.smoothed_losses[0]], rel=1e-5)
    with Image.open(out_dir / "lr_find.png") as plot:
        assert plot.format == "PNG" and plot.width >= 800
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(out_dir / "lr_find.png", SCREENSHOT_DIR / "lr_find.png")
    assert load_config(out_dir / "config.yaml") == demo_config(ten_classes)
    assert RunFolder(out_dir).read_status()["state"] == "finished"
    assert not list(out_dir.rglob("*.tmp"))


@pytest.mark.slow
def test_suggestion_lies_within_10x_of_the_best_rate_of_a_trained_grid(
    ten_classes: Path, swept: tuple[Path, LRFinderResult, str], tmp_path: Path
) -> None:
    _, result, _ = swept
    suggestion = result.suggestion
    print(f"suggested {suggestion:g}: {result.reason}")

    def best_val(rate: float) -> tuple[float, float]:
        """Lowest validation loss and best accuracy of a short default run at ``rate``."""
        # The doctor would stop the rate-10 run before its first epoch; here every rate trains 5 epochs.
        config = demo_config(ten_classes, **{"optim.learning_rate": rate, "optim.min_learning_rate": 0.0,
                                             "optim.epochs": 5, "doctor.enabled": False})
        history = train(config, tmp_path / f"run-{rate:g}").history
        return min(row["val_loss"] for row in history), max(row["val_top1"] for row in history)

    # Validation loss, not accuracy, says how well a rate trains: accuracy only asks which
    # class scores highest, so a head trained at 1e-6 (weights a thousand times too small)
    # already ranks half the photos right while its loss has not left ln(10).
    grid = {rate: best_val(rate) for rate in (1e-3, 3e-3, 1e-2, 3e-2)}
    at_suggestion = grid.get(suggestion) or best_val(suggestion)
    too_low, too_high = best_val(1e-6), best_val(10.0)
    print({f"{rate:g}": values for rate, values in {**grid, suggestion: at_suggestion,
                                                    1e-6: too_low, 10.0: too_high}.items()})

    good_rate = min(grid, key=lambda rate: grid[rate][0])
    assert suggestion / 10 <= good_rate <= suggestion * 10
    best_loss = grid[good_rate][0]
    assert at_suggestion[0] <= 1.25 * best_loss  # as good as the grid's best, within noise
    assert at_suggestion[1] >= 0.1 + 0.4  # chance is 0.1
    assert too_low[0] > 2 * at_suggestion[0] and too_low[0] > 0.95 * math.log(10)  # learnt nothing in 5 epochs
    assert too_low[1] < at_suggestion[1]
    assert too_high[0] > 10 * at_suggestion[0]  # blown up


class StopAfterStep(io.StringIO):
    """An ``echo`` stream that asks the run to stop once it has seen a given sweep step, as the GUI would."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__()
        self.run_dir, self.step = run_dir, step

    def write(self, line: str) -> int:
        event = json.loads(line)
        if event["event"] == "lr_find_step" and event["step"] == self.step:
            RunFolder(self.run_dir).request_stop()
        return super().write(line)


def test_a_stop_request_ends_the_sweep_cleanly(ten_classes: Path, tmp_path: Path) -> None:
    result = find_learning_rate(demo_config(ten_classes), tmp_path / "lr", echo=StopAfterStep(tmp_path / "lr", 5))
    assert result.state == "cancelled" and result.suggestion is None and result.curve.ended == "stopped"
    assert len(result.curve.losses) == 5
    last = read_events(tmp_path / "lr")[-1]
    assert last["event"] == "run_cancelled" and last["reason"] == "stopped" and last["step"] == 5
    assert RunFolder(tmp_path / "lr").read_status()["state"] == "cancelled"
    assert not (tmp_path / "lr" / "lr_find.csv").exists()


def test_a_missing_dataset_is_recorded_as_run_failed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no-such-folder"):
        find_learning_rate(demo_config(tmp_path / "no-such-folder"), tmp_path / "lr")
    failed = read_events(tmp_path / "lr")[-1]
    assert failed["event"] == "run_failed" and failed["error_type"] == "DatasetError"


class RecordGroups(Callback):
    """Keeps each step's rates per group, and a BatchNorm buffer as it is mid-sweep."""

    order = -1  # before the finder, which ends the fit in the last step's after_step

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.rates: list[list[float]] = []
        self.running_mean_mid_sweep: torch.Tensor | None = None

    def after_step(self, state: LoopState) -> None:
        self.rates.append([group["lr"] for group in state.optimizer.param_groups])
        self.running_mean_mid_sweep = self.model.get_buffer(last_running_mean_name(self.model)).clone()


def last_running_mean_name(model: torch.nn.Module) -> str:
    """The running mean of the top BatchNorm: in a stage that trains (frozen stages' are FrozenBatchNorm2d)."""
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    return f"{names[-1]}.running_mean"


def assert_same_state(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == []


def test_feature_extraction_sweep_puts_the_head_back(ten_classes: Path) -> None:
    config = demo_config(ten_classes)
    setup = build_training(config, prepare_dataset(ten_classes))
    before = copy.deepcopy(setup.loaded.model.state_dict())
    head_norms: list[float] = []
    curve = lr_range_test(setup, config, start_lr=1e-3, end_lr=1.0, num_steps=10,
                          report=lambda *_, **__: head_norms.append(float(setup.loop_model[1].weight.detach().norm())))
    assert len(curve.losses) >= 3 and head_norms[-1] > 0  # the head trained: it starts at zero
    assert_same_state(before, setup.loaded.model.state_dict())


@pytest.mark.slow
def test_fine_tune_sweep_keeps_group_ratios_and_restores_weights_and_batchnorm(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=8)
    config = demo_config(data, **{"model.mode": "fine_tune", "optim.batch_size": 4})
    setup = build_training(config, prepare_dataset(data))
    model = setup.loaded.model
    before = copy.deepcopy(model.state_dict())
    was_training = model.training
    recorder = RecordGroups(model)
    curve = lr_range_test(setup, config, start_lr=1e-4, end_lr=1e-2, num_steps=6, callbacks=[recorder])

    assert len(curve.losses) == len(recorder.rates) == 6
    names = [group["name"] for group in create_optimizer(setup, config).param_groups]
    assert names[0] == "head" and "backbone" in names
    for rates in recorder.rates:  # every group follows the sweep, the backbone at 0.1 of the head
        for name, rate in zip(names, rates, strict=True):
            expected = rates[0] * (config.model.backbone_lr_scale if name.startswith("backbone") else 1.0)
            assert rate == pytest.approx(expected)
    assert not torch.equal(recorder.running_mean_mid_sweep, before[last_running_mean_name(model)])
    assert_same_state(before, model.state_dict())  # weights, running statistics, num_batches_tracked
    assert model.training == was_training


def synthetic_curve(centre: float, bottom: float, *, blow_up: bool = True) -> LRFinderCurve:
    """A clean range-test shape: flat, a sigmoid fall centred at 10**centre, a rise after 10**bottom."""
    rates = np.logspace(-7, 1, 100)
    x = np.log10(rates)
    loss = 2.3 - 2.0 / (1 + np.exp(-(x - centre) / 0.3))
    if blow_up:
        loss = loss + np.where(x > bottom, 3.0 * (x - bottom) ** 2, 0.0)
    return LRFinderCurve(list(rates), list(loss), list(loss), ended="diverged" if blow_up else "completed")


def test_suggestion_takes_the_steepest_fall_capped_at_a_tenth_of_the_minimum() -> None:
    rate, reason = suggest_learning_rate(synthetic_curve(centre=-3, bottom=0))
    assert rate == pytest.approx(1e-3, rel=0.15)  # the fall is steepest at its centre
    assert reason.startswith("the smoothed loss falls fastest at 1.1e-3 (and is lowest at 8.9e-1; a tenth of that is")
    assert reason.endswith("try 1e-3")

    rate, reason = suggest_learning_rate(synthetic_curve(centre=-1.2, bottom=-0.8))
    tenth = synthetic_curve(-1.2, -0.8).min_loss_rate / 10
    assert rate == pytest.approx(tenth, rel=0.5) and rate < 10**-1.2  # the minimum is close: its tenth wins
    assert "a tenth of that is" in reason

    _, reason = suggest_learning_rate(synthetic_curve(centre=-2, bottom=2, blow_up=False))
    assert "still falling at the end" in reason


def known_loss(rate: float, centre: float = -3.0, bottom: float = -1.0) -> float:
    """A range-test shape as a pure function of the rate: flat at 2.3, a sigmoid fall of 2 centred at
    10**centre (its steepest point against log10 rate), then a parabola rising after 10**bottom.

    On a grid 0.1 decade apart that holds both points, the sigmoid's central difference is steepest
    at 10**centre itself, and the lowest point is 10**bottom, the last one before the rise.
    """
    x = math.log10(rate)
    rise = 40.0 * (x - bottom) ** 2 if x > bottom + 1e-9 else 0.0
    return 2.3 - 2.0 / (1 + math.exp(-(x - centre) / 0.3)) + rise


SWEPT_RATES = [10 ** (k / 10) for k in range(-70, 11)]  # 1e-7 .. 10, 0.1 decade apart


def test_suggestion_on_a_known_curve_is_its_steepest_point_or_a_tenth_of_its_minimum() -> None:
    smoothed = [known_loss(rate) for rate in SWEPT_RATES]
    # Raw per-step losses are noisy; the suggestion reads the smoothed curve only.
    noise = np.random.default_rng(0).normal(scale=0.5, size=len(SWEPT_RATES))
    curve = LRFinderCurve(SWEPT_RATES, list(np.asarray(smoothed) + noise), smoothed, ended="diverged")

    rate, reason = suggest_learning_rate(curve)

    assert curve.min_loss_rate == pytest.approx(1e-1)
    assert rate == 1e-3  # the steepest point, below a tenth of the minimum (1e-2)
    assert reason.startswith("the smoothed loss falls fastest at 1.0e-3 (and is lowest at 1.0e-1; a tenth of")

    # The fall centred at 3.2e-2, above a tenth of the minimum (still 1e-1): the tenth caps the suggestion.
    late = [known_loss(rate, centre=-1.5) for rate in SWEPT_RATES]
    rate, reason = suggest_learning_rate(LRFinderCurve(SWEPT_RATES, late, late, ended="diverged"))
    assert rate == 1e-2
    assert reason.startswith("the smoothed loss falls fastest at 3.2e-2 (and is lowest at 1.0e-1; a tenth of that "
                             "is 1.0e-2)")


def test_the_finder_records_the_swept_rates_and_a_debiased_smoothed_loss() -> None:
    """The real callback in a real loop, on a loss that is a pure function of the rate the loop steps at."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    inputs, targets = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(8, dtype=torch.long)

    def sweep(loss_of_rate, smoothing: float) -> LRFinderCurve:
        finder = LRFinder(1e-7, 10.0, len(SWEPT_RATES), smoothing=smoothing)
        loop = Loop(
            model=model, optimizer=optimizer, train_batches=[(inputs, targets)], val_batches=None,
            loss_function=lambda logits, _: logits.sum() * 0 + loss_of_rate(optimizer.param_groups[0]["lr"]),
            device_plan=plan_device("cpu", images=False), callbacks=[finder],
        )
        loop.fit(len(SWEPT_RATES))
        return finder.curve

    # A constant loss: the debiased average equals it from the first step; the sweep runs to its end.
    curve = sweep(lambda _: 1.7, smoothing=0.9)
    assert curve.ended == "completed" and len(curve.losses) == len(SWEPT_RATES)
    np.testing.assert_allclose(curve.learning_rates, SWEPT_RATES, rtol=1e-9)
    np.testing.assert_allclose(curve.smoothed_losses, 1.7, rtol=1e-6)
    # The known curve, unsmoothed: the loop stops once it passes 3x its minimum, and the
    # suggestion is the curve's steepest point.
    curve = sweep(known_loss, smoothing=0.0)
    assert curve.ended == "diverged" and curve.losses == pytest.approx([known_loss(r) for r in curve.learning_rates])
    smoothed = curve.smoothed_losses
    assert smoothed[-1] > 3 * min(smoothed)
    assert all(value <= 3 * min(smoothed[: i + 1]) for i, value in enumerate(smoothed[:-1]))
    assert curve.min_loss_rate == pytest.approx(1e-1) and suggest_learning_rate(curve)[0] == 1e-3


def test_a_flat_curve_gets_a_warning_not_a_confident_rate() -> None:
    rates = list(np.logspace(-7, -5, 30))
    rate, reason = suggest_learning_rate(LRFinderCurve(rates, [2.3] * 30, [2.3] * 30, ended="completed"))
    assert rate > 0 and "never fell" in reason and "sanity check" in reason


def test_under_the_linear_scaling_rule_the_setting_differs_from_the_rate() -> None:
    scaled = RunConfig().with_changes(**{"optim.batch_size": 256, "optim.reference_batch_size": 32})
    assert learning_rate_setting(2e-3, scaled) == pytest.approx(2.5e-4)  # the run multiplies it by 256/32
    assert learning_rate_setting(2e-3, RunConfig()) == pytest.approx(2e-3)

"""Learning-rate schedules: each curve's shape on a real AdamW with two parameter groups, and the scaling rule."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay
from torch import nn

from engine.core.config import SCHEDULES, OptimConfig
from engine.core.errors import ConfigError
from engine.training.schedules import (
    WARMUP_START_FACTOR,
    create_scheduler,
    cycle_ends,
    get_schedule,
    list_schedules,
    register_schedule,
    scaled_learning_rate,
)

PEAK = 1e-2
BACKBONE_SHARE = 0.1  # the backbone group's rate as a share of the head's
MIN = 1e-5
BATCHES = 10  # optimizer updates per epoch
WARMUP = BATCHES  # one epoch of warmup, in updates


def _optimizer() -> tuple[torch.optim.Optimizer, nn.Linear]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(
        [{"params": [model.weight], "lr": PEAK}, {"params": [model.bias], "lr": PEAK * BACKBONE_SHARE}],
        weight_decay=0.0,
    )
    return optimizer, model


def _config(schedule: str, **changes: object) -> OptimConfig:
    settings: dict[str, object] = {
        "schedule": schedule, "learning_rate": PEAK, "epochs": 10, "warmup_epochs": 1.0, "min_learning_rate": MIN,
    }
    settings.update(changes)
    return OptimConfig(**settings)


def _train(config: OptimConfig, batches: int = BATCHES) -> list[list[float]]:
    """Run the loop's protocol and return every group's rate after ``step_update(t)``, t = 0 … total."""
    optimizer, model = _optimizer()
    scheduler = create_scheduler(optimizer, config, batches)
    inputs = torch.randn(8, 4)
    scheduler.step_update(0)
    rates = [[group["lr"] for group in optimizer.param_groups]]
    for step in range(1, config.epochs * batches + 1):
        model(inputs).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step_update(step)
        rates.append([group["lr"] for group in optimizer.param_groups])
    return rates


def _head(rates: list[list[float]]) -> list[float]:
    return [group_rates[0] for group_rates in rates]


def test_the_config_chooses_among_the_registered_schedules() -> None:
    builtin = ["cosine", "constant", "step", "linear", "inverse_sqrt", "cosine_restarts"]
    assert list_schedules() == list(SCHEDULES) == builtin
    with pytest.raises(ConfigError, match=r"^optim\.schedule: must be one of the registered schedules \(cosine, "
                                          r"constant, .*\), got 'exponential'$"):
        get_schedule("exponential")
    with pytest.raises(ValueError, match="already registered"):
        register_schedule("cosine", get_schedule("linear"))
    assert register_schedule("cosine", get_schedule("cosine")) is get_schedule("cosine")  # the same again is harmless


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_warmup_rises_linearly_and_group_ratio_holds_at_every_step(schedule: str) -> None:
    rates = _train(_config(schedule))
    head = _head(rates)
    start = PEAK * WARMUP_START_FACTOR
    for step in range(WARMUP + 1):
        assert head[step] == pytest.approx(start + (PEAK - start) * step / WARMUP, rel=1e-9)
    for step, (head_rate, backbone_rate) in enumerate(rates):
        assert backbone_rate == pytest.approx(head_rate * BACKBONE_SHARE, rel=1e-9), f"step {step}"


def test_cosine_decays_from_the_peak_to_the_minimum() -> None:
    head = _head(_train(_config("cosine")))
    decay = head[WARMUP:]
    assert all(later <= earlier for earlier, later in zip(decay, decay[1:], strict=False))
    assert decay[len(decay) // 2] == pytest.approx((PEAK + MIN) / 2, rel=1e-9)
    assert head[-1] == pytest.approx(MIN, rel=1e-9)


def test_constant_holds_the_peak_after_warmup() -> None:
    head = _head(_train(_config("constant")))
    assert head[WARMUP:] == pytest.approx([PEAK] * len(head[WARMUP:]), rel=1e-12)


def test_step_multiplies_by_the_factor_every_step_epochs_after_warmup() -> None:
    head = _head(_train(_config("step", step_epochs=3.0, step_factor=0.5)))
    every = 3 * BATCHES
    for step in range(WARMUP, len(head)):
        assert head[step] == pytest.approx(PEAK * 0.5 ** ((step - WARMUP) // every), rel=1e-9), f"step {step}"
    assert head[WARMUP + every - 1] == pytest.approx(PEAK) and head[WARMUP + every] == pytest.approx(PEAK / 2)


def test_linear_decays_in_equal_steps_to_the_minimum() -> None:
    head = _head(_train(_config("linear")))
    decay_steps = len(head) - 1 - WARMUP
    for k, rate in enumerate(head[WARMUP:]):
        assert rate == pytest.approx(PEAK - (PEAK - MIN) * k / decay_steps, rel=1e-9)
    assert head[-1] == pytest.approx(MIN, rel=1e-9)


def test_inverse_sqrt_halves_at_four_times_the_warmup() -> None:
    head = _head(_train(_config("inverse_sqrt")))
    assert head[WARMUP] == pytest.approx(PEAK, rel=1e-12)
    assert head[4 * WARMUP] == pytest.approx(PEAK / 2, rel=1e-12)
    assert head[9 * WARMUP] == pytest.approx(PEAK / 3, rel=1e-12)


def test_inverse_sqrt_without_warmup_starts_decaying_after_one_epoch() -> None:
    head = _head(_train(_config("inverse_sqrt", warmup_epochs=0.0)))
    assert head[: BATCHES + 1] == pytest.approx([PEAK] * (BATCHES + 1), rel=1e-12)
    assert head[4 * BATCHES] == pytest.approx(PEAK / 2, rel=1e-12)


def test_cosine_restarts_return_to_the_peak_at_each_cycle_start() -> None:
    config = _config("cosine_restarts", restart_epochs=3.0)
    head = _head(_train(config))
    cycle = 3 * BATCHES
    for start in (WARMUP, WARMUP + cycle, WARMUP + 2 * cycle):
        assert head[start] == pytest.approx(PEAK, rel=1e-12), f"step {start}"
        assert head[start + cycle // 2] == pytest.approx((PEAK + MIN) / 2, rel=1e-9)
    for end in (WARMUP + cycle - 1, WARMUP + 2 * cycle - 1):
        assert head[end] < PEAK * 0.01  # the cycle's low point, just before the restart
    assert head[-1] == pytest.approx(MIN, rel=1e-9)  # the third cycle ends with the run
    assert cycle_ends(config, BATCHES) == [4, 7, 10]


def test_cycle_ends_count_only_complete_cycles_and_only_for_restarts() -> None:
    assert cycle_ends(_config("cosine_restarts", restart_epochs=4.0), BATCHES) == [5, 9]
    # A cycle shorter than an epoch: one snapshot per epoch, the last epoch whose end has a cycle end in it.
    assert cycle_ends(_config("cosine_restarts", epochs=3, restart_epochs=0.5), BATCHES) == [1, 2, 3]
    assert cycle_ends(_config("cosine"), BATCHES) == []


def test_warmup_longer_than_the_run_is_capped_at_the_run() -> None:
    head = _head(_train(_config("cosine", epochs=2, warmup_epochs=5.0)))
    total = 2 * BATCHES
    start = PEAK * WARMUP_START_FACTOR
    assert head[total - 1] == pytest.approx(start + (PEAK - start) * (total - 1) / total, rel=1e-9)
    assert max(head) <= PEAK


def test_no_warmup_starts_at_the_peak() -> None:
    assert _head(_train(_config("cosine", warmup_epochs=0.0)))[0] == pytest.approx(PEAK, rel=1e-12)


def test_a_resumed_optimizer_gets_the_same_rates() -> None:
    config = _config("cosine")
    optimizer, model = _optimizer()
    scheduler = create_scheduler(optimizer, config, BATCHES)
    scheduler.step_update(37)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()

    resumed, _ = _optimizer()
    resumed.load_state_dict(saved)
    resumed_scheduler = create_scheduler(resumed, config, BATCHES)
    resumed_scheduler.step_update(37)
    assert [group["lr"] for group in resumed.param_groups] == pytest.approx(
        [group["lr"] for group in optimizer.param_groups], rel=1e-12
    )


def test_timm_layer_decay_groups_keep_their_scales() -> None:
    model = timm.create_model("test_vit")
    groups = param_groups_layer_decay(model, weight_decay=0.0, layer_decay=0.5)
    optimizer = torch.optim.AdamW(groups, lr=PEAK)
    shares = [group["lr_scale"] for group in optimizer.param_groups]
    assert len(set(shares)) > 1
    scheduler = create_scheduler(optimizer, _config("cosine", warmup_epochs=0.0), BATCHES)
    for step in (0, 25, 60):
        scheduler.step_update(step)
        rates = [group["lr"] for group in optimizer.param_groups]
        top = max(rates)
        assert [rate / top for rate in rates] == pytest.approx([share / max(shares) for share in shares], rel=1e-9)
    scheduler.step_update(0)
    assert max(group["lr"] for group in optimizer.param_groups) == pytest.approx(PEAK * max(shares), rel=1e-12)


def test_linear_scaling_rule() -> None:
    assert scaled_learning_rate(OptimConfig(learning_rate=1e-3, batch_size=256)) == 1e-3
    scaled = OptimConfig(learning_rate=1e-3, batch_size=256, reference_batch_size=64)
    assert scaled_learning_rate(scaled) == pytest.approx(4e-3, rel=1e-12)
    halved = OptimConfig(learning_rate=1e-3, batch_size=16, reference_batch_size=32)
    assert scaled_learning_rate(halved) == pytest.approx(5e-4, rel=1e-12)


def test_rates_must_be_positive_and_batches_at_least_one() -> None:
    optimizer, _ = _optimizer()
    with pytest.raises(ValueError, match="batches_per_epoch: must be >= 1, got 0"):
        create_scheduler(optimizer, _config("cosine"), 0)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        create_scheduler(optimizer, _config("cosine"), BATCHES)

"""The training doctor, check by check: each fires on the fault it knows and stays silent on healthy training.

Every test drives the real loop with the project's own head, optimizer groups, schedule and
loss over feature-like vectors (the non-negative pooled features a frozen backbone gives),
or real demo images through a timm test model; the faults are real ones (a head built for
1000 classes, a rate of 10, a network initialised too small, random labels).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from imagefactory import make_class_folders
from PIL import Image
from timm.optim import create_optimizer_v2
from torch import nn

from engine.core.config import RunConfig
from engine.core.device import plan_device
from engine.core.errors import ConfigError
from engine.data.health import scan_dataset
from engine.data.loading import FeatureBatches
from engine.models.heads import create_head, install_head
from engine.training.callback import Callback, LoopState
from engine.training.callbacks import LRSchedule, MetricsRecorder
from engine.training.doctor import (
    DIAGNOSIS_EVENT,
    Diagnosis,
    DoctorCheck,
    DoctorContext,
    create_doctor,
    get_check,
    list_checks,
    register_check,
)
from engine.training.doctor.checks.divergence import Divergence
from engine.training.doctor.rates import nice_rate
from engine.training.loop import Loop
from engine.training.losses import ClassificationLoss, create_loss
from engine.training.optimizer import parameter_groups
from engine.training.schedules import create_scheduler

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
NUM_CLASSES = 10
FEATURES = 64


# ---- a small real training set-up ---------------------------------------------------------------


def pooled_features(
    num_classes: int = NUM_CLASSES, per_class: int = 32, dim: int = FEATURES, seed: int = 0, spread: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class clusters of non-negative vectors, like a frozen backbone's pooled features ``(N, dim)``."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(num_classes, dim, generator=generator)
    targets = torch.arange(num_classes).repeat_interleave(per_class)
    noise = spread * torch.rand(len(targets), dim, generator=generator)
    return torch.relu(centres[targets] + noise - spread / 2), targets


class Events:
    """A ``report`` function that keeps the events it receives."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, *, epoch: int | None = None, step: int | None = None, **payload: Any) -> None:
        json.dumps(payload, allow_nan=False)  # what RunFolder.write_event requires
        self.events.append({"event": event, "epoch": epoch, "step": step, **payload})

    def diagnoses(self, check: str | None = None) -> list[Diagnosis]:
        return [Diagnosis.from_dict(event) for event in self.events
                if event["event"] == DIAGNOSIS_EVENT and check in (None, event["check"])]

    def measured(self, event: str) -> list[dict[str, Any]]:
        return [item for item in self.events if item["event"] == event]


def doctor_config(**changes: Any) -> RunConfig:
    # Healthy heads measure update ratios up to ~0.05 (see engine.training.doctor.checks.update_ratio); 0.1 is the
    # band's top the doctor was calibrated with.
    base = {"data.path": "unused"}
    return RunConfig().with_changes(**{**base, **changes})


def fit_head(
    config: RunConfig,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    checks: list[str],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    context_changes: dict[str, Any] | None = None,
    extra: list[Callback] | None = None,
) -> tuple[LoopState, Events, list[DoctorCheck]]:
    """Train a head on features the way a feature-extraction run does, watched by the named checks."""
    torch.manual_seed(config.seed)
    config = config.with_changes(**{"doctor.checks": checks})
    num_classes = int(targets.max()) + 1
    model = model if model is not None else create_head(config.model, features.shape[1], num_classes)
    if optimizer is None:
        groups = parameter_groups(model, {"head": list(model.parameters()), "backbone": []}, config)
        optimizer = create_optimizer_v2(groups, opt="adamw", lr=config.optim.learning_rate,
                                        weight_decay=config.optim.weight_decay)
    batch_size = config.optim.batch_size
    train = FeatureBatches(features[:, None], targets, batch_size=batch_size, shuffle=True, seed=config.seed)
    val_batches = FeatureBatches(val[0][:, None], val[1], batch_size=batch_size, shuffle=False) if val else None
    scheduler = create_scheduler(optimizer, config.optim, len(train))
    events = Events()
    context = DoctorContext(config=config, num_classes=num_classes, report=events,
                            **(context_changes or {}))
    doctor = create_doctor(config, context)
    callbacks = [LRSchedule(scheduler), MetricsRecorder([str(i) for i in range(num_classes)]), *doctor,
                 *(extra or [])]
    loop = Loop(model=model, optimizer=optimizer, loss_function=create_loss(config, targets, num_classes),
                train_batches=train, val_batches=val_batches, device_plan=plan_device("cpu"), callbacks=callbacks)
    state = loop.fit(config.optim.epochs)
    for diagnosis in events.diagnoses():
        diagnosis.apply(config)  # every suggested fix makes a valid config
    return state, events, doctor


def warnings_or_errors(events: Events) -> list[Diagnosis]:
    return [d for d in events.diagnoses() if d.severity in ("warning", "error")]


# ---- registry, diagnoses, factory ---------------------------------------------------------------


def test_every_configured_check_is_registered_and_explained() -> None:
    checks = list_checks()
    # The default of doctor.checks is every built-in check, in the order the checks package registers them.
    assert [check.name for check in checks] == list(RunConfig().doctor.checks)
    assert [check.name for check in checks][:2] == ["initial_loss", "divergence"]
    for check in checks:
        assert check.default
        assert get_check(check.name) is check
        assert check.title and len(check.description) > 40
        assert check.order == 20  # after MetricsRecorder (10) has published the epoch's row


def test_create_doctor_follows_the_config() -> None:
    config = doctor_config(**{"doctor.checks": ["divergence", "initial_loss", "divergence"]})
    context = DoctorContext(config=config, num_classes=3, report=Events())
    assert [type(check).__name__ for check in create_doctor(config, context)] == ["Divergence", "InitialLoss"]
    assert create_doctor(config.with_changes(**{"doctor.enabled": False}), context) == []
    assert len(create_doctor(RunConfig(), context)) == len(RunConfig().doctor.checks)

    with pytest.raises(ConfigError) as raised:
        config.with_changes(**{"doctor.checks": ["divergence", "initial_los"]})
    assert str(raised.value).startswith(
        "doctor.checks[1]: must be one of the registered doctor checks (initial_loss, divergence, ")
    assert str(raised.value).endswith(", class_imbalance), got 'initial_los'")
    with pytest.raises(ConfigError, match=r"^doctor\.checks: .*got 'initial_los'; did you mean 'initial_loss'\?$"):
        get_check("initial_los")


def test_register_check_refuses_a_second_class_under_a_taken_name() -> None:
    class Impostor(DoctorCheck):
        name = "divergence"

    with pytest.raises(ValueError, match="already registered"):
        register_check(Impostor)
    assert register_check(Divergence) is Divergence  # the same class again is harmless
    assert get_check("divergence") is Divergence


def test_diagnosis_serialises_safely_and_its_fix_applies() -> None:
    diagnosis = Diagnosis("divergence", "error", "Training diverged", "The loss became nan.",
                          evidence={"loss": math.nan, "ratios": (1.0, math.inf)}, fix={"optim.learning_rate": 3e-4})
    data = diagnosis.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False))["evidence"] == {"loss": "nan", "ratios": [1.0, "inf"]}
    assert Diagnosis.from_dict(data).fix == {"optim.learning_rate": 3e-4}
    assert diagnosis.apply(RunConfig()).optim.learning_rate == 3e-4
    with pytest.raises(ValueError, match="severity"):
        Diagnosis("divergence", "fatal", "t", "m")


def test_a_kind_of_diagnosis_is_raised_once() -> None:
    events = Events()
    check = Divergence(DoctorContext(config=RunConfig(), num_classes=2, report=events))
    model = nn.Linear(2, 2)
    state = LoopState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=1,
                      batches_per_epoch=1, epoch=1, step=7)
    diagnosis = check.diagnose("warning", "seen twice")
    assert check.raise_diagnosis(state, diagnosis, kind="a")
    assert not check.raise_diagnosis(state, diagnosis, kind="a")
    assert check.raise_diagnosis(state, diagnosis, kind="b")
    assert [(event["step"], event["epoch"], event["check"]) for event in events.events] == [(7, 1, "divergence")] * 2


# ---- initial_loss ----------------------------------------------------------------------------------


def test_initial_loss_is_ln_c_for_a_correct_head_whatever_the_targets() -> None:
    features, targets = pooled_features()
    for changes in ({}, {"optim.label_smoothing": 0.1, "optim.class_balance": "weighted_loss"}):
        state, events, _ = fit_head(doctor_config(**{"optim.epochs": 1, **changes}), features, targets,
                                    checks=["initial_loss"])
        (measured,) = events.measured("initial_loss_measured")
        assert measured["loss"] == pytest.approx(math.log(NUM_CLASSES), abs=1e-6)
        assert measured["output_classes"] == NUM_CLASSES
        assert events.diagnoses() == []
    # Mixed (soft) targets: the uniform prediction still scores ln C.
    soft = torch.softmax(torch.randn(8, NUM_CLASSES), dim=1)
    loss = ClassificationLoss(0.1)(torch.zeros(8, NUM_CLASSES), soft)
    assert float(loss) == pytest.approx(math.log(NUM_CLASSES), abs=1e-6)


def test_initial_loss_catches_a_head_built_for_another_number_of_classes() -> None:
    features, targets = pooled_features()
    wrong = nn.Linear(FEATURES, 1000)  # num_classes mis-set to ImageNet's 1000
    _, events, _ = fit_head(doctor_config(**{"optim.epochs": 1}), features, targets, checks=["initial_loss"],
                            model=wrong)
    (diagnosis,) = events.diagnoses("initial_loss")
    assert diagnosis.severity == "error"
    assert "1000 scores per image" in diagnosis.message and "10 classes" in diagnosis.message
    assert diagnosis.evidence["output_classes"] == 1000 and diagnosis.evidence["num_classes"] == NUM_CLASSES


def demo_images(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """One real demo photo per class, ``(10, 3, size, size)`` normalised, with their class indices."""
    classes = sorted(path for path in DEMO.iterdir() if path.is_dir() and not path.name.startswith("."))
    pictures = []
    for folder in classes:
        image = Image.open(sorted(folder.glob("*.png"))[0]).convert("RGB").resize((size, size))
        pictures.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    images = (torch.stack(pictures) - 0.5) / 0.25
    return images, torch.arange(len(classes))


def first_batch_diagnoses(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> Events:
    events = Events()
    config = doctor_config(**{"doctor.checks": ["initial_loss"]})
    context = DoctorContext(config=config, num_classes=int(targets.max()) + 1, report=events)
    loop = Loop(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3),
                loss_function=nn.CrossEntropyLoss(), train_batches=[(images, targets)], val_batches=None,
                device_plan=plan_device("cpu"), callbacks=create_doctor(config, context))
    loop.fit(1)
    return events


def test_initial_loss_on_real_images_through_a_timm_model() -> None:
    images, targets = demo_images()
    torch.manual_seed(0)
    mis_set = timm.create_model("test_efficientnet", num_classes=1000)
    (diagnosis,) = first_batch_diagnoses(mis_set, images, targets).diagnoses()
    assert (diagnosis.severity, diagnosis.evidence["output_classes"]) == ("error", 1000)

    wired = timm.create_model("test_efficientnet", num_classes=NUM_CLASSES)
    install_head(wired, create_head(RunConfig().model, wired.num_features, NUM_CLASSES))
    events = first_batch_diagnoses(wired, images, targets)
    assert events.diagnoses() == []
    assert events.measured("initial_loss_measured")[0]["loss"] == pytest.approx(math.log(NUM_CLASSES), abs=1e-5)


def test_initial_loss_flags_confident_random_logits_and_a_head_that_already_knows() -> None:
    features, targets = pooled_features()
    torch.manual_seed(0)
    big = nn.Linear(FEATURES, NUM_CLASSES)
    nn.init.normal_(big.weight, std=1.0)  # large initial weights on large pooled features
    _, events, _ = fit_head(doctor_config(**{"optim.epochs": 1}), features, targets, checks=["initial_loss"],
                            model=big)
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "error" and "confidently wrong" in diagnosis.message

    trained, _, _ = fit_head(doctor_config(**{"optim.epochs": 20, "optim.learning_rate": 1e-2}), features,
                             targets, checks=[])
    _, events, _ = fit_head(doctor_config(**{"optim.epochs": 1}), features, targets, checks=["initial_loss"],
                            model=trained.model)
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "warning" and "already predicts the labels" in diagnosis.message


# ---- divergence -------------------------------------------------------------------------------------


def test_divergence_stops_a_run_at_rate_10_within_a_few_steps() -> None:
    features, targets = pooled_features()
    config = doctor_config(**{"optim.learning_rate": 10.0, "optim.epochs": 10})
    state, events, _ = fit_head(config, features, targets, checks=["divergence"])
    assert state.cancel_reason == "diverged" and state.step <= 10
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "error"
    assert diagnosis.fix == {"optim.learning_rate": 1.0}
    assert "from 10 to 1" in diagnosis.message and state.cancel_message == diagnosis.message


def test_divergence_stops_at_once_on_a_nan_loss() -> None:
    features, targets = pooled_features()
    features[5, 0] = math.nan  # one corrupt feature vector: its batch's loss is NaN
    config = doctor_config(**{"optim.epochs": 2, "optim.batch_size": 320})  # one batch holds every vector
    state, events, _ = fit_head(config, features, targets, checks=["divergence"])
    # Losses are judged where the loop reads them (here after every step): the first step's stops the run.
    assert (state.cancel_reason, state.step, state.epoch) == ("diverged", 1, 1)
    (diagnosis,) = events.diagnoses()
    assert diagnosis.evidence["loss"] == "nan" and "became nan" in diagnosis.message


class Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def after_step(self, state: LoopState) -> None:
        self.values.append(float(state.loss.detach()))


class MislabelOneBatch(Callback):
    """Swaps the labels of one late training batch: a single batch whose loss spikes."""

    order = -10

    def __init__(self, step: int) -> None:
        self.step = step

    def before_batch(self, state: LoopState) -> None:
        if state.training and state.step == self.step:
            state.targets = (state.targets + NUM_CLASSES // 2) % NUM_CLASSES


def test_divergence_ignores_one_noisy_batch_of_a_healthy_run() -> None:
    features, targets = pooled_features()
    losses = Losses()
    config = doctor_config(**{"optim.epochs": 10, "optim.learning_rate": 3e-2})
    state, events, _ = fit_head(config, features, targets, checks=["divergence"],
                                extra=[MislabelOneBatch(step=60), losses])
    assert losses.values[60] > 3 * math.log(NUM_CLASSES)  # that batch alone is past the limit
    assert state.cancel_reason is None and events.diagnoses() == []


# ---- learning_rate_too_low ------------------------------------------------------------------------


def test_learning_rate_too_low_at_1e7() -> None:
    features, targets = pooled_features()
    config = doctor_config(**{"optim.learning_rate": 1e-7, "optim.min_learning_rate": 0.0, "optim.epochs": 12})
    state, events, _ = fit_head(config, features, targets, checks=["learning_rate_too_low"])
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "warning"
    assert diagnosis.message.startswith("The loss stayed flat for 100 steps")
    assert diagnosis.fix == {"optim.learning_rate": 3e-6}  # 30x: the loss did not move at all
    assert events.events[0]["step"] == 100

    finder = {"suggested_learning_rate": 2e-3}
    _, events, _ = fit_head(config, features, targets, checks=["learning_rate_too_low"], context_changes=finder)
    assert events.diagnoses()[0].fix == {"optim.learning_rate": 2e-3}


def test_learning_rate_too_low_judges_a_run_shorter_than_its_window_at_its_end() -> None:
    features, targets = pooled_features()
    config = doctor_config(**{"optim.learning_rate": 1e-7, "optim.min_learning_rate": 0.0, "optim.epochs": 3})
    state, events, _ = fit_head(config, features, targets, checks=["learning_rate_too_low"])
    (diagnosis,) = events.diagnoses()
    assert diagnosis.evidence["steps"] == state.step == 30
    assert events.events[0]["step"] == 30


def test_learning_rate_too_low_is_silent_when_the_loss_falls() -> None:
    features, targets = pooled_features()
    for rate in (3e-3, 1e-3):
        _, events, _ = fit_head(doctor_config(**{"optim.learning_rate": rate, "optim.epochs": 12}), features,
                                targets, checks=["learning_rate_too_low"])
        assert events.diagnoses() == []


# ---- update_ratio ---------------------------------------------------------------------------------


def test_update_ratio_flags_rates_10_and_1e7_and_not_a_healthy_rate() -> None:
    features, targets = pooled_features()
    base = {"optim.epochs": 12, "doctor.update_ratio_every": 5}
    results = {}
    for rate in (10.0, 3e-3, 1e-7):
        config = doctor_config(**base, **{"optim.learning_rate": rate, "optim.min_learning_rate": 0.0})
        _, events, _ = fit_head(config, features, targets, checks=["update_ratio"])
        results[rate] = events
        measured = events.measured("update_ratio_measured")
        assert [item["step"] for item in measured] == list(range(5, 121, 5))
        # The head's bias started at zero and has no size of its own to compare with: only the weight is measured.
        assert all(set(item["ratios"]) == {"head"} for item in measured)

    (too_high,) = results[10.0].diagnoses()
    assert too_high.title == "Updates too large" and too_high.evidence["ratio"] > 1
    assert too_high.fix["optim.learning_rate"] <= 1e-2
    assert results[3e-3].diagnoses() == []
    (too_low,) = results[1e-7].diagnoses()
    assert too_low.title == "Updates too small" and too_low.evidence["ratio"] < 1e-4
    assert too_low.fix["optim.learning_rate"] > 1e-5
    # Judged near the peak only: three measurements in a row once the 10-step warmup is over.
    (raised,) = [event for event in results[1e-7].events if event["event"] == DIAGNOSIS_EVENT]
    assert 20 <= raised["step"] <= 30


def test_update_ratio_measures_pretrained_weights_against_their_own_size() -> None:
    torch.manual_seed(0)
    images, targets = demo_images()
    model = timm.create_model("test_efficientnet", num_classes=NUM_CLASSES)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    config = doctor_config(**{"doctor.checks": ["update_ratio"], "doctor.update_ratio_every": 1})
    events = Events()
    context = DoctorContext(config=config, num_classes=NUM_CLASSES, report=events)
    optimizer = torch.optim.SGD([{"params": list(model.parameters()), "name": "backbone"}], lr=0.05)
    loop = Loop(model=model, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(),
                train_batches=[(images, targets)], val_batches=None, device_plan=plan_device("cpu"),
                callbacks=create_doctor(config, context))
    loop.fit(1)
    (measured,) = events.measured("update_ratio_measured")
    ratios = [float((parameter.detach() - before[name]).norm() / before[name].norm())
              for name, parameter in model.named_parameters() if before[name].norm() > 0]
    assert measured["ratios"]["backbone"] == pytest.approx(float(np.median(ratios)), rel=1e-4)


# ---- overfitting -----------------------------------------------------------------------------------


def test_overfitting_on_random_labels_and_not_on_learnable_ones() -> None:
    generator = torch.Generator().manual_seed(1)
    noise = torch.rand(48, 256, generator=generator)
    labels = torch.randint(0, 4, (48,), generator=generator)
    config = doctor_config(**{"optim.epochs": 25, "optim.learning_rate": 1e-2, "optim.batch_size": 16})
    _, events, _ = fit_head(config, noise[:32], labels[:32], checks=["overfitting"], val=(noise[32:], labels[32:]))
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "warning" and "memorising" in diagnosis.message
    assert diagnosis.fix == {"augment.feature_views": 4, "model.head_dropout": 0.3}
    assert len(diagnosis.evidence["val_losses"]) == 4

    features, targets = pooled_features(per_class=40)
    keep = torch.arange(len(targets)) % 5 != 0
    _, events, _ = fit_head(doctor_config(**{"optim.epochs": 25}), features[keep], targets[keep],
                            checks=["overfitting"], val=(features[~keep], targets[~keep]))
    assert events.diagnoses() == []


# ---- bad_start -------------------------------------------------------------------------------------


def tanh_network(init_std: float) -> nn.Module:
    """Four tanh layers; with tiny weights its gradients vanish until the weights grow."""
    layers: list[nn.Module] = []
    width = FEATURES
    for _ in range(4):
        layer = nn.Linear(width, 32)
        nn.init.normal_(layer.weight, std=init_std)
        nn.init.zeros_(layer.bias)
        layers += [layer, nn.Tanh()]
        width = 32
    output = nn.Linear(width, NUM_CLASSES)
    nn.init.normal_(output.weight, std=init_std)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*layers, output)


def bad_start_diagnoses(init_std: float, rate: float, **changes: Any) -> list[Diagnosis]:
    features, targets = pooled_features()
    features = (features - features.mean(0)) / features.std(0)
    config = doctor_config(**{"optim.epochs": 30, "optim.learning_rate": rate, **changes})
    torch.manual_seed(0)
    model = tanh_network(init_std)
    optimizer = torch.optim.SGD(model.parameters(), lr=rate, momentum=0.9)
    _, events, _ = fit_head(config, features, targets, checks=["bad_start"], model=model, optimizer=optimizer)
    return events.diagnoses()


def test_bad_start_flags_a_network_initialised_too_small() -> None:
    constant = {"optim.warmup_epochs": 0.0, "optim.schedule": "constant"}
    (diagnosis,) = bad_start_diagnoses(0.05, 0.1, **constant)
    assert diagnosis.severity == "warning"
    assert diagnosis.evidence["plateau_steps"] >= 20 and not diagnosis.evidence["in_warmup"]
    assert "initialisation" in diagnosis.message and diagnosis.fix == {}
    assert bad_start_diagnoses(0.3, 0.1, **constant) == []


def test_bad_start_during_a_long_warmup_suggests_a_shorter_one() -> None:
    (diagnosis,) = bad_start_diagnoses(0.05, 0.2, **{"optim.warmup_epochs": 5.0})  # 50 warmup steps
    assert diagnosis.severity == "info" and diagnosis.evidence["in_warmup"]
    assert diagnosis.fix == {"optim.warmup_epochs": 2.5}


# ---- class_imbalance -------------------------------------------------------------------------------


def test_class_imbalance_from_the_health_report(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "skewed", {"common": 16, "rare": 4})
    make_class_folders(tmp_path / "even", {"common": 8, "rare": 8})
    features, targets = pooled_features(num_classes=2, per_class=8)

    def diagnoses(data: str, **changes: Any) -> list[Diagnosis]:
        context = {"health": scan_dataset(tmp_path / data)}
        _, events, _ = fit_head(doctor_config(**{"optim.epochs": 1, **changes}), features, targets,
                                checks=["class_imbalance"], context_changes=context)
        return events.diagnoses()

    (diagnosis,) = diagnoses("skewed")
    assert diagnosis.fix == {"optim.class_balance": "weighted_loss"}
    assert (diagnosis.evidence["largest_class"], diagnosis.evidence["smallest_count"]) == ("common", 4)
    assert "4.0 to 1" in diagnosis.message
    assert diagnoses("skewed", **{"optim.class_balance": "balanced_sampler"}) == []
    assert diagnoses("even") == []


# ---- helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "nice"), [(3.7e-4, 3e-4), (1.76e-3, 2e-3), (8e-3, 1e-2), (10.0, 10.0)])
def test_suggested_rates_are_round_numbers(value: float, nice: float) -> None:
    assert nice_rate(value) == nice



# ---- learning_rate_collapsed -------------------------------------------------------------------------


class Rates(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def before_step(self, state: LoopState) -> None:
        self.values.append(state.optimizer.param_groups[0]["lr"])


def test_learning_rate_collapsed_when_a_step_schedule_steps_every_epoch() -> None:
    features, targets = pooled_features()
    # x0.1 every epoch after warmup: under 0.5 % of the peak from epoch 5 of 12 (10 steps an epoch).
    config = doctor_config(**{"optim.epochs": 12, "optim.schedule": "step", "optim.step_epochs": 1.0})
    rates = Rates()
    state, events, _ = fit_head(config, features, targets, checks=["learning_rate_collapsed"], extra=[rates])
    (diagnosis,) = events.diagnoses()
    assert diagnosis.severity == "warning" and diagnosis.fix == {"optim.schedule": "cosine"}
    collapsed = next(step for step, rate in enumerate(rates.values, 1) if rate < 0.005 * 3e-3)
    assert collapsed == 41 and diagnosis.evidence["collapsed_at_step"] == collapsed
    (raised,) = [event for event in events.events if event["event"] == DIAGNOSIS_EVENT]
    assert raised["step"] == collapsed + 9  # a window of 10 steps (one epoch) below the line
    assert diagnosis.evidence["steps_remaining"] == 120 - raised["step"]
    assert diagnosis.evidence["share_of_peak"] == pytest.approx(1e-3)
    assert "step schedule multiplies the rate by 0.1 every 1 epoch," in diagnosis.message
    assert "stalled" in diagnosis.message

    fixed = diagnosis.apply(config)
    _, events, _ = fit_head(fixed, features, targets, checks=["learning_rate_collapsed"])
    assert events.diagnoses() == []


@pytest.mark.parametrize("changes", [
    {"optim.schedule": "cosine"},
    {"optim.schedule": "cosine", "optim.min_learning_rate": 0.0},
    {"optim.schedule": "cosine", "optim.learning_rate": 3e-4},  # its floor of 1e-6 is 0.3 % of the peak
    {"optim.schedule": "step"},  # x0.1 every 3 epochs: 0.1 % in the last epoch only
    {"optim.schedule": "linear"},
    {"optim.schedule": "inverse_sqrt"},
    {"optim.schedule": "constant", "optim.warmup_epochs": 0.0},
    {"optim.schedule": "cosine_restarts", "optim.restart_epochs": 2.0, "optim.min_learning_rate": 0.0},  # 5 dips
])
def test_learning_rate_collapsed_is_silent_on_healthy_schedules(changes: dict[str, Any]) -> None:
    features, targets = pooled_features()
    config = doctor_config(**{"optim.epochs": 12, **changes})
    _, events, _ = fit_head(config, features, targets, checks=["learning_rate_collapsed"])
    assert events.diagnoses() == []

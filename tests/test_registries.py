"""Registries end to end: a schedule and a doctor check defined here, outside the engine, are chosen by a
config file and used by a real training run; names nobody registered are refused with the registered ones listed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from demo_photos import copy_demo
from timm.scheduler import StepLRScheduler
from timm.scheduler.scheduler import Scheduler

from engine.core.config import DOCTOR_CHECKS, SCHEDULES, RunConfig, load_config
from engine.core.errors import ConfigError
from engine.training.callback import LoopState
from engine.training.doctor import DIAGNOSIS_EVENT, Diagnosis, DoctorCheck, register_check
from engine.training.runfolder import read_events
from engine.training.schedules import SchedulePlan, register_schedule
from engine.training.train import train

ROOT = Path(__file__).resolve().parents[1]
HALVING = "halving_every_epoch"
LEARNING_RATE = 3e-3
EPOCHS = 3


def create_halving(optimizer: torch.optim.Optimizer, plan: SchedulePlan) -> Scheduler:
    """The peak rate from the first update, halved at the start of every epoch after the first (no warmup)."""
    return StepLRScheduler(optimizer, decay_t=plan.batches_per_epoch, decay_rate=0.5, t_in_epochs=False)


class RecordedRates(DoctorCheck):
    """Notes the learning rate of every update, and reports them all when the fit ends."""

    name = "recorded_rates"
    title = "Learning rates used"
    description = "Notes the head's learning rate at every update and reports them, by epoch, at the end of the fit."

    def before_fit(self, state: LoopState) -> None:
        self._epochs: list[int] = []
        self._rates: list[float] = []

    def before_step(self, state: LoopState) -> None:
        self._epochs.append(state.epoch)
        self._rates.append(float(state.optimizer.param_groups[0]["lr"]))

    def after_fit(self, state: LoopState) -> None:
        evidence = {"epochs": self._epochs, "rates": self._rates}
        self.raise_diagnosis(state, self.diagnose("info", f"The run took {len(self._rates)} updates.",
                                                  evidence=evidence), kind="rates")


@pytest.fixture(scope="module")
def registered() -> Iterator[None]:
    """The schedule and the check, registered for this module's tests only (other modules share the process)."""
    register_schedule(HALVING, create_halving)
    register_check(RecordedRates)
    yield
    SCHEDULES.unregister(HALVING)
    DOCTOR_CHECKS.unregister(RecordedRates.name)


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("registered")
def test_a_config_chooses_a_schedule_and_a_check_registered_outside_the_engine(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=2, per_class=12)
    config = load_config(write_config(tmp_path / "config.yaml", {
        "data": {"path": str(data), "num_workers": 0, "input_size": 64},
        "optim": {"schedule": HALVING, "learning_rate": LEARNING_RATE, "epochs": EPOCHS, "batch_size": 8},
        "doctor": {"checks": [RecordedRates.name]},
    }))
    assert (config.optim.schedule, config.doctor.checks) == (HALVING, (RecordedRates.name,))

    result = train(config, tmp_path / "run")

    assert result.state == "finished"
    (event,) = [event for event in read_events(tmp_path / "run") if event["event"] == DIAGNOSIS_EVENT]
    diagnosis = Diagnosis.from_dict(event)
    assert (diagnosis.check, diagnosis.severity, diagnosis.title) == ("recorded_rates", "info", "Learning rates used")
    epochs, rates = diagnosis.evidence["epochs"], diagnosis.evidence["rates"]
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1))
    for epoch, rate in zip(epochs, rates, strict=True):
        assert rate == pytest.approx(LEARNING_RATE * 0.5 ** (epoch - 1), rel=1e-9), f"epoch {epoch}"


@pytest.mark.usefixtures("registered")
def test_unknown_names_are_refused_naming_the_field_and_the_registered_ones(tmp_path: Path) -> None:
    file = write_config(tmp_path / "typo.yaml", {"optim": {"schedule": "halving_every_epock"}})
    with pytest.raises(ConfigError) as raised:
        load_config(file)
    assert str(raised.value) == (
        f"{file}: optim.schedule: must be one of the registered schedules (cosine, constant, step, linear, "
        f"inverse_sqrt, cosine_restarts, {HALVING}), got 'halving_every_epock'"
    )
    with pytest.raises(ConfigError, match=r"^doctor\.checks\[0\]: must be one of the registered doctor checks "
                                          r"\(initial_loss, .*, recorded_rates\), got 'recorded_rate'$"):
        RunConfig().with_changes(**{"doctor.checks": ["recorded_rate"]})
    # Registered outside the engine, it is chosen where a config names it, never by default.
    assert RecordedRates.name not in RunConfig().doctor.checks


def test_schedule_and_export_format_names_are_listed_without_loading_torch() -> None:
    # The CLI and the GUI offer these choices before any model code loads.
    probe = ("import sys; from engine.core.config import SCHEDULES; from engine.export.formats import EXPORT_FORMATS;"
             "print(list(SCHEDULES), list(EXPORT_FORMATS), 'step' in SCHEDULES,"
             " sorted({'torch', 'timm'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == (
        "['cosine', 'constant', 'step', 'linear', 'inverse_sqrt', 'cosine_restarts'] ['onnx', 'onnx-int8', "
        "'torchscript', 'timm', 'openvino', 'coreml']"
        " True []"
    )

"""The training loop queues GPU work without waiting: no host reads of tensors in the per-step path.

``bench.host_syncs.HostReads`` wraps ``Tensor.item``, ``.tolist``, ``.numpy``, ``.cpu`` and the
conversions to Python numbers for the duration of a real run with every callback a default
run attaches (stop watcher, schedule, metrics, checkpoints, events, the doctor's default
checks), and records each one made by engine code with the loop stage it ran in. On a GPU
each of these would make the host wait for the device; here, on the CPU, they are counted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_photos import copy_demo

from bench.host_syncs import HostReads
from engine.core.config import RunConfig
from engine.training.runfolder import read_events
from engine.training.stage_runner import sync_interval
from engine.training.train import train


@pytest.mark.slow  # a real fine-tuning run of two short epochs
def test_a_default_run_reads_tensors_only_at_sync_points_and_epoch_ends(tmp_path: Path) -> None:
    data = copy_demo(tmp_path / "data", classes=3, per_class=40)  # 96 training photos: 48 steps of 2
    config = RunConfig().with_changes(**{
        "data.path": str(data), "data.num_workers": 0, "data.input_size": 32, "model.mode": "fine_tune",
        "optim.epochs": 2, "optim.batch_size": 2, "doctor.update_ratio_every": 5,
        # The smallest backbone: what is counted is the loop's reads, not what the model computes.
        "model.backbone": "mobilenetv3_small_050", "model.weights": "none",
    })
    assert sync_interval(48) == 4
    with HostReads() as counter:
        result = train(config, tmp_path / "run")
    assert result.state == "finished"

    assert counter.per_step() == [], "host reads on ordinary training steps"
    stages = counter.by_stage()
    # The loop reads its losses once per sync point, every 4th step of the run (the epochs end on one).
    assert stages["_sync"] == 24
    finished = [event for event in read_events(tmp_path / "run") if event["event"] == "batch_finished"]
    assert [event["step"] for event in finished] == list(range(4, 97, 4))
    # The update ratio is measured on the device every 5 steps and read with the losses.
    measured = [event["step"] for event in read_events(tmp_path / "run") if event["event"] == "update_ratio_measured"]
    assert measured == list(range(5, 96, 5))


def test_the_counter_catches_an_engine_read_in_a_per_step_hook() -> None:
    """The check above can fail: engine code that reads a tensor on every step is caught, with its stage."""
    import torch
    from torch import nn

    from engine.core.device import plan_device
    from engine.training.callback import Callback, LoopState
    from engine.training.doctor.diagnosis import json_safe
    from engine.training.loop import Loop

    class ReportsTheLossEveryStep(Callback):
        def after_step(self, state: LoopState) -> None:
            json_safe({"loss": state.loss})  # engine code that turns a tensor into a number

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    batches = [(torch.randn(8, 4), torch.randint(2, (8,))) for _ in range(6)]
    loop = Loop(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_function=nn.CrossEntropyLoss(),
                train_batches=batches, val_batches=None, device_plan=plan_device("cpu"),
                callbacks=[ReportsTheLossEveryStep()], sync_every=3)
    with HostReads() as counter:
        loop.fit(1)
    assert counter.by_stage()["_sync"] == 2  # steps 3 and 6
    caught = counter.per_step()
    assert len(caught) == 6 and {read.stage for read in caught} == {"after_step"}
    assert all(read.where.startswith("diagnosis.py:") for read in caught)

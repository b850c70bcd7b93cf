"""The loop: hook order, cancellation by exceptions, and that it really optimises."""

from __future__ import annotations

import torch
from torch import nn

from engine.core.device import plan_device
from engine.training.callback import Callback, CancelBatch, CancelEpoch, CancelFit, LoopState
from engine.training.loop import Loop


class Recorder(Callback):
    """Records every hook it sees."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattribute__(self, name: str):  # noqa: ANN204 (records every hook by name)
        if name.startswith(("before_", "after_")):
            return lambda state: object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)


def _separable(count: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, 2, generator=generator)
    targets = (inputs[:, 0] > 0).long()
    return [(inputs[i : i + 16], targets[i : i + 16]) for i in range(0, count, 16)]


def _loop(callbacks: list[Callback], lr: float = 0.5) -> Loop:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    return Loop(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                loss_function=nn.CrossEntropyLoss(), train_batches=_separable(), val_batches=_separable(seed=1),
                device_plan=plan_device("cpu"), callbacks=callbacks)


def test_hooks_run_in_stage_order() -> None:
    recorder = Recorder()
    _loop([recorder]).fit(1)
    calls = recorder.calls
    assert calls[:7] == ["before_fit", "before_epoch", "before_train", "before_batch", "after_loss",
                         "before_step", "after_step"]
    assert calls.count("before_step") == 4  # four training batches, no steps in validation
    assert calls.count("after_loss") == 8
    train_end, validate_start = calls.index("after_train"), calls.index("before_validate")
    assert train_end < validate_start < calls.index("after_validate") < calls.index("after_epoch")
    assert calls[-1] == "after_fit"


def test_callbacks_run_by_order() -> None:
    seen: list[str] = []

    class Late(Callback):
        order = 10

        def before_fit(self, state: LoopState) -> None:
            seen.append("late")

    class Early(Callback):
        order = -10

        def before_fit(self, state: LoopState) -> None:
            seen.append("early")

    _loop([Late(), Early()]).fit(1)
    assert seen == ["early", "late"]


def test_cancel_exceptions_skip_work_but_not_after_hooks() -> None:
    class SkipOddBatches(Callback):
        def __init__(self) -> None:
            self.steps = 0

        def before_batch(self, state: LoopState) -> None:
            if state.training and state.batch_index % 2:
                raise CancelBatch

        def after_step(self, state: LoopState) -> None:
            self.steps += 1

    skipper = SkipOddBatches()
    _loop([skipper]).fit(1)
    assert skipper.steps == 2

    class NoValidation(Callback):
        validated = 0

        def before_validate(self, state: LoopState) -> None:
            raise CancelEpoch

        def after_loss(self, state: LoopState) -> None:
            if not state.training:
                self.validated += 1

    no_validation = NoValidation()
    _loop([no_validation]).fit(2)
    assert no_validation.validated == 0

    class StopAtStepThree(Callback):
        cancelled = finished = False

        def after_step(self, state: LoopState) -> None:
            if state.step == 3:
                raise CancelFit("diverged", "test stop")

        def after_cancel_fit(self, state: LoopState) -> None:
            self.cancelled = True

        def after_fit(self, state: LoopState) -> None:
            self.finished = True

    stopper = StopAtStepThree()
    state = _loop([stopper]).fit(5)
    assert (state.step, state.epoch, state.cancel_reason) == (3, 1, "diverged")
    assert stopper.cancelled and stopper.finished


def test_loop_reduces_the_loss() -> None:
    losses: list[float] = []

    class Losses(Callback):
        def after_loss(self, state: LoopState) -> None:
            if not state.training:
                losses.append(float(state.loss))

    _loop([Losses()]).fit(5)
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4])  # validation loss after epoch 5 vs after epoch 1

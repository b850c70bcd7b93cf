"""Gradient accumulation, gradient clipping, the out-of-memory fallback and the batch-size probe of the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.core.config import RunConfig
from engine.core.device import plan_device
from engine.training.batch_probe import largest_fitting_batch, probe_batch_size
from engine.training.callback import Callback, LoopState
from engine.training.callbacks import EventReporter
from engine.training.loop import Loop
from engine.training.runfolder import RunFolder, read_events


def _data(count: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, 6, generator=generator)
    return inputs, (inputs[:, 0] + inputs[:, 1] > 0).long()


def _batches(size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    inputs, targets = _data()
    return [(inputs[i : i + size], targets[i : i + size]) for i in range(0, len(targets), size)]


class Mlp(nn.Module):
    """A small model without BatchNorm, so that splitting a batch changes nothing but the arithmetic's order."""

    def __init__(self, fits: int | None = None) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
        self.fits = fits

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.fits is not None and len(inputs) > self.fits:
            # What CUDA raises when a batch's activations do not fit (torch.cuda.OutOfMemoryError is this class).
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(inputs)} MiB")
        return self.layers(inputs)


def _train(batch_size: int, *, accumulate_steps: int = 1, fits: int | None = None, epochs: int = 2,
           clip: float | None = None, callbacks: list[Callback] | None = None) -> tuple[nn.Module, LoopState, Loop]:
    torch.manual_seed(0)
    model = Mlp(fits)
    loop = Loop(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.01),
                loss_function=nn.CrossEntropyLoss(), train_batches=_batches(batch_size), val_batches=None,
                device_plan=plan_device("cpu"), callbacks=callbacks or [], accumulate_steps=accumulate_steps,
                clip_grad_norm=clip)
    return model, loop.fit(epochs), loop


def _same_weights(first: nn.Module, second: nn.Module) -> None:
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def test_accumulating_four_batches_of_four_is_one_batch_of_sixteen() -> None:
    whole, whole_state, _ = _train(16)
    accumulated, state, _ = _train(4, accumulate_steps=4)
    assert state.step == whole_state.step == 8  # 64 images, 16 per step, 2 epochs
    assert state.steps_per_epoch == 4 and state.batches_per_epoch == 16
    _same_weights(whole, accumulated)


def test_an_epoch_ending_inside_a_window_steps_on_the_mean_of_its_batches() -> None:
    # 64 images in batches of 16 with windows of 3: steps of 48 images then 16 images, each a mean.
    accumulated, state, _ = _train(16, accumulate_steps=3, epochs=1)
    assert state.step == 2
    torch.manual_seed(0)
    reference = Mlp()
    optimizer = torch.optim.AdamW(reference.parameters(), lr=0.01)
    inputs, targets = _data()
    for rows in (slice(0, 48), slice(48, 64)):
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(inputs[rows]), targets[rows]).backward()
        optimizer.step()
    _same_weights(reference, accumulated)


def test_running_out_of_memory_halves_the_pieces_and_keeps_the_step() -> None:
    changes: list[tuple[int | None, int | None]] = []

    class Changes(Callback):
        def after_batch_size_changed(self, state: LoopState) -> None:
            changes.append((state.previous_micro_batch_size, state.micro_batch_size))

    whole, _, _ = _train(16)
    pieces, state, loop = _train(16, fits=5, callbacks=[Changes()])
    assert changes == [(16, 8), (8, 4)] and loop.micro_batch_size == 4
    assert state.step == 8  # no step lost, none doubled
    _same_weights(whole, pieces)  # the same effective batch: the same training


def test_the_out_of_memory_fallback_is_reported_in_plain_words(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "run", RunConfig())
    _train(16, fits=8, epochs=1, callbacks=[EventReporter(folder)])
    (changed,) = [event for event in read_events(tmp_path / "run") if event["event"] == "batch_size_changed"]
    assert (changed["micro_batch_size"], changed["previous_micro_batch_size"]) == (8, 16)
    assert changed["batch_size"] == changed["effective_batch_size"] == 16
    assert "ran out of memory" in changed["message"] and "stay the same" in changed["message"]


def test_not_even_one_image_fitting_is_an_error_not_a_loop() -> None:
    with pytest.raises(torch.OutOfMemoryError, match="even one image"):
        _train(4, fits=0, epochs=1)


def test_other_runtime_errors_are_not_taken_for_memory() -> None:
    class Broken(Callback):
        def before_batch(self, state: LoopState) -> None:
            state.inputs = state.inputs[:, :3]  # a shape error inside the forward pass

    with pytest.raises(RuntimeError, match="shapes"):
        _train(16, callbacks=[Broken()])


class GradientNorms(Callback):
    """The total gradient norm each step is taken with."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def before_step(self, state: LoopState) -> None:
        grads = [p.grad.flatten() for p in state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


def test_clipping_bounds_the_gradient_norm_each_step() -> None:
    clipped, unclipped = GradientNorms(), GradientNorms()
    _train(16, clip=0.05, callbacks=[clipped])
    _train(16, callbacks=[unclipped])
    assert len(clipped.norms) == len(unclipped.norms) == 8
    assert min(unclipped.norms) > 0.05  # so the clip had work to do
    assert max(clipped.norms) == pytest.approx(0.05, rel=1e-4)


def test_the_batch_probe_halves_until_a_batch_fits() -> None:
    tried: list[int] = []

    def try_batch(size: int) -> None:
        tried.append(size)
        Mlp(fits=24)(torch.randn(size, 6))

    assert largest_fitting_batch(try_batch, start=256) == 16
    assert tried == [256, 128, 64, 32, 16]


def test_the_batch_probe_leaves_the_model_as_it_found_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(2, 3, 8, 8))
    model.eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}

    class FitsUpTo(nn.Module):
        def __init__(self, inner: nn.Module, fits: int) -> None:
            super().__init__()
            self.inner, self.fits = inner, fits

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            if len(inputs) > self.fits:
                raise torch.OutOfMemoryError("CUDA out of memory")
            return self.inner(inputs)

    wrapped = FitsUpTo(model, fits=40)
    assert probe_batch_size(wrapped, plan_device("cpu"), (3, 8, 8), 3, train_images=300) == 32
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)  # BatchNorm statistics untouched
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_the_cli_takes_a_batch_size_of_auto(tmp_path: Path) -> None:
    import argparse

    from cli.options import add_config_options, config_from_arguments

    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    add_config_options(parser)
    assert config_from_arguments(parser.parse_args([str(tmp_path), "--batch-size", "auto"])).optim.batch_size == "auto"
    assert config_from_arguments(parser.parse_args([str(tmp_path), "--batch-size", "48"])).optim.batch_size == 48
    with pytest.raises(SystemExit):
        parser.parse_args([str(tmp_path), "--batch-size", "big"])

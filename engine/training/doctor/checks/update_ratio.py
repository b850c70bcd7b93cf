"""The ``update_ratio`` check: how much each step changes the weights, relative to their size (CS231n's ratio)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.events import UpdateRatioMeasured
from engine.training.callback import LoopState
from engine.training.doctor.check import DoctorCheck, DoctorContext
from engine.training.doctor.rates import RateWatch, format_rate, group_name, nice_rate
from engine.training.doctor.registry import register_check

if TYPE_CHECKING:
    import torch


@dataclass
class _Measurement:
    """One step's update sizes, still on the device: per group, its parameters' ||dw|| then ||w||."""

    step: int
    epoch: int
    layout: list[tuple[str, list[torch.Tensor]]]
    norms: torch.Tensor
    rates: dict[str, float]
    near_peak: dict[str, bool]


@register_check
class UpdateRatio(DoctorCheck):
    """Measures how much each step changes the weights, relative to their size, per parameter group.

    Every ``update_ratio_every`` steps the weights are copied before the step and compared
    after it, in one fused pass on the device whose norms are read back at the loop's next
    sync point (``Loop.sync_every``); a group's ratio is the median over its tensors of ||dw|| / ||w||, recorded as
    an ``update_ratio_measured`` event. A tensor that started the run at zero (the head's
    output layer) has no size of its own: under Adam its norm grows in proportion to the
    learning rate, so ||dw|| / ||w|| hardly depends on the rate (measured at step 40 on the
    demo: 0.027 at rate 1e-7, 0.013 at 3e-3, 0.10 at 10). Its updates are measured against
    the size a standard initialisation would give it instead, sqrt(fan_out) (entries of rms
    1/sqrt(fan_in)), about the size the trained head reaches (4.4 against 3.2 on the demo).
    Vectors that started at zero (biases) have no such size and are left out.

    Only weight matrices and kernels are judged; biases and normalisation scales are
    recorded but not judged (a norm scale near 1 moves by about the rate itself under
    Adam, which is small for any sane rate). A group is flagged when it is outside
    [``update_ratio_low``, ``update_ratio_high``] for ``PERSISTENCE`` measurements in a
    row taken near the peak of the schedule (not in warmup, not below half the peak).
    Healthy runs here measured 0.01-0.05 for a new head and 1e-3-2e-3 for a fine-tuned
    backbone; rate 10 gave 30-50 and rate 1e-7 gave 2e-6.
    """

    name = "update_ratio"
    default = True
    title = "Update size"
    description = (
        "Every doctor.update_ratio_every steps, measures how much one step changes each parameter "
        "group's weights relative to their size (CS231n's update/weight ratio), and warns when it stays "
        "outside [doctor.update_ratio_low, doctor.update_ratio_high] near the peak learning rate."
    )

    PERSISTENCE = 3
    # A group whose rate is below this share of the fastest group's was slowed on purpose.
    SLOWED_SHARE = 0.05
    # A tensor whose entries have an rms below this counts as started at zero.
    ZERO_RMS = 1e-6

    def __init__(self, context: DoctorContext) -> None:
        super().__init__(context)
        # id(parameter) -> the size its updates are measured against: a fixed size for tensors that
        # started at zero, 0.0 for "its own norm at each measurement", None for "not measured".
        self._references: dict[int, float | None] = {}

    def before_fit(self, state: LoopState) -> None:
        self._rates = RateWatch()
        self._streaks: dict[str, tuple[str, list[float]]] = {}
        self._snapshot: list[tuple[str, list[torch.Tensor], list[torch.Tensor]]] | None = None
        self._unread: list[_Measurement] = []
        for group in state.optimizer.param_groups:
            for parameter in group["params"]:
                self._reference(parameter)

    def before_step(self, state: LoopState) -> None:
        self._rates.observe(state.optimizer)
        if (state.step + 1) % self.settings.update_ratio_every:
            return
        self._snapshot = []
        for index, group in enumerate(state.optimizer.param_groups):
            kept = [parameter for parameter in group["params"]
                    if parameter.requires_grad and self._reference(parameter) is not None]
            if kept:
                self._snapshot.append((group_name(group, index), kept, [p.detach().clone() for p in kept]))

    def after_step(self, state: LoopState) -> None:
        if self._snapshot is None:
            return
        import torch  # the checks register before torch loads (config validation needs none)

        snapshot, self._snapshot = self._snapshot, None
        # One fused pass on the device; the norms are read with the losses, at the next sync point.
        layout, norms = [], []
        for name, parameters, befores in snapshot:
            afters = [parameter.detach() for parameter in parameters]
            deltas = torch._foreach_sub([a.float() for a in afters], [b.float() for b in befores])
            norms += [*torch._foreach_norm(deltas), *torch._foreach_norm([b.float() for b in befores])]
            layout.append((name, parameters))
        rates = self._rates
        self._unread.append(_Measurement(
            step=state.step, epoch=state.epoch, layout=layout, norms=torch.stack(norms),
            rates=dict(rates.current), near_peak={name: rates.near_peak(name) for name, _ in layout},
        ))

    def after_sync(self, state: LoopState) -> None:
        unread, self._unread = self._unread, []
        for measurement in unread:
            self._read(state, measurement)

    def _read(self, state: LoopState, measurement: _Measurement) -> None:
        values = measurement.norms.tolist()
        ratios: dict[str, float] = {}
        judged: dict[str, float] = {}
        moved = False
        offset = 0
        for name, parameters in measurement.layout:
            count = len(parameters)
            deltas, sizes = values[offset : offset + count], values[offset + count : offset + 2 * count]
            offset += 2 * count
            group_values, matrix_values = [], []
            for parameter, delta, own_size in zip(parameters, deltas, sizes, strict=True):
                moved = moved or delta > 0
                size = self._references[id(parameter)] or own_size
                if size <= 0:
                    continue
                group_values.append(delta / size)
                if parameter.dim() >= 2:
                    matrix_values.append(delta / size)
            if group_values:
                ratios[name] = statistics.median(group_values)
            if matrix_values:
                judged[name] = statistics.median(matrix_values)
        if not moved:
            return  # a skipped step (fp16 loss scaling met an overflow): nothing to measure
        self.record(state, UpdateRatioMeasured.event, at=(measurement.epoch, measurement.step), ratios=ratios,
                    learning_rates={name: measurement.rates.get(name) for name in ratios})
        self._judge(state, judged, measurement)

    def _reference(self, parameter: torch.Tensor) -> float | None:
        key = id(parameter)
        if key not in self._references:
            rms = float(parameter.detach().float().norm()) / math.sqrt(max(parameter.numel(), 1))
            if rms > self.ZERO_RMS:
                self._references[key] = 0.0
            elif parameter.dim() >= 2:
                self._references[key] = math.sqrt(parameter.shape[0])
            else:
                self._references[key] = None
        return self._references[key]

    def _judge(self, state: LoopState, judged: dict[str, float], measurement: _Measurement) -> None:
        low, high = self.settings.update_ratio_low, self.settings.update_ratio_high
        rates = measurement.rates
        fastest = max(rates.values(), default=0.0)
        for name, value in judged.items():
            if not measurement.near_peak.get(name, False):
                continue
            # Groups slowed on purpose (the lower layers under layer decay) are only judged for too-large steps.
            slowed = rates[name] < self.SLOWED_SHARE * fastest
            direction = "too_high" if value > high else "too_low" if value < low and not slowed else None
            if direction is None:
                self._streaks.pop(name, None)
                continue
            previous, values = self._streaks.get(name, (direction, []))
            self._streaks[name] = (direction, [*values, value] if previous == direction else [value])
        for direction in ("too_high", "too_low"):
            flagged = {name: values for name, (kind, values) in self._streaks.items()
                       if kind == direction and len(values) >= self.PERSISTENCE}
            if flagged:
                self._flag(state, direction, flagged, rates)

    def _flag(self, state: LoopState, direction: str, flagged: dict[str, list[float]], rates: dict[str, float]) -> None:
        config = self.context.config
        low, high = self.settings.update_ratio_low, self.settings.update_ratio_high
        heads = [name for name in flagged if not name.startswith("backbone")]
        primary = heads[0] if heads else next(iter(flagged))
        ratio = flagged[primary][-1]
        # Adam's step is proportional to the rate: this factor brings the ratio to the band's geometric middle.
        factor = math.sqrt(low * high) / ratio
        rate = config.optim.learning_rate
        scale = config.model.backbone_lr_scale
        new_scale = min(1.0, nice_rate(scale * factor))
        if heads or new_scale == scale:
            fix = {"optim.learning_rate": nice_rate(rate * factor)}
            action = (f"{'Lower' if direction == 'too_high' else 'Raise'} the learning rate from {format_rate(rate)} "
                      f"to {format_rate(fix['optim.learning_rate'])}.")
        else:
            fix = {"model.backbone_lr_scale": new_scale}
            action = (f"{'Lower' if direction == 'too_high' else 'Raise'} the backbone's share of the rate "
                      f"(model.backbone_lr_scale) from {scale:g} to {new_scale:g}.")
        groups = ", ".join(f"{name} {values[-1]:.2g}" for name, values in flagged.items())
        effect = ("steps this large keep overwriting what the weights have learnt, and the loss jumps around"
                  if direction == "too_high" else "at this pace the weights barely move during the run")
        message = (
            f"Each step changes the weights by {'only ' if direction == 'too_low' else ''}{ratio:.2g} of their size "
            f"({groups}; {len(flagged[primary])} measurements in a row near the peak rate). Healthy runs stay between "
            f"{low:g} and {high:g}: {effect}. {action}"
        )
        self.raise_diagnosis(state, self.diagnose(
            "warning", message,
            evidence={"group": primary, "ratio": ratio, "ratios": flagged[primary], "low": low, "high": high,
                      "learning_rate": rates.get(primary, rate),
                      "groups": sorted(flagged)},
            fix=fix, title="Updates too large" if direction == "too_high" else "Updates too small",
        ), kind=f"{direction}:{primary}")

"""Live training curves: loss, accuracy, learning rate and update/weight ratios, fed by run events.

Each event adds points to named series; the plots are redrawn at most once per event-loop
turn (the run controller delivers a poll's worth of events at a time), with ``setData`` on
items that are created once, so a long run costs no more to draw than a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QGridLayout, QWidget

from engine.core.events import BatchFinished, EpochFinished, EpochStarted, RunStarted, StageStarted, UpdateRatioMeasured
from gui.style import is_dark, ok_color
from gui.widgets.plots import theme_legend, theme_plot

# (light palette, dark palette) colours; each readable on its palette's background.
_COLORS: dict[str, tuple[str, str]] = {
    "train": ("#2f6fb3", "#6aa7ea"),
    "val": ("#d9661f", "#f0a05a"),
    "ema": ("#7b4bb8", "#b58cf0"),
    "rate": ("#2e7d32", "#7ee787"),
}
# Colours of the update/weight ratio groups, in order of appearance.
_GROUP_COLORS: tuple[tuple[str, str], ...] = (
    ("#2f6fb3", "#6aa7ea"), ("#d9661f", "#f0a05a"), ("#7b4bb8", "#b58cf0"), ("#b0306a", "#f07cb0"),
    ("#5f6b00", "#c8d45a"), ("#00796b", "#5fd4c4"),
)
UPDATE_RATIO_PREFIX = "update_ratio/"


@dataclass(frozen=True)
class _PlotSpec:
    """One of the four plots."""

    title: str
    unit: str  # y-axis label
    waiting: str  # shown while the plot has no points
    tooltip: str
    legend_offset: tuple[int, int] | None  # where its curves usually are not; None: no legend


_PLOT_SPECS: dict[str, _PlotSpec] = {
    "loss": _PlotSpec(
        "Loss", "cross-entropy", "waiting for the first batch",
        "Training loss per batch and validation loss per epoch. Validation loss rising while the training "
        "loss falls means the model is memorising the training images (overfitting).", (-6, 6)),
    "accuracy": _PlotSpec(
        "Accuracy", "top-1 %", "drawn after each epoch",
        "Top-1 accuracy per epoch on the training and validation images.", (-6, -6)),
    "rate": _PlotSpec(
        "Learning rate", "rate", "waiting for the first batch",
        "The head's learning rate at each step: warmup, then the schedule's decay.", None),
    "update_ratio": _PlotSpec(
        "Update / weight ratio", "‖Δw‖ / ‖w‖", "measured by the doctor\nevery few steps",
        "How much one optimizer step changes the weights, relative to their size, per parameter group. "
        "Far above the shaded healthy band the steps are too large; far below it, too small.", (6, -6)),
}


@dataclass(frozen=True)
class _Style:
    """How a series looks and which plot it belongs to."""

    plot: str
    label: str
    color: str
    per_epoch: bool = False  # a few points: draw markers too
    dashed: bool = False


_STYLES: dict[str, _Style] = {
    "train_loss": _Style("loss", "train", "train"),
    "val_loss": _Style("loss", "val", "val", per_epoch=True),
    "ema_val_loss": _Style("loss", "val (EMA)", "ema", per_epoch=True, dashed=True),
    "train_top1": _Style("accuracy", "train", "train", per_epoch=True),
    "val_top1": _Style("accuracy", "val", "val", per_epoch=True),
    "ema_val_top1": _Style("accuracy", "val (EMA)", "ema", per_epoch=True, dashed=True),
    "learning_rate": _Style("rate", "head", "rate"),
}


@dataclass
class _Series:
    """The points of one curve and the plot item that draws them."""

    item: pg.PlotDataItem
    style: _Style
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    drawn: int = 0  # how many points the item shows


class _Plot:
    """One small plot: its widget, a "waiting" note while it is empty, and colours from the palette."""

    def __init__(self, spec: _PlotSpec, parent: QWidget) -> None:
        self.spec = spec
        self.widget = pg.PlotWidget(parent)
        self.widget.setMinimumSize(220, 150)
        self.widget.setToolTip(spec.tooltip)
        self.item: pg.PlotItem = self.widget.getPlotItem()
        self.item.showGrid(x=True, y=True, alpha=0.15)
        self.item.setMenuEnabled(False)
        self.item.hideButtons()
        self.item.getAxis("bottom").enableAutoSIPrefix(False)  # epochs, never "x0.001"
        view = self.item.getViewBox()
        view.setDefaultPadding(0.06)
        view.setLimits(xMin=0)
        self.legend = None
        if spec.legend_offset is not None:
            self.legend = self.item.addLegend(offset=spec.legend_offset, labelTextSize="8pt", verSpacing=-6)
            self.legend.hide()  # an empty legend is an empty box
        self.waiting = pg.TextItem(spec.waiting, anchor=(0.5, 0.5))
        self.item.addItem(self.waiting, ignoreBounds=True)
        view.sigRangeChanged.connect(self._on_view_range_changed)
        self._on_view_range_changed(view, view.viewRange())

    def add_curve(self, label: str | None) -> pg.PlotDataItem:
        """A new, empty curve (in the legend when ``label`` is given)."""
        self.waiting.hide()
        if self.legend is not None and label is not None:
            self.legend.show()
        return self.item.plot([], [], name=label)

    def remove_curve(self, curve: pg.PlotDataItem) -> None:
        self.item.removeItem(curve)  # also removes it from the legend

    def show_waiting(self) -> None:
        """Back to the empty state (curves removed by the caller)."""
        self.waiting.show()
        if self.legend is not None and not self.legend.items:
            self.legend.hide()

    def apply_palette(self, palette: QPalette) -> None:
        muted = palette.color(QPalette.ColorRole.PlaceholderText)
        theme_plot(self.widget, palette, title=self.spec.title, labels={"left": self.spec.unit, "bottom": "epoch"},
                   label_color=muted, axis_color=muted)
        if self.legend is not None:
            theme_legend(self.legend, palette, framed=False)
        self.waiting.setColor(muted)

    def _on_view_range_changed(self, _view: pg.ViewBox, ranges: list[list[float]]) -> None:
        # Centred in view coordinates (log10 on a log axis), wherever the empty view happens to be.
        (x0, x1), (y0, y1) = ranges
        self.waiting.setPos((x0 + x1) / 2, (y0 + y1) / 2)


class TrainingCurves(QWidget):
    """Four small plots that follow a run: loss, accuracy, learning rate, update/weight ratio.

    Feed it every event of a run with ``add_event``; ``clear`` before the next run.
    ``series(name)`` gives the data behind a curve: ``train_loss``, ``val_loss``,
    ``ema_val_loss``, ``train_top1``, ``val_top1``, ``ema_val_top1`` (accuracies in
    percent), ``learning_rate`` and ``update_ratio/<parameter group>``; x is in epochs.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._plots = {name: _Plot(spec, self) for name, spec in _PLOT_SPECS.items()}
        self._series: dict[str, _Series] = {}
        self._epoch_start_step: dict[int, int] = {}
        self._batches_per_epoch = 0
        self._band: pg.LinearRegionItem | None = None
        self._band_key: pg.PlotDataItem | None = None  # the band's legend entry
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        for index, plot in enumerate(self._plots.values()):
            layout.addWidget(plot.widget, index // 2, index % 2)
        ratio_plot = self._plots["update_ratio"].item
        ratio_plot.setLogMode(y=True)
        ratio_plot.getAxis("left").enableAutoSIPrefix(False)  # "10¹ (x0.001)" on a log axis only confuses
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(0)  # once per event-loop turn, after a whole poll of events
        self._redraw.timeout.connect(self._on_redraw_timeout)
        self._apply_palette()

    def series(self, name: str) -> tuple[list[float], list[float]]:
        """The (x, y) points of a curve so far; empty lists for a curve with no points."""
        series = self._series.get(name)
        return (list(series.xs), list(series.ys)) if series is not None else ([], [])

    @property
    def redraw_pending(self) -> bool:
        """Whether points have arrived that the plots do not show yet (drawn on the next event-loop turn)."""
        return self._redraw.isActive()

    def clear(self) -> None:
        """Remove every curve (before a new run)."""
        for series in self._series.values():
            self._plots[series.style.plot].remove_curve(series.item)
        self._series.clear()
        self._epoch_start_step.clear()
        self._batches_per_epoch = 0
        for plot in self._plots.values():
            plot.show_waiting()

    def set_update_ratio_band(self, low: float, high: float) -> None:
        """Shade the healthy range of update/weight ratios (``doctor.update_ratio_low``/``_high``)."""
        plot = self._plots["update_ratio"]
        if self._band is not None:
            plot.item.removeItem(self._band)
            plot.item.removeItem(self._band_key)
        # Log-mode plots place items in log10 coordinates. The band counts in the autorange, so
        # the curves are always seen against it.
        self._band = pg.LinearRegionItem((math.log10(low), math.log10(high)), orientation="horizontal",
                                         movable=False)
        self._band.setZValue(-10)
        plot.item.addItem(self._band)
        # An empty curve whose only job is the band's entry in the legend.
        self._band_key = pg.PlotDataItem([], [], pen=None, symbol="s", symbolSize=10, name="healthy")
        plot.item.addItem(self._band_key)
        if plot.legend is not None:
            plot.legend.show()
        self._apply_palette()

    def add_event(self, event: dict[str, Any]) -> None:
        """Take the points an event carries; events of other kinds are ignored."""
        kind = event.get("event")
        if kind in (RunStarted.event, StageStarted.event):
            self._batches_per_epoch = int(event.get("batches_per_epoch") or 0)
        elif kind == EpochStarted.event:
            self._epoch_start_step[int(event["epoch"])] = int(event.get("step") or 0)
            self._batches_per_epoch = int(event.get("batches") or self._batches_per_epoch)
        elif kind == BatchFinished.event:
            x = int(event["epoch"]) - 1 + int(event["batch"]) / max(int(event["batches"]), 1)
            self._add("train_loss", x, event.get("train_loss"))
            self._add("learning_rate", x, event.get("learning_rate"))
        elif kind == EpochFinished.event:
            metrics = event.get("metrics") or {}
            x = float(metrics.get("epoch") or event["epoch"])
            # The training loss is drawn per batch already; per epoch it would repeat it.
            self._add("val_loss", x, metrics.get("val_loss"))
            self._add("ema_val_loss", x, metrics.get("ema_val_loss"))
            for name in ("train_top1", "val_top1", "ema_val_top1"):
                value = metrics.get(name)
                self._add(name, x, value * 100 if _is_number(value) else None)
        elif kind == UpdateRatioMeasured.event:
            x = self._epoch_position(event)
            for group, ratio in sorted((event.get("ratios") or {}).items()):
                if _is_number(ratio) and ratio > 0:  # a log axis cannot show 0
                    self._add(UPDATE_RATIO_PREFIX + group, x, ratio)

    # Qt event handlers ---------------------------------------------------------------------------

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)

    # Internals -----------------------------------------------------------------------------------

    def _epoch_position(self, event: dict[str, Any]) -> float:
        """Where a step-stamped event falls, in epochs (``step`` counts optimizer updates)."""
        epoch, step = event.get("epoch"), int(event.get("step") or 0)
        if not epoch or not self._batches_per_epoch:
            return 0.0
        start = self._epoch_start_step.get(int(epoch), (int(epoch) - 1) * self._batches_per_epoch)
        return int(epoch) - 1 + (step - start) / self._batches_per_epoch

    def _add(self, name: str, x: float, y: Any) -> None:
        if not _is_number(y):
            return  # a missing metric (no validation images, mixed targets) or a non-finite loss
        series = self._series.get(name) or self._create_series(name)
        series.xs.append(float(x))
        series.ys.append(float(y))
        if not self._redraw.isActive():
            self._redraw.start()

    def _create_series(self, name: str) -> _Series:
        if name.startswith(UPDATE_RATIO_PREFIX):
            groups = sum(key.startswith(UPDATE_RATIO_PREFIX) for key in self._series)
            style = _Style("update_ratio", name.removeprefix(UPDATE_RATIO_PREFIX), f"group{groups}")
        else:
            style = _STYLES[name]
        plot = self._plots[style.plot]
        series = self._series[name] = _Series(plot.add_curve(style.label), style)
        self._style_item(series)
        return series

    def _color(self, key: str) -> QColor:
        if key.startswith("group"):
            pair = _GROUP_COLORS[int(key.removeprefix("group")) % len(_GROUP_COLORS)]
        else:
            pair = _COLORS[key]
        return QColor(pair[1] if is_dark(self.palette()) else pair[0])

    def _style_item(self, series: _Series) -> None:
        style = series.style
        color = self._color(style.color)
        line = Qt.PenStyle.DashLine if style.dashed else Qt.PenStyle.SolidLine
        series.item.setPen(pg.mkPen(color, width=2, style=line))
        # Per-batch curves get markers only while a line cannot show them (a run stopped at once).
        marked = style.per_epoch or len(series.xs) == 1
        series.item.setSymbol("o" if marked else None)
        series.item.setSymbolSize(6)
        series.item.setSymbolBrush(color)
        series.item.setSymbolPen(color)

    def _on_redraw_timeout(self) -> None:
        for series in self._series.values():
            if series.drawn != len(series.xs):
                if not series.style.per_epoch and series.drawn <= 1:
                    self._style_item(series)  # markers on for a single point, off again after it
                series.item.setData(series.xs, series.ys)
                series.drawn = len(series.xs)

    def _apply_palette(self) -> None:
        palette = self.palette()
        for plot in self._plots.values():
            plot.apply_palette(palette)
        if self._band is not None and self._band_key is not None:
            fill = ok_color(palette)
            fill.setAlpha(32)
            self._band.setBrush(pg.mkBrush(fill))
            for line in self._band.lines:
                line.setPen(pg.mkPen(fill, width=1))
            key = ok_color(palette)
            key.setAlpha(90)
            self._band_key.setSymbolBrush(key)
            self._band_key.setSymbolPen(None)
            # With no points, only the scatter's defaults reach the legend's sample.
            self._band_key.scatter.setBrush(key)
            self._band_key.scatter.setPen(None)
        for series in self._series.values():
            self._style_item(series)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

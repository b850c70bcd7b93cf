"""A live scatter of a search's trials: the metric against one parameter, on that parameter's scale.

Coarse and fine trials get a colour each; pruned trials are hollow, trials without a
score (diverged at once, failed) are crosses level with the worst score, and the best
trial is ringed. The shaded bands are the stages' ranges. Hovering a point shows the
trial's values; a click reports its number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from engine.core.config import SearchParameter
from engine.search.progress import describe_trial
from engine.search.records import TrialRecord
from engine.search.space import format_value
from gui.style import is_dark
from gui.widgets.plots import theme_plot

DEFAULT_X = "optim.learning_rate"
# (light palette, dark palette) colours.
_STAGE_COLORS: dict[str | None, tuple[str, str]] = {
    "coarse": ("#2f6fb3", "#6aa7ea"), "fine": ("#d9661f", "#f0a05a"), None: ("#616e7c", "#9aa0a6"),
}
_FAILED_COLORS = ("#c62828", "#ff7b72")
_BEST_COLORS = ("#2e7d32", "#7ee787")
_JITTER = 0.3  # spread of equal choices, in category widths
_POINT_SIZE = 10


class TrialPlot(QWidget):
    """The metric of each trial against a parameter chosen in a combo box.

    Signals:
        trial_clicked: the number of the trial whose point was clicked (int).
    """

    trial_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parameters: dict[str, SearchParameter] = {}
        self._ranges: dict[str, dict[str, SearchParameter]] = {}
        self._records: list[TrialRecord] = []
        self._metric = "val_loss"
        self._best: int | None = None
        self._points: list[tuple[int, float, float]] = []

        self.axis_combo = QComboBox(self)
        self.axis_combo.setToolTip("The parameter along the x axis")
        self.axis_combo.currentIndexChanged.connect(self._on_axis_combo_changed)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setMinimumHeight(200)
        self.plot.getPlotItem().hideButtons()
        self.plot.getPlotItem().layout.setContentsMargins(0, 4, 14, 4)  # room for the last tick label
        for name in ("bottom", "left"):
            self.plot.getAxis(name).enableAutoSIPrefix(False)  # "(x0.001)" beside a loss reads as a unit
        self._regions = {stage: pg.LinearRegionItem(movable=False) for stage in ("coarse", "fine")}
        for region in self._regions.values():
            region.setZValue(-10)
            region.hide()
            self.plot.addItem(region)  # in the auto range: trials are seen against the whole range searched
        self._scatters: dict[tuple[str | None, str], pg.ScatterPlotItem] = {}
        for stage in _STAGE_COLORS:
            for kind in ("complete", "pruned"):
                self._scatters[(stage, kind)] = self._add_scatter("o")
        self._scatters[(None, "unscored")] = self._add_scatter("x")
        self._best_ring = pg.ScatterPlotItem(symbol="o", size=_POINT_SIZE + 10, brush=None)
        self._best_ring.setZValue(5)
        self.plot.addItem(self._best_ring)
        self.placeholder = pg.TextItem("Trials appear here as they finish.", anchor=(0.5, 0.5))
        self.plot.addItem(self.placeholder, ignoreBounds=True)
        self.legend_label = QLabel(self)
        self.legend_label.setToolTip("Filled: complete trials, by stage. Hollow: pruned after reporting a score"
                                     " (median pruner). Crosses: no score (diverged at once, or failed), drawn"
                                     " level with the worst score. Ringed: the best trial. Shaded: each stage's"
                                     " range of the parameter on the x axis.")
        self.detail_label = QLabel(self)
        self.detail_label.setWordWrap(True)
        self.detail_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Two lines always: a splitter would otherwise squeeze a wrapped label to one.
        self.detail_label.setMinimumHeight(2 * self.detail_label.fontMetrics().lineSpacing() + 2)
        self.show_detail("Point at a trial to see its values; click it to find it in the table.")

        axis_row = QHBoxLayout()
        axis_row.addWidget(QLabel("x axis:", self))
        axis_row.addWidget(self.axis_combo, 1)
        axis_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(axis_row)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.legend_label)
        layout.addWidget(self.detail_label)
        self._apply_palette()
        self._redraw()

    @property
    def x_parameter(self) -> str:
        """The dotted path along the x axis ("" before any parameter is known)."""
        return self.axis_combo.currentData() or ""

    def set_x_parameter(self, path: str) -> bool:
        """Put ``path`` on the x axis; False when it is not one of the parameters."""
        index = self.axis_combo.findData(path)
        if index < 0:
            return False
        self.axis_combo.setCurrentIndex(index)
        return True

    def set_parameters(self, parameters: Sequence[SearchParameter]) -> None:
        """The searched parameters, offered on the x axis (kept if still there; else the learning rate)."""
        by_path = {parameter.path: parameter for parameter in parameters}
        if by_path == self._parameters:
            return
        current = self.x_parameter
        self._parameters = by_path
        self.axis_combo.blockSignals(True)
        self.axis_combo.clear()
        for path, parameter in by_path.items():
            scale = "choices" if parameter.choices is not None else parameter.scale
            self.axis_combo.addItem(f"{path} ({scale})", path)
        wanted = current if current in by_path else DEFAULT_X if DEFAULT_X in by_path else next(iter(by_path), "")
        self.axis_combo.setCurrentIndex(max(self.axis_combo.findData(wanted), 0))
        self.axis_combo.blockSignals(False)
        self._redraw()

    def set_ranges(self, spaces: Mapping[str, Sequence[SearchParameter]]) -> None:
        """Each stage's space (``coarse``, ``fine``): its range of the x parameter is shaded."""
        self._ranges = {stage: {parameter.path: parameter for parameter in space} for stage, space in spaces.items()}
        self._redraw()

    def set_trials(self, records: Sequence[TrialRecord], *, metric: str, best: int | None) -> None:
        """Show these trials; ``best`` is the number of the trial to ring."""
        self._records, self._metric, self._best = list(records), metric, best
        self._redraw()

    def clear(self) -> None:
        """No trials, no ranges (the parameters stay on offer)."""
        self._ranges = {}
        self.set_trials([], metric=self._metric, best=None)

    def show_detail(self, text: str) -> None:
        """Show a line about one trial under the plot (all of it in the tooltip when it does not fit)."""
        self.detail_label.setText(text)
        self.detail_label.setToolTip(text)

    def points(self) -> list[tuple[int, float, float]]:
        """The trials drawn: (number, x as plotted, metric); x is log10 of the value on a log axis."""
        return list(self._points)

    # Drawing -------------------------------------------------------------------------------------

    def _add_scatter(self, symbol: str) -> pg.ScatterPlotItem:
        scatter = pg.ScatterPlotItem(symbol=symbol, size=_POINT_SIZE, hoverable=True, tip=self._tip)
        scatter.sigClicked.connect(self._on_scatter_clicked)
        self.plot.addItem(scatter)
        return scatter

    def _redraw(self) -> None:
        path = self.x_parameter
        parameter = self._parameters.get(path)
        log = parameter is not None and parameter.choices is None and parameter.scale == "log"
        categories = self._categories(path, parameter)
        self.plot.setLogMode(x=log, y=False)
        axis = self.plot.getAxis("bottom")
        low, high = _span(parameter, log, categories)
        if categories is not None:
            axis.setTicks([list(enumerate(str(choice) for choice in categories))])
        else:
            axis.setTicks(_decade_ticks(low, high) if log and high - low >= 1 else None)
        self.plot.setLabel("bottom", f"{path} (log scale)" if log else path or "parameter")
        better = "lower" if self._metric == "val_loss" else "higher"
        self.plot.setLabel("left", f"{self._metric} ({better} is better)")

        placed = [(record, x) for record in self._records if (x := self._x(record, path, log, categories)) is not None]
        scores = [score for record, _x in placed if (score := _score(record)) is not None]
        level = (max(scores) if self._metric == "val_loss" else min(scores)) if scores else 1.0
        groups: dict[tuple[str | None, str], list[tuple[int, float, float]]] = {key: [] for key in self._scatters}
        for record, x in placed:
            score = _score(record)
            if score is not None:
                stage = record.stage if record.stage in _STAGE_COLORS else None
                groups[(stage, record.state)].append((record.number, x, score))
            elif record.state in ("pruned", "failed"):
                groups[(None, "unscored")].append((record.number, x, level))
        self._points = sorted(point for points in groups.values() for point in points)
        for key, scatter in self._scatters.items():
            points = groups[key]
            scatter.setData(x=[point[1] for point in points], y=[point[2] for point in points],
                            data=[point[0] for point in points])
        best = [point for point in self._points if point[0] == self._best]
        self._best_ring.setData(x=[point[1] for point in best], y=[point[2] for point in best])
        self._shade_ranges(path, log, categories is not None)
        self.placeholder.setVisible(not self._points)
        self.plot.getAxis("left").setStyle(showValues=bool(self._points))  # no scores yet: no scale to show
        if self._points:
            self.plot.enableAutoRange()
            return
        # Empty: the x axis spans the range searched, so the first points land in context.
        self.placeholder.setPos((low + high) / 2, 0.5)
        self.plot.setRange(xRange=(low, high), yRange=(0, 1), padding=0.02)

    def _categories(self, path: str, parameter: SearchParameter | None) -> list[Any] | None:
        """The x axis's categories for a choice parameter (with any value trials used beyond them), else None."""
        values = [record.params[path] for record in self._records if path in record.params]
        textual = any(isinstance(value, (str, bool)) for value in values)
        if (parameter is None or parameter.choices is None) and not textual:
            return None
        categories = list(parameter.choices) if parameter is not None and parameter.choices is not None else []
        categories += [value for value in dict.fromkeys(values) if value not in categories]
        return categories

    def _x(self, record: TrialRecord, path: str, log: bool, categories: list[Any] | None) -> float | None:
        if path not in record.params:
            return None
        value = record.params[path]
        if categories is not None:
            # A fixed spread per trial keeps trials with equal choices apart, and in place between redraws.
            return categories.index(value) + ((record.number * 0.618) % 1 - 0.5) * _JITTER
        if not _finite(value) or (log and value <= 0):
            return None
        return math.log10(value) if log else float(value)

    def _shade_ranges(self, path: str, log: bool, categorical: bool) -> None:
        for stage, region in self._regions.items():
            parameter = self._ranges.get(stage, {}).get(path)
            if categorical or parameter is None or parameter.low is None or parameter.high is None:
                region.hide()
                continue
            ends = [math.log10(end) if log else end for end in (parameter.low, parameter.high) if not log or end > 0]
            if len(ends) < 2:
                region.hide()
                continue
            region.setRegion(ends)
            region.setToolTip(f"{stage} range of {path}: {parameter.low:g} to {parameter.high:g}")
            region.show()

    def _tip(self, x: float, y: float, data: Any) -> str:
        record = next((record for record in self._records if record.number == data), None)
        return describe_trial(record, self._metric) if record is not None else ""

    def _on_scatter_clicked(self, _scatter: pg.ScatterPlotItem, points: Sequence[Any], _event: Any) -> None:
        if len(points) == 0:
            return
        number = int(points[0].data())
        self.show_detail(self._tip(0.0, 0.0, number))
        self.trial_clicked.emit(number)

    def _on_axis_combo_changed(self, _index: int) -> None:
        self._redraw()

    # Palette -------------------------------------------------------------------------------------

    def _apply_palette(self) -> None:
        palette = self.palette()
        dark = is_dark(palette)
        theme_plot(self.plot, palette)
        colors = {stage: QColor(pair[dark]) for stage, pair in _STAGE_COLORS.items()}
        for (stage, kind), scatter in self._scatters.items():
            if kind == "unscored":
                failed = QColor(_FAILED_COLORS[dark])
                scatter.setPen(pg.mkPen(failed, width=2))
                scatter.setBrush(pg.mkBrush(failed))
            else:
                scatter.setPen(pg.mkPen(colors[stage], width=1.5))
                scatter.setBrush(pg.mkBrush(colors[stage]) if kind == "complete" else pg.mkBrush(None))
        best = QColor(_BEST_COLORS[dark])
        self._best_ring.setPen(pg.mkPen(best, width=2.5))
        self._best_ring.setBrush(pg.mkBrush(None))
        for stage, region in self._regions.items():
            fill = QColor(colors[stage])
            fill.setAlpha(28 if stage == "coarse" else 40)
            region.setBrush(pg.mkBrush(fill))
            for line in region.lines:
                line.setPen(pg.mkPen(fill, width=1))
        self.placeholder.setColor(palette.color(QPalette.ColorRole.PlaceholderText))
        self.legend_label.setText(_legend_html(colors, QColor(_FAILED_COLORS[dark]), best))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802  Qt's name
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_palette()
        super().changeEvent(event)


def _legend_html(stages: Mapping[str | None, QColor], failed: QColor, best: QColor) -> str:
    """The key under the plot: what each colour and mark means."""
    def key(mark: str, color: QColor, text: str) -> str:
        return f"<span style='color:{color.name()}; font-size:large'>{mark}</span>&nbsp;{text}"

    entries = [key("●", stages["coarse"], "coarse"), key("●", stages["fine"], "fine"),
               key("○", stages["coarse"], "pruned"), key("✕", failed, "no score"),
               key("◯", best, "best"), key("▮", stages["fine"], "ranges searched")]
    return "&nbsp;&nbsp;&nbsp;".join(entries)


def _decade_ticks(low: float, high: float) -> list[list[tuple[float, str]]]:
    """Ticks of a log axis spanning a decade or more: powers of ten labelled, 2x..9x them unlabelled.

    pyqtgraph's own log ticks label every one of them on a narrow plot, and the labels run together.
    """
    decades = range(math.floor(low) - 1, math.ceil(high) + 2)  # beyond the range too: the view has margins
    major = [(float(power), format_value(10.0 ** power)) for power in decades]
    minor = [(power + math.log10(factor), "") for power in decades for factor in range(2, 10)]
    return [major, minor]


def _span(parameter: SearchParameter | None, log: bool, categories: list[Any] | None) -> tuple[float, float]:
    """The x extent of a parameter's range as plotted (log10 on a log axis; category positions)."""
    if categories is not None:
        return -0.5, max(len(categories), 1) - 0.5
    if parameter is None or parameter.low is None or parameter.high is None or parameter.low >= parameter.high:
        return -1.0, 1.0
    if log:
        return (math.log10(parameter.low), math.log10(parameter.high)) if parameter.low > 0 else (-1.0, 1.0)
    return float(parameter.low), float(parameter.high)


def _score(record: TrialRecord) -> float | None:
    """The score of a complete trial, or of one pruned after it reported a score; None for other trials."""
    if record.state in ("complete", "pruned") and _finite(record.value):
        return float(record.value)
    return None


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

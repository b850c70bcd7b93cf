"""Validation accuracy and loss per epoch of several runs, overlaid, one colour per run."""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import (
    Qt,
)
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from engine.training.run_summary import RunSummary
from gui.widgets.plots import theme_legend, theme_plot

# Tableau 10: distinct on light and dark backgrounds, and for the common colour-vision deficiencies.
CURVE_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


class RunCurves(QWidget):
    """Validation accuracy and validation loss per epoch of several runs, one colour per run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.accuracy_plot = pg.PlotWidget(self)
        self.loss_plot = pg.PlotWidget(self)
        for plot in (self.accuracy_plot, self.loss_plot):
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setMenuEnabled(False)
            plot.setMinimumHeight(160)
        self.accuracy_plot.setYRange(0, 100, padding=0.06)  # room for the 0 and 100 labels
        self.accuracy_plot.getViewBox().setMouseEnabled(x=True, y=False)
        # Accuracies climb and losses fall: the free corners are bottom right and top right.
        self.accuracy_legend = self.accuracy_plot.addLegend(offset=(-10, -10))
        self.hint_label = QLabel("Select runs in the table to overlay their validation curves.", self)
        self.hint_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint_label.setWordWrap(True)
        plots = QWidget(self)
        plots_layout = QHBoxLayout(plots)
        plots_layout.setContentsMargins(0, 0, 0, 0)
        plots_layout.addWidget(self.accuracy_plot)
        plots_layout.addWidget(self.loss_plot)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.hint_label)
        self._stack.addWidget(plots)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._stack)
        self.apply_palette(self.palette())

    def show_runs(self, runs: list[RunSummary]) -> dict[Path, QColor]:
        """Draw the curves of ``runs`` (in this order); returns the colour given to each run."""
        colors: dict[Path, QColor] = {}
        for plot in (self.accuracy_plot, self.loss_plot):
            plot.clear()
        self.accuracy_legend.clear()
        last_epoch = 1.0
        for index, run in enumerate(runs):
            color = QColor(CURVE_COLORS[index % len(CURVE_COLORS)])
            colors[run.path] = color
            style = {
                "pen": pg.mkPen(color, width=2),
                "symbol": "o",
                "symbolSize": 6,
                "symbolBrush": color,
                "symbolPen": pg.mkPen(color),
            }
            epochs, accuracies = run.series("val_top1")
            self.accuracy_plot.plot(epochs, [100 * value for value in accuracies], name=curve_name(run), **style)
            self.loss_plot.plot(*run.series("val_loss"), name=curve_name(run), **style)
            last_epoch = max([last_epoch, *epochs])
        for plot in (self.accuracy_plot, self.loss_plot):
            axis = plot.getAxis("bottom")
            if last_epoch <= 15:
                axis.setTickSpacing(1, 1)  # whole epochs: pyqtgraph would label halves on short runs
            else:
                axis.setTickSpacing()
            plot.setXRange(1, max(last_epoch, 2), padding=0.05)
        self.loss_plot.enableAutoRange(axis=pg.ViewBox.YAxis)
        self._stack.setCurrentIndex(1 if runs else 0)
        return colors

    def apply_palette(self, palette: QPalette) -> None:
        """Follow the palette: plot background, axes, titles and legend."""
        for plot, title, unit in (
            (self.accuracy_plot, "Validation accuracy", "accuracy (%)"),
            (self.loss_plot, "Validation loss", "loss"),
        ):
            theme_plot(plot, palette, title=title, labels={"left": unit, "bottom": "epoch"})
        theme_legend(self.accuracy_legend, palette)


def curve_name(run: RunSummary) -> str:
    """The legend entry of a run: when it started and its backbone."""
    started = run.started.strftime("%b %d %H:%M") if run.started else run.name
    return f"{started} · {run.backbone}"

"""The reliability diagram of an evaluation: accuracy per confidence bin against the diagonal of perfect calibration.

Bars above the diagonal mean the model is right more often than it claims
(under-confident); below it, over-confident. The count of images of each bin is
written over its bar, since a bin of two images says little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from gui.style import bar_color, severity_color
from gui.widgets.plots import theme_legend, theme_plot


class ReliabilityPlot(QWidget):
    """Accuracy per confidence bin as bars, the diagonal dashed, ECE in the title."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(self)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.setYRange(0, 1.08, padding=0.02)  # room for the counts over full bars
        self.plot.setMinimumHeight(200)
        self.legend = self.plot.addLegend(offset=(10, 10))
        self._ece: float | None = None
        self._bins: list[Mapping[str, Any]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self.apply_palette(self.palette())

    @property
    def bars(self) -> list[tuple[float, float, int]]:
        """(mean confidence, accuracy, images) of every non-empty bin drawn."""
        return [(item["confidence"], item["accuracy"], item["count"]) for item in self._bins if item["count"]]

    def show_bins(self, bins: Sequence[Mapping[str, Any]], ece: float | None) -> None:
        """Draw the bins of a report (``lower``, ``upper``, ``count``, ``confidence``, ``accuracy`` each)."""
        self._bins = list(bins)
        self._ece = ece
        self._draw()

    def clear(self) -> None:
        """Draw nothing."""
        self.show_bins([], None)

    def apply_palette(self, palette: QPalette) -> None:
        """Follow the palette: background, axes, title, legend and bars."""
        theme_plot(self.plot, palette, labels={"left": "accuracy", "bottom": "confidence (top-1 probability)"})
        theme_legend(self.legend, palette)
        self._draw()

    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange:
            self.apply_palette(self.palette())
        super().changeEvent(event)

    def _draw(self) -> None:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        self.plot.clear()
        self.legend.clear()
        title = "Reliability" if self._ece is None else f"Reliability · ECE {self._ece:.4f}"
        self.plot.setTitle(title, color=text.name(), size="10pt")
        diagonal = pg.PlotDataItem([0, 1], [0, 1], pen=pg.mkPen(severity_color("error", palette), width=1.5,
                                                                   style=Qt.PenStyle.DashLine))
        filled = [item for item in self._bins if item["count"]]
        if filled:
            color = bar_color(palette)
            fill = QColor(color)
            fill.setAlpha(170)
            bars = pg.BarGraphItem(
                x=[(item["lower"] + item["upper"]) / 2 for item in filled],
                height=[item["accuracy"] for item in filled],
                width=[(item["upper"] - item["lower"]) * 0.92 for item in filled],
                brush=pg.mkBrush(fill), pen=pg.mkPen(color))
            self.plot.addItem(bars)
            self.legend.addItem(bars, "accuracy of the bin's images")
            font = QFont(self.font())
            font.setPointSizeF(font.pointSizeF() * 0.85)
            for item in filled:
                count = pg.TextItem(str(item["count"]), color=text, anchor=(0.5, 1))
                count.setFont(font)
                count.setPos((item["lower"] + item["upper"]) / 2, item["accuracy"])
                count.setToolTip(f"{item['count']} images, mean confidence {item['confidence']:.1%}, "
                                 f"accuracy {item['accuracy']:.1%}")
                self.plot.addItem(count)
        self.plot.addItem(diagonal)
        self.legend.addItem(diagonal, "perfect calibration")

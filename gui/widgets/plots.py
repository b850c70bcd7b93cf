"""pyqtgraph plots in Transfer Studio's look: backgrounds, axes, titles and legends coloured from the palette.

Every plot (training curves, runs, trials, the LR finder, reliability) calls ``theme_plot``
and ``theme_legend`` when it is built and again when the palette changes (light/dark).
"""

from __future__ import annotations

from collections.abc import Mapping

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette

_LEGEND_OPACITY = 220  # of 255: a legend over curves lets them show through a little


def theme_plot(plot: pg.PlotWidget, palette: QPalette, *, title: str | None = None,
               labels: Mapping[str, str] | None = None, label_color: QColor | None = None,
               axis_color: QColor | None = None) -> None:
    """Colour ``plot`` from ``palette``: base background, axis lines, tick text, title and axis labels.

    Args:
        plot: the plot to colour.
        palette: the palette to follow.
        title: the plot's title, drawn in the text colour.
        labels: axis side ("left", "bottom") -> its label.
        label_color: the axis labels' colour; the text colour by default.
        axis_color: the axis lines' colour; the palette's mid tone by default.
    """
    text = palette.color(QPalette.ColorRole.Text)
    plot.setBackground(palette.color(QPalette.ColorRole.Base))
    for side in ("left", "bottom"):
        axis = plot.getAxis(side)
        axis.setPen(pg.mkPen(axis_color or palette.color(QPalette.ColorRole.Mid)))
        axis.setTextPen(pg.mkPen(text))
    if title is not None:
        plot.setTitle(title, color=text.name(), size="10pt")
    for side, label in (labels or {}).items():
        plot.setLabel(side, label, color=(label_color or text).name())


def theme_legend(legend: pg.LegendItem, palette: QPalette, *, framed: bool = True) -> None:
    """Colour a legend from ``palette``: text colour, a nearly opaque base behind it, a mid-tone frame."""
    legend.setLabelTextColor(palette.color(QPalette.ColorRole.Text))
    background = QColor(palette.color(QPalette.ColorRole.Base))
    if framed:
        background.setAlpha(_LEGEND_OPACITY)
        legend.setPen(pg.mkPen(palette.color(QPalette.ColorRole.Mid)))
    legend.setBrush(pg.mkBrush(background))

"""The dataset map: every reviewed photo as a dot laid out by its features, coloured by class, findings ringed.

Drawn with pyqtgraph, one scatter item per class (a single brush each keeps 20,000 dots fast).
Hovering shows the photo's thumbnail; a click chooses it; Shift+drag selects a rectangle of dots,
which can then be relabelled or excluded together. The class and split filters hide other dots.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal, SignalInstance
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from engine.review.finding import Finding, MapPoint
from gui.widgets.plots import theme_plot

_DOT_SIZE = 5
_HOVER_PIXELS = 8  # how near the pointer a dot must be to show its photo
_THUMBNAIL_WIDTH = 112


class _SelectingViewBox(pg.ViewBox):
    """Pans and zooms as usual; Shift+drag draws a rectangle and reports it (in map coordinates) when let go."""

    def __init__(self) -> None:
        super().__init__(lockAspect=True)
        self.selected: SignalInstance | None = None  # set by the map: receives the QRectF
        self._band = QGraphicsRectItem()
        self._band.setPen(pg.mkPen((40, 120, 220), width=1, style=Qt.PenStyle.DashLine))
        self._band.setBrush(pg.mkBrush(40, 120, 220, 40))
        self._band.setVisible(False)
        self.addItem(self._band, ignoreBounds=True)

    def mouseDragEvent(self, ev: object, axis: int | None = None) -> None:  # noqa: N802  pyqtgraph's name
        if not (ev.modifiers() & Qt.KeyboardModifier.ShiftModifier):  # type: ignore[attr-defined]
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()  # type: ignore[attr-defined]
        rect = QRectF(self.mapToView(ev.buttonDownPos()), self.mapToView(ev.pos())).normalized()  # type: ignore[attr-defined]
        self._band.setRect(rect)
        self._band.setVisible(not ev.isFinish())  # type: ignore[attr-defined]
        if ev.isFinish() and self.selected is not None:  # type: ignore[attr-defined]
            self.selected.emit(rect)


class DatasetMap(QWidget):
    """The map of a review, with filters and the actions on a selection.

    Signals:
        photo_clicked: the path (``Path``) of a dot clicked.
        relabel_requested: (paths, class) for the selected dots.
        exclude_requested: the paths of the selected dots.
    """

    photo_clicked = Signal(object)
    relabel_requested = Signal(object, str)
    exclude_requested = Signal(object)
    _rectangle_selected = Signal(QRectF)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._points: list[MapPoint] = []
        self._classes: tuple[str, ...] = ()
        self._xy = np.zeros((0, 2), dtype=np.float32)
        self._labels = np.zeros(0, dtype=np.int64)
        self._splits = np.zeros(0, dtype=object)
        self._flagged = np.zeros(0, dtype=bool)
        self._visible = np.zeros(0, dtype=bool)
        self._selected = np.zeros(0, dtype=bool)
        self.class_combo = QComboBox(self)
        self.class_combo.currentIndexChanged.connect(self._redraw)
        self.split_combo = QComboBox(self)
        for text, split in (("All splits", ""), ("train", "train"), ("val", "val"), ("test", "test")):
            self.split_combo.addItem(text, split)
        self.split_combo.currentIndexChanged.connect(self._redraw)
        self.hint_label = QLabel("Hover a dot to see its photo · Shift+drag selects · ringed dots have findings", self)
        self.selection_label = QLabel(self)
        self.target_combo = QComboBox(self)
        self.relabel_button = QPushButton("Relabel selected", self)
        self.relabel_button.clicked.connect(self._on_relabel_button_clicked)
        self.exclude_button = QPushButton("Exclude selected", self)
        self.exclude_button.clicked.connect(self._on_exclude_button_clicked)

        self._view_box = _SelectingViewBox()
        self._view_box.selected = self._rectangle_selected
        self._rectangle_selected.connect(self.select_rectangle)
        self.plot = pg.PlotWidget(self, viewBox=self._view_box)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMenuEnabled(False)
        theme_plot(self.plot, self.palette())
        self._class_items: list[pg.ScatterPlotItem] = []
        self._flag_item = pg.ScatterPlotItem(size=11, pen=pg.mkPen(30, 30, 30, width=1.2), brush=None, pxMode=True)
        self._selection_item = pg.ScatterPlotItem(size=9, pen=pg.mkPen(255, 200, 0, width=2), brush=None, pxMode=True)
        self.plot.addItem(self._flag_item)
        self.plot.addItem(self._selection_item)
        self.legend = self.plot.addLegend(offset=(8, 8), labelTextColor=self.palette().text().color())
        self.plot.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.plot.scene().sigMouseClicked.connect(self._on_scene_mouse_clicked)

        filters = QHBoxLayout()
        filters.addWidget(self.class_combo)
        filters.addWidget(self.split_combo)
        filters.addWidget(self.hint_label, 1)
        actions = QHBoxLayout()
        actions.addWidget(self.selection_label, 1)
        actions.addWidget(self.target_combo)
        actions.addWidget(self.relabel_button)
        actions.addWidget(self.exclude_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addWidget(self.plot, 1)
        layout.addLayout(actions)
        self._update_selection()

    # Public API ------------------------------------------------------------------------------------

    def set_points(self, points: Sequence[MapPoint], classes: Sequence[str], findings: Sequence[Finding]) -> None:
        """Show ``points`` (labels index ``classes``), ringing those ``findings`` name."""
        self._points = list(points)
        self._classes = tuple(classes)
        self._xy = np.array([(point.x, point.y) for point in points], dtype=np.float32).reshape(-1, 2)
        self._labels = np.array([point.label for point in points], dtype=np.int64)
        self._splits = np.array([point.split for point in points], dtype=object)
        flagged = {finding.path for finding in findings}
        self._flagged = np.array([point.path in flagged for point in points], dtype=bool)
        self._selected = np.zeros(len(points), dtype=bool)
        for item in self._class_items:
            self.plot.removeItem(item)
        self.legend.clear()
        self._class_items = []
        for index, name in enumerate(self._classes):
            item = pg.ScatterPlotItem(size=_DOT_SIZE, pen=None, brush=pg.mkBrush(_class_color(index, len(classes))),
                                      pxMode=True, name=name)
            self.plot.addItem(item)
            self._class_items.append(item)
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        self.class_combo.addItem("All classes", -1)
        for index, name in enumerate(self._classes):
            self.class_combo.addItem(name, index)
        self.class_combo.blockSignals(False)
        self.target_combo.clear()
        self.target_combo.addItems(list(self._classes))
        self._redraw()
        # Follows the data until the user pans or zooms: the map may be filled before it is shown.
        self._view_box.enableAutoRange(pg.ViewBox.XYAxes, True)

    @property
    def visible_count(self) -> int:
        """Dots shown with the filters as they are."""
        return int(self._visible.sum())

    def selected_paths(self) -> list[Path]:
        """The photos selected, in map order."""
        return [Path(self._points[row].path) for row in np.flatnonzero(self._selected)]

    def select_rectangle(self, rect: QRectF) -> None:
        """Select the visible dots inside ``rect`` (map coordinates)."""
        x, y = self._xy[:, 0], self._xy[:, 1]
        inside = (x >= rect.left()) & (x <= rect.right()) & (y >= rect.top()) & (y <= rect.bottom())
        self._selected = inside & self._visible
        self._update_selection()

    def nearest(self, position: QPointF) -> int | None:
        """The row of the visible dot nearest ``position`` (map coordinates) within a few pixels, else None."""
        rows = np.flatnonzero(self._visible)
        if not len(rows):
            return None
        pixel = self._view_box.viewPixelSize()  # map units per screen pixel, x and y
        scale = np.array(pixel, dtype=np.float32)
        distances = np.hypot(*((self._xy[rows] - (position.x(), position.y())) / scale).T)
        best = int(np.argmin(distances))
        return int(rows[best]) if distances[best] <= _HOVER_PIXELS else None

    def point(self, row: int) -> MapPoint:
        """The photo of ``row``."""
        return self._points[row]

    # Drawing ---------------------------------------------------------------------------------------

    def _redraw(self) -> None:
        chosen_class = self.class_combo.currentData()
        chosen_split = self.split_combo.currentData()
        visible = np.ones(len(self._points), dtype=bool)
        if isinstance(chosen_class, int) and chosen_class >= 0:
            visible &= self._labels == chosen_class
        if chosen_split:
            visible &= self._splits == chosen_split
        self._visible = visible
        for index, item in enumerate(self._class_items):
            rows = visible & (self._labels == index)
            item.setData(x=self._xy[rows, 0], y=self._xy[rows, 1])
        flagged = visible & self._flagged
        self._flag_item.setData(x=self._xy[flagged, 0], y=self._xy[flagged, 1])
        self._selected &= visible
        self._update_selection()

    def _update_selection(self) -> None:
        rows = self._selected
        self._selection_item.setData(x=self._xy[rows, 0], y=self._xy[rows, 1])
        count = int(rows.sum())
        self.selection_label.setText(f"{count} selected" if count else
                                     f"{self.visible_count} photos shown; Shift+drag to select some")
        for widget in (self.target_combo, self.relabel_button, self.exclude_button):
            widget.setEnabled(count > 0)

    # Slots -----------------------------------------------------------------------------------------

    def _on_scene_mouse_moved(self, position: QPointF) -> None:
        row = self.nearest(self._view_box.mapSceneToView(position))
        if row is None:
            QToolTip.hideText()
            return
        point = self._points[row]
        name = html.escape(Path(point.path).name)
        image = html.escape(Path(point.path).as_uri())
        text = (f'<img src="{image}" width="{_THUMBNAIL_WIDTH}"><br>{name}<br>'
                f"{html.escape(self._classes[point.label])} · {point.split}")
        QToolTip.showText(self.plot.mapToGlobal(self.plot.mapFromScene(position)), text, self.plot)

    def _on_scene_mouse_clicked(self, event: object) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:  # type: ignore[attr-defined]
            return
        row = self.nearest(self._view_box.mapSceneToView(event.scenePos()))  # type: ignore[attr-defined]
        if row is not None:
            self.photo_clicked.emit(Path(self._points[row].path))

    def _on_relabel_button_clicked(self) -> None:
        paths = self.selected_paths()
        if paths and self.target_combo.currentText():
            self.relabel_requested.emit(paths, self.target_combo.currentText())

    def _on_exclude_button_clicked(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.exclude_requested.emit(paths)


def _class_color(index: int, count: int) -> QColor:
    """Tableau's ten qualitative colours (told apart by most eyes), then hues of another lightness."""
    if count <= len(_QUALITATIVE):
        return QColor(_QUALITATIVE[index])
    hues = 12
    return QColor.fromHsv(int(360 * (index % hues) / hues), 200, 210 if index // hues % 2 == 0 else 140)


_QUALITATIVE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac")

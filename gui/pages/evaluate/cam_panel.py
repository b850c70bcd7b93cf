"""The class activation map (Grad-CAM) of one image: the picture and where the model found its evidence.

The Evaluate page embeds a ``CamPanel`` and calls ``show_image`` whenever an image is
chosen. Maps are computed on the thread pool by ``engine.evaluation.gradcam``; a result that a
newer request has superseded is dropped, so clicking through images never shows a stale map.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from engine.evaluation.activation_map import ActivationMap, overlay
from gui.services.workers import Worker, run_in_thread_pool
from gui.style import ok_color, severity_color
from gui.widgets.fitted_image import FittedImage, pil_to_qimage
from gui.widgets.message_panel import MessagePanel

IMAGE_SIDE = 220  # logical pixels of each picture
DEFAULT_OPACITY = 45  # percent of the colour map in the overlay
COLORMAP = "jet"
# matplotlib's jet at its key points, for the legend under the overlay.
_JET_STOPS = ((0.0, "#00007f"), (0.125, "#0000ff"), (0.375, "#00ffff"), (0.625, "#ffff00"), (0.875, "#ff0000"),
              (1.0, "#7f0000"))
EMPTY_TITLE = "Choose an image to see which parts of it the model looked at"
NO_MODEL_TITLE = "Choose a model to see which parts of an image it looked at"


class CamPanel(QWidget):
    """Grad-CAM of the chosen image for the chosen model, with a class to explain and the overlay's opacity.

    Signals:
        map_shown: the ``ActivationMap`` now on screen.
        cam_failed: the message when a map cannot be computed (also shown in the panel).

    Args:
        parent: the parent widget.
    """

    map_shown = Signal(object)
    cam_failed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model_path: Path | None = None
        self._image_path: Path | None = None
        self._true_label: str | None = None
        self._activation: ActivationMap | None = None
        self._worker: Worker | None = None
        self._fresh = True
        self._running: set[Worker] = set()

        self.message_panel = MessagePanel(self)
        self.class_combo = QComboBox(self)
        self.class_combo.setToolTip("the class whose evidence the map shows; the predicted one first")
        self.class_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.class_combo.setMinimumContentsLength(18)
        self.class_combo.activated.connect(self._on_class_combo_activated)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(DEFAULT_OPACITY)
        self.opacity_slider.setToolTip("how much of the colour map covers the picture")
        self.opacity_slider.valueChanged.connect(self._on_opacity_slider_value_changed)
        self.opacity_label = QLabel(self)
        self.opacity_label.setMinimumWidth(self.fontMetrics().horizontalAdvance("100%") + 4)
        self.picture_view = _picture_view(self)
        self.overlay_view = _picture_view(self)
        self.overlay_view.setToolTip("Grad-CAM: red where the features that raised this class's score lie, "
                                     "blue where nothing spoke for it")
        self.picture_title = _small_label(self)
        self.overlay_title = _small_label(self)
        self.legend = _Legend(self)
        self.caption_label = QLabel(self)
        self.caption_label.setWordWrap(True)
        self.caption_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = _small_label(self)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.message_panel)
        self._stack.addWidget(self._build_content())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._stack)
        self._on_opacity_slider_value_changed(self.opacity_slider.value())
        self._show_idle()

    def _build_content(self) -> QWidget:
        content = QWidget(self)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Evidence for", content))
        controls.addWidget(self.class_combo, 1)
        controls.addSpacing(12)
        controls.addWidget(QLabel("Opacity", content))
        controls.addWidget(self.opacity_slider, 1)
        controls.addWidget(self.opacity_label)
        pictures = QGridLayout()
        pictures.setHorizontalSpacing(12)
        pictures.addWidget(self.picture_view, 0, 0)
        pictures.addWidget(self.overlay_view, 0, 1)
        pictures.addWidget(self.picture_title, 1, 0)
        pictures.addWidget(self.overlay_title, 1, 1)
        pictures.addWidget(self.legend, 2, 1)
        pictures.setColumnStretch(2, 1)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addLayout(pictures)
        layout.addWidget(self.caption_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        return content

    @property
    def activation(self) -> ActivationMap | None:
        """The map on screen, if any."""
        return self._activation

    @property
    def is_busy(self) -> bool:
        """Whether a map of this panel is still being computed (superseded requests included)."""
        return bool(self._running)

    def set_model(self, path: Path | None) -> None:
        """Explain with another model (a checkpoint, run folder or ensemble manifest), or none."""
        path = Path(path) if path is not None else None
        if path == self._model_path:
            return
        self._model_path = path
        self._request(None, fresh=True)

    def show_image(self, path: Path, true_label: str | None = None) -> None:
        """Show the map of ``path`` for its predicted class; ``true_label`` goes into the caption."""
        self._image_path = Path(path)
        self._true_label = true_label
        self._request(None, fresh=True)

    def _request(self, class_index: int | None, *, fresh: bool) -> None:
        """Start computing a map, superseding any earlier request.

        Args:
            class_index: the class to explain; None for the predicted one.
            fresh: a new image or model, so the class list must be rebuilt from the result.
        """
        if self._worker is not None:
            self._worker.abort()
            self._worker = None
        if self._model_path is None or self._image_path is None:
            self._show_idle()
            return
        self._fresh = fresh
        if self._stack.currentIndex() == 0:
            self.message_panel.show_message("Computing the activation map…", self._image_path.name, busy=True)
        else:
            # Keep the last map on screen until the next one replaces it: no flashing while clicking through.
            self.status_label.setText(f"Computing the map of {self._image_path.name}…")
        self.class_combo.setEnabled(False)
        worker = run_in_thread_pool(_cam_job, self._model_path, self._image_path, class_index)
        self._worker = worker
        self._running.add(worker)
        worker.signals.returned.connect(self._on_worker_returned)
        worker.signals.errored.connect(self._on_worker_errored)
        worker.signals.finished.connect(self._on_worker_finished)

    def _is_current(self) -> bool:
        return self._worker is not None and self.sender() is self._worker.signals

    def _on_worker_returned(self, activation: ActivationMap | None) -> None:
        if not self._is_current() or activation is None:
            return
        self._worker = None
        self._activation = activation
        if self._fresh:
            self._fill_class_combo(activation)
        self.class_combo.setEnabled(True)
        self._render(activation)
        self._stack.setCurrentIndex(1)
        self.map_shown.emit(activation)

    def _on_worker_errored(self, error: BaseException) -> None:
        if not self._is_current():
            return
        self._worker = None
        message = str(error) or type(error).__name__
        self._activation = None
        self.message_panel.show_message("Cannot show the activation map", message)
        self._stack.setCurrentWidget(self.message_panel)
        self.cam_failed.emit(message)

    def _on_worker_finished(self) -> None:
        self._running = {worker for worker in self._running if worker.signals is not self.sender()}

    def _show_idle(self) -> None:
        self._activation = None
        title = NO_MODEL_TITLE if self._model_path is None else EMPTY_TITLE
        detail = "Red marks where the model found the most evidence for a class, blue where it found none."
        self.message_panel.show_message(title, detail)
        self._stack.setCurrentWidget(self.message_panel)

    def _fill_class_combo(self, activation: ActivationMap) -> None:
        self.class_combo.clear()
        self.class_combo.addItem(f"predicted: {activation.class_name} {activation.probability:.0%}", None)
        order = sorted(range(len(activation.classes)), key=lambda index: -activation.probabilities[index])
        for index in order:
            if index != activation.class_index:
                self.class_combo.addItem(f"{activation.classes[index]} {_percent(activation.probabilities[index])}",
                                         index)

    def _on_class_combo_activated(self, _index: int) -> None:
        if self._activation is None:
            return
        wanted = self.class_combo.currentData()
        class_index = _predicted_index(self._activation) if wanted is None else wanted
        if class_index != self._activation.class_index:
            self._request(class_index, fresh=False)

    def _on_opacity_slider_value_changed(self, value: int) -> None:
        self.opacity_label.setText(f"{value}%")
        if self._activation is not None:
            self.overlay_view.set_image(pil_to_qimage(overlay(self._activation, value / 100, COLORMAP)))

    def _render(self, activation: ActivationMap) -> None:
        self.picture_view.set_image(pil_to_qimage(activation.image))
        self.overlay_view.set_image(pil_to_qimage(overlay(activation, self.opacity_slider.value() / 100, COLORMAP)))
        width, height = activation.image.size
        self.picture_title.setText(f"As the model sees it ({width}×{height})")
        self.overlay_title.setText(f"Evidence for {activation.class_name}")
        self.caption_label.setText(self._caption(activation))
        self.status_label.setText("")

    def _caption(self, activation: ActivationMap) -> str:
        predicted = _predicted_index(activation)
        predicted_name = activation.classes[predicted]
        parts = []
        if self._true_label is not None:
            parts.append(f"True: <b>{escape(self._true_label)}</b>")
        if self._true_label is None:
            tint = self.palette().color(QPalette.ColorRole.WindowText)
        elif self._true_label == predicted_name:
            tint = ok_color(self.palette())
        else:
            tint = severity_color("error", self.palette())
        parts.append(f"Predicted: <b style='color:{tint.name()}'>{escape(predicted_name)}</b> "
                     f"{_percent(activation.probabilities[predicted])}")
        if activation.class_index != predicted:
            parts.append(f"Showing: <b>{escape(activation.class_name)}</b> {_percent(activation.probability)}")
        rows, columns = activation.grid
        details = [f"Layer {escape(activation.layer)} ({rows}×{columns} cells)"]
        if activation.members:
            details.append(f"averaged over {len(activation.members)} ensemble members")
        if self._image_path is not None:
            details.append(f"{escape(self._image_path.name)}")
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        return " · ".join(parts) + f"<br><span style='color:{muted}'>" + " · ".join(details) + "</span>"


class _Legend(QWidget):
    """A thin colour bar of the map's scale, from "no evidence" to "strongest"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedSize(IMAGE_SIDE, 2 * self.fontMetrics().height() + 4)

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QPainter(self)
        bar = QRectF(0, 0, self.width(), self.fontMetrics().height() * 0.6)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        for position, color in _JET_STOPS:
            gradient.setColorAt(position, QColor(color))
        painter.fillRect(bar, gradient)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        text = QRectF(0, bar.bottom() + 2, self.width(), self.fontMetrics().height())
        painter.drawText(text, Qt.AlignmentFlag.AlignLeft, "no evidence")
        painter.drawText(text, Qt.AlignmentFlag.AlignRight, "strongest")


def _picture_view(parent: QWidget) -> FittedImage:
    view = FittedImage(parent)
    view.setFixedSize(IMAGE_SIDE, IMAGE_SIDE)
    view.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
    return view


def _small_label(parent: QWidget) -> QLabel:
    label = QLabel(parent)
    label.setMaximumWidth(IMAGE_SIDE)
    return label


def _predicted_index(activation: ActivationMap) -> int:
    probabilities = activation.probabilities
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def _percent(probability: float) -> str:
    """93%, or 0.4% below 1% so that small shares do not all read 0%."""
    return f"{probability:.0%}" if probability >= 0.01 or probability == 0 else f"{probability:.1%}"


def _cam_job(model_path: Path, image_path: Path, class_index: int | None, *, progress: Callable[[int, int], None],
             should_abort: Callable[[], bool]) -> ActivationMap | None:
    # A request superseded before a pool thread picked it up is not computed at all.
    if should_abort():
        return None
    from engine.evaluation.gradcam import class_activation_map  # torch and timm: loaded on first use

    return class_activation_map(model_path, image_path, class_index=class_index)

"""The live augmentation preview: a grid of augmented copies of the user's own images.

Every change of the config restarts a short debounce timer; then the grid is drawn
off the GUI thread by ``augment.preview_dataset`` with the backbone's data settings,
one drawing at a time, and a result made for settings that have changed since is dropped.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image
from PySide6.QtCore import Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QFont, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import AugmentConfig, RunConfig
from engine.core.errors import ConfigError
from gui.services.config_state import ConfigState
from gui.services.workers import Worker
from gui.style import severity_color
from gui.widgets.fitted_image import FittedImage, pil_to_qimage
from gui.widgets.message_panel import MessagePanel

if TYPE_CHECKING:
    from engine.data.settings import DataSettings

DEBOUNCE_MS = 300
"""Quiet time after the last change before a new preview is drawn."""

PREVIEW_COPIES = 9
"""Augmented copies in the grid: three of the user's images, three copies each."""

UPDATING_TEXT = "Updating…"
NO_DATA_TITLE = "No images to preview"
NO_DATA_DETAIL = (
    "Open a data folder on the Data page: the preview then shows your own images "
    "with these augmentations, as training would see them."
)
LEGEND_TEXT = (
    "Each row is one of your images: first as the model sees it in evaluation, then random "
    "training copies captioned with the operations that ran."
)


@dataclass(frozen=True)
class PreviewRequest:
    """Everything a preview depends on; two equal requests draw the same grid.

    Attributes:
        data_path: the dataset folder or CSV.
        backbone: timm model name, whose input size, mean and std the tiles use.
        input_size: the config's square input side, or None for the backbone's own.
        augment: the augmentation to show.
        seed: seed of the image picks and of every random draw.
        count: augmented copies in all.
    """

    data_path: str
    backbone: str
    input_size: int | None
    augment: AugmentConfig
    seed: int
    count: int = PREVIEW_COPIES


@functools.lru_cache(maxsize=16)
def backbone_data_settings(backbone: str, input_size: int | None) -> DataSettings:
    """The data settings of ``backbone`` at ``input_size``, from a randomly initialised model (no download).

    Cached per (backbone, input size): building a large model takes seconds.

    Raises:
        engine.core.errors.BackboneUnavailable: an unknown backbone.
        ConfigError: an input size the backbone does not accept.
    """
    from engine.data.settings import resolve_data_settings  # torch and timm: loaded on first use
    from engine.models.backbones import create_model

    loaded = create_model(backbone, num_classes=2, weights="none")
    return resolve_data_settings(loaded.model, input_size)


def draw_preview(
    request: PreviewRequest, *, progress: Callable[[int, int], None], should_abort: Callable[[], bool]
) -> Image.Image:
    """Draw the preview grid of ``request``; runs on a worker thread (``progress`` and ``should_abort`` unused).

    Raises:
        engine.core.errors.TransferStudioError: no usable dataset, backbone or augmentation.
    """
    from augment import preview_dataset  # albumentations and torch: loaded on first use

    settings = backbone_data_settings(request.backbone, request.input_size)
    return preview_dataset(request.data_path, request.augment, request.count, settings=settings, seed=request.seed)


class AugmentPreview(QWidget):
    """Follows a ``ConfigState`` and shows its augmentation applied to the dataset's images.

    Drawing happens only while the widget is on screen; a change made while it is
    hidden is drawn when it is shown again.

    Signals:
        preview_updated: the PIL image of a newly shown preview.
    """

    preview_updated = Signal(object)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._seed = 0
        self._image: Image.Image | None = None
        self._wanted: PreviewRequest | None = None  # the request the latest settings call for
        self._running: PreviewRequest | None = None  # the request being drawn
        self._shown: PreviewRequest | None = None  # the request whose outcome is on screen
        self._shown_problem = ""  # why that outcome is not a new grid, if it is not
        self._blocked = ""  # why no preview can be asked for: a refused augment.* edit
        self._thread_pool = QThreadPool(self)
        self._thread_pool.setMaxThreadCount(1)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._on_debounce_timeout)

        title = QLabel("Preview", self)
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        title.setFont(font)
        self.status_label = QLabel(self)
        self.status_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.problem_label = QLabel(self)
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label.hide()
        self.actual_size_check = QCheckBox("Actual size", self)
        self.actual_size_check.setToolTip("Show the grid pixel for pixel (scroll to move), to read the captions")
        self.actual_size_check.toggled.connect(self._on_actual_size_check_toggled)
        self.shuffle_button = QPushButton("Shuffle", self)
        self.shuffle_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_BrowserReload))
        self.shuffle_button.setToolTip("Other images and other random draws")
        self.shuffle_button.clicked.connect(self.shuffle)
        header = QHBoxLayout()
        header.addWidget(title)
        header.addWidget(self.status_label, 1)
        header.addWidget(self.actual_size_check)
        header.addWidget(self.shuffle_button)

        self.image_view = FittedImage(self)
        self._scroll = QScrollArea(self)
        self._scroll.setWidget(self.image_view)
        self._scroll.setWidgetResizable(True)
        self._scroll.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._scroll.setFrameShape(QFrame.Shape.NoFrame)
        self._scroll.viewport().setAutoFillBackground(False)  # the grid sits on the page, not on a white box
        self.image_view.setAutoFillBackground(False)
        self.message_panel = MessagePanel(self)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self.message_panel)
        self._stack.addWidget(self._scroll)
        legend = QLabel(LEGEND_TEXT, self)
        legend.setWordWrap(True)
        legend.setForegroundRole(QPalette.ColorRole.PlaceholderText)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.addLayout(header)
        layout.addWidget(legend)
        layout.addWidget(self.problem_label)
        layout.addWidget(self._stack, 1)

        state.changed.connect(self._on_state_changed)
        state.field_error.connect(self._on_state_field_error)
        self._on_state_changed(state.config)

    @property
    def seed(self) -> int:
        """Seed of the preview being shown or drawn."""
        return self._seed

    @property
    def image(self) -> Image.Image | None:
        """The preview on screen, if any."""
        return self._image if self._stack.currentWidget() is self._scroll else None

    @property
    def is_updating(self) -> bool:
        """Whether a preview is waiting for the debounce timer or being drawn."""
        return self._debounce.isActive() or self._running is not None

    def shuffle(self) -> None:
        """Draw other images with other random augmentations."""
        self._seed = random.Random(self._seed).randrange(1, 2**31)
        self._schedule()

    def refresh(self) -> None:
        """Draw again with the same settings (the images on disk changed)."""
        self._shown = None
        self._wanted = None
        self._schedule()

    def wait_for_done(self, msecs: int) -> bool:
        """Block until no preview is being drawn; only for shutdown and tests.

        Returns:
            False if a drawing was still running after ``msecs`` milliseconds.
        """
        self._debounce.stop()
        return self._thread_pool.waitForDone(msecs)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not event.spontaneous():  # the window system's own show events change nothing
            self._schedule()

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, _config: RunConfig) -> None:
        self._schedule()

    def _on_state_field_error(self, path: str, _message: str) -> None:
        if path.startswith("augment."):
            self._schedule()

    def _on_debounce_timeout(self) -> None:
        if not self.isVisible():
            return  # showEvent schedules again
        config = self._state.config
        if not config.data.path:
            self._wanted, self._shown, self._shown_problem, self._blocked = None, None, "", ""
            self._set_status("")
            self.problem_label.hide()
            self.message_panel.show_message(NO_DATA_TITLE, NO_DATA_DETAIL)
            self._stack.setCurrentWidget(self.message_panel)
            return
        refused = [message for path, message in self._state.errors.items() if path.startswith("augment.")]
        self._blocked = refused[0] if refused else ""
        if not refused:
            self._wanted = PreviewRequest(
                data_path=config.data.path, backbone=config.model.backbone, input_size=config.data.input_size,
                augment=config.augment, seed=self._seed,
            )
        self._start_wanted()

    def _on_worker_returned(self, image: Image.Image) -> None:
        request, self._running = self._running, None
        if request == self._wanted:
            self._shown, self._shown_problem = request, ""
            self._image = image
            self.image_view.set_image(pil_to_qimage(image))
            self._fit_image_view()
            self._stack.setCurrentWidget(self._scroll)
            self.preview_updated.emit(image)
        self._start_wanted()

    def _on_worker_errored(self, error: Exception) -> None:
        request, self._running = self._running, None
        if request == self._wanted:
            self._shown = request
            if isinstance(error, ConfigError) and self.image is not None:
                # A combination of controls the engine refuses: keep the last grid beside why.
                self._shown_problem = str(error)
            else:
                self._shown_problem = ""
                self.message_panel.show_message("Cannot preview these images", str(error))
                self._stack.setCurrentWidget(self.message_panel)
        self._start_wanted()

    def _on_actual_size_check_toggled(self, _checked: bool) -> None:
        self._fit_image_view()

    # Helpers -------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        self._debounce.start()

    def _start_wanted(self) -> None:
        """Draw the wanted preview unless it is on screen or one is being drawn (its end calls back here)."""
        if self._running is not None:
            return
        wanted = self._wanted
        if wanted is not None and wanted != self._shown and not self._blocked:
            self._running = wanted
            self._set_status(UPDATING_TEXT)
            self.problem_label.hide()
            if self.image is None:
                self.message_panel.show_message("Drawing the preview…", busy=True)
                self._stack.setCurrentWidget(self.message_panel)
            worker = Worker(draw_preview, wanted)
            worker.signals.returned.connect(self._on_worker_returned)
            worker.signals.errored.connect(self._on_worker_errored)
            worker.start(self._thread_pool)
            return
        self._set_status("")
        if wanted is not None or self._blocked:
            self._show_problem(self._blocked or self._shown_problem)

    def _fit_image_view(self) -> None:
        actual = self.actual_size_check.isChecked()
        self._scroll.setWidgetResizable(not actual)
        if actual:
            self.image_view.resize(self.image_view.sizeHint())

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _show_problem(self, text: str) -> None:
        """Say why the preview is not up to date: above the last grid, or in its place when there is none."""
        if text and self.image is None:
            self.problem_label.hide()
            self.message_panel.show_message("No preview for these settings", text)
            self._stack.setCurrentWidget(self.message_panel)
            return
        color = severity_color("error", self.palette()).name()
        self.problem_label.setStyleSheet(f"color: {color};")
        self.problem_label.setText(f"Not updated: {text}")
        self.problem_label.setVisible(bool(text))

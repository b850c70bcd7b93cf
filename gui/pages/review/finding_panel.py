"""The Review page's right-hand panel: the chosen finding's photo (and its near-copy), why, and the actions.

The photos are decoded on pool threads; the buttons only ask (signals), the page decides and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.review.finding import Finding
from gui.services.workers import Worker, run_in_thread_pool
from gui.widgets.fitted_image import FittedImage, decode_preview, pil_to_qimage

_KIND_TITLES = {"label_issue": "Possible wrong label", "near_duplicate": "Near-duplicate", "outlier": "Outlier"}


class FindingPanel(QWidget):
    """Shows one finding and offers Relabel (to the suggestion or any class), Exclude, Keep and Undo.

    Signals:
        relabel_requested: the class (str) to give the photo.
        exclude_requested: leave the photo out.
        keep_requested: the label is right; dismiss the finding.
        undo_requested: take back the latest decision.
    """

    relabel_requested = Signal(str)
    exclude_requested = Signal()
    keep_requested = Signal()
    undo_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._finding: Finding | None = None
        self._workers: dict[str, Worker] = {}  # the latest decode of each picture slot
        self._views: dict[Worker, FittedImage] = {}  # where each running decode goes
        self.title_label = QLabel(self)
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.photo_view = FittedImage(self)
        self.other_view = FittedImage(self)
        self.other_caption = QLabel(self)
        self.other_caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.photo_caption = QLabel(self)
        self.photo_caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.reason_label = QLabel(self)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.suggested_button = QPushButton(self)
        self.suggested_button.clicked.connect(self._on_suggested_button_clicked)
        self.class_combo = QComboBox(self)
        self.class_combo.setToolTip("Any class; the number keys 1-9 pick the classes in this order")
        self.relabel_button = QPushButton("Relabel", self)
        self.relabel_button.clicked.connect(self._on_relabel_button_clicked)
        self.exclude_button = QPushButton("Exclude (E)", self)
        self.exclude_button.setToolTip("Leave this photo out of training and evaluation; the file stays where it is")
        self.exclude_button.clicked.connect(self.exclude_requested)
        self.keep_button = QPushButton("Keep (K)", self)
        self.keep_button.setToolTip("The label is right: hide this finding from now on")
        self.keep_button.clicked.connect(self.keep_requested)
        self.undo_button = QPushButton("Undo (Ctrl+Z)", self)
        self.undo_button.clicked.connect(self.undo_requested)

        pictures = QGridLayout()
        pictures.addWidget(self.photo_view, 0, 0)
        pictures.addWidget(self.other_view, 0, 1)
        pictures.addWidget(self.photo_caption, 1, 0)
        pictures.addWidget(self.other_caption, 1, 1)
        pictures.setRowStretch(0, 1)
        relabel_row = QHBoxLayout()
        relabel_row.addWidget(self.class_combo, 1)
        relabel_row.addWidget(self.relabel_button)
        actions = QHBoxLayout()
        for button in (self.exclude_button, self.keep_button, self.undo_button):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.title_label)
        layout.addLayout(pictures, 1)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.suggested_button)
        layout.addLayout(relabel_row)
        layout.addLayout(actions)
        for view in (self.photo_view, self.other_view):
            view.setMinimumSize(160, 160)
            view.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.show_finding(None, (), "", can_undo=False)

    @property
    def finding(self) -> Finding | None:
        """The finding shown, if any."""
        return self._finding

    def show_finding(self, finding: Finding | None, classes: Sequence[str], status: str, *, can_undo: bool) -> None:
        """Show ``finding`` (None: nothing chosen), whose decision so far is ``status`` (empty: none)."""
        changed = finding != self._finding
        self._finding = finding
        has = finding is not None
        for widget in (self.suggested_button, self.class_combo, self.relabel_button, self.exclude_button,
                       self.keep_button):
            widget.setEnabled(has)
        self.undo_button.setEnabled(can_undo)
        if finding is None:
            self.title_label.setText("Choose a finding on the left")
            self.reason_label.setText("Arrow keys move between findings; 1-9 relabel to a class, E excludes, "
                                      "K keeps, Ctrl+Z undoes.")
            self.status_label.clear()
            self.photo_caption.clear()
            self.other_view.setVisible(False)
            self.other_caption.setVisible(False)
            self.photo_view.set_image(QImage())
            self.suggested_button.setText("Relabel to the suggestion")
            return
        self.title_label.setText(f"{_KIND_TITLES.get(finding.kind, finding.kind)} #{finding.rank}: "
                                 f"{Path(finding.path).name}")
        self.reason_label.setText(finding.reason)
        self.status_label.setText(f"Decided: {status}" if status else "")
        self.photo_caption.setText(f"this photo: '{finding.given_label}' ({finding.split})")
        current = self.class_combo.currentText()
        self.class_combo.clear()
        self.class_combo.addItems([f"{index}: {name}" if index <= 9 else name
                                   for index, name in enumerate(classes, start=1)])
        for row, name in enumerate(classes):
            self.class_combo.setItemData(row, name)
        suggestion = finding.suggested_label if finding.kind == "label_issue" else ""
        # The likeliest other class first: the suggestion, or a near-copy's label; else as it was.
        likely = list(classes).index(finding.suggested_label) if finding.suggested_label in classes else -1
        self.class_combo.setCurrentIndex(likely if likely >= 0 else max(0, self.class_combo.findText(current)))
        self.suggested_button.setVisible(bool(suggestion))
        self.suggested_button.setText(f"Relabel to '{suggestion}' (Enter)")
        twin = finding.kind == "near_duplicate" and bool(finding.other_path)
        self.other_view.setVisible(twin)
        self.other_caption.setVisible(twin)
        if twin:
            self.other_caption.setText(f"similar photo: '{finding.suggested_label}'")
        if changed:
            # Blank until decoded, so that a photo is never shown beside another finding's reason.
            self.photo_view.set_image(QImage())
            self.other_view.set_image(QImage())
            self._load("photo", Path(finding.path), self.photo_view)
            if twin:
                self._load("other", Path(finding.other_path), self.other_view)

    @property
    def is_loading(self) -> bool:
        """Whether a photo of the finding shown is still being decoded."""
        return bool(self._workers)

    def suggestion(self) -> str:
        """The class a label issue suggests, else empty."""
        return self._finding.suggested_label if self._finding and self._finding.kind == "label_issue" else ""

    def _on_suggested_button_clicked(self) -> None:
        if self.suggestion():
            self.relabel_requested.emit(self.suggestion())

    def _on_relabel_button_clicked(self) -> None:
        name = self.class_combo.currentData()
        if isinstance(name, str):
            self.relabel_requested.emit(name)

    def _load(self, slot: str, path: Path, view: FittedImage) -> None:
        previous = self._workers.pop(slot, None)
        if previous is not None:
            previous.abort()
        worker = run_in_thread_pool(decode_preview, path)
        self._workers[slot] = worker
        self._views[worker] = view
        worker.signals.returned.connect(self._on_worker_returned)
        worker.signals.errored.connect(self._on_worker_errored)
        worker.signals.finished.connect(self._on_worker_finished)

    def _on_worker_returned(self, image: Image.Image) -> None:
        self._show_decoded(image)

    def _on_worker_errored(self, _error: Exception) -> None:
        # A photo that cannot be decoded any more (moved, damaged) shows as a grey square.
        self._show_decoded(Image.new("RGB", (8, 8), (128, 128, 128)))

    def _show_decoded(self, image: Image.Image) -> None:
        worker = self._sending_worker()
        if worker is not None and worker in self._workers.values():  # else another finding was chosen since
            self._views[worker].set_image(pil_to_qimage(image))

    def _on_worker_finished(self) -> None:
        worker = self._sending_worker()
        if worker is not None:
            self._views.pop(worker, None)
            self._workers = {slot: each for slot, each in self._workers.items() if each is not worker}

    def _sending_worker(self) -> Worker | None:
        sender = self.sender()
        return next((worker for worker in self._views if worker.signals is sender), None)


"""The "Review" page: the data doctor's findings as cards, and one key per decision.

``main.py review`` runs as a child process (``CommandRunner``) and writes the project's
``review.json`` and ``review.csv``; the page shows the findings sorted by score, with the photo and
the reason beside the chosen card. Relabel, Exclude and Keep write through at once to the project's
files (``engine.review.decisions``) and undo with Ctrl+Z; "Apply to folders" moves relabelled photos
between class folders (``engine.review.folder_moves``) with its own undo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStyle,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import RunConfig
from engine.core.errors import DatasetError
from engine.core.paths import project_dir_for
from engine.data.health import HealthReport
from engine.review.decisions import ReviewDecisions
from engine.review.finding import FINDING_KINDS, Finding
from engine.review.folder_moves import apply_relabels_to_folders, moves_log, undo_last_apply
from engine.review.saved_review import SavedReview, read_review
from gui.pages.base import Page
from gui.pages.review.dataset_map import DatasetMap
from gui.pages.review.finding_panel import FindingPanel
from gui.pages.review.label_next_view import LabelNextView
from gui.services.command_runner import CommandRunner
from gui.services.config_state import ConfigState
from gui.widgets.image_gallery import GalleryImage, ImageGallery
from gui.widgets.message_panel import MessageStack
from gui.widgets.page_header import PageHeader

REVIEW_JSON = "review.json"
REVIEW_CSV = "review.csv"
_KIND_FILTERS = {"": "All findings", "label_issue": "Possible wrong labels", "near_duplicate": "Near-duplicates",
                 "outlier": "Outliers"}
_RELATIONS = {"across_classes": "labelled differently", "across_splits": "in another split",
              "within_class": "same class"}


class ReviewPage(Page):
    """Run the data doctor and decide about each finding.

    Signals:
        decisions_changed: the project's relabels, exclusions or kept findings changed.
        files_changed: photos were moved between class folders or added to the dataset (it needs a rescan).

    Args:
        state: the config being edited; its ``data.path`` names the dataset and ``model.backbone``
            the features compared (cached features of a trained backbone are reused).
        parent: the parent widget.
    """

    title = "Review"
    icon = QStyle.StandardPixmap.SP_FileDialogContentsView

    decisions_changed = Signal()
    files_changed = Signal()

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._data_path: Path | None = None
        self._project_dir: Path | None = None
        self._decisions: ReviewDecisions | None = None
        self._classes: tuple[str, ...] = ()
        self._findings: list[Finding] = []
        self._shown: list[Finding] = []
        self._load_error = ""  # why the project's last review cannot be shown
        self._review: SavedReview | None = None  # the project's last review, as shown
        self._cancelling = False
        self.runner = CommandRunner(self)
        self.runner.line_printed.connect(self._on_runner_line_printed)
        self.runner.finished.connect(self._on_runner_finished)

        self.header = PageHeader(self.title, parent=self)
        self.review_button = QPushButton(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay),
                                         "Review photos", self)
        self.review_button.setToolTip("Compare every photo with the others through the backbone's features: "
                                      "possible wrong labels, near-duplicates and outliers")
        self.review_button.clicked.connect(self.review)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.clicked.connect(self.cancel)
        self.kind_combo = QComboBox(self)
        for kind, text in _KIND_FILTERS.items():
            self.kind_combo.addItem(text, kind)
        self.kind_combo.currentIndexChanged.connect(self._show_findings)
        self.decided_check = QCheckBox("Show decided", self)
        self.decided_check.setToolTip("Also show findings already relabelled, excluded or kept")
        self.decided_check.toggled.connect(self._show_findings)
        controls = QHBoxLayout()
        for widget in (self.review_button, self.stop_button, self.kind_combo, self.decided_check):
            controls.addWidget(widget)
        controls.addStretch(1)

        self.gallery = ImageGallery(caption_lines=2, parent=self)
        self.gallery.set_empty_text("Nothing to decide here: every finding of this kind was decided, or none was "
                                    "found. Tick “Show decided” to see them again.")
        self.gallery.image_chosen.connect(self._on_gallery_image_chosen)
        self.panel = FindingPanel(self)
        self.panel.relabel_requested.connect(self.relabel)
        self.panel.exclude_requested.connect(self.exclude)
        self.panel.keep_requested.connect(self.keep)
        self.panel.undo_requested.connect(self.undo)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.gallery)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([600, 400])  # scaled to the page's width: the cards get the larger share
        self.map_view = DatasetMap(self)
        self.map_view.photo_clicked.connect(self._on_map_view_photo_clicked)
        self.map_view.relabel_requested.connect(self.relabel_all)
        self.map_view.exclude_requested.connect(self.exclude_all)
        self.label_next = LabelNextView(self)
        self.label_next.labels_changed.connect(self.files_changed)
        # Findings and the map need a review; labelling the next photos needs only a model.
        self._stack = MessageStack(self.splitter, self)
        self.message_panel = self._stack.message_panel
        self.findings_tab = self._stack
        self.map_tab = MessageStack(self.map_view, self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.findings_tab, "Findings")
        self.tabs.addTab(self.map_tab, "Map")
        self.tabs.addTab(self.label_next, "Label next")
        self.tabs.setDocumentMode(True)
        self.message_panel.action_clicked.connect(self.review)

        self.apply_button = QPushButton("Apply relabels to folders…", self)
        self.apply_button.setToolTip("Move every relabelled photo into its new class folder (undoable)")
        self.apply_button.clicked.connect(self._on_apply_button_clicked)
        self.undo_moves_button = QPushButton("Undo folder moves", self)
        self.undo_moves_button.setToolTip("Move the photos of the latest apply back to their old folders")
        self.undo_moves_button.clicked.connect(self.undo_folder_moves)
        self.export_button = QPushButton("Export changes as CSV…", self)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.notice_label = QLabel(self)
        self.notice_label.setWordWrap(True)
        bottom = QHBoxLayout()
        for widget in (self.apply_button, self.undo_moves_button, self.export_button):
            bottom.addWidget(widget)
        bottom.addWidget(self.notice_label, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.header)
        layout.addLayout(controls)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(bottom)
        self.gallery.installEventFilter(self)
        state.changed.connect(self._on_state_changed)
        self.refresh()

    # Public API ------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a review is running."""
        return self.runner.is_running

    @property
    def shown_findings(self) -> list[Finding]:
        """The cards on screen, in order."""
        return list(self._shown)

    def set_report(self, report: HealthReport) -> None:
        """The scan's classes are those photos can be labelled with."""
        self.label_next.set_classes(report.classes)

    def refresh(self) -> None:
        """Follow the open project: read its last review and its decisions again."""
        data_path = self._state.config.data.path
        self._data_path = Path(data_path) if data_path else None
        project_dir = project_dir_for(data_path) if data_path else None
        if project_dir != self._project_dir:
            self._project_dir = project_dir
            self._findings, self._classes, self._review = [], (), None
            self._decisions = None
            if project_dir is not None and not self.is_running:
                self._load_review()
            self.label_next.set_project(self._data_path, project_dir)
            self._show_findings()
        elif self._decisions is not None:
            try:
                self._decisions.reload()
            except DatasetError as error:
                self._notice(str(error))
            self._update_cards()

    def review(self) -> None:
        """Start ``main.py review`` on the open dataset (results land in the project folder)."""
        if self.is_running or self._data_path is None or self._project_dir is None:
            return
        backbone = self._state.config.model.backbone
        self.runner.start("review", [str(self._data_path), "--backbone", backbone,
                                     "--csv", str(self._project_dir / REVIEW_CSV),
                                     "--json", str(self._project_dir / REVIEW_JSON)])
        self._stack.show_message("Reviewing the photos…", f"features of {backbone}", busy=True)
        self._update_controls()

    def cancel(self) -> None:
        """Stop the running review (the last finished one stays)."""
        if self.is_running:
            self._cancelling = True
            self.runner.stop()

    def choose(self, row: int) -> None:
        """Choose the card of ``row`` as a click would."""
        self.gallery.choose(row)

    def relabel(self, label: str) -> None:
        """Give the chosen card's photo the class ``label`` (kept in the project; the file stays)."""
        finding = self.panel.finding
        if finding is not None and self._decide(lambda d: d.relabel(Path(finding.path), label)):
            self._advance()

    def exclude(self) -> None:
        """Leave the chosen card's photo out of training and evaluation."""
        finding = self.panel.finding
        if finding is not None and self._decide(lambda d: d.exclude(Path(finding.path))):
            self._advance()

    def keep(self) -> None:
        """Dismiss the chosen finding: its label is right."""
        finding = self.panel.finding
        if finding is not None and self._decide(lambda d: d.keep(Path(finding.path), finding.kind)):
            self._advance()

    def relabel_all(self, paths: list[Path], label: str) -> None:
        """Give every photo of ``paths`` (a selection on the map) the class ``label``: one undo."""
        self._decide(lambda decisions: decisions.relabel_all(paths, label))

    def exclude_all(self, paths: list[Path]) -> None:
        """Leave every photo of ``paths`` (a selection on the map) out: one undo."""
        self._decide(lambda decisions: decisions.exclude_all(paths))

    def undo(self) -> None:
        """Take back the latest decision and choose its card."""
        path = self._decisions.undo_target if self._decisions is not None else None
        if path is None or not self._decide(lambda decisions: decisions.undo()):
            return
        row = next((row for row, finding in enumerate(self._shown) if Path(finding.path) == path), None)
        if row is not None:
            self.choose(row)

    def apply_to_folders(self) -> bool:
        """Move relabelled photos into their new class folders; False (with the reason shown) when refused."""
        if self._data_path is None or self._project_dir is None:
            return False
        try:
            done = apply_relabels_to_folders(self._data_path, self._project_dir)
        except (DatasetError, OSError) as error:
            self._notice(f"Nothing more was moved: {error}")
            return False
        skipped = f"; {len(done.skipped)} not moved: {done.skipped[0]}" if done.skipped else ""
        self._notice(f"Moved {len(done.moved)} photos into their new class folders{skipped}. "
                     "Review again to see the folders as they are now.")
        self._after_folder_moves()
        return True

    def undo_folder_moves(self) -> bool:
        """Move the photos of the latest apply back; False (with the reason shown) when there is none."""
        if self._project_dir is None:
            return False
        try:
            done = undo_last_apply(self._project_dir)
        except (DatasetError, OSError) as error:
            self._notice(str(error))
            return False
        skipped = f"; {len(done.skipped)} not moved back: {done.skipped[0]}" if done.skipped else ""
        self._notice(f"Moved {len(done.moved)} photos back to their old class folders{skipped}.")
        self._after_folder_moves()
        return True

    def export_changes(self, file: Path) -> bool:
        """Write every relabel and exclusion of the project as CSV; False (with the reason shown) on failure."""
        if self._decisions is None:
            return False
        given = {Path(finding.path): finding.given_label for finding in self._findings}
        try:
            self._decisions.save_changes_csv(file, given)
        except OSError as error:
            self._notice(f"Cannot write {file}: {error}")
            return False
        self._notice(f"Changes saved to {file}")
        return True

    # Building --------------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The decision keys, while the cards have the focus (arrows move between them as usual)."""
        if watched is self.gallery and event.type() == QEvent.Type.KeyPress:
            assert isinstance(event, QKeyEvent)
            action = self._key_action(event)
            if action is not None:
                action()
                return True
        return super().eventFilter(watched, event)

    def _key_action(self, event: QKeyEvent) -> Callable[[], None] | None:
        if event.matches(QKeySequence.StandardKey.Undo):
            return self.undo
        if event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return None
        key = event.key()
        if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
            return lambda: self._relabel_to_class(key - Qt.Key.Key_1)
        return {Qt.Key.Key_E: self.exclude, Qt.Key.Key_K: self.keep, Qt.Key.Key_Return: self._relabel_to_suggestion,
                Qt.Key.Key_Enter: self._relabel_to_suggestion}.get(Qt.Key(key))

    def _load_review(self) -> None:
        assert self._project_dir is not None
        file = self._project_dir / REVIEW_JSON
        self._load_error = ""
        self._review = None
        self.header.summary_label.clear()
        try:
            self._decisions = ReviewDecisions(self._project_dir)
            if not file.exists():
                return
            review = read_review(file)
        except DatasetError as error:
            self._findings, self._classes = [], ()
            self._load_error = str(error)
            return
        self._review = review
        self._classes, self._findings = review.classes, review.findings
        self.map_view.set_points(review.map, review.classes, review.findings)
        self.header.summary_label.setText(
            f"{review.photos} photos reviewed with {review.backbone}: " + ", ".join(
                f"{review.counts.get(kind, 0)} {_KIND_FILTERS[kind].lower()}" for kind in FINDING_KINDS))

    # Showing ---------------------------------------------------------------------------------------

    def _show_findings(self) -> None:
        if self.is_running:
            return
        kind = self.kind_combo.currentData()
        decided = self.decided_check.isChecked()
        self._shown = [finding for finding in self._findings if (not kind or finding.kind == kind)
                       and (decided or not self._status(finding))]
        self.gallery.set_images([self._card(finding) for finding in self._shown])
        self._update_controls()
        if self._review is not None and self._review.map:
            self.map_tab.show_content()
        else:
            self.map_tab.show_message("The map comes with a review",
                                      "Review the photos to see them laid out by what the backbone sees in them.")
        if self._project_dir is None:
            self._stack.show_message("No project open", "Open a folder of labelled photos on the Project page.")
        elif self._load_error:
            self._stack.show_message("The last review cannot be read", self._load_error,
                                     icon=QStyle.StandardPixmap.SP_MessageBoxWarning, action="Review again")
        elif self._review is None:
            self._stack.show_message(
                "Look for wrong labels, near-duplicates and outliers",
                "The data doctor compares every photo with the others through the backbone's features and lists "
                "what looks wrong, most suspicious first.", action="Review photos")
        else:
            self._stack.show_content()
            if self._shown:
                self.choose(0)
                self.gallery.setFocus()
            else:
                self._show_panel(None)

    def _card(self, finding: Finding) -> GalleryImage:
        status = self._status(finding)
        if finding.kind == "label_issue":
            headline = f"{finding.given_label} → {finding.suggested_label}"
        elif finding.kind == "near_duplicate":
            headline = f"copy, {_RELATIONS.get(finding.relation, finding.relation)}"
        else:
            headline = f"odd one in {finding.given_label}"
        detail = status or f"#{finding.rank} · score {finding.score:.2f}"
        severity = "info" if status else ("error" if finding.kind == "label_issue"
                                          or finding.relation == "across_classes" else "warning")
        return GalleryImage(Path(finding.path), f"{headline}\n{detail}", finding.reason, finding.given_label, severity)

    def _status(self, finding: Finding) -> str:
        return self._decisions.status(Path(finding.path), finding.kind) if self._decisions is not None else ""

    def _show_panel(self, finding: Finding | None) -> None:
        status = self._status(finding) if finding is not None else ""
        can_undo = self._decisions is not None and self._decisions.can_undo
        self.panel.show_finding(finding, self._classes, status, can_undo=can_undo)

    def _update_controls(self) -> None:
        running = self.is_running
        has_project = self._project_dir is not None
        self.review_button.setEnabled(has_project and not running)
        self.stop_button.setVisible(running)
        self.apply_button.setEnabled(has_project and not running)
        self.undo_moves_button.setEnabled(has_project and not running and moves_log(self._project_dir).is_file()
                                          if self._project_dir is not None else False)
        self.export_button.setEnabled(self._decisions is not None)

    def _notice(self, text: str) -> None:
        self.notice_label.setText(text)

    # Deciding --------------------------------------------------------------------------------------

    def _decide(self, action: Callable[[ReviewDecisions], object]) -> bool:
        """Run ``action(decisions)`` and show the cards anew; False (reason shown) when it failed."""
        if self._decisions is None or self.is_running:
            return False
        try:
            action(self._decisions)
        except (DatasetError, OSError) as error:
            self._notice(f"Not saved: {error}")
            return False
        self._notice("")
        self._update_cards()
        self.decisions_changed.emit()
        return True

    def _update_cards(self) -> None:
        """Caption the cards on screen anew (decisions changed), keeping the chosen one."""
        row = self.gallery.currentIndex().row()
        self.gallery.gallery_model.set_images([self._card(finding) for finding in self._shown])
        if 0 <= row < len(self._shown):
            self.gallery.choose(row)
            self._show_panel(self._shown[row])

    def _advance(self) -> None:
        row = self.gallery.currentIndex().row()
        if row + 1 < len(self._shown):
            self.choose(row + 1)

    def _relabel_to_suggestion(self) -> None:
        if self.panel.suggestion():
            self.relabel(self.panel.suggestion())

    def _relabel_to_class(self, index: int) -> None:
        if index < len(self._classes):
            self.relabel(self._classes[index])

    def _after_folder_moves(self) -> None:
        if self._decisions is not None:
            self._decisions.reload()
        self._show_findings()
        self.decisions_changed.emit()
        self.files_changed.emit()

    # Slots -----------------------------------------------------------------------------------------

    def _on_state_changed(self, _config: RunConfig) -> None:
        data_path = self._state.config.data.path
        if (project_dir_for(data_path) if data_path else None) != self._project_dir:
            self.refresh()

    def _on_map_view_photo_clicked(self, path: Path) -> None:
        row = next((row for row, finding in enumerate(self._shown) if Path(finding.path) == path), None)
        if row is None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
            return
        self.tabs.setCurrentWidget(self.findings_tab)
        self.choose(row)

    def _on_gallery_image_chosen(self, image: GalleryImage) -> None:
        row = self.gallery.currentIndex().row()
        self._show_panel(self._shown[row] if 0 <= row < len(self._shown) else None)

    def _on_runner_line_printed(self, line: str) -> None:
        if self.is_running:
            self.message_panel.detail_label.setText(line)

    def _on_runner_finished(self, succeeded: bool, message: str) -> None:
        cancelled, self._cancelling = self._cancelling, False
        if succeeded and self._project_dir is not None:
            self._load_review()
        self._show_findings()
        if not succeeded and not cancelled:
            self._stack.show_message("The review failed", message, icon=QStyle.StandardPixmap.SP_MessageBoxCritical,
                                     action="Review again")

    def _on_apply_button_clicked(self) -> None:
        answer = QMessageBox.question(
            self, "Apply relabels to folders",
            "Move every relabelled photo into the folder of its new class? "
            "“Undo folder moves” moves them back.")
        if answer == QMessageBox.StandardButton.Yes:
            self.apply_to_folders()

    def _on_export_button_clicked(self) -> None:
        start = str((self._project_dir or Path.home()) / "review_changes.csv")
        file, _ = QFileDialog.getSaveFileName(self, "Export the changes", start, "CSV files (*.csv)")
        if file:
            self.export_changes(Path(file))

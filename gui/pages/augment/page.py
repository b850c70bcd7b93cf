"""The "Augment" page: the augmentation preset, every control it sets, and a live preview of their effect.

An empty control means "the preset's value", shown in grey as the box's placeholder;
typing a value overrides it and "Reset" goes back to the preset. The controls are
``gui.widgets.fields`` editors bound to ``augment.*`` paths; the preview is ``AugmentPreview``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import AUGMENT_PRESETS, RANDOM_POLICIES, RunConfig
from engine.core.errors import ConfigError
from gui.pages.augment.preview_view import AugmentPreview
from gui.pages.base import Page
from gui.services.config_state import ConfigState
from gui.style import severity_color
from gui.widgets.fields import (
    OFF_TEXT,
    BoundField,
    ChoiceField,
    FractionField,
    IntegerField,
    NumberField,
    PairField,
    WholeNumberField,
    field_form,
    form_layout,
)

if TYPE_CHECKING:
    from augment import AugmentControls

PRESET_DESCRIPTIONS = {
    "none": "no augmentation: every image as the model sees it in evaluation",
    "light": "random crop and left-right flip",
    "standard": "light, plus rotation, colour jitter and cutout",
    "strong": "standard with tighter crops, plus blur, noise and RandAugment",
}
INTRO_TEXT = (
    "Empty boxes use the preset's value, shown in grey. Type a value to override it; "
    "Reset goes back to the preset."
)
FEATURE_VIEWS_WARNING = (
    "Feature extraction trains on cached features of unaugmented images unless Feature views is "
    "2 or more: only then do the augmentations above change training."
)
FEATURE_EXTRACTION_MIXING = (
    "Feature extraction trains the head on cached features: mixup blends them, but cutmix pastes "
    "pixels and so needs fine_tune or two_stage mode. Each extra feature view caches one more "
    "augmented copy of every training image."
)
FINE_TUNING_MIXING = "Feature views are used only in feature extraction mode."
CONTROLS_WIDTH = 380  # starting width of the controls column, in pixels; the preview gets the rest

# (group title, [(control, label)]) of the controls a preset sets, in the order the pipeline runs them.
CONTROL_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Crop, flips and rotation", (
        ("crop_scale", "Crop: area kept"), ("crop_ratio", "Crop: aspect ratio"),
        ("horizontal_flip", "Left-right flip"), ("vertical_flip", "Upside-down flip"),
        ("rotation_degrees", "Rotation (max °)"))),
    ("Colour, blur and noise", (
        ("color_jitter", "Colour jitter"), ("blur", "Blur (chance)"), ("noise", "Noise (chance)"))),
    ("Cutout", (
        ("cutout", "Cutout (chance)"), ("cutout_holes", "Holes"), ("cutout_size", "Hole side"))),
    ("Random operations", (
        ("random_policy", "Policy"), ("random_policy_ops", "Operations"),
        ("random_policy_magnitude", "Magnitude"))),
)
CONTROLS = tuple(name for _title, rows in CONTROL_GROUPS for name, _label in rows)


class PresetField(BoundField):
    """The augmentation preset as radio buttons, each with a one-line description."""

    def __init__(self, state: ConfigState, path: str = "augment.preset", parent: QWidget | None = None) -> None:
        super().__init__(state, path, parent)
        self.editor = QWidget(self)
        grid = QGridLayout(self.editor)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setColumnStretch(1, 1)
        self.buttons = QButtonGroup(self)
        for row, name in enumerate(AUGMENT_PRESETS):
            button = QRadioButton(name.capitalize(), self.editor)
            description = QLabel(PRESET_DESCRIPTIONS.get(name, ""), self.editor)
            description.setWordWrap(True)
            description.setForegroundRole(QPalette.ColorRole.PlaceholderText)
            self.buttons.addButton(button, row)
            grid.addWidget(button, row, 0, Qt.AlignmentFlag.AlignTop)
            grid.addWidget(description, row, 1)
        self.buttons.idToggled.connect(self._on_buttons_id_toggled)
        self._finish()

    def button(self, preset: str) -> QRadioButton:
        """The radio button of ``preset``."""
        button = self.buttons.button(AUGMENT_PRESETS.index(preset))
        assert isinstance(button, QRadioButton)
        return button

    def _on_buttons_id_toggled(self, _id: int, checked: bool) -> None:
        if checked:  # the button left also reports, unchecked
            self.commit()

    def _show(self, value: Any) -> None:
        self.button(value).setChecked(True)

    def _read(self) -> str:
        return AUGMENT_PRESETS[self.buttons.checkedId()]


class OverrideRow(QWidget):
    """A preset control: its field, a "Reset" shown while it overrides the preset, and a note on its effect."""

    def __init__(self, field: BoundField, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = field
        field.setParent(self)
        self.reset_button = QToolButton(self)
        self.reset_button.setText("Reset")
        self.reset_button.setAutoRaise(True)
        self.reset_button.setToolTip("Use the preset's value")
        policy = self.reset_button.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # rows keep their width whether overridden or not
        self.reset_button.setSizePolicy(policy)
        self.reset_button.clicked.connect(self._on_reset_button_clicked)
        self.note_label = QLabel(self)
        self.note_label.setWordWrap(True)
        self.note_label.hide()
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setHorizontalSpacing(4)
        layout.addWidget(field, 0, 0)
        layout.addWidget(self.reset_button, 0, 1, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.note_label, 1, 0, 1, 2)
        layout.setColumnStretch(0, 1)
        self.setToolTip(field.toolTip())

    def set_overridden(self, overridden: bool) -> None:
        """Show "Reset" while the config sets this control."""
        self.reset_button.setVisible(overridden)

    def set_note(self, text: str) -> None:
        """Show why the control's value cannot take effect, or "" to hide the note."""
        color = severity_color("warning", self.palette()).name()
        self.note_label.setStyleSheet(f"color: {color};")
        self.note_label.setText(text)
        self.note_label.setVisible(bool(text))

    def _on_reset_button_clicked(self) -> None:
        self.field.state.set_value(self.field.path, None)


class AugmentPage(Page):
    """Edits ``augment.*`` of a ``ConfigState`` beside a live preview on the dataset's own images.

    Signals:
        preview_updated: the PIL image of each newly shown preview.
    """

    title = "Augment"
    icon = QStyle.StandardPixmap.SP_FileDialogContentsView

    preview_updated = Signal(object)

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.preset_field = PresetField(state)
        self.use_preset_button = QPushButton("Use preset values", self)
        self.use_preset_button.setToolTip("Clear every override below, so that each control takes the preset's value")
        self.use_preset_button.clicked.connect(self._on_use_preset_button_clicked)
        self.rows = {name: OverrideRow(_create_control(state, f"augment.{name}")) for name in CONTROLS}
        self.mixup_field = NumberField(state, "augment.mixup_alpha")
        self.cutmix_field = NumberField(state, "augment.cutmix_alpha")
        self.mix_probability_field = FractionField(state, "augment.mix_probability")
        self.mix_switch_field = FractionField(state, "augment.mix_switch_probability")
        self.feature_views_field = IntegerField(state, "augment.feature_views", minimum=1, maximum=64)
        self.views_warning = _note_label(FEATURE_VIEWS_WARNING, "warning", self)
        self.mixing_hint = _note_label("", "info", self)

        self.preview = AugmentPreview(state, self)
        self.preview.preview_updated.connect(self.preview_updated)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.setChildrenCollapsible(False)
        splitter.addWidget(self._create_controls_column())
        splitter.addWidget(self.preview)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([CONTROLS_WIDTH, 2 * CONTROLS_WIDTH])  # scaled to the page's width when shown
        self.splitter = splitter
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(splitter)

        self._synced = False  # the controls show the preset's values from the first time the page is shown
        state.changed.connect(self._on_state_changed)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._synced:  # the presets' values need albumentations, which the window does not wait for
            self._synced = True
            self._on_state_changed(self.state.config)

    def field(self, name: str) -> BoundField:
        """The field of the preset control ``name`` (e.g. ``"crop_scale"``)."""
        return self.rows[name].field

    def _create_controls_column(self) -> QScrollArea:
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 8, 0)
        heading = QLabel("Augmentation", column)
        font = QFont(heading.font())
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        heading.setFont(font)
        intro = QLabel(INTRO_TEXT, column)
        intro.setWordWrap(True)
        layout.addWidget(heading)
        layout.addWidget(intro)
        layout.addWidget(self.views_warning)

        preset_box = QGroupBox("Preset", column)
        preset_layout = QVBoxLayout(preset_box)
        preset_layout.addWidget(self.preset_field)
        preset_layout.addWidget(self.use_preset_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(preset_box)
        forms = []
        for title, controls in CONTROL_GROUPS:
            forms.append(field_form([(label, self.rows[name]) for name, label in controls]))
            layout.addWidget(_group(title, [forms[-1]], column))
        mixing = field_form([
            ("Mixup alpha", self.mixup_field), ("Cutmix alpha", self.cutmix_field),
            ("Batches mixed", self.mix_probability_field), ("Cutmix, not mixup", self.mix_switch_field),
            ("Feature views", self.feature_views_field),
        ])
        _align_labels([*forms, mixing])
        layout.addWidget(_group("Mixing and feature views", [self.mixing_hint, mixing], column))
        layout.addStretch(1)

        scroll = QScrollArea(self)
        scroll.setWidget(column)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Wide enough for every row; the vertical scroll bar must not cover the Reset buttons.
        scroll.setMinimumWidth(column.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        scroll.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        return scroll

    def _on_use_preset_button_clicked(self) -> None:
        self.state.apply({f"augment.{name}": None for name in CONTROLS})

    def _on_state_changed(self, config: RunConfig) -> None:
        if not self._synced:
            return
        from augment import get_preset, resolve_controls  # albumentations and torch: loaded on first use

        augment = config.augment
        try:
            controls, problem_path, problem = resolve_controls(augment), "", ""
        except ConfigError as error:
            # A control set where it can have no effect: say so at that control, show the preset's values.
            controls = get_preset(augment.preset)
            problem_path, _, problem = str(error).partition(": ")
        for name, row in self.rows.items():
            row.set_overridden(getattr(augment, name) is not None)
            row.set_note(problem if problem_path == f"augment.{name}" else "")
            _show_effective(row.field, name, controls)
        self.use_preset_button.setEnabled(any(getattr(augment, name) is not None for name in CONTROLS))
        feature_extraction = config.model.mode == "feature_extraction"
        self.views_warning.setVisible(feature_extraction and augment.feature_views == 1
                                      and controls.changes_images)
        self.mixing_hint.setText(FEATURE_EXTRACTION_MIXING if feature_extraction else FINE_TUNING_MIXING)


def _create_control(state: ConfigState, path: str) -> BoundField:
    """The editor of one preset control; each one accepts null (the preset's value)."""
    name = path.rpartition(".")[2]
    if name in ("crop_scale", "crop_ratio", "cutout_size"):
        return PairField(state, path)
    if name == "cutout_holes":
        return PairField(state, path, integer=True)
    if name == "random_policy":
        return ChoiceField(state, path, [None, *RANDOM_POLICIES], labels=["preset's", *RANDOM_POLICIES])
    if name == "random_policy_ops":
        return WholeNumberField(state, path, optional=True)
    return NumberField(state, path, optional=True)


def _show_effective(field: BoundField, name: str, controls: AugmentControls) -> None:
    """Put the value in force into the field's placeholder ("off" where its step does not run)."""
    inactive = (
        (name == "crop_ratio" and controls.crop_scale is None)
        or (name in ("cutout_holes", "cutout_size") and controls.cutout == 0)
        or (name in ("random_policy_ops", "random_policy_magnitude") and controls.random_policy == "none")
    )
    value = None if inactive else getattr(controls, name)
    if isinstance(field, PairField):
        field.set_effective(value)
    elif isinstance(field, ChoiceField):
        field.editor.setItemText(0, f"preset's ({value})")
    elif isinstance(field, NumberField):
        field.editor.setPlaceholderText(OFF_TEXT if value is None else f"{value:.3g}")


def _align_labels(forms: Sequence[QWidget]) -> None:
    """Give the label columns of forms in separate boxes one width, so that their fields line up."""
    labels = [label for form in forms for label in _form_labels(form)]
    width = max(label.sizeHint().width() for label in labels)
    for label in labels:
        label.setMinimumWidth(width)
        label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def _form_labels(form: QWidget) -> list[QLabel]:
    """The labels of a ``field_form``'s rows."""
    layout = form_layout(form)
    items = [layout.itemAt(row, QFormLayout.ItemRole.LabelRole) for row in range(layout.rowCount())]
    return [label for item in items if item is not None and isinstance(label := item.widget(), QLabel)]


def _group(title: str, widgets: Sequence[QWidget], parent: QWidget) -> QGroupBox:
    box = QGroupBox(title, parent)
    layout = QVBoxLayout(box)
    for widget in widgets:
        layout.addWidget(widget)
    return box


def _note_label(text: str, severity: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {severity_color(severity, parent.palette()).name()};")
    return label

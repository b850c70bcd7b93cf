"""The "Model" page: backbone, training mode, what trains, the head, the optimiser, the device and the LR finder.

Every control edits ``ConfigState`` through ``gui.widgets.fields``; the page only decides which
controls apply (fine-tuning settings in fine-tuning modes, a schedule's own parameters
with that schedule) and offers a recommended recipe for the mode and the data size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette, QShowEvent
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStyle,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.core.config import ACTIVATIONS, CLASS_BALANCE, DEVICES, MODES, MONITORS, SCHEDULES, RunConfig
from engine.data.health import HealthReport
from engine.training.recommended import explain_recipe, images_per_class, recommended_recipe
from gui.pages.base import Page
from gui.pages.model.backbone_picker import BackbonePicker
from gui.pages.model.lr_finder_panel import LRFinderPanel
from gui.services.config_state import ConfigState
from gui.services.workers import Worker, run_in_thread_pool
from gui.style import severity_color
from gui.widgets.fields import (
    CheckField,
    ChoiceField,
    FractionField,
    IntegerField,
    IntegerOrAutoField,
    NumberField,
    OptionalIntegerField,
    field_form,
    form_layout,
)
from gui.widgets.items import child_items

MODE_LABELS = ("Feature extraction", "Fine-tuning", "Feature extraction, then fine-tune")
MODE_EXPLANATIONS = {
    "feature_extraction": "The pretrained backbone stays frozen; only a new head learns, on features computed once."
                          " Fast, and the best start with few images.",
    "fine_tune": "The top stages of the backbone learn too, at a smaller rate. Slower; usually more accurate"
                 " with a few hundred images per class.",
    "two_stage": "The head learns alone for a few epochs, then the top stages join in, so that the new head's"
                 " first, noisy steps do not disturb the pretrained weights.",
}
SCHEDULE_LABELS = ("Cosine decay", "Constant", "Step", "Linear decay", "Inverse square root",
                   "Cosine with restarts")
DEVICE_LABELS = ("Automatic: NVIDIA GPU, else Apple GPU, else CPU", "CPU", "NVIDIA GPU (CUDA)", "Apple GPU (MPS)")
DEVICE_NOTE = ("The Train page shows the device a run uses, and why. A device that this computer lacks stops the"
               " run at its start with a message that lists the devices it has.")
_HEAD_ROW = "new classifier head"


def backbone_stage_names(name: str, **_worker_arguments: Any) -> tuple[str, list[str]]:
    """(name, its stage names bottom first): a worker job, since the build takes a moment."""
    from engine.models.backbones import describe_stages  # torch and timm: loaded on first use

    return name, list(describe_stages(name))


def trainable_count(config: RunConfig, num_stages: int) -> int:
    """How many backbone stages train at the start of fine-tuning (0 in feature extraction)."""
    if config.model.mode == "feature_extraction":
        return 0
    stages = config.model.trainable_stages
    return num_stages if stages == -1 else min(stages, num_stages)


class StageView(QWidget):
    """The backbone's stages, output side first, with the ones that will train highlighted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Stage (output side first)", "Training"])
        self.tree.setRootIsDecorated(False)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tree.header().setStretchLastSection(False)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.summary_label)
        self._stages: list[str] = []

    @property
    def stages(self) -> list[str]:
        """The stages shown, bottom (input side) first."""
        return list(self._stages)

    def trainable_names(self) -> list[str]:
        """The backbone stages marked as training (the head is not counted)."""
        return [item.text(0) for item in child_items(self.tree.invisibleRootItem())[1:]
                if item.data(0, Qt.ItemDataRole.UserRole)]

    def show_message(self, text: str) -> None:
        """Show no stages, only ``text`` (loading, or why the stages are unknown)."""
        self._stages = []
        self.tree.clear()
        self.summary_label.setText(text)

    def show_plan(self, stages: list[str], config: RunConfig) -> None:
        """List ``stages`` (bottom first) and mark those that train under ``config``."""
        self._stages = list(stages)
        trainable = trainable_count(config, len(stages))
        palette = self.palette()
        highlight = palette.color(QPalette.ColorRole.Highlight)
        highlight.setAlpha(60)
        frozen_color = palette.color(QPalette.ColorRole.PlaceholderText)
        bold = QFont(self.font())
        bold.setBold(True)
        self.tree.clear()
        rows = [(_HEAD_ROW, True, "always")]
        rows += [(name, index >= len(stages) - trainable, "trains" if index >= len(stages) - trainable else "frozen")
                 for index, name in reversed(list(enumerate(stages)))]
        for name, trains, state in rows:
            item = QTreeWidgetItem([name, state])
            item.setData(0, Qt.ItemDataRole.UserRole, trains)
            item.setToolTip(0, name)
            for column in range(2):
                if trains:
                    item.setBackground(column, highlight)
                    item.setFont(column, bold)
                else:
                    item.setForeground(column, frozen_color)
            self.tree.addTopLevelItem(item)
        self.summary_label.setText(_plan_text(config, trainable, len(stages)))


def _plan_text(config: RunConfig, trainable: int, total: int) -> str:
    model = config.model
    if model.mode == "feature_extraction":
        return f"Feature extraction: all {total} stages stay frozen; only the new head trains."
    text = f"{trainable} of {total} stages train with the head"
    if model.mode == "two_stage":
        text = f"First {model.head_epochs} epochs: only the head. Then {trainable} of {total} stages train with it"
    if model.unfreeze_every and trainable < total:
        text += f", and one more every {model.unfreeze_every} epochs"
    return text + "."


class ModelPage(Page):
    """Choose the backbone and how it is trained; all settings one click away, with recommended defaults.

    Args:
        state: the config being edited.
        parent: the parent widget.
    """

    title = "Model"
    icon = QStyle.StandardPixmap.SP_ComputerIcon

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._report: HealthReport | None = None
        self._stages_for = ""  # the backbone whose stages are wanted
        self._stages_reading = ""  # the backbone whose stages the worker reads (or read last)
        self._stage_worker: Worker | None = None

        self.backbone_picker = BackbonePicker(state, self)
        self.mode_field = ChoiceField(state, "model.mode", MODES, labels=MODE_LABELS)
        for index, mode in enumerate(MODES):
            self.mode_field.editor.setItemData(index, MODE_EXPLANATIONS[mode], Qt.ItemDataRole.ToolTipRole)
        self.mode_explanation = QLabel(self)
        self.mode_explanation.setWordWrap(True)
        self.recommend_button = QPushButton("Recommended", self)
        self.recommend_button.clicked.connect(self._on_recommend_button_clicked)
        self.recipe_label = QLabel(self)
        self.recipe_label.setWordWrap(True)
        self.recipe_label.hide()
        self.error_label = QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.stage_view = StageView(self)
        self.lr_finder = LRFinderPanel(state, self)

        self.tabs = QTabWidget(self)
        self.training_form = self._training_form()
        self.fine_tuning_form = self._fine_tuning_form()
        self.head_form = self._head_form()
        self.device_form = self._device_form()
        self.tabs.addTab(_scrolling(self.training_form), "Training")
        self.fine_tuning_note = QLabel(
            "These settings apply when fine-tuning: choose the mode Fine-tuning, or Feature extraction, then"
            " fine-tune.", self)
        self.fine_tuning_note.setWordWrap(True)
        what_trains = QWidget(self)
        what_trains_layout = QVBoxLayout(what_trains)
        what_trains_layout.addWidget(self.fine_tuning_note)
        what_trains_layout.addWidget(self.fine_tuning_form)
        what_trains_layout.addWidget(self.stage_view, 1)
        self.tabs.addTab(what_trains, "What trains")
        self.tabs.addTab(_scrolling(self.head_form), "Head")
        self.tabs.addTab(_scrolling(self.device_form), "Device")
        self.tabs.addTab(self.lr_finder, "Find learning rate")

        self.setLayout(self._layout())
        self._update_recommend_tooltip()
        state.changed.connect(self._on_state_changed)
        state.validity_changed.connect(self._on_state_validity_changed)
        state.field_error.connect(self._on_state_field_error)
        self._on_state_changed(state.config)

    def set_project(self, folder: Path) -> None:
        """A new folder is being scanned: until its report comes, "Recommended" assumes a medium dataset."""
        self.set_report(None)

    def set_report(self, report: HealthReport | None) -> None:
        """The open dataset's health report (its size steers "Recommended"); None when none is open."""
        self._report = report
        self._update_recommend_tooltip()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._stages_for:  # first shown: reading stages loads torch, which the window does not wait for
            self._read_stages(self.state.config.model.backbone)

    # Layout --------------------------------------------------------------------------------------

    def _layout(self) -> QVBoxLayout:
        mode_row = QHBoxLayout()
        mode_caption = QLabel("<b>Mode</b>", self)
        mode_caption.setToolTip(self.mode_field.toolTip())
        mode_row.addWidget(mode_caption)
        mode_row.addWidget(self.mode_field, 1)
        mode_row.addWidget(self.recommend_button, 0, Qt.AlignmentFlag.AlignTop)
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(8, 0, 0, 0)
        right_layout.addLayout(mode_row)
        right_layout.addWidget(self.mode_explanation)
        right_layout.addWidget(self.recipe_label)
        right_layout.addWidget(self.error_label)
        right_layout.addWidget(self.tabs, 1)
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 8, 0)
        left_layout.addWidget(QLabel("<b>Backbone</b>", self))
        left_layout.addWidget(self.backbone_picker, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setSizes([440, 500])
        layout = QVBoxLayout()
        layout.setContentsMargins(12, 12, 12, 8)
        layout.addWidget(self.splitter)
        return layout

    def _training_form(self) -> QWidget:
        state = self.state
        early_stopping = IntegerField(state, "optim.early_stopping_patience", minimum=0, maximum=1000)
        early_stopping.editor.setSpecialValueText("off")
        early_stopping.editor.setSuffix(" epochs")
        self.ema_decay_field = NumberField(state, "optim.ema_decay")
        self.step_fields = (NumberField(state, "optim.step_epochs"), NumberField(state, "optim.step_factor"))
        self.restart_field = NumberField(state, "optim.restart_epochs")
        self.learning_rate_field = NumberField(state, "optim.learning_rate")
        accumulate = IntegerField(state, "optim.accumulate_steps", minimum=1, maximum=1024)
        accumulate.editor.setSpecialValueText("off")
        accumulate.editor.setSuffix(" batches")
        clip = NumberField(state, "optim.clip_grad_norm", optional=True)
        clip.editor.setPlaceholderText("off")
        self.schedule_field = ChoiceField(state, "optim.schedule", SCHEDULES, labels=SCHEDULE_LABELS)
        return _compact(field_form([
            ("Learning rate", self.learning_rate_field),
            ("Batch size", IntegerOrAutoField(state, "optim.batch_size", maximum=4096)),
            ("Accumulate gradients", accumulate),
            ("Clip gradient norm", clip),
            ("Epochs", IntegerField(state, "optim.epochs", minimum=1, maximum=10_000)),
            ("Schedule", self.schedule_field),
            ("Drop every (epochs)", self.step_fields[0]),
            ("Drop by factor", self.step_fields[1]),
            ("Cycle length (epochs)", self.restart_field),
            ("Warm-up (epochs)", NumberField(state, "optim.warmup_epochs")),
            ("Final rate", NumberField(state, "optim.min_learning_rate")),
            ("Weight decay", NumberField(state, "optim.weight_decay")),
            ("Label smoothing", FractionField(state, "optim.label_smoothing", maximum=0.99)),
            ("Class balance", ChoiceField(state, "optim.class_balance", CLASS_BALANCE,
                                          labels=("None", "Weighted loss", "Balanced sampler"))),
            ("Weight averaging", CheckField(state, "optim.ema", "Keep an average of the weights (EMA)")),
            ("EMA decay", self.ema_decay_field),
            ("Best checkpoint by", ChoiceField(state, "optim.monitor", MONITORS,
                                               labels=("Validation accuracy", "Validation loss"))),
            ("Early stopping", early_stopping),
            ("Reference batch size", OptionalIntegerField(state, "optim.reference_batch_size")),
        ], self))

    def _fine_tuning_form(self) -> QWidget:
        state = self.state
        trainable = IntegerField(state, "model.trainable_stages", minimum=-1, maximum=100)
        trainable.editor.setSpecialValueText("all")
        unfreeze = IntegerField(state, "model.unfreeze_every", minimum=0, maximum=1000)
        unfreeze.editor.setSpecialValueText("off")
        unfreeze.editor.setSuffix(" epochs")
        layer_decay = NumberField(state, "model.layer_decay", optional=True)
        layer_decay.editor.setPlaceholderText("off")
        self.head_epochs_field = IntegerField(state, "model.head_epochs", minimum=1, maximum=1000)
        self.trainable_field = trainable
        self.fine_tune_fields = (
            trainable, unfreeze, FractionField(state, "model.backbone_lr_scale", step=0.01, decimals=3), layer_decay,
            CheckField(state, "model.freeze_batchnorm", "Keep BatchNorm statistics"),
            FractionField(state, "model.drop_path_rate", maximum=0.9, step=0.05),
        )
        labels = ("Trainable stages", "Unfreeze one more every", "Backbone rate (× head)", "Layer decay", "BatchNorm",
                  "Stochastic depth")
        form = field_form([*zip(labels, self.fine_tune_fields, strict=True),
                           ("Head-only epochs", self.head_epochs_field)], self)
        return _compact(form)

    def _head_form(self) -> QWidget:
        state = self.state
        self.mlp_fields = (
            IntegerField(state, "model.head_hidden", minimum=1, maximum=65_536),
            ChoiceField(state, "model.head_activation", ACTIVATIONS),
            CheckField(state, "model.head_batchnorm", "BatchNorm after the hidden layer"),
        )
        return _compact(field_form([
            ("Head", ChoiceField(state, "model.head", ("linear", "mlp"), labels=("Linear", "MLP (one hidden layer)"))),
            ("Hidden width", self.mlp_fields[0]),
            ("Activation", self.mlp_fields[1]),
            ("Normalisation", self.mlp_fields[2]),
            ("Dropout", FractionField(state, "model.head_dropout", maximum=0.95)),
        ], self))

    def _device_form(self) -> QWidget:
        state = self.state
        note = QLabel(DEVICE_NOTE, self)
        note.setWordWrap(True)
        note.setStyleSheet("color: palette(placeholder-text);")
        form = field_form([
            ("Device", ChoiceField(state, "device", DEVICES, labels=DEVICE_LABELS)),
            ("Mixed precision", CheckField(state, "amp", "bf16 or fp16 where the GPU supports it")),
            ("Compile", CheckField(state, "model.compile", "torch.compile the model (CUDA)")),
        ], self)
        form_layout(form).addRow(note)
        return _compact(form)

    # Slots ---------------------------------------------------------------------------------------

    def _on_state_changed(self, config: RunConfig) -> None:
        model, optim = config.model, config.optim
        fine_tuning = model.mode != "feature_extraction"
        self.mode_explanation.setText(MODE_EXPLANATIONS[model.mode])
        for field in self.fine_tune_fields:
            field.setEnabled(fine_tuning)
        self.fine_tuning_note.setVisible(not fine_tuning)
        self.head_epochs_field.setEnabled(model.mode == "two_stage")
        for mlp_field in self.mlp_fields:
            mlp_field.setEnabled(model.head == "mlp")
        self.ema_decay_field.setEnabled(optim.ema)
        training = form_layout(self.training_form)
        for field in self.step_fields:
            training.setRowVisible(field, optim.schedule == "step")
        training.setRowVisible(self.restart_field, optim.schedule == "cosine_restarts")
        if self._stages_for and model.backbone != self._stages_for:  # none before the page was first shown
            self._read_stages(model.backbone)
        elif self._stage_worker is None and self.stage_view.stages:
            self.stage_view.show_plan(self.stage_view.stages, config)

    def _on_state_validity_changed(self, _valid: bool) -> None:
        self._show_errors()

    def _on_state_field_error(self, _path: str, _message: str) -> None:
        self._show_errors()

    def _on_recommend_button_clicked(self) -> None:
        recipe = recommended_recipe(self.state.config.model.mode, self._report)
        if self.state.apply(recipe):
            self.recipe_label.setText(explain_recipe(recipe, self._report))
        else:
            self.recipe_label.setText("The recipe does not fit the current settings; see the message in red.")
        self.recipe_label.show()

    def _on_stage_worker_returned(self, result: tuple[str, list[str]]) -> None:
        backbone, stages = result
        if backbone == self._stages_for:
            self.stage_view.show_plan(stages, self.state.config)

    def _on_stage_worker_errored(self, error: Exception) -> None:
        if self._stages_reading == self._stages_for:
            self.stage_view.show_message(f"The stages of {self._stages_reading} are unknown: {error}")

    def _on_stage_worker_finished(self) -> None:
        self._stage_worker = None
        if self._stages_reading != self._stages_for:
            self._read_stages(self._stages_for)

    # Helpers -------------------------------------------------------------------------------------

    def _read_stages(self, backbone: str) -> None:
        self._stages_for = backbone
        if self._stage_worker is not None:
            return  # one build at a time; the finished slot asks for the latest backbone
        self._stages_reading = backbone
        self.stage_view.show_message(f"Reading the stages of {backbone}…")
        worker = run_in_thread_pool(backbone_stage_names, backbone)
        worker.signals.returned.connect(self._on_stage_worker_returned)
        worker.signals.errored.connect(self._on_stage_worker_errored)
        worker.signals.finished.connect(self._on_stage_worker_finished)
        self._stage_worker = worker

    def _show_errors(self) -> None:
        errors = self.state.errors
        color = severity_color("error", self.palette()).name()
        self.error_label.setStyleSheet(f"color: {color};")
        self.error_label.setText("Not valid yet: " + "; ".join(errors.values()) if errors else "")
        self.error_label.setVisible(bool(errors))

    def _update_recommend_tooltip(self) -> None:
        per_class = images_per_class(self._report)
        data = f"~{per_class:,.0f} images per class" if per_class is not None else "a medium dataset (no scan yet)"
        self.recommend_button.setToolTip(
            f"Set a sound starting recipe for the chosen mode and {data}: rate, epochs, schedule, regularisation")


def _compact(form: QWidget) -> QWidget:
    """Fields at their natural width: a rate needs a dozen characters, not half the window."""
    form_layout(form).setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
    return form


def _scrolling(content: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(content)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    return area


"""``model.weights``: where a backbone's starting weights come from, as a field with a menu, and in words.

Automatic (an installed offline package, else the hub), the Hugging Face hub, none
(random initialisation) or a weights file the user picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QMenu, QToolButton, QWidget

from engine.models.backbone_info import WEIGHTS_AUTO, WEIGHTS_HUB, WEIGHTS_NONE
from gui.services.config_state import ConfigState
from gui.widgets.fields import TextField

WEIGHTS_CHOICES = (
    (WEIGHTS_AUTO, "Automatic: offline package if installed, else the hub"),
    (WEIGHTS_HUB, "Hugging Face hub (downloads once, then cached)"),
    (WEIGHTS_NONE, "None: random initialisation (no transfer)"),
)


def weights_is_file(weights: str) -> bool:
    """Whether ``model.weights`` names a file rather than auto, hub or none."""
    return weights not in (WEIGHTS_AUTO, WEIGHTS_HUB, WEIGHTS_NONE)


def weights_hint(weights: str, sources: Sequence[str]) -> str:
    """One sentence on where the weights will come from, given the backbone's known sources."""
    if weights == WEIGHTS_NONE:
        return "Random initialisation: nothing is transferred, so expect to need many more images."
    if weights_is_file(weights):
        found = Path(weights).expanduser().is_file()
        return f"Weights from the file {Path(weights).name}." if found else f"The file {weights} does not exist."
    if weights == WEIGHTS_AUTO and "offline" in sources:
        return "Weights installed on this computer: works offline."
    if "hub" in sources:
        return "Weights come from the Hugging Face hub on first use (internet needed once)."
    return "No pretrained weights are known for it: choose a weights file, or none to train from scratch."


class WeightsField(QWidget):
    """``model.weights``: a text field (a path may be typed or pasted) and a menu of the choices."""

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = TextField(state, "model.weights", self)
        self.choose_button = QToolButton(self)
        self.choose_button.setText("Choose…")
        self.choose_button.setToolTip("Pick automatic, hub or no weights, or a .safetensors/.pth file")
        self.choose_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.choose_button)
        for value, text in WEIGHTS_CHOICES:
            action = QAction(text, menu)
            action.triggered.connect(lambda _checked=False, value=value: self.choose(value))
            menu.addAction(action)
        menu.addSeparator()
        file_action = QAction("Weights file…", menu)
        file_action.triggered.connect(self._on_file_action_triggered)
        menu.addAction(file_action)
        self.choose_button.setMenu(menu)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.field, 1)
        layout.addWidget(self.choose_button, 0, Qt.AlignmentFlag.AlignTop)
        self.setToolTip(self.field.toolTip())

    def choose(self, weights: str) -> bool:
        """Put ``weights`` (auto, hub, none or a file path) into the field and the config."""
        self.field.editor.setText(weights)
        return self.field.commit()

    def _on_file_action_triggered(self) -> None:
        current = self.field.state.config.model.weights
        start = str(Path(current).expanduser().parent) if weights_is_file(current) else str(Path.home())
        from engine.models.weights import WEIGHT_FILE_SUFFIXES  # torch: loaded on first use

        patterns = " ".join(f"*{suffix}" for suffix in WEIGHT_FILE_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(self, "Choose a weights file", start, f"Weights ({patterns})")
        if path:
            self.choose(path)

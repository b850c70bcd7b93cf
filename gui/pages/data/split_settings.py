"""How a dataset is split for training: validation and test shares, the split seed, and the counts they give.

The fields are bound to the run configuration; the counts come from the engine's own
split of the usable images (``engine.data.prepare.split_records``), redone when a setting
changes. For pre-split data the folders decide, and the shares they override are disabled.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from engine.core.config import RunConfig
from engine.data.discovery import SPLITS
from engine.data.health import FileRecord
from engine.data.prepare import split_records
from gui.services.config_state import ConfigState
from gui.widgets.fields import FractionField, IntegerField, field_form, form_layout

SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}
FOLDER_RULE = "the folders decide the split"


class SplitSettings(QWidget):
    """The fields of ``data.val_fraction``, ``data.test_fraction`` and ``data.split_seed``, and the split they give."""

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._records: tuple[FileRecord, ...] = ()
        self._presplit = False
        self._counts: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.val_field = FractionField(state, "data.val_fraction", maximum=1.0, step=0.05, decimals=2)
        self.test_field = FractionField(state, "data.test_fraction", maximum=1.0, step=0.05, decimals=2)
        self.seed_field = IntegerField(state, "data.split_seed", minimum=0, maximum=2**31 - 1)
        form = field_form(
            [("Validation share", self.val_field), ("Test share", self.test_field), ("Split seed", self.seed_field)],
            self,
        )
        form_layout(form).setContentsMargins(0, 0, 0, 0)
        self.note_label = QLabel(self)
        self.note_label.setWordWrap(True)
        self.note_label.hide()

        self.count_labels: dict[str, QLabel] = {}
        self.share_labels: dict[str, QLabel] = {}
        counts = QGridLayout()
        counts.setContentsMargins(0, 0, 0, 0)
        counts.setHorizontalSpacing(12)
        counts.setVerticalSpacing(2)
        for column, split in enumerate(SPLITS):
            name = QLabel(SPLIT_NAMES[split], self)
            name.setEnabled(False)  # a quieter caption above the number
            number = QLabel(self)
            number.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            font = number.font()
            font.setBold(True)
            number.setFont(font)
            share = QLabel(self)
            share.setEnabled(False)
            counts.addWidget(name, 0, column)
            counts.addWidget(number, 1, column)
            counts.addWidget(share, 2, column)
            self.count_labels[split] = number
            self.share_labels[split] = share
        counts.setColumnStretch(len(SPLITS), 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.note_label)
        layout.addWidget(form)
        layout.addLayout(counts)

        # One recount per burst of edits (a spin box's arrow held down).
        self._recount_timer = QTimer(self)
        self._recount_timer.setSingleShot(True)
        self._recount_timer.setInterval(0)
        self._recount_timer.timeout.connect(self._recount)
        state.changed.connect(self._on_state_changed)
        self.set_records((), presplit=False)

    @property
    def counts(self) -> dict[str, int]:
        """Images per split (``train``, ``val``, ``test``) with the current settings."""
        return dict(self._counts)

    def set_records(self, records: Sequence[FileRecord], *, presplit: bool) -> None:
        """Split these usable images from now on; ``presplit`` when they come from train/val/test folders."""
        self._records = tuple(records)
        self._presplit = presplit
        folders = [split for split in SPLITS if any(record.split == split for record in self._records)]
        by_folder = {split: presplit and split in folders for split in ("val", "test")}
        self.val_field.setEnabled(not by_folder["val"])
        self.test_field.setEnabled(not by_folder["test"])
        self.seed_field.setEnabled(not all(by_folder.values()))
        self.note_label.setVisible(presplit)
        self.note_label.setText(_folder_note(folders) if presplit else "")
        self._recount()

    def _on_state_changed(self, _config: RunConfig) -> None:
        self._recount_timer.start()

    def _recount(self) -> None:
        data = self.state.config.data
        splits = split_records(
            self._records,
            presplit=self._presplit,
            val_fraction=data.val_fraction,
            test_fraction=data.test_fraction,
            seed=data.split_seed,
        )
        self._counts = {split: len(splits[split]) for split in SPLITS}
        total = sum(self._counts.values())
        for split, count in self._counts.items():
            self.count_labels[split].setText(f"{count:,}")
            self.share_labels[split].setText(f"{count / total:.0%}" if total else "–")


def _folder_note(folders: Sequence[str]) -> str:
    """What the train/val/test folders of pre-split data mean for the shares below them."""
    found = f"{'/'.join(folders)} {'folder' if len(folders) == 1 else 'folders'} found"
    missing = [SPLIT_NAMES[split].lower() for split in ("val", "test") if split not in folders]
    if not missing:
        return f"{found}: {FOLDER_RULE}."
    return f"{found}: {FOLDER_RULE}; {' and '.join(missing)} images are taken from train with the shares below."

"""The search's settings beside its space: the stage sizes (bound to ``search.*``) and the study to run.

The study settings (name, storage, parallel jobs) are arguments of ``main.py search``,
not config fields, so they are plain inputs; the group also lists the project's earlier
studies for showing again.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QComboBox, QGridLayout, QGroupBox, QLabel, QLineEdit, QPushButton, QSpinBox, QWidget

from engine.core.config import SEARCH_METRICS
from engine.search.folders import default_study_name
from engine.search.progress import list_studies
from gui.services.config_state import ConfigState
from gui.widgets.fields import ChoiceField, IntegerField

METRIC_LABELS = {"val_loss": "validation loss (lower is better)", "val_top1": "validation accuracy (higher is better)"}
STORAGE_TIP = (
    "Where the study lives; empty: a SQLite file in the search folder. Workers on other machines join the same"
    " study with the same name and storage:\n"
    "  journal:/shared/disk/study.log  (a journal file on a shared disk, no server needed)\n"
    "  postgresql://user:password@host/db  or  mysql+pymysql://...  (a database server)\n"
    "  /path/study.db  (a SQLite file: one machine only; never on a network disk)\n"
    "On another machine: python main.py search DATA --study NAME --storage URL --worker"
)


class StageSettings(QGroupBox):
    """Trials and epochs of the coarse and fine stages, how many top trials narrow the ranges, and the score."""

    def __init__(self, state: ConfigState, parent: QWidget | None = None) -> None:
        super().__init__("Stages", parent)
        grid = QGridLayout(self)
        grid.setVerticalSpacing(3)
        grid.addWidget(_caption("Trials", self), 0, 1)
        grid.addWidget(_caption("Epochs each", self), 0, 2)
        for row, (stage, fewest) in enumerate((("coarse", 1), ("fine", 0)), start=1):
            grid.addWidget(QLabel(f"{stage.capitalize()} stage", self), row, 0)
            grid.addWidget(IntegerField(state, f"search.{stage}_trials", minimum=fewest, maximum=10_000), row, 1)
            grid.addWidget(IntegerField(state, f"search.{stage}_epochs", minimum=1, maximum=1_000), row, 2)
        grid.addWidget(QLabel("Fine ranges from the best", self), 3, 0)
        grid.addWidget(IntegerField(state, "search.top_k", minimum=1, maximum=1_000), 3, 1)
        grid.addWidget(QLabel("coarse trials", self), 3, 2)
        grid.addWidget(QLabel("Score", self), 4, 0)
        metric = ChoiceField(state, "search.metric", SEARCH_METRICS,
                             labels=[METRIC_LABELS[name] for name in SEARCH_METRICS])
        grid.addWidget(metric, 4, 1, 1, 2)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(2, 1)


class StudySettings(QGroupBox):
    """The study's name, storage and parallel jobs, and a list of the project's earlier studies.

    Signals:
        study_chosen: the folder (Path) of an earlier study to show.
    """

    study_chosen = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Study", parent)
        self.name_edit = QLineEdit(self)
        self.name_edit.setPlaceholderText("new study")
        self.name_edit.setToolTip("Study name (letters, digits, . _ -); empty: a new search-DATE-TIME."
                                  " An earlier study's name continues it (with the same settings).")
        self.storage_edit = QLineEdit(self)
        self.storage_edit.setPlaceholderText("local SQLite file in the search folder")
        self.storage_edit.setToolTip(STORAGE_TIP)
        self.jobs_spin = QSpinBox(self)
        self.jobs_spin.setRange(1, max(os.cpu_count() or 1, 1))
        self.jobs_spin.setToolTip("Trials at once on this machine, each in its own process (they share the storage)")
        self.studies_combo = QComboBox(self)
        self.studies_combo.setToolTip("Earlier searches of this project")
        self.show_button = QPushButton("Show", self)
        self.show_button.setToolTip("Show the chosen study's trials")
        self.show_button.clicked.connect(self._on_show_button_clicked)

        grid = QGridLayout(self)
        grid.setVerticalSpacing(3)
        for row, (label, widgets) in enumerate((
            ("Name", (self.name_edit, QLabel("Parallel jobs", self), self.jobs_spin)),
            ("Storage", (self.storage_edit,)),
            ("Earlier", (self.studies_combo, self.show_button)),
        )):
            caption = QLabel(label, self)
            caption.setToolTip(widgets[0].toolTip())
            grid.addWidget(caption, row, 0, Qt.AlignmentFlag.AlignRight)
            grid.addWidget(widgets[0], row, 1, 1, 1 if len(widgets) > 1 else 3)
            for column, widget in enumerate(widgets[1:], start=2):
                grid.addWidget(widget, row, column)
        grid.setColumnStretch(1, 1)

    def study_name(self) -> str:
        """The typed name, or a new one."""
        return self.name_edit.text().strip() or default_study_name()

    def storage(self) -> str | None:
        """The typed storage, or None for the default."""
        return self.storage_edit.text().strip() or None

    def jobs(self) -> int:
        """Trials at once on this machine."""
        return self.jobs_spin.value()

    def chosen_study(self) -> Path | None:
        """The earlier study chosen in the list, if any."""
        folder = self.studies_combo.currentData()
        return Path(folder) if folder else None

    def list_studies(self, searches: Path | None) -> None:
        """Offer the studies of a project's ``searches`` folder (None: no project), keeping the choice."""
        chosen = self.studies_combo.currentData()
        self.studies_combo.clear()
        for folder in list_studies(searches) if searches is not None else []:
            self.studies_combo.addItem(folder.name, str(folder))
        if self.studies_combo.count() == 0:
            self.studies_combo.addItem("no earlier searches", None)
        self.studies_combo.setCurrentIndex(max(self.studies_combo.findData(chosen), 0))

    def set_busy(self, busy: bool) -> None:
        """While a search runs, its settings stay as they were started and no other study is shown."""
        for widget in (self.name_edit, self.storage_edit, self.jobs_spin):
            widget.setEnabled(not busy)
        self.show_button.setEnabled(not busy and self.chosen_study() is not None)

    def _on_show_button_clicked(self) -> None:
        folder = self.chosen_study()
        if folder is not None:
            self.study_chosen.emit(folder)


def _caption(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    font = QFont(label.font())
    font.setBold(True)
    label.setFont(font)
    return label

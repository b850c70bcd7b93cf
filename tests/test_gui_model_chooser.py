"""The model chooser lists the project's models off the GUI thread and accepts browsed files."""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from engine.core.paths import project_dir_for
from gui.widgets.model_chooser import ModelChooser


def test_lists_the_project_models_and_keeps_the_choice(qtbot: QtBot, demo_project: Path) -> None:
    chooser = ModelChooser()
    qtbot.addWidget(chooser)
    with qtbot.waitSignal(chooser.models_listed) as listed:
        chooser.set_project(project_dir_for(demo_project))
    entries = listed.args[0]
    assert chooser.current() == entries[0]
    assert "val " in chooser.combo.currentText()

    chooser.combo.setCurrentIndex(len(entries) - 1)
    with qtbot.waitSignal(chooser.models_listed):
        chooser.refresh()
    assert chooser.current().kind == "ensemble"


def test_checkpoint_only_chooser_hides_ensembles_and_refuses_them(qtbot: QtBot, demo_project: Path) -> None:
    chooser = ModelChooser(kinds=("checkpoint",))
    qtbot.addWidget(chooser)
    with qtbot.waitSignal(chooser.models_listed):
        chooser.set_project(project_dir_for(demo_project))
    assert all(entry.kind == "checkpoint" for entry in chooser.entries())

    manifest = project_dir_for(demo_project) / "ensembles" / "pair.json"
    with qtbot.waitSignal(chooser.browse_failed) as failed:
        assert not chooser.choose_file(manifest)
    assert "ensemble cannot be used here" in failed.args[0]


def test_browsing_a_run_folder_chooses_its_best(qtbot: QtBot, demo_run: Path, tmp_path: Path) -> None:
    chooser = ModelChooser()
    qtbot.addWidget(chooser)
    assert chooser.choose_file(demo_run)
    assert chooser.current().path == demo_run / "checkpoints" / "best.safetensors"
    with qtbot.waitSignal(chooser.browse_failed):
        assert not chooser.choose_file(tmp_path / "nothing.safetensors")

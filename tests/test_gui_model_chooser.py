"""The model chooser lists the project's models off the GUI thread and accepts browsed files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pytestqt.qtbot import QtBot

from engine.core.paths import project_dir_for
from engine.export.formats import METADATA_FORMAT
from engine.export.listing import exports_folder
from gui.widgets.model_chooser import KINDS_WITH_EXPORTS, ModelChooser


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


def test_pages_that_predict_list_the_projects_exports_and_browse_to_one(qtbot: QtBot, demo_project: Path,
                                                                         tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(project_dir_for(demo_project), project)
    # What main.py export writes beside the model file; the chooser reads nothing else.
    onnx = exports_folder(project) / "lite0-20261208" / "onnx"
    onnx.mkdir(parents=True)
    metadata = {"format": METADATA_FORMAT, "export_format": "onnx", "labels": ["cat", "dog"],
                "preprocessing": {"input_size": [3, 224, 224]}, "source": {"backbone": "tf_efficientnet_lite0"}}
    (onnx / "metadata.json").write_text(json.dumps(metadata))
    chooser = ModelChooser(KINDS_WITH_EXPORTS)
    qtbot.addWidget(chooser)
    with qtbot.waitSignal(chooser.models_listed) as listed:
        chooser.set_project(project)
    exports = [entry for entry in listed.args[0] if entry.kind == "export"]
    assert [entry.path for entry in exports] == [onnx] and exports[0].classes == ("cat", "dog")
    assert chooser.combo.itemText(len(listed.args[0]) - 1) == "export · lite0-20261208 · ONNX"

    plain = ModelChooser()
    qtbot.addWidget(plain)
    with qtbot.waitSignal(plain.models_listed) as listed:
        plain.set_project(project)
    assert all(entry.kind != "export" for entry in listed.args[0])
    with qtbot.waitSignal(plain.browse_failed) as failed:
        assert not plain.choose_file(onnx / "metadata.json")
    assert "export cannot be used here" in failed.args[0]
    assert chooser.choose_file(onnx / "metadata.json") and chooser.current().path == onnx

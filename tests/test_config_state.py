"""ConfigState: edits validated by the engine, refused fields remembered until corrected."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.errors import ConfigError
from gui.services.config_state import ConfigState


def test_edits_are_validated_and_refusals_are_remembered(qtbot) -> None:
    state = ConfigState()
    errors: list[tuple[str, str]] = []
    validity: list[bool] = []
    state.field_error.connect(lambda path, message: errors.append((path, message)))
    state.validity_changed.connect(validity.append)

    assert state.set_value("optim.learning_rate", 1e-3)
    assert state.value("optim.learning_rate") == 1e-3

    assert not state.set_value("optim.learning_rate", -1.0)
    assert state.value("optim.learning_rate") == 1e-3  # the last valid value stays
    assert errors[-1] == ("optim.learning_rate", "optim.learning_rate: must be > 0, got -1.0")
    assert not state.is_valid and validity == [False]

    assert not state.set_value("optim.epochs", 0)
    assert set(state.errors) == {"optim.learning_rate", "optim.epochs"}

    assert state.set_value("optim.learning_rate", 3e-4) and state.set_value("optim.epochs", 4)
    assert state.is_valid and validity == [False, True]
    assert errors[-1] == ("optim.epochs", "")


def test_apply_is_all_or_nothing_and_save_load_round_trips(qtbot, tmp_path: Path) -> None:
    state = ConfigState()
    assert not state.apply({"optim.learning_rate": 0.01, "optim.batch_size": 0})
    assert state.value("optim.learning_rate") != 0.01
    assert state.apply({"optim.learning_rate": 0.01, "optim.batch_size": 16})
    path = state.save(tmp_path / "c.yaml")
    other = ConfigState()
    other.load(path)
    assert other.config == state.config
    (tmp_path / "bad.yaml").write_text("optim:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match="bad.yaml: optim.epochs"):
        other.load(tmp_path / "bad.yaml")


def test_a_refusal_caused_by_another_field_marks_the_edited_one(qtbot) -> None:
    state = ConfigState()
    state.apply({"optim.epochs": 3, "model.head_epochs": 3})
    assert not state.set_value("model.mode", "two_stage")  # needs head_epochs < epochs
    assert set(state.errors) == {"model.mode"} and "model.head_epochs" in state.errors["model.mode"]
    assert state.set_value("model.mode", "fine_tune") and state.is_valid

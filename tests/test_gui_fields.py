"""Bound form fields: validation messages at the field, tooltips from the config's help texts."""

from __future__ import annotations

from gui.services.config_state import ConfigState
from gui.widgets.fields import ChoiceField, IntegerField, NumberField, help_text


def test_fields_validate_at_the_field_and_carry_help(qtbot) -> None:
    state = ConfigState()
    rate = NumberField(state, "optim.learning_rate")
    qtbot.addWidget(rate)
    assert rate.toolTip() == help_text("optim.learning_rate") and "AdamW" in rate.toolTip()

    rate.editor.setText("-1")
    assert not rate.commit() and rate.error == "must be > 0, got -1.0" and not state.is_valid
    rate.editor.setText("ten")
    assert not rate.commit() and rate.error == "must be a number, got 'ten'"
    rate.editor.setText("3e-4")
    assert rate.commit() and rate.error == "" and state.is_valid
    assert state.config.optim.learning_rate == 3e-4

    epochs = IntegerField(state, "optim.epochs", minimum=0)
    qtbot.addWidget(epochs)
    epochs.editor.setValue(0)
    assert epochs.error == "must be >= 1, got 0" and not state.is_valid

    mode = ChoiceField(state, "model.mode", ["feature_extraction", "fine_tune"])
    qtbot.addWidget(mode)
    state.set_value("model.mode", "fine_tune")
    assert mode.editor.currentData() == "fine_tune"  # fields follow changes made elsewhere

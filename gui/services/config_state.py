"""The run configuration being edited: one object that every form reads and writes.

Forms change fields by dotted path (``optim.learning_rate``); each change is
validated by the engine's own rules, so a bad value is refused with the same
message the CLI gives, and remembered against its field until it is corrected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.core.config import RunConfig, load_config, save_config
from engine.core.errors import ConfigError


class ConfigState(QObject):
    """Holds the current ``RunConfig`` and the fields whose last edit was refused.

    Signals:
        changed: the new ``RunConfig`` after an accepted edit or a load.
        validity_changed: True when no field holds a refused value.
        field_error: (dotted path, message); message is "" when the field is valid again.
    """

    changed = Signal(object)
    validity_changed = Signal(bool)
    field_error = Signal(str, str)

    def __init__(self, config: RunConfig | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._config = config or RunConfig()
        self._errors: dict[str, str] = {}

    @property
    def config(self) -> RunConfig:
        """The last valid config."""
        return self._config

    @property
    def errors(self) -> dict[str, str]:
        """Refused edits: dotted path -> validation message."""
        return dict(self._errors)

    @property
    def is_valid(self) -> bool:
        """True when every field holds an accepted value."""
        return not self._errors

    def value(self, path: str) -> Any:
        """The current value of a dotted field path."""
        value: Any = self._config
        for name in path.split("."):
            value = getattr(value, name)
        return value

    def set_value(self, path: str, value: Any) -> bool:
        """Apply one edit; returns whether it was accepted (else the field is marked with why)."""
        return self.apply({path: value})

    def apply(self, changes: dict[str, Any]) -> bool:
        """Apply several edits at once (a recommended recipe, a doctor's fix); all or nothing."""
        was_valid = self.is_valid
        try:
            config = self._config.with_changes(**changes)
        except ConfigError as error:
            path = _field_of(error, changes)
            self._errors[path] = str(error)
            self.field_error.emit(path, str(error))
            accepted = False
        else:
            accepted = True
            for path in changes:
                if self._errors.pop(path, None) is not None:
                    self.field_error.emit(path, "")
            self._config = config
            self.changed.emit(config)
        if self.is_valid != was_valid:
            self.validity_changed.emit(self.is_valid)
        return accepted

    def replace(self, config: RunConfig) -> None:
        """Take a whole config (loaded from a file or a run); clears every refused edit."""
        had_errors = dict(self._errors)
        self._errors.clear()
        self._config = config
        for path in had_errors:
            self.field_error.emit(path, "")
        self.changed.emit(config)
        if had_errors:
            self.validity_changed.emit(True)

    def load(self, path: str | Path) -> None:
        """Load a YAML config file (raises ``ConfigError`` naming the file and field)."""
        self.replace(load_config(path))

    def save(self, path: str | Path) -> Path:
        """Save the current config as commented YAML."""
        return save_config(self._config, path)


def _field_of(error: ConfigError, changes: dict[str, Any]) -> str:
    """The edited field to mark: the one the message names, else the first edited one.

    A refusal caused by another field (a mode that needs more epochs) is marked on the
    field the user just changed, with the message naming the other: the other field's
    stored value is still valid, and marking it would keep Start disabled for nothing.
    """
    head = str(error).split(":", 1)[0].strip().split("[", 1)[0]
    return head if head in changes else next(iter(changes))

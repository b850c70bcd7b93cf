"""Config files: YAML with each field's help as a comment, read and written atomically, and ``--set`` overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from engine.core.atomic import atomic_write_text
from engine.core.config.choices import SCHEMA_VERSION
from engine.core.config.run import RunConfig
from engine.core.config.schema import plain
from engine.core.errors import ConfigError


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds an invalid value.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{file}: cannot read config ({error.strerror or error})") from error
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{file}: not valid YAML ({_first_line(error)})") from error
    try:
        return RunConfig.from_dict(values or {})
    except ConfigError as error:
        raise ConfigError(f"{file}: {error}") from error


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the config as commented YAML, atomically; ``load_config`` gives it back equal."""
    return atomic_write_text(path, to_yaml(config))


def to_yaml(config: RunConfig, *, comments: bool = True) -> str:
    """The config as YAML, with each field's help text as a comment when ``comments``."""
    lines = [f"# Transfer Studio run configuration (schema {SCHEMA_VERSION})"] if comments else []
    _emit(config, lines, indent="", comments=comments)
    return "\n".join(lines) + "\n"


def parse_override(assignment: str) -> tuple[str, Any]:
    """Parse a CLI ``--set key=value`` into a dotted path and a YAML-typed value."""
    key, separator, raw = assignment.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. optim.learning_rate=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _emit(instance: Any, lines: list[str], *, indent: str, comments: bool) -> None:
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if comments:
            lines.append(f"{indent}# {item.metadata['help']}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{item.name}:")
            _emit(value, lines, indent=indent + "  ", comments=comments)
        elif value and isinstance(value, tuple) and dataclasses.is_dataclass(value[0]):
            lines.append(f"{indent}{item.name}:")
            for entry in value:
                lines.append(f"{indent}- {_flow(_non_default_fields(entry))}")
        else:
            dumped = yaml.safe_dump({item.name: value}, default_flow_style=True, width=10_000).strip()
            lines.append(f"{indent}{dumped[1:-1]}")  # strip the {} of flow style



def _non_default_fields(instance: Any) -> dict[str, Any]:
    """A section's fields that differ from their defaults (all of them would bury a list entry's point)."""
    values = {}
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        if value != item.default:
            values[item.name] = plain(value)
    return values


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()



def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__

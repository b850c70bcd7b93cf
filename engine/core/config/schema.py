"""Typed dicts to dataclasses and back: building sections from plain values, with messages that name the field.

Generic over frozen dataclasses whose fields are typed with bool, int, float, str, tuples,
unions with None and nested dataclasses; ``engine.core.config.run`` applies it to ``RunConfig``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

from engine.core.errors import ConfigError

Auto = typing.NewType("Auto", str)
"""The type of the word ``auto`` in a field that may leave its value to the app (``int | Auto``)."""

AUTO = Auto("auto")


def union_options(expected: Any) -> tuple[Any, ...]:
    """The types a field accepts: the members of a union (``int | None``, ``int | Auto``), else the type itself."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return typing.get_args(expected)
    return (expected,)


def help_text(text: str) -> dict[str, str]:
    """A field's metadata holding its help text (written as a comment above it in YAML, a tooltip in the GUI)."""
    return {"help": text}


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from a nested dict; missing keys take their defaults.

    Raises:
        ConfigError: an unknown key (with a did-you-mean) or a value of the wrong type, named by its
            path (``prefix`` + key).
    """
    hints = typing.get_type_hints(cls)
    known = {item.name: item for item in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{path}: unknown setting{did_you_mean(str(key), known)}")
        expected = hints[key]
        if isinstance(expected, type) and dataclasses.is_dataclass(expected):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a section of settings, got {value!r}")
            kwargs[key] = build(expected, value, prefix=f"{path}.")
        else:
            kwargs[key] = coerce(value, expected, path)
    return cls(**kwargs)


def plain(value: Any) -> Any:
    """A field value as YAML and JSON hold it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def coerce(value: Any, expected: Any, path: str) -> Any:
    """``value`` as the type ``expected`` (ints accepted for floats, ``"1e-3"`` read as a number).

    Raises:
        ConfigError: the value does not fit; the message starts with ``path``.
    """
    options = union_options(expected)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{path}: must be set ({type_name(expected)}), got null")
    for option in options:
        if typing.get_origin(option) is tuple:
            return coerce_tuple(value, option, path, described=expected)
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
        if option is float and isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; people write rates that way.
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                return number
        if option is Auto and value == AUTO:
            return value
        if option is str and isinstance(value, str):
            return value
        if isinstance(option, type) and dataclasses.is_dataclass(option):
            if isinstance(value, option):
                return value
            if isinstance(value, dict):
                return build(option, value, prefix=f"{path}.")
    raise ConfigError(f"{path}: must be {type_name(expected)}, got {value!r}")


def coerce_tuple(value: Any, expected: Any, path: str, *, described: Any) -> tuple:
    """A list as the tuple type ``expected`` (fixed length, or ``tuple[X, ...]``), item by item."""
    items = typing.get_args(expected)
    variadic = len(items) == 2 and items[1] is Ellipsis
    if not isinstance(value, (list, tuple)) or (not variadic and len(value) != len(items)):
        raise ConfigError(f"{path}: must be {type_name(described)}, got {value!r}")
    kinds = [items[0]] * len(value) if variadic else list(items)
    pairs = enumerate(zip(value, kinds, strict=True))
    return tuple(coerce(item, kind, f"{path}[{index}]") for index, (item, kind) in pairs)


def type_name(expected: Any) -> str:
    """A type in words for messages: ``a number or null``, ``a list of 2 (a number, a number)``."""
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", Auto: "auto",
             type(None): "null"}
    options = union_options(expected)
    described = []
    for option in options:
        if typing.get_origin(option) is tuple:
            items = typing.get_args(option)
            if len(items) == 2 and items[1] is Ellipsis:
                item = items[0]
                if item in names:
                    described.append(f"a list of {names[item]}s")
                elif dataclasses.is_dataclass(item):
                    described.append(f"a list of mappings ({', '.join(f.name for f in dataclasses.fields(item))})")
                else:
                    described.append(f"a list of values ({type_name(item)})")
            else:
                described.append(f"a list of {len(items)} ({', '.join(names[item] for item in items)})")
        elif dataclasses.is_dataclass(option):
            described.append(f"a mapping of {', '.join(item.name for item in dataclasses.fields(option))}")
        else:
            described.append(names.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(described)


def did_you_mean(key: str, known: dict[str, Any]) -> str:
    """A message's ending for an unknown key: the closest known one, else all of them."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; known settings: {', '.join(known)}"


def assign(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the dotted path (``optim.epochs``) in nested dicts; its sections must exist."""
    *sections, last = dotted.split(".")
    target = values
    for position, name in enumerate(sections):
        if not isinstance(target.get(name), dict):
            path = ".".join(sections[: position + 1])
            raise ConfigError(f"{path}: not a section of settings{did_you_mean(name, target)}")
        target = target[name]
    target[last] = value

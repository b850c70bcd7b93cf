"""Registries: named entries that add themselves, looked up by config validation and by factories.

Each extension point of the engine (a learning-rate schedule, a doctor check, a weights
provider, an export format) is a ``Registry``. An entry is one file that registers itself
when it is imported, and its package's ``__init__`` imports the built-in ones, as timm's
``timm/models/__init__.py`` fills ``timm/models/_registry.py``.

A registry lives in the lowest layer that looks names up in it. The config validates
``optim.schedule`` and ``doctor.checks`` in ``engine.core``, so those two registries live in
``engine.core.config`` while their entries live in ``engine.training``, which ``engine.core``
must never import at import time. Such a registry is given its ``source``, the module whose
import registers the built-in entries, and imports it on the first lookup, as entry points
are loaded only when they are asked for: ``import engine.core.config`` stays light and free of
upper layers, and every lookup sees the built-in entries as well as those registered from
outside (a plugin, a test). A registry whose lookups all happen in or above its entries'
package (weights providers, export formats) lives in that package and needs no source.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from engine.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order; iterating it gives the names.

    Args:
        kind: what an entry is, in words (``schedule``, ``doctor check``), for messages.
        field: the config field that names an entry (``optim.schedule``), for messages;
            empty when no config field does.
        source: the module that registers the built-in entries, imported on the first
            lookup; empty when the entries' own package holds the registry.
    """

    def __init__(self, kind: str, *, field: str = "", source: str = "") -> None:
        self.kind = kind
        self.field = field
        self.source = source
        self._entries: dict[str, T] = {}
        self._defaults: set[str] = set()

    def register(self, name: str, entry: T, *, default: bool = False, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; returns the entry, so a module can register in one line.

        Args:
            name: the name configs and callers use.
            entry: the registered object (a factory, a class, a provider...).
            default: whether it belongs to ``default_names`` (e.g. a doctor check that runs unless
                the config says otherwise).
            replace: allow replacing another entry of the same name.

        Raises:
            ValueError: an empty name, or the name is taken by another entry and ``replace`` is false.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a name to be registered")
        self._fill()
        existing = self._entries.get(name)
        if existing is not None and existing is not entry and not replace:
            raise ValueError(f"a {self.kind} named '{name}' is already registered; pass replace=True to replace it")
        self._entries[name] = entry
        if default:
            self._defaults.add(name)
        else:
            self._defaults.discard(name)
        return entry

    def unregister(self, name: str) -> None:
        """Remove the entry ``name`` (a plugin unloading, a test cleaning up); unknown names are ignored."""
        self._entries.pop(name, None)
        self._defaults.discard(name)

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ConfigError: no entry has this name; the message names the field, lists the
                registered names and suggests the closest one.
        """
        self._fill()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{self.field or self.kind}: {self.expectation()}, got {name!r}{hint}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order (built-in entries first)."""
        self._fill()
        return tuple(self._entries)

    def default_names(self) -> tuple[str, ...]:
        """The names registered with ``default=True``, in registration order."""
        return tuple(name for name in self.names() if name in self._defaults)

    def expectation(self) -> str:
        """What a valid name is, for validation messages: ``must be one of the registered schedules (...)``."""
        return f"must be one of the registered {self.kind}s ({', '.join(self.names())})"

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self._entries)})"

    def _fill(self) -> None:
        # Asked on every lookup, as the import system answers in a dict lookup once the source is loaded. While it
        # loads, its own entries' register() calls get the half-loaded module back at once, and other threads wait
        # for it to finish, so no lookup ever sees half the built-in entries.
        if self.source:
            importlib.import_module(self.source)

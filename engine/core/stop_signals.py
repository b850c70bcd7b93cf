"""The stop signals (SIGTERM, SIGINT, SIGHUP), caught the same way by every command.

A scheduler's or systemd's stop, Ctrl+C and a closed terminal all ask for a clean stop. Work
with a loop to stop at catches them with ``stops_caught`` and checks ``stop_received()`` (the
training loop's ``StopWatcher``, a search between trials); work without one runs in
``stops_raised``, where the first signal raises ``Stopped`` at once, as Ctrl+C raises
``KeyboardInterrupt``, and a step that must not be cut in two (moving finished files into
place, removing a staging folder) runs in ``stops_deferred``. Scopes nest: the innermost
decides what a signal does. Once the first signal arrived, later ones are ignored, so that
they cannot cut the stop's own clean-up short; once the outermost scope has ended, SIGTERM and
SIGHUP stay ignored, as the process is on its way out (Ctrl+C again is KeyboardInterrupt again). A
signal ignored before the outermost scope began (``nohup``) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
"""The signals that ask a command to stop: a scheduler's or systemd's stop, Ctrl+C, a closed terminal."""


class Stopped(KeyboardInterrupt):
    """A stop signal ended the work (``stops_raised``); like Ctrl+C, no ``except Exception`` swallows it.

    Attributes:
        signal_name: e.g. ``SIGTERM``.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"{signal_name} received")
        self.signal_name = signal_name


@dataclass
class _Scope:
    on_signal: Callable[[str], object] | None  # None: raise Stopped
    deferred: int = 0
    pending: bool = False


@dataclass
class _State:
    scopes: list[_Scope] = field(default_factory=list)
    received: str | None = None


_state = _State()


def stop_received() -> str | None:
    """The first stop signal received since the outermost scope began (``"SIGTERM"``), or None."""
    return _state.received


@contextlib.contextmanager
def stops_caught(on_signal: Callable[[str], object] | None = None) -> Iterator[None]:
    """While the block runs, a stop signal is only recorded (``stop_received``) and passed to ``on_signal(name)``.

    Main thread only (signals reach no other); elsewhere a no-op.
    """
    with _scope(_Scope(on_signal if on_signal is not None else _ignore)):
        yield


@contextlib.contextmanager
def stops_raised() -> Iterator[None]:
    """While the block runs, the first stop signal raises ``Stopped`` (at once, or where ``stops_deferred`` ends).

    Main thread only; elsewhere a no-op.
    """
    with _scope(_Scope(None)):
        yield


@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """A step that a stop must not cut in two: a signal during it raises ``Stopped`` once it ends.

    Outside ``stops_raised`` (or off the main thread) a no-op.
    """
    scope = _state.scopes[-1] if _state.scopes and _on_main_thread() else None
    if scope is None:
        yield
        return
    scope.deferred += 1
    try:
        yield
    finally:
        scope.deferred -= 1
        if not scope.deferred and scope.pending:
            scope.pending = False
            raise Stopped(_state.received or "stop signal")


@contextlib.contextmanager
def _scope(scope: _Scope) -> Iterator[None]:
    if not _on_main_thread():
        yield
        return
    outermost = not _state.scopes
    previous = {}
    if outermost:
        _state.received = None
        for number in STOP_SIGNALS:
            handler = signal.getsignal(number)
            if handler is not None and handler is not signal.SIG_IGN:  # None: a handler Python did not set
                previous[number] = handler
                signal.signal(number, _on_signal)
    _state.scopes.append(scope)
    try:
        yield
    finally:
        _state.scopes.pop()
        if outermost:
            for number, handler in previous.items():
                # After a stop, SIGTERM and SIGHUP no longer kill the process, which is ending already
                # (SIG_IGN: Python puts its own handlers back to SIG_DFL while it shuts down).
                stopping = _state.received is not None and handler is signal.SIG_DFL
                signal.signal(number, signal.SIG_IGN if stopping else handler)
            _state.received = None


def _on_signal(number: int, _frame: object) -> None:
    name = signal.Signals(number).name
    first = _state.received is None
    if first:
        _state.received = name
    if not _state.scopes:  # the outermost scope is ending: it puts the old handlers back
        return
    scope = _state.scopes[-1]
    if scope.on_signal is not None:
        scope.on_signal(name)
    elif first and scope.deferred:
        scope.pending = True
    elif first:
        raise Stopped(name)


def _ignore(_name: str) -> None:
    pass

def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

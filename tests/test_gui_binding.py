"""The Qt binding itself: the pinned PySide6 keeps Python's reference counts whole through signal emissions.

PySide6 6.12.0 drops a reference to ``True`` each time a signal is emitted with it (or with some
other values) from Python. The window emits such signals all session long, so after some
thousands ``True`` is freed and the interpreter aborts ("bool_dealloc"), mid-session or at exit.
"""

from __future__ import annotations

import gc
import sys

import pytest
from PySide6.QtCore import QObject, Signal

EMISSIONS = 200  # enough to see a leak, few enough never to use up True's references here


class Emitter(QObject):
    flag = Signal(bool)
    value = Signal(object)
    pair = Signal(str, bool)


@pytest.mark.parametrize("emit", [
    lambda emitter: emitter.flag.emit(True),
    lambda emitter: emitter.value.emit(True),
    lambda emitter: emitter.value.emit((1,)),
    lambda emitter: emitter.pair.emit("done", True),
], ids=["bool", "object", "tuple", "pair"])
def test_emitting_a_signal_keeps_the_references_to_true(qapp, emit) -> None:
    emitter = Emitter()
    received: list[object] = []
    for signal in (emitter.flag, emitter.value, emitter.pair):
        signal.connect(lambda *values: received.append(values))
    gc.collect()
    before = sys.getrefcount(True)
    for _ in range(EMISSIONS):
        emit(emitter)
    received.clear()
    gc.collect()
    lost = before - sys.getrefcount(True)
    assert lost <= 0, f"{lost} references to True lost in {EMISSIONS} emissions"

"""Transfer Studio's Qt GUI: thin widgets over the engine; nothing imports this package."""

from __future__ import annotations

from gui.app import run_app
from gui.main_window import MainWindow
from gui.workers import Worker, WorkerSignals, run_in_thread_pool

__all__ = ["MainWindow", "Worker", "WorkerSignals", "run_app", "run_in_thread_pool"]

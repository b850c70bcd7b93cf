"""The "Runs" page."""

from gui.pages.runs.page import RunsPage

__all__ = ["RunsPage"]

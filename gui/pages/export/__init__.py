"""The "Export" page."""

from gui.pages.export.page import ExportPage

__all__ = ["ExportPage"]

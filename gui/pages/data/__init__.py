"""The "Data" page."""

from gui.pages.data.page import DataPage

__all__ = ["DataPage"]

"""The "Search" page."""

from gui.pages.search.page import SearchPage

__all__ = ["SearchPage"]

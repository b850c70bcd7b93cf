"""The Review page: the data doctor's findings as cards, with relabel, exclude, keep and undo."""

from gui.pages.review.page import ReviewPage

__all__ = ["ReviewPage"]

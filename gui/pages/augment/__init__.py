"""The "Augment" page."""

from gui.pages.augment.page import AugmentPage

__all__ = ["AugmentPage"]

"""The "Model" page."""

from gui.pages.model.page import ModelPage

__all__ = ["ModelPage"]

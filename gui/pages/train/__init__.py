"""The "Train" page."""

from gui.pages.train.page import TrainPage

__all__ = ["TrainPage"]

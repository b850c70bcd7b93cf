"""The "Predict" page."""

from gui.pages.predict.page import PredictPage

__all__ = ["PredictPage"]

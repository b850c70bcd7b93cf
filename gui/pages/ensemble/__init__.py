"""The "Ensemble" page."""

from gui.pages.ensemble.page import EnsemblePage

__all__ = ["EnsemblePage"]

"""The pages of the main window, one package each, and ``PAGES``: the table the sidebar is built from.

A page is a ``gui.pages.base.Page`` subclass with its panels beside it in its package; to add
one, write its package and add its class to ``PAGES`` where it belongs in the sidebar. Pages
may import services, widgets and the engine, never one another: what one page asks of
another (show the Model page after loading a config) goes through the main window.
"""

from gui.pages.augment import AugmentPage
from gui.pages.base import Page, PageContext
from gui.pages.data import DataPage
from gui.pages.ensemble import EnsemblePage
from gui.pages.evaluate import EvaluatePage
from gui.pages.export import ExportPage
from gui.pages.model import ModelPage
from gui.pages.predict import PredictPage
from gui.pages.project import ProjectPage
from gui.pages.review import ReviewPage
from gui.pages.runs import RunsPage
from gui.pages.search import SearchPage
from gui.pages.train import TrainPage

# The sidebar, top to bottom: from the project to the exported model.
PAGES: tuple[type[Page], ...] = (
    ProjectPage,
    DataPage,
    ReviewPage,
    ModelPage,
    AugmentPage,
    TrainPage,
    RunsPage,
    SearchPage,
    EnsemblePage,
    EvaluatePage,
    PredictPage,
    ExportPage,
)

__all__ = [
    "PAGES", "AugmentPage", "DataPage", "EnsemblePage", "EvaluatePage", "ExportPage", "ModelPage", "Page",
    "PageContext", "PredictPage", "ProjectPage", "ReviewPage", "RunsPage", "SearchPage", "TrainPage",
]

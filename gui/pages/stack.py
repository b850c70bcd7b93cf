"""The sidebar and the stack of pages, built from the table of pages; each page is built when it is first needed.

The sidebar lists every row at once (a page class names its title and icon), but a page is
built only when it is shown or asked for, or by ``build_remaining`` once the window is on
screen: so the window paints its first page without waiting for the others and their plots.
"""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtCore import QObject, QSize, QTimer, Signal
from PySide6.QtWidgets import QFrame, QListWidget, QListWidgetItem, QScrollArea, QStackedWidget, QWidget

from gui.pages.base import Page, PageContext

PageT = TypeVar("PageT", bound=Page)


class PageStack(QObject):
    """A sidebar row and a stack slot per page class; pages are built on first use.

    Signals:
        page_created: a page that was just built, before it is shown.

    Args:
        page_classes: the pages, top to bottom.
        context: what pages are built from.
        parent: the window that holds the sidebar and the stack.
    """

    page_created = Signal(object)

    def __init__(self, page_classes: tuple[type[Page], ...], context: PageContext, parent: QWidget) -> None:
        super().__init__(parent)
        self._context = context
        self._classes = page_classes
        self._pages: dict[type[Page], Page] = {}
        self.sidebar = QListWidget(parent)
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(132)
        self.sidebar.setIconSize(QSize(20, 20))
        self.sidebar.setSpacing(2)
        self.stack = QStackedWidget(parent)
        for page_class in page_classes:
            item = QListWidgetItem(parent.style().standardIcon(page_class.icon), page_class.title)
            item.setSizeHint(QSize(0, 36))
            self.sidebar.addItem(item)
            # A page scrolls rather than forcing its minimum size on the window (small screens).
            scroller = QScrollArea(self.stack)
            scroller.setWidgetResizable(True)
            scroller.setFrameShape(QFrame.Shape.NoFrame)
            self.stack.addWidget(scroller)
        self.sidebar.currentRowChanged.connect(self._on_sidebar_current_row_changed)

    def page(self, page_class: type[PageT]) -> PageT:
        """The page of class ``page_class`` (the first row of a subclass of it), built now if it was not yet.

        Raises:
            KeyError: no row of the table holds such a page.
        """
        row = next((row for row, cls in enumerate(self._classes) if issubclass(cls, page_class)), None)
        if row is None:
            raise KeyError(f"no page of class {page_class.__name__} in the sidebar")
        page = self._build(row)
        assert isinstance(page, page_class)
        return page

    def built(self) -> list[Page]:
        """The pages built so far, top to bottom."""
        return [self._pages[cls] for cls in self._classes if cls in self._pages]

    def built_page(self, page_class: type[PageT]) -> PageT | None:
        """The page of class ``page_class`` if it was built, else None (nothing is built)."""
        return next((page for page in self.built() if isinstance(page, page_class)), None)

    def show(self, page: Page) -> None:
        """Bring ``page`` to the front and select its row."""
        self.sidebar.setCurrentRow(self._classes.index(type(page)))

    def build_remaining(self) -> None:
        """Build the pages not built yet, one per turn of the event loop, so that the window stays responsive."""
        row = next((row for row, cls in enumerate(self._classes) if cls not in self._pages), None)
        if row is not None:
            self._build(row)
            QTimer.singleShot(0, self, self.build_remaining)  # not after the window is gone

    def _build(self, row: int) -> Page:
        page_class = self._classes[row]
        page = self._pages.get(page_class)
        if page is None:
            scroller = self.stack.widget(row)
            page = page_class.create(self._context, scroller)
            self._pages[page_class] = page
            assert isinstance(scroller, QScrollArea)
            scroller.setWidget(page)
            self.page_created.emit(page)
        return page

    def _on_sidebar_current_row_changed(self, row: int) -> None:
        if row >= 0:
            self._build(row)
            self.stack.setCurrentIndex(row)

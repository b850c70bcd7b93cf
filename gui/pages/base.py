"""What a sidebar page is: a titled widget that the main window builds from its shared objects and keeps informed.

The window builds its sidebar and its stack from ``gui.pages.PAGES``, a tuple of ``Page``
subclasses, so a new page is one module with a ``Page`` subclass plus one row there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QStyle, QWidget

from gui.services.config_state import ConfigState
from gui.services.run_controller import RunController

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

    from engine.data.health import HealthReport


@dataclass(frozen=True)
class PageContext:
    """The window's shared objects, which pages are built from."""

    state: ConfigState  # the run config every form edits; its data.path names the project
    controller: RunController  # runs training (and resumes) in a child process
    settings: QSettings  # UI state: recent projects, window geometry


class Page(QWidget):
    """A page of the main window's sidebar.

    A subclass names itself (``title``, ``icon``) and overrides what it needs: ``create``
    when it needs more than the edited config, and the three notifications, which do
    nothing here.
    """

    title: ClassVar[str]  # the sidebar's text, also the page's heading
    icon: ClassVar[QStyle.StandardPixmap]  # the sidebar's icon, one of the style's standard ones

    # Shadows QWidget.create (native window creation), which no page calls.
    @classmethod
    def create(cls, context: PageContext, parent: QWidget | None = None) -> Self:  # type: ignore[override]
        """Build the page from the window's shared objects; most pages need only the edited config."""
        return cls(context.state, parent)  # type: ignore[arg-type]  # subclasses that keep this take (state, parent)

    def set_project(self, folder: Path) -> None:
        """A data folder was opened (by any page, menu or drop); its scan is starting."""

    def set_report(self, report: HealthReport) -> None:
        """The scan of the open folder finished with this health report."""

    def refresh(self) -> None:
        """The project changed on disk (a run ended, an ensemble was saved): read what the page shows again."""

"""The "Project" page."""

from gui.pages.project.page import ProjectPage

__all__ = ["ProjectPage"]

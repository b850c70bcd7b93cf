"""The look of Transfer Studio: Fusion style with a light or dark palette that follows the system.

Also the few semantic colours the views share (severity of a problem, the share
bar), derived from the active palette so that they stay readable on both.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QWidget

_Role = QPalette.ColorRole
_Group = QPalette.ColorGroup

# (light, dark) for each semantic colour.
_SEVERITY_COLORS: dict[str, tuple[str, str]] = {
    "error": ("#c62828", "#ff7b72"),
    "warning": ("#a15c00", "#e3b341"),
    "info": ("#1f5fa8", "#79b8ff"),
}
_OK_COLORS = ("#2e7d32", "#7ee787")
_ACCENT_COLORS = ("#2f6fb3", "#4c8fd6")


def create_palette(scheme: Qt.ColorScheme) -> QPalette:
    """Return the palette for a colour scheme; anything but Dark gets the light palette."""
    dark = scheme == Qt.ColorScheme.Dark
    if dark:
        colors = {
            _Role.Window: "#202124", _Role.WindowText: "#e8eaed", _Role.Base: "#17181a",
            _Role.AlternateBase: "#232427", _Role.Text: "#e8eaed", _Role.Button: "#2b2c30",
            _Role.ButtonText: "#e8eaed", _Role.BrightText: "#ffffff", _Role.ToolTipBase: "#2b2c30",
            _Role.ToolTipText: "#e8eaed", _Role.PlaceholderText: "#8b8f96", _Role.Link: "#79b8ff",
            _Role.Highlight: _ACCENT_COLORS[1], _Role.HighlightedText: "#ffffff",
            _Role.Light: "#3a3b40", _Role.Midlight: "#323337", _Role.Mid: "#4a4c52",
            _Role.Dark: "#111214", _Role.Shadow: "#000000",
        }
        disabled_text = "#6b6f76"
    else:
        colors = {
            _Role.Window: "#f3f4f6", _Role.WindowText: "#1f2328", _Role.Base: "#ffffff",
            _Role.AlternateBase: "#f6f8fa", _Role.Text: "#1f2328", _Role.Button: "#eceef1",
            _Role.ButtonText: "#1f2328", _Role.BrightText: "#ffffff", _Role.ToolTipBase: "#ffffff",
            _Role.ToolTipText: "#1f2328", _Role.PlaceholderText: "#6e7781", _Role.Link: "#0a5cc2",
            _Role.Highlight: _ACCENT_COLORS[0], _Role.HighlightedText: "#ffffff",
            _Role.Light: "#ffffff", _Role.Midlight: "#e6e8eb", _Role.Mid: "#c4c8cd",
            _Role.Dark: "#9aa0a6", _Role.Shadow: "#5f6368",
        }
        disabled_text = "#9aa0a6"
    palette = QPalette()
    for role, color in colors.items():
        palette.setColor(role, QColor(color))
    for role in (_Role.WindowText, _Role.Text, _Role.ButtonText):
        palette.setColor(_Group.Disabled, role, QColor(disabled_text))
    return palette


def is_dark(palette: QPalette) -> bool:
    """Whether a palette draws light text on a dark window."""
    return palette.color(_Role.Window).lightness() < 128


def severity_color(severity: str, palette: QPalette) -> QColor:
    """The text colour for a problem severity ("error", "warning", "info") on ``palette``."""
    light, dark = _SEVERITY_COLORS.get(severity, _SEVERITY_COLORS["info"])
    return QColor(dark if is_dark(palette) else light)


def ok_color(palette: QPalette) -> QColor:
    """The text colour for "all is well" (no problems, a file kept for training)."""
    return QColor(_OK_COLORS[1] if is_dark(palette) else _OK_COLORS[0])


def bar_color(palette: QPalette) -> QColor:
    """The fill colour of the inline share bars."""
    return QColor(_ACCENT_COLORS[1] if is_dark(palette) else _ACCENT_COLORS[0])


_following_color_scheme = False


def secondary_label(parent: QWidget) -> QLabel:
    """A wrapping label in the palette's muted text colour, for explanations beside controls."""
    label = QLabel(parent)
    label.setWordWrap(True)
    label.setStyleSheet("color: palette(placeholder-text);")
    return label


def apply_style(app: QApplication) -> None:
    """Use Fusion with our palette, and switch palettes when the system colour scheme changes."""
    global _following_color_scheme
    app.setStyle("Fusion")
    hints = QGuiApplication.styleHints()
    app.setPalette(create_palette(hints.colorScheme()))
    if not _following_color_scheme:  # once per process, however often the style is applied
        hints.colorSchemeChanged.connect(_on_style_hints_color_scheme_changed)
        _following_color_scheme = True


def _on_style_hints_color_scheme_changed(scheme: Qt.ColorScheme) -> None:
    app = QApplication.instance()
    if isinstance(app, QApplication):
        app.setPalette(create_palette(scheme))

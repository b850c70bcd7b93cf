"""The health report of a dataset: a summary line and its problems, grouped by kind.

Each group has a plain-language title and a severity icon; each row names the
file (or class) at fault, the reason, and whether it is left out of training.
A thin view over ``HealthReport.problems`` and the user's own exclusions, with
actions to exclude selected files, include them again, or show them in the file manager.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from PySide6.QtCore import QEvent, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QFont, QIcon
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QToolBar,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.data.health import HealthReport, Problem
from gui.pages.data.file_actions import FileActions
from gui.style import ok_color, severity_color
from gui.widgets.items import child_items

# Plain-language titles, in the order groups of equal severity are listed.
PROBLEM_TITLES: dict[str, str] = {
    "unreadable": "Files that cannot be read",
    "corrupt": "Corrupt images",
    "truncated": "Truncated files",
    "zero_byte": "Empty (zero-byte) files",
    "not_an_image": "Files that are not images",
    "decompression_bomb": "Images too large to open safely",
    "conflicting_labels": "Same image under two labels",
    "split_leakage": "Same image in two splits",
    "duplicate_in_class": "Same image twice in one class",
    "empty_class": "Empty classes",
    "few_images": "Classes with very few images",
    "class_imbalance": "Classes of very different sizes",
    "too_small": "Very small images",
    "extreme_aspect_ratio": "Very long or very narrow images",
}
SEVERITY_ORDER = ("error", "warning", "info")
MAX_ROWS_PER_GROUP = 500  # beyond this a group ends with "… and N more"; the saved report has all

LEFT_OUT_TEXT = "Left out of training"
KEPT_TEXT = "Kept"
USER_LEFT_OUT_TEXT = "Left out by you"
USER_GROUP_KIND = "excluded_by_user"  # not a kind of the engine's report: the group of the user's exclusions
USER_GROUP_TITLE = "Left out of training by you"
USER_REASON = "You excluded this image from training; “Include again” brings it back."

PATHS_ROLE = Qt.ItemDataRole.UserRole  # the files a row stands for (a group: all of its files)
_KEY_ROLE = Qt.ItemDataRole.UserRole + 1  # identifies a row across redraws, to keep the selection

_ROW_PADDING = 6  # pixels added to each row's height, so wrapped rows do not touch

_STANDARD_ICONS = {
    "error": QStyle.StandardPixmap.SP_MessageBoxCritical,
    "warning": QStyle.StandardPixmap.SP_MessageBoxWarning,
    "info": QStyle.StandardPixmap.SP_MessageBoxInformation,
}


def problem_title(kind: str) -> str:
    """The plain-language title of a problem kind; unknown kinds get their name made readable."""
    return PROBLEM_TITLES.get(kind, kind.replace("_", " ").capitalize())


def summarize(report: HealthReport, user_excluded: frozenset[Path] = frozenset()) -> str:
    """One line: files, usable images, classes, problems and how many files are left out.

    Args:
        report: the health report.
        user_excluded: images the user left out of training; they are not counted as usable.
    """
    total = len(report.records)
    sound = report.usable_records()
    by_user = sum(1 for record in sound if record.path in user_excluded)
    usable = len(sound) - by_user
    classes = len(report.classes)
    problems = len(report.problems)
    line = (
        f"{total:,} {_plural(total, 'file')} · {usable:,} usable {_plural(usable, 'image')}"
        f" · {classes} {_plural(classes, 'class', 'classes')} · {problems} {_plural(problems, 'problem')}"
    )
    left_out = total - usable
    if not left_out:
        return line
    mine = f", {by_user:,} of them by you" if by_user else ""
    return f"{line} ({left_out:,} {_plural(left_out, 'file')} left out of training{mine})"


class _WrappedTextDelegate(QStyledItemDelegate):
    """Measures a cell at its column's width, so a tree with word wrap gets rows tall enough.

    QTreeView asks for size hints with no width, which makes wrapped text measure as one line.
    """

    def __init__(self, header: QHeaderView) -> None:
        super().__init__(header)
        self._header = header

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        sized = QStyleOptionViewItem(option)
        sized.rect = QRect(0, 0, max(self._header.sectionSize(index.column()), 1), 1)
        hint = super().sizeHint(sized, index)
        return QSize(hint.width(), hint.height() + _ROW_PADDING)


class HealthView(QWidget):
    """A summary line over a tree of problems grouped by kind, most severe first.

    Selected rows can be excluded from training, included again, or shown in the file
    manager (buttons and context menu); the page that owns the exclusions acts on the signals.

    Signals:
        exclusion_requested: (paths, True to leave them out of training / False to include them again).
        reveal_requested: a file whose folder should open in the file manager.
    """

    COLUMN_ITEM, COLUMN_REASON, COLUMN_TRAINING = range(3)

    exclusion_requested = Signal(object, bool)
    reveal_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._report: HealthReport | None = None
        self._user_excluded: frozenset[Path] = frozenset()
        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["Problem / file", "Reason", "Training"])
        # Reasons are sentences: wrap them rather than cut them (rows per group are capped).
        self.tree.setWordWrap(True)
        self.tree.setUniformRowHeights(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(self.COLUMN_ITEM, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(self.COLUMN_REASON, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(self.COLUMN_TRAINING, QHeaderView.ResizeMode.ResizeToContents)
        header.resizeSection(self.COLUMN_ITEM, 220)
        self.tree.setItemDelegateForColumn(self.COLUMN_REASON, _WrappedTextDelegate(header))
        # QTreeView sizes rows once; re-measure them when a column's width changes.
        self._relayout_timer = QTimer(self)
        self._relayout_timer.setSingleShot(True)
        self._relayout_timer.setInterval(0)  # coalesces the resizes of one layout pass
        self._relayout_timer.timeout.connect(self.tree.doItemsLayout)
        header.sectionResized.connect(self._on_header_section_resized)

        self.file_actions = FileActions(
            self.tree, self.selected_paths, self._is_used, lambda path: path in self._user_excluded
        )
        self.file_actions.exclusion_requested.connect(self.exclusion_requested)
        self.file_actions.reveal_requested.connect(self.reveal_requested)
        self.tree.itemSelectionChanged.connect(self.file_actions.update)

        # A tool bar rather than a row of buttons: when the pane is narrow it folds into a menu.
        self.toolbar = QToolBar(self)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toolbar.setIconSize(QSize(16, 16))
        self.toolbar.addActions(self.file_actions.actions)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.tree, 1)

    def _on_header_section_resized(self, _column: int, _old_size: int, _new_size: int) -> None:
        self._relayout_timer.start()

    def changeEvent(self, event: QEvent) -> None:
        # Severity colours are baked into the items: redo them for a new (light/dark) palette.
        if event.type() == QEvent.Type.PaletteChange and self._report is not None:
            self._redraw()
        super().changeEvent(event)

    def clear(self) -> None:
        """Show nothing."""
        self._report = None
        self.summary_label.clear()
        self.tree.clear()

    def set_report(self, report: HealthReport, user_excluded: frozenset[Path] = frozenset()) -> None:
        """Show the summary and problems of ``report`` and the images the user left out."""
        self._report = report
        self._user_excluded = user_excluded
        self.tree.clear()
        self._redraw()

    def set_user_excluded(self, paths: frozenset[Path]) -> None:
        """Show which images the user left out of training, keeping the selection and scroll position."""
        self._user_excluded = paths
        if self._report is not None:
            self._redraw()

    def selected_paths(self) -> tuple[Path, ...]:
        """The files of the selected rows (a group row stands for all its files), without repeats."""
        paths: dict[Path, None] = {}
        for item in self.tree.selectedItems():
            paths.update(dict.fromkeys(item.data(self.COLUMN_ITEM, PATHS_ROLE) or ()))
        return tuple(paths)

    def _redraw(self) -> None:
        report = self._report
        assert report is not None
        selected = {item.data(self.COLUMN_ITEM, _KEY_ROLE) for item in self.tree.selectedItems()}
        scroll = self.tree.verticalScrollBar().value()
        self.summary_label.setText(summarize(report, self._user_excluded))
        self.tree.clear()
        if not report.problems:
            self._add_no_problems_row()
        groups: dict[str, list[Problem]] = defaultdict(list)
        for problem in report.problems:
            groups[problem.kind].append(problem)
        # Paths are shown relative to the data folder (to the CSV's folder for a CSV dataset).
        base = report.root.parent if report.layout == "csv" else report.root
        for kind in sorted(groups, key=lambda kind: _group_sort_key(kind, groups[kind])):
            self._add_group(kind, groups[kind], base)
        self._add_user_group(base)
        self.tree.header().resizeSection(self.COLUMN_ITEM, self._item_column_width())
        for item in _walk(self.tree):
            item.setSelected(item.data(self.COLUMN_ITEM, _KEY_ROLE) in selected)
        # The scroll range is known once the rows are laid out.
        QTimer.singleShot(0, self.tree, lambda: self.tree.verticalScrollBar().setValue(scroll))
        self.file_actions.update()

    def _item_column_width(self) -> int:
        # Fit the file and class names; group titles span all columns and need no room here.
        metrics = self.tree.fontMetrics()
        widest = 0
        for group in child_items(self.tree.invisibleRootItem()):
            for item in child_items(group):
                widest = max(widest, metrics.horizontalAdvance(item.text(self.COLUMN_ITEM)))
                for child in child_items(item):
                    text = child.text(self.COLUMN_ITEM)
                    widest = max(widest, metrics.horizontalAdvance(text) + self.tree.indentation())
        return min(max(widest + 2 * self.tree.indentation() + 16, 160), 320)

    def _add_no_problems_row(self) -> None:
        item = QTreeWidgetItem(self.tree, ["No problems found: every file can be used for training."])
        item.setIcon(self.COLUMN_ITEM, self.style().standardIcon(QStyle.StandardPixmap.SP_DialogApplyButton))
        item.setForeground(self.COLUMN_ITEM, QBrush(ok_color(self.palette())))
        item.setFirstColumnSpanned(True)

    def _add_group(self, kind: str, problems: list[Problem], base: Path) -> None:
        severity = _worst_severity(problems)
        paths = tuple(dict.fromkeys(path for problem in problems for path in problem.paths))
        group = self._add_group_item(kind, f"{problem_title(kind)} ({len(problems):,})", severity, paths)
        group.setToolTip(self.COLUMN_ITEM, f"{severity.capitalize()}: {kind}")
        for problem in problems[:MAX_ROWS_PER_GROUP]:
            self._add_problem(group, problem, base)
        if len(problems) > MAX_ROWS_PER_GROUP:
            more = len(problems) - MAX_ROWS_PER_GROUP
            QTreeWidgetItem(group, [f"… and {more:,} more (all are in the saved health report)"])
        group.setExpanded(True)

    def _add_user_group(self, base: Path) -> None:
        assert self._report is not None
        paths = tuple(record.path for record in self._report.records if record.path in self._user_excluded)
        if not paths:
            return
        group = self._add_group_item(USER_GROUP_KIND, f"{USER_GROUP_TITLE} ({len(paths):,})", "info", paths)
        for path in paths[:MAX_ROWS_PER_GROUP]:
            item = QTreeWidgetItem(group, [_relative(path, base), USER_REASON, USER_LEFT_OUT_TEXT])
            self._set_paths(item, USER_GROUP_KIND, (path,))
            item.setToolTip(self.COLUMN_ITEM, str(path))
            item.setForeground(self.COLUMN_TRAINING, QBrush(severity_color("info", self.palette())))
        if len(paths) > MAX_ROWS_PER_GROUP:
            QTreeWidgetItem(group, [f"… and {len(paths) - MAX_ROWS_PER_GROUP:,} more"])
        group.setExpanded(True)

    def _add_group_item(self, kind: str, title: str, severity: str, paths: tuple[Path, ...]) -> QTreeWidgetItem:
        group = QTreeWidgetItem(self.tree, [title])
        group.setIcon(self.COLUMN_ITEM, self._severity_icon(severity))
        group.setForeground(self.COLUMN_ITEM, QBrush(severity_color(severity, self.palette())))
        font = QFont(group.font(self.COLUMN_ITEM))
        font.setBold(True)
        group.setFont(self.COLUMN_ITEM, font)
        group.setFirstColumnSpanned(True)
        self._set_paths(group, kind, paths)
        return group

    def _add_problem(self, group: QTreeWidgetItem, problem: Problem, base: Path) -> None:
        if len(problem.paths) == 1:
            subject = _relative(problem.paths[0], base)
        elif problem.paths:
            subject = f"{len(problem.paths)} files"
        else:
            subject = f"Class “{problem.label}”" if problem.label else "Whole dataset"
        item = QTreeWidgetItem(group, [subject, problem.message])
        self._set_paths(item, problem.kind, problem.paths, problem.label or "")
        self._set_training(item, problem, problem.paths)
        item.setToolTip(self.COLUMN_REASON, problem.message)
        if len(problem.paths) == 1:
            item.setToolTip(self.COLUMN_ITEM, str(problem.paths[0]))
        if len(problem.paths) > 1:
            for path in problem.paths:
                child = QTreeWidgetItem(item, [_relative(path, base)])
                self._set_paths(child, problem.kind, (path,))
                self._set_training(child, problem, (path,))
                child.setToolTip(self.COLUMN_ITEM, str(path))
            item.setExpanded(True)

    def _set_paths(self, item: QTreeWidgetItem, kind: str, paths: tuple[Path, ...], label: str = "") -> None:
        item.setData(self.COLUMN_ITEM, PATHS_ROLE, paths)
        item.setData(self.COLUMN_ITEM, _KEY_ROLE, (kind, label, paths))

    def _set_training(self, item: QTreeWidgetItem, problem: Problem, paths: tuple[Path, ...]) -> None:
        # Only files are kept or left out; a class-level finding says in its message what it means.
        if not paths:
            return
        if problem.excluded:
            text, color = LEFT_OUT_TEXT, severity_color("error", self.palette())
        elif all(path in self._user_excluded for path in paths):
            text, color = USER_LEFT_OUT_TEXT, severity_color("info", self.palette())
        else:
            text, color = KEPT_TEXT, ok_color(self.palette())
        item.setText(self.COLUMN_TRAINING, text)
        item.setForeground(self.COLUMN_TRAINING, QBrush(color))

    def _severity_icon(self, severity: str) -> QIcon:
        return self.style().standardIcon(_STANDARD_ICONS.get(severity, _STANDARD_ICONS["info"]))

    def _is_used(self, path: Path) -> bool:
        return (
            self._report is not None
            and path not in self._report.excluded_paths()
            and path not in self._user_excluded
        )


def _walk(tree: QTreeWidget) -> Iterator[QTreeWidgetItem]:
    """Every item of ``tree``, depth first."""
    stack = child_items(tree.invisibleRootItem())[::-1]
    while stack:
        item = stack.pop()
        yield item
        stack.extend(reversed(child_items(item)))


def _worst_severity(problems: list[Problem]) -> str:
    ranks = [SEVERITY_ORDER.index(p.severity) if p.severity in SEVERITY_ORDER else 2 for p in problems]
    return SEVERITY_ORDER[min(ranks)]


def _group_sort_key(kind: str, problems: list[Problem]) -> tuple[int, int, str]:
    kinds = list(PROBLEM_TITLES)
    position = kinds.index(kind) if kind in kinds else len(kinds)
    return SEVERITY_ORDER.index(_worst_severity(problems)), position, kind


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return singular if count == 1 else (plural or f"{singular}s")

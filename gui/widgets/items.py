"""Items of tables and trees that are known to exist, which Qt's look-ups type as "or None"."""

from __future__ import annotations

from PySide6.QtWidgets import QTableWidget, QTableWidgetItem, QTreeWidgetItem


def table_item(table: QTableWidget, row: int, column: int) -> QTableWidgetItem:
    """The item of a cell that was given one.

    Raises:
        LookupError: the cell has no item.
    """
    item = table.item(row, column)
    if item is None:
        raise LookupError(f"no item at row {row}, column {column}")
    return item


def header_item(table: QTableWidget, column: int) -> QTableWidgetItem:
    """The horizontal header item of a column, e.g. one made by ``setHorizontalHeaderLabels``.

    Raises:
        LookupError: the column has no header item.
    """
    item = table.horizontalHeaderItem(column)
    if item is None:
        raise LookupError(f"no header item for column {column}")
    return item


def child_items(item: QTreeWidgetItem) -> list[QTreeWidgetItem]:
    """The children of ``item``, in order; a tree's top-level items are its ``invisibleRootItem()``'s."""
    children = [item.child(index) for index in range(item.childCount())]
    return [child for child in children if child is not None]  # none is None below childCount()

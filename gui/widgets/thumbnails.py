"""A grid of thumbnails of one class's files, decoded lazily on worker threads.

``ThumbnailModel`` decodes only what the grid asks for (the rows on screen), on its
own thread pool, and caches the pixmaps; files that cannot be shown get a
placeholder with the reason. ``ThumbnailGrid`` is the icon-mode view: it asks for
its visible rows and offers "Exclude from training" and "Show in file manager".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QRectF,
    Qt,
    QThread,
    QThreadPool,
)
from PySide6.QtGui import QGuiApplication, QImage, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
)

from engine.data.health import FileRecord
from engine.data.images import ImageFileError, load_rgb
from gui.services.workers import Worker
from gui.style import severity_color
from gui.widgets.fitted_image import pil_to_qimage

PATH_ROLE = Qt.ItemDataRole.UserRole
STATUS_ROLE = Qt.ItemDataRole.UserRole + 1  # WAITING, LOADING, LOADED or FAILED
REASON_ROLE = Qt.ItemDataRole.UserRole + 2  # why the file cannot be shown, or None
LEFT_OUT_ROLE = Qt.ItemDataRole.UserRole + 3  # why the file is left out of training, or None
USER_EXCLUDED_ROLE = Qt.ItemDataRole.UserRole + 4  # True when the user left it out

WAITING, LOADING, LOADED, FAILED = "waiting", "loading", "loaded", "failed"
THUMBNAIL_SIDE = 96  # logical pixels
USER_EXCLUDED_TEXT = "excluded by you"
_CACHE_LIMIT = 1000  # pixmaps kept across classes: ~37 MB at 96 px, four times that on a 2× screen
_SHORT_REASONS = {
    "unreadable": "Cannot be read",
    "corrupt": "Corrupt image",
    "truncated": "Truncated image",
    "zero_byte": "Empty file",
    "not_an_image": "Not an image",
    "decompression_bomb": "Too large to open",
}

_ModelIndex = QModelIndex | QPersistentModelIndex
_CacheKey = tuple[Path, int | None, int | None]  # path, mtime_ns, size: a changed file is decoded again


@dataclass(frozen=True)
class ThumbnailResult:
    """What a worker made of one file: a picture, or why there is none."""

    key: _CacheKey
    image: QImage | None
    reason: str | None = None
    kind: str | None = None


def load_thumbnail(
    key: _CacheKey, side: int, *, progress: Callable[[int, int], None], should_abort: Callable[[], bool]
) -> ThumbnailResult | None:
    """Decode ``key``'s file and fit it into ``side`` × ``side`` pixels; runs on a worker thread.

    Small images are scaled up too, so that a 28-pixel picture is not a speck in the grid.

    Returns:
        The result, or None when the thumbnail was no longer wanted before decoding began.
    """
    del progress  # one file: nothing to report between start and end
    if should_abort():
        return None
    try:
        # Shorter side >= side: the picture is only ever reduced to fit, and a photo decodes at 1/8 scale.
        picture = load_rgb(key[0], min_side=side)
    except ImageFileError as error:
        return ThumbnailResult(key, None, error.reason, error.kind)
    fitted = ImageOps.contain(picture, (side, side), Image.Resampling.LANCZOS)
    return ThumbnailResult(key, pil_to_qimage(fitted))


@dataclass
class _Item:
    record: FileRecord
    status: str = WAITING
    reason: str | None = None  # why it cannot be shown
    kind: str | None = None  # the problem kind behind ``reason``


class ThumbnailModel(QAbstractListModel):
    """The files of one class, each with a thumbnail decoded on request (``request_rows``).

    A thumbnail that arrives changes its row's data (``dataChanged``); pixmaps stay cached
    across classes, up to a limit, keyed by path, modification time and size.
    """

    def __init__(self, side: int = THUMBNAIL_SIDE, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._side = side
        self._thread_pool = QThreadPool(self)
        # Leave cores to the GUI and to a scan that may be running beside the grid.
        self._thread_pool.setMaxThreadCount(max(2, min(4, QThread.idealThreadCount() // 2)))
        self._label: str | None = None
        self._items: list[_Item] = []
        self._rows_of: dict[Path, list[int]] = {}  # a gallery may show one file in several rows
        self._workers: dict[Path, Worker] = {}
        self._key_of_signals: dict[QObject, _CacheKey] = {}
        self._cache: OrderedDict[_CacheKey, QPixmap] = OrderedDict()
        self._failures: dict[_CacheKey, tuple[str, str | None]] = {}
        self._left_out: Mapping[Path, str] = {}
        self._user_excluded: frozenset[Path] = frozenset()
        self._placeholders: dict[tuple[str, int], QPixmap] = {}

    @property
    def label(self) -> str | None:
        """The class shown, or None."""
        return self._label

    @property
    def loaded_count(self) -> int:
        """Rows showing their picture."""
        return sum(1 for item in self._items if item.status == LOADED)

    @property
    def failed_count(self) -> int:
        """Rows showing a placeholder with the reason the file cannot be shown."""
        return sum(1 for item in self._items if item.status == FAILED)

    @property
    def pending_count(self) -> int:
        """Thumbnails being decoded."""
        return len(self._workers)

    def show_class(self, label: str, records: Sequence[FileRecord], left_out: Mapping[Path, str]) -> None:
        """Show ``records`` (the files of class ``label``); decoding waits for ``request_rows``.

        Args:
            label: the class name.
            records: its files, sound or not, in display order.
            left_out: why each file the health report leaves out of training is left out.
        """
        self.beginResetModel()
        self._cancel(keep=())
        self._label = label
        self._left_out = left_out
        self._items = [self._item_for(record) for record in records]
        self._rows_of = {}
        for row, item in enumerate(self._items):
            self._rows_of.setdefault(item.record.path, []).append(row)
        self.endResetModel()

    def clear(self) -> None:
        """Show nothing and stop decoding."""
        self.beginResetModel()
        self._cancel(keep=())
        self._label = None
        self._items = []
        self._rows_of = {}
        self.endResetModel()

    def set_user_excluded(self, paths: frozenset[Path]) -> None:
        """Mark the files the user left out of training."""
        changed = self._user_excluded ^ paths
        self._user_excluded = paths
        for path in changed:
            for row in self._rows_of.get(path, ()):
                index = self.index(row)
                self.dataChanged.emit(index, index, [USER_EXCLUDED_ROLE, Qt.ItemDataRole.ToolTipRole])

    def is_trained_on(self, path: Path) -> bool:
        """Whether ``path`` is left out of training neither by the health report nor by the user."""
        return path not in self._left_out and path not in self._user_excluded

    def is_user_excluded(self, path: Path) -> bool:
        """Whether the user left ``path`` out of training."""
        return path in self._user_excluded

    def request_rows(self, rows: Iterable[int]) -> None:
        """Decode the thumbnails of ``rows`` (those on screen); decoding of any other row stops."""
        wanted = [row for row in rows if 0 <= row < len(self._items)]
        self._cancel(keep={self._items[row].record.path for row in wanted})
        for row in wanted:
            item = self._items[row]
            if item.status == WAITING and item.record.path not in self._workers:  # one decode per file
                self._start(row, item)

    def wait_for_done(self, msecs: int) -> bool:
        """Block until no decoding thread runs; only for shutdown and tests."""
        return self._thread_pool.waitForDone(msecs)

    def rowCount(self, parent: _ModelIndex = QModelIndex()) -> int:  # noqa: B008  Qt's default argument
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if not index.isValid():
            return None
        item = self._items[index.row()]
        path = item.record.path
        if role == Qt.ItemDataRole.DisplayRole:
            return path.name
        if role == Qt.ItemDataRole.DecorationRole:
            if item.status == LOADED:
                return self._cache[_key(item.record)]
            return self._placeholder((item.kind or "") if item.status == FAILED else WAITING)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(item)
        if role == PATH_ROLE:
            return path
        if role == STATUS_ROLE:
            return item.status
        if role == REASON_ROLE:
            return item.reason
        if role == LEFT_OUT_ROLE:
            return self._left_out.get(path)
        if role == USER_EXCLUDED_ROLE:
            return path in self._user_excluded
        return None

    def _item_for(self, record: FileRecord) -> _Item:
        key = _key(record)
        if record.problem is not None:  # the scan already knows it cannot be decoded
            return _Item(record, FAILED, record.reason or short_reason(record.problem), record.problem)
        if key in self._cache:
            self._cache.move_to_end(key)
            return _Item(record, LOADED)
        if key in self._failures:
            reason, kind = self._failures[key]
            return _Item(record, FAILED, reason, kind)
        return _Item(record)

    def _start(self, row: int, item: _Item) -> None:
        key = _key(item.record)
        side = round(self._side * _device_pixel_ratio())
        worker = Worker(load_thumbnail, key, side)
        worker.signals.returned.connect(self._on_worker_returned)
        worker.signals.errored.connect(self._on_worker_errored)
        worker.signals.finished.connect(self._on_worker_finished)
        self._workers[item.record.path] = worker
        self._key_of_signals[worker.signals] = key
        item.status = LOADING
        worker.start(self._thread_pool)
        index = self.index(row)
        self.dataChanged.emit(index, index, [STATUS_ROLE])

    def _cancel(self, *, keep: Iterable[Path]) -> None:
        # Aborted workers that already decode still deliver; their result is cached then.
        kept = set(keep)
        for path in [path for path in self._workers if path not in kept]:
            self._workers.pop(path).abort()
            for row in self._rows_of.get(path, ()):
                if self._items[row].status == LOADING:
                    self._items[row].status = WAITING

    def _on_worker_returned(self, result: ThumbnailResult | None) -> None:
        if result is None:
            return
        if result.image is None:
            self._failures[result.key] = (result.reason or "cannot be decoded", result.kind)
        else:
            pixmap = QPixmap.fromImage(result.image)
            pixmap.setDevicePixelRatio(_device_pixel_ratio())
            self._cache[result.key] = pixmap
            while len(self._cache) > _CACHE_LIMIT:
                evicted, _pixmap = self._cache.popitem(last=False)
                for row in self._rows_of.get(evicted[0], ()):
                    if self._items[row].status == LOADED:
                        self._items[row].status = WAITING  # decoded again when it comes back into view
        self._refresh(result.key)

    def _on_worker_errored(self, error: Exception) -> None:
        key = self._key_of_signals.get(self.sender())
        if key is not None:
            self._failures[key] = (f"cannot show the image ({type(error).__name__}: {error})", None)
            self._refresh(key)

    def _on_worker_finished(self) -> None:
        key = self._key_of_signals.pop(self.sender(), None)
        if key is not None and key[0] in self._workers and self._workers[key[0]].signals is self.sender():
            del self._workers[key[0]]

    def _refresh(self, key: _CacheKey) -> None:
        for row in self._rows_of.get(key[0], ()):
            if _key(self._items[row].record) != key:
                continue  # the file changed since
            self._items[row] = self._item_for(self._items[row].record)  # now from the cache or the failures
            index = self.index(row)
            self.dataChanged.emit(index, index)

    def _tooltip(self, item: _Item) -> str:
        record = item.record
        lines = [str(record.path)]
        if record.width and record.height:
            lines.append(f"{record.width} × {record.height} px, {record.format or 'image'}")
        if record.split:
            lines.append(f"Split folder: {record.split}")
        if item.status == FAILED:
            lines.append(f"Cannot be shown: {item.reason}")
        left_out = self._left_out.get(record.path)
        if left_out:
            lines.append(f"Left out of training: {left_out}")
        elif record.path in self._user_excluded:
            lines.append(f"Left out of training: {USER_EXCLUDED_TEXT}")
        return "\n".join(lines)

    def _placeholder(self, kind: str) -> QPixmap:
        """A tile for a thumbnail on its way (``WAITING``) or for a file of problem ``kind`` ("" if unknown)."""
        palette = QGuiApplication.palette()
        key = (kind, palette.cacheKey())  # redrawn for a new (light/dark) palette
        if key not in self._placeholders:
            self._placeholders[key] = _draw_placeholder(self._side, None if kind == WAITING else kind, palette)
        return self._placeholders[key]


def _key(record: FileRecord) -> _CacheKey:
    return (record.path, record.mtime_ns, record.size_bytes)


def _device_pixel_ratio() -> float:
    app = QGuiApplication.instance()
    return app.devicePixelRatio() if isinstance(app, QGuiApplication) else 1.0


def short_reason(kind: str | None) -> str:
    """A few words for why a file cannot be shown, for its placeholder; the tooltip has the full reason."""
    return _SHORT_REASONS.get(kind or "", "Cannot be shown")


def _draw_placeholder(side: int, kind: str | None, palette: QPalette) -> QPixmap:
    """A rounded tile; with a problem ``kind``, a warning sign and a few words on the problem."""
    ratio = _device_pixel_ratio()
    pixmap = QPixmap(round(side * ratio), round(side * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    tile = QRectF(1, 1, side - 2, side - 2)
    painter.setPen(palette.color(QPalette.ColorRole.Mid))
    painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
    painter.drawRoundedRect(tile, 6, 6)
    if kind is not None:
        icon = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        icon_side = side // 3
        icon.paint(painter, QRect((side - icon_side) // 2, side // 8, icon_side, icon_side))
        painter.setPen(severity_color("error", palette))
        text_rect = QRect(4, side // 8 + icon_side + 4, side - 8, side - side // 8 - icon_side - 8)
        flags = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
        painter.drawText(text_rect, int(flags), short_reason(kind))
    painter.end()
    return pixmap

"""Frames of a video file or a camera for live prediction, decoded by OpenCV on a thread of their own.

A ``FrameSource`` reads one video file (paced to the file's frame rate) or one camera and
hands each decoded ``Frame`` to the GUI thread through a one-frame mailbox: while the GUI
has not taken the last frame a newer one replaces it, so frames are dropped, never queued.
QtMultimedia (``QMediaPlayer``, ``QCamera``) would do this natively, but it ships in
PySide6-Addons, which the app does not depend on; OpenCV comes with albumentations.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from PySide6.QtCore import QObject, QThread, Signal
from PySide6.QtGui import QImage

from gui.widgets.fitted_image import pil_to_qimage

DEFAULT_FPS = 25.0  # pacing of a file that does not say its frame rate (or says something absurd)
MAX_FPS = 240.0
STOP_WAIT_MS = 2000  # how long stop() waits for the reader; a camera read can hang when the camera goes
COMPLETE_SHARE = 0.9  # a file that ends before this share of the frames it announces is damaged
_SYSFS_CAMERAS = Path("/sys/class/video4linux")


@dataclass(frozen=True)
class Frame:
    """One decoded frame, with its pixels both for the screen and for the model."""

    index: int  # 0-based frame number in the file, or since the camera started
    position_s: float  # the frame's time in the video (a camera's: seconds since it started)
    qimage: QImage  # RGB888, owning its pixels
    image: Image.Image  # the same pixels, RGB, for the model


@dataclass(frozen=True)
class CameraDevice:
    """A camera OpenCV can open by ``index``."""

    index: int
    name: str


def list_cameras() -> list[CameraDevice]:
    """The cameras of this computer, as far as it can be known without opening them.

    On Linux the kernel lists video capture devices in sysfs; a camera has several
    device nodes there (metadata, formats) and its picture comes from the one whose
    ``index`` is 0. Elsewhere OpenCV offers no listing, so the default camera is offered
    and opening it says whether there is one.
    """
    if not sys.platform.startswith("linux"):
        return [CameraDevice(0, "Default camera")]
    cameras: list[CameraDevice] = []
    try:
        nodes = sorted(_SYSFS_CAMERAS.glob("video*"), key=lambda node: _node_number(node.name))
    except OSError:
        return []
    for node in nodes:
        try:
            if (node / "index").read_text().strip() not in ("", "0"):
                continue
            name = (node / "name").read_text().strip()
        except OSError:
            continue  # unplugged while listing
        cameras.append(CameraDevice(_node_number(node.name), name or node.name))
    return cameras


def _node_number(name: str) -> int:
    digits = name.removeprefix("video")
    return int(digits) if digits.isdigit() else 1 << 30


class FrameSource(QObject):
    """Plays a video file or a camera on a reader thread; the newest frame reaches the GUI thread.

    Args:
        path: a video file; or None with ``camera`` set.
        camera: a camera to read instead of a file.
        parent: the owner.

    Signals:
        opened: the source opened; (frames per second, 0 when a camera does not say; frames in the file, 0 if
            unknown).
        frame_arrived: a ``Frame``; frames that came while the GUI thread was busy were dropped.
        failed: why the source stopped: it cannot be opened, is damaged, or the camera went away.
        ended: the file played to its end.
    """

    opened = Signal(float, int)
    frame_arrived = Signal(object)
    failed = Signal(str)
    ended = Signal()

    # Readers still running whose source is gone: each keeps itself alive until its run() returns,
    # so that a QThread is never destroyed while it runs.
    _running: ClassVar[set[_Reader]] = set()

    def __init__(self, path: Path | None = None, camera: CameraDevice | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        if (path is None) == (camera is None):
            raise ValueError("a frame source reads either a file or a camera")
        self.path = path
        self.camera = camera
        self._reader: _Reader | None = None
        self.frames_read = 0  # frames decoded since start(), shown or dropped
        self.frames_dropped = 0  # decoded but replaced by a newer one before the GUI thread took them
        self.next_index = 0  # where start() goes on from: the frame after the last one shown

    @property
    def name(self) -> str:
        """The file's name or the camera's."""
        return self.path.name if self.path is not None else self.camera.name if self.camera is not None else ""

    @property
    def is_running(self) -> bool:
        """Whether the reader thread runs (paused included)."""
        return self._reader is not None and self._reader.isRunning()

    @property
    def is_paused(self) -> bool:
        """Whether the reader waits for ``resume``."""
        return self._reader is not None and not self._reader.playing.is_set()

    def start(self) -> None:
        """Open the source and play it from ``next_index`` (a file that ended plays from the start)."""
        self.stop()
        self.frames_read = self.frames_dropped = 0
        reader = _Reader(self.path, self.camera, self.next_index)
        reader.frame_posted.connect(self._on_reader_frame_posted)
        reader.opened.connect(self.opened)
        reader.failed.connect(self._on_reader_failed)
        reader.ended.connect(self._on_reader_ended)
        reader.finished.connect(functools.partial(FrameSource._on_reader_finished, reader))  # also once self is gone
        FrameSource._running.add(reader)
        self._reader = reader
        reader.start()

    def pause(self) -> None:
        """Hold the picture; a camera keeps being read (and its frames dropped) so that it stays live."""
        if self._reader is not None:
            self._reader.playing.clear()

    def resume(self) -> None:
        """Go on after ``pause``."""
        if self._reader is not None:
            self._reader.playing.set()

    def stop(self) -> None:
        """Stop reading and release the file or camera; waits briefly for the reader thread to end."""
        reader, self._reader = self._reader, None
        if reader is None:
            return
        reader.stopping.set()
        reader.playing.set()  # a paused reader wakes up to see that it is stopping
        # Slots of a stopped reader must not reach this source any more (its frames, its end).
        for signal in (reader.frame_posted, reader.opened, reader.failed, reader.ended):
            signal.disconnect()
        reader.wait(STOP_WAIT_MS)  # else it ends on its own; _running keeps it alive meanwhile

    def _take(self) -> Frame | None:
        reader = self._reader
        if reader is None:
            return None
        frame = reader.mailbox.take()
        self.frames_read, self.frames_dropped = reader.mailbox.put_count, reader.mailbox.replaced_count
        return frame

    def _on_reader_frame_posted(self) -> None:
        frame = self._take()
        if frame is not None:
            self.next_index = frame.index + 1
            self.frame_arrived.emit(frame)

    def _on_reader_failed(self, message: str) -> None:
        self._reader = None
        self.failed.emit(message)

    def _on_reader_ended(self) -> None:
        self._reader = None
        self.next_index = 0
        self.ended.emit()

    @staticmethod
    def _on_reader_finished(reader: _Reader) -> None:
        FrameSource._running.discard(reader)
        reader.deleteLater()


class _Mailbox:
    """One frame handed from the reader thread to the GUI thread; a newer frame replaces one not yet taken."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self.put_count = 0
        self.replaced_count = 0

    def put(self, frame: Frame) -> bool:
        """Leave ``frame``; True when the box was empty (the GUI thread has to be told)."""
        with self._lock:
            was_empty = self._frame is None
            if not was_empty:
                self.replaced_count += 1
            self._frame = frame
            self.put_count += 1
            return was_empty

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
            return frame


class _Reader(QThread):
    """Decodes frames with OpenCV until the end, a failure or ``stopping``; never touches widgets.

    Its signals are emitted on the reader thread and delivered queued to the GUI thread; the
    frame itself travels through ``mailbox``, and ``frame_posted`` goes only when that was
    empty, so at most one frame is ever on its way.
    """

    frame_posted = Signal()
    opened = Signal(float, int)
    failed = Signal(str)
    ended = Signal()

    def __init__(self, path: Path | None, camera: CameraDevice | None, first_index: int) -> None:
        super().__init__()  # no parent: it may outlive its source by a hung camera read
        self._path = path
        self._camera = camera
        self._first_index = first_index
        self.mailbox = _Mailbox()
        self.stopping = threading.Event()
        self.playing = threading.Event()
        self.playing.set()

    def run(self) -> None:
        try:
            self._read()
        except Exception as error:  # noqa: BLE001  OpenCV raises cv2.error for any decoder trouble; reported
            self.failed.emit(f"{self._name()}: cannot be read ({error})")

    def _name(self) -> str:
        return self._path.name if self._path is not None else self._camera.name if self._camera is not None else ""

    def _read(self) -> None:
        import cv2  # loaded on first use: the window opens without it

        if self._camera is not None:
            capture = cv2.VideoCapture(self._camera.index)
        else:
            capture = cv2.VideoCapture(str(self._path))
        try:
            if not capture.isOpened():
                self.failed.emit(self._open_problem())
                return
            self._play(cv2, capture)
        finally:
            capture.release()  # a camera's light goes off

    def _open_problem(self) -> str:
        if self._camera is not None:
            return f"{self._camera.name}: cannot be opened (in use by another program, or unplugged)."
        if self._path is not None and not self._path.is_file():
            return f"{self._path}: no such file."
        return f"{self._name()}: cannot be opened as a video (damaged, or a format that cannot be decoded)."

    def _play(self, cv2: Any, capture: Any) -> None:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0) if self._camera is None else 0
        self.opened.emit(fps if 0 < fps <= MAX_FPS else 0.0, count)
        interval = 1.0 / (fps if 0 < fps <= MAX_FPS else DEFAULT_FPS)
        index = 0
        if self._camera is None and 0 < self._first_index < count:
            capture.set(cv2.CAP_PROP_POS_FRAMES, self._first_index)
            index = self._first_index
        started = time.monotonic() - index * interval  # when frame 0 would have been shown
        camera_started = time.monotonic()
        while not self.stopping.is_set():
            if not self.playing.is_set():
                if self._camera is None:
                    self.playing.wait()
                elif not capture.grab():  # keeps the camera's buffer fresh: resuming shows now, not then
                    self._report_end(index, count)
                    return
                started = time.monotonic() - index * interval  # play on from index, not catch up
                continue
            ok, bgr = capture.read()
            if self.stopping.is_set():
                return
            if not ok:
                self._report_end(index, count)
                return
            position = index * interval if self._camera is None else time.monotonic() - camera_started
            self._post(cv2, bgr, index, position)
            index += 1
            if self._camera is None:  # a camera's read waits for its next frame; a file is paced here
                delay = started + index * interval - time.monotonic()
                if delay > 0:
                    self.stopping.wait(delay)
                elif delay < -1.0:
                    started = time.monotonic() - index * interval  # fell behind (a slow disk): do not rush

    def _post(self, cv2: Any, bgr: Any, index: int, position: float) -> None:
        image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if self.mailbox.put(Frame(index, position, pil_to_qimage(image), image)):
            self.frame_posted.emit()

    def _report_end(self, index: int, count: int) -> None:
        if self._camera is not None:
            self.failed.emit(f"{self._camera.name} stopped sending pictures (unplugged, or taken by another "
                             "program).")
        elif index == 0:
            self.failed.emit(f"{self._name()}: no frame can be decoded (damaged, or a format that cannot be "
                             "decoded).")
        elif count and index < COMPLETE_SHARE * count:
            # Frame counts of some formats are estimates, hence the margin before calling a file damaged.
            self.failed.emit(f"{self._name()}: stopped at frame {index} of {count}: the rest cannot be decoded "
                             "(damaged or cut short).")
        else:
            self.ended.emit()


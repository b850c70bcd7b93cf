"""The main window on real data folders: class table, health report, errors, settings, screenshots.

Every scan is the engine's real ``scan_dataset`` on images drawn here with Pillow;
tests wait on the window's own signals.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QTreeWidgetItem
from screenshots import SCREENSHOT_DIR

from engine.data.health import HealthReport
from gui.app import run_app
from gui.main_window import MainWindow
from gui.pages import DataPage
from gui.pages.data.class_table import ClassTableModel
from gui.pages.data.health_view import KEPT_TEXT, LEFT_OUT_TEXT, problem_title
from gui.services.settings import KEY_LAYOUT_VERSION, KEY_WINDOW_GEOMETRY, LAYOUT_VERSION
from gui.style import create_palette, is_dark

SCAN_TIMEOUT_MS = 30_000
SCREENSHOT_SIZE = QSize(1100, 700)
CLASS_SIZES = {"ankle_boot": 4, "shirt": 5, "sneaker": 3}


# QSettings built from organisation and application names go to a temporary folder (conftest): windows
# made by ``make_main_window`` get a private file anyway; this keeps ``run_app`` off the user's real ones too.
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture
def ui_settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "transfer-studio-ui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def make_main_window(qtbot, main_windows: list[MainWindow], ui_settings: QSettings) -> Callable[..., MainWindow]:
    """Build shown main windows (optionally on given settings); closed after the test (conftest's main_windows)."""

    def make(settings: QSettings | None = None) -> MainWindow:
        window = MainWindow(settings if settings is not None else ui_settings)
        main_windows.append(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    return make


def draw_image(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> None:
    """A distinct RGB picture: random noise under a coloured square, different for every seed."""
    rng = random.Random(seed)
    noise = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    image = Image.frombytes("RGB", size, noise)
    image.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (8, 8, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_dataset(root: Path) -> Path:
    """Three class folders of good PNGs, plus a zero-byte .png and a text file named x.jpg."""
    seed = 0
    for label, count in CLASS_SIZES.items():
        for index in range(count):
            seed += 1
            draw_image(root / label / f"{label}_{index}.png", seed)
    (root / "sneaker" / "empty.png").write_bytes(b"")
    (root / "shirt" / "x.jpg").write_text("this is a text file, not a picture\n")
    return root


def open_and_wait(qtbot, window: MainWindow, path: Path) -> HealthReport:
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS) as finished:
        window.open_dataset(path)
    return finished.args[0]


def class_table_rows(window: MainWindow) -> dict[str, tuple[str, str]]:
    model = window.page(DataPage).class_table.model()
    rows = {}
    for row in range(model.rowCount()):
        name, images, share = (
            model.index(row, column).data()
            for column in (ClassTableModel.COLUMN_CLASS, ClassTableModel.COLUMN_IMAGES, ClassTableModel.COLUMN_SHARE)
        )
        rows[name] = (images, share)
    return rows


def health_tree_rows(window: MainWindow) -> list[tuple[str, str, str, str]]:
    """(group title, item, reason, training) for every row under a group, depth first."""
    tree = window.page(DataPage).health_view.tree
    rows = []

    def walk(item: QTreeWidgetItem, group: str) -> None:
        rows.append((group, item.text(0), item.text(1), item.text(2)))
        for index in range(item.childCount()):
            walk(item.child(index), group)

    for index in range(tree.topLevelItemCount()):
        group = tree.topLevelItem(index)
        for child in range(group.childCount()):
            walk(group.child(child), group.text(0))
    return rows


def save_screenshot(window: MainWindow, tmp_path: Path, name: str) -> Path:
    window.resize(SCREENSHOT_SIZE)
    QApplication.processEvents()
    pixmap = window.grab()
    assert pixmap.save(str(tmp_path / name))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shared = SCREENSHOT_DIR / name
    assert pixmap.save(str(shared))
    return shared


def test_window_shows_classes_and_health_report(qtbot, make_main_window, tmp_path: Path):
    data = make_dataset(tmp_path / "clothes")
    window = make_main_window()
    window.resize(SCREENSHOT_SIZE)
    statuses: list[str] = []
    window.scanner.scan_progressed.connect(lambda _done, _total: statuses.append(window.status_label.text()))

    report = open_and_wait(qtbot, window, data)

    assert statuses[-1] == "Scanning 14/14…"

    assert window.windowTitle() == "Transfer Studio — clothes"
    assert window.report is report and report.root == data.resolve()
    rows = class_table_rows(window)
    assert {name: images for name, (images, _share) in rows.items()} == {
        name: str(count) for name, count in CLASS_SIZES.items()
    }
    assert rows["shirt"][1] == "41.7%"  # 5 of 12 usable images

    by_file = {item: (group, reason, training) for group, item, reason, training in health_tree_rows(window)}
    messages = {problem.paths[0].name: problem for problem in report.problems if len(problem.paths) == 1}
    for relative, kind in ((Path("sneaker", "empty.png"), "zero_byte"), (Path("shirt", "x.jpg"), "not_an_image")):
        group, reason, training = by_file[str(relative)]
        problem = messages[relative.name]
        assert problem.kind == kind
        assert group.startswith(problem_title(kind))
        assert reason == problem.message and reason
        assert training == LEFT_OUT_TEXT
    assert all(training in (LEFT_OUT_TEXT, KEPT_TEXT, "") for _g, _i, _r, training in health_tree_rows(window))

    summary = window.page(DataPage).health_view.summary_label.text()
    assert "14 files" in summary and "12 usable images" in summary and "3 classes" in summary
    assert f"{len(report.problems)} problem" in summary
    assert window.status_label.text().startswith("Scanned 14 files in 3 classes")
    assert not window.status_progress.isVisible()
    assert (data / ".transfer-studio" / "scan_cache.json").is_file()

    screenshot = save_screenshot(window, tmp_path, "first_window.png")
    assert screenshot.stat().st_size > 10_000


def test_dark_palette_keeps_the_report_readable(qtbot, make_main_window, tmp_path: Path):
    window = make_main_window()
    window.setPalette(create_palette(Qt.ColorScheme.Dark))
    window.resize(SCREENSHOT_SIZE)
    open_and_wait(qtbot, window, make_dataset(tmp_path / "clothes"))

    group = window.page(DataPage).health_view.tree.topLevelItem(0)
    assert group.foreground(0).color().lightness() > 128, "severity colours must be light on dark"
    save_screenshot(window, tmp_path, "first_window_dark.png")


def test_folder_without_class_folders_shows_the_error_in_the_window(qtbot, make_main_window, tmp_path: Path):
    loose = tmp_path / "loose_pictures"
    draw_image(loose / "a.png", seed=1)
    window = make_main_window()

    with qtbot.waitSignal(window.scan_failed, timeout=SCAN_TIMEOUT_MS) as failed:
        window.open_dataset(loose)

    (message,) = failed.args
    assert "no class folders" in message and "Traceback" not in message
    panel = window.page(DataPage).message_panel
    assert not window.page(DataPage).showing_report
    assert panel.title_label.text() == "Cannot use “loose_pictures”"
    assert message in panel.detail_label.text()
    assert panel.action_button.isVisible() and panel.action_button.text() == "Open data folder…"
    assert window.report is None
    assert QApplication.activeModalWidget() is None
    save_screenshot(window, tmp_path, "first_window_error.png")


def test_missing_folder_shows_the_error_in_the_window(qtbot, make_main_window, tmp_path: Path):
    window = make_main_window()
    with qtbot.waitSignal(window.scan_failed, timeout=SCAN_TIMEOUT_MS) as failed:
        window.open_dataset(tmp_path / "gone")
    assert "not found" in failed.args[0]
    assert not (tmp_path / "gone").exists(), "opening a missing folder must not create it"


def test_rescan_picks_up_new_files(qtbot, make_main_window, tmp_path: Path):
    data = make_dataset(tmp_path / "clothes")
    window = make_main_window()
    open_and_wait(qtbot, window, data)
    draw_image(data / "sneaker" / "new.png", seed=99)

    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS) as finished:
        window.rescan_action.trigger()

    assert finished.args[0].class_counts["sneaker"] == CLASS_SIZES["sneaker"] + 1
    assert class_table_rows(window)["sneaker"][0] == str(CLASS_SIZES["sneaker"] + 1)


def test_a_new_scan_aborts_the_previous_one(qtbot, make_main_window, tmp_path: Path):
    first = make_dataset(tmp_path / "first")
    second = make_dataset(tmp_path / "second")
    window = make_main_window()
    reports: list[HealthReport] = []
    window.scan_finished.connect(reports.append)

    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS):
        window.open_dataset(first)
        window.open_dataset(second)
    assert window.scanner.wait_for_done(SCAN_TIMEOUT_MS)
    QApplication.processEvents()  # deliver anything the first worker still queued

    assert [report.root for report in reports] == [second.resolve()]
    assert window.windowTitle() == "Transfer Studio — second"


def drag_onto(window: MainWindow, path: Path) -> tuple[QDragEnterEvent, QDropEvent | None]:
    """Drag ``path`` onto the window, as a file manager does; drop it only if the drag is accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    where = QPoint(window.width() // 2, window.height() // 2)  # a drag enters at a whole pixel
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(where, Qt.DropAction.CopyAction, mime, buttons, modifiers)
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return enter, None
    drop = QDropEvent(QPointF(where), Qt.DropAction.CopyAction, mime, buttons, modifiers)
    QApplication.sendEvent(window, drop)
    return enter, drop


def test_dropping_a_folder_opens_it(qtbot, make_main_window, tmp_path: Path):
    data = make_dataset(tmp_path / "dropped")
    window = make_main_window()

    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS):
        _enter, drop = drag_onto(window, data)

    assert drop is not None and drop.isAccepted()
    assert window.dataset_path == data.resolve()


def test_dragging_a_file_is_refused(make_main_window, tmp_path: Path):
    picture = tmp_path / "one.png"
    draw_image(picture, seed=3)
    window = make_main_window()

    enter, drop = drag_onto(window, picture)

    assert not enter.isAccepted() and drop is None
    assert window.dataset_path is None


def test_open_action_has_the_standard_shortcut(make_main_window):
    window = make_main_window()
    assert window.open_action.shortcut().toString() == "Ctrl+O"
    assert not window.rescan_action.isEnabled(), "nothing to rescan before a folder is open"


def test_geometry_is_restored_only_from_the_current_layout_version(make_main_window, ui_settings: QSettings):
    first = make_main_window()
    first.resize(700, 500)  # within the offscreen screen (800x600): restoreGeometry() keeps windows on screen
    first.close()
    assert int(ui_settings.value(KEY_LAYOUT_VERSION)) == LAYOUT_VERSION
    assert ui_settings.value(KEY_WINDOW_GEOMETRY) is not None

    assert make_main_window().size() == QSize(700, 500)

    ui_settings.setValue(KEY_LAYOUT_VERSION, LAYOUT_VERSION - 1)
    assert make_main_window().size() != QSize(700, 500), "state of an older layout must be ignored"


def test_palettes_follow_the_colour_scheme():
    assert is_dark(create_palette(Qt.ColorScheme.Dark))
    assert not is_dark(create_palette(Qt.ColorScheme.Light))
    assert not is_dark(create_palette(Qt.ColorScheme.Unknown))


def test_run_app_shows_the_folder_and_returns_when_the_window_closes(qapp, tmp_path: Path, user_settings_folder):
    data = make_dataset(tmp_path / "clothes")
    seen: list[str] = []

    def close_when_scanned() -> None:
        shown = QApplication.topLevelWidgets()
        (window,) = [widget for widget in shown if isinstance(widget, MainWindow) and widget.isVisible()]
        window.scan_finished.connect(lambda _report: (seen.append(window.windowTitle()), window.close()))

    # Runs once run_app's event loop has started, before the scan can finish.
    QTimer.singleShot(0, close_when_scanned)
    assert run_app(data) == 0

    assert seen == ["Transfer Studio — clothes"]
    saved = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "TransferStudio", "Transfer Studio")
    assert Path(saved.fileName()).is_relative_to(user_settings_folder)
    assert int(saved.value(KEY_LAYOUT_VERSION)) == LAYOUT_VERSION

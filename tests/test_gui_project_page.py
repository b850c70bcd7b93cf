"""The Project page: choosing projects (dialog, drop, recent list, demo) and the recent list in QSettings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, QSize, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QFileDialog
from screenshots import SCREENSHOT_DIR

from gui.pages.project.page import DEMO_PROJECT, ProjectPage
from gui.services.settings import KEY_RECENT_PROJECTS, MAX_RECENT_PROJECTS, read_recent_projects
from gui.style import apply_style

ROOT = Path(__file__).resolve().parents[1]
PAGE_SIZE = QSize(950, 680)


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    """A private settings file: the user's real recent projects are never read or written."""
    return QSettings(str(tmp_path / "transfer-studio-ui.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def page(qtbot, qapp, settings: QSettings) -> ProjectPage:
    apply_style(qapp)
    page = ProjectPage(settings)
    qtbot.addWidget(page)
    page.resize(PAGE_SIZE)
    page.show()
    qtbot.waitExposed(page)
    return page


def make_folders(root: Path, *names: str) -> list[Path]:
    folders = []
    for name in names:
        (root / name / "cats").mkdir(parents=True)
        folders.append((root / name).resolve())
    return folders


def choose(qtbot, page: ProjectPage, path: Path) -> Path:
    with qtbot.waitSignal(page.project_chosen) as chosen:
        assert page.open_project(path)
    return chosen.args[0]


def recent_rows(page: ProjectPage) -> list[Path]:
    return [Path(page.recent_list.item(row).data(Qt.ItemDataRole.UserRole)) for row in range(page.recent_list.count())]


def test_choosing_a_folder_emits_it_and_puts_it_first_in_recent(qtbot, page: ProjectPage, settings: QSettings,
                                                                 tmp_path: Path) -> None:
    first, second, third = make_folders(tmp_path, "flowers", "birds", "cars")
    assert page.recent_empty_label.isVisible() and not page.recent_list.isVisible()

    for folder in (first, second, third):
        assert choose(qtbot, page, folder) == folder
    assert recent_rows(page) == [third, second, first]

    assert choose(qtbot, page, first) == first
    assert recent_rows(page) == [first, third, second]
    settings.sync()
    reread = QSettings(settings.fileName(), QSettings.Format.IniFormat)
    assert read_recent_projects(reread) == [first, third, second]


def test_projects_opened_elsewhere_are_remembered_and_return_opens_the_current_one(qtbot, page: ProjectPage,
                                                                                   tmp_path: Path) -> None:
    first, second = make_folders(tmp_path, "flowers", "birds")
    page.set_project(first)
    page.set_project(second)
    assert recent_rows(page) == [second, first]

    page.recent_list.setFocus()
    page.recent_list.setCurrentRow(1)
    with qtbot.waitSignal(page.project_chosen) as chosen:
        qtbot.keyClick(page.recent_list, Qt.Key.Key_Return)
    assert chosen.args[0] == first


def test_the_recent_list_keeps_the_ten_latest(qtbot, page: ProjectPage, tmp_path: Path) -> None:
    folders = make_folders(tmp_path, *(f"project{index}" for index in range(MAX_RECENT_PROJECTS + 2)))
    for folder in folders:
        choose(qtbot, page, folder)
    assert recent_rows(page) == folders[::-1][:MAX_RECENT_PROJECTS]


def test_a_hand_edited_recent_list_is_read_safely(settings: QSettings, tmp_path: Path) -> None:
    settings.setValue(KEY_RECENT_PROJECTS, str(tmp_path))  # INI gives a one-item list back as a string
    assert read_recent_projects(settings) == [tmp_path]
    settings.setValue(KEY_RECENT_PROJECTS, 42)
    assert read_recent_projects(settings) == []


def test_clicking_a_recent_project_opens_it(qtbot, page: ProjectPage, tmp_path: Path) -> None:
    (folder,) = make_folders(tmp_path, "flowers")
    choose(qtbot, page, folder)
    item = page.recent_list.item(0)
    centre = page.recent_list.visualItemRect(item).center()

    with qtbot.waitSignal(page.project_chosen) as chosen:
        qtbot.mouseClick(page.recent_list.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    assert chosen.args[0] == folder


def test_missing_projects_are_marked_and_removable(qtbot, page: ProjectPage, settings: QSettings,
                                                    tmp_path: Path) -> None:
    kept, gone = make_folders(tmp_path, "kept", "gone")
    choose(qtbot, page, gone)
    choose(qtbot, page, kept)
    shutil.rmtree(gone)
    page.refresh_recent()

    rows = {path: page.recent_list.itemWidget(page.recent_list.item(index))
            for index, path in enumerate(recent_rows(page))}
    assert rows[gone].missing_label.isVisible() and not rows[kept].missing_label.isVisible()
    emitted: list[Path] = []
    page.project_chosen.connect(emitted.append)
    assert not page.open_project(gone)
    assert emitted == [] and "not there any more" in page.message_label.text()

    qtbot.mouseClick(rows[gone].remove_button, Qt.MouseButton.LeftButton)
    assert recent_rows(page) == [kept]
    assert read_recent_projects(settings) == [kept]


def test_the_demo_is_one_click_away(qtbot, page: ProjectPage) -> None:
    with qtbot.waitSignal(page.project_chosen) as chosen:
        qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
    assert chosen.args[0] == (ROOT / "resources" / "demo").resolve() == DEMO_PROJECT
    assert recent_rows(page) == [], "the demo keeps its own button instead of a recent entry"


def test_the_folder_dialog_does_not_block_and_opens_the_choice(qtbot, page: ProjectPage, tmp_path: Path) -> None:
    (folder,) = make_folders(tmp_path, "flowers")
    page.choose_folder()  # returns at once: the dialog is window-modal, with no event loop of its own
    dialog = page.findChild(QFileDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.fileMode() == QFileDialog.FileMode.Directory

    dialog.setDirectory(str(folder.parent))
    dialog.selectFile(str(folder))
    with qtbot.waitSignal(page.project_chosen) as chosen:
        dialog.accept()
    assert chosen.args[0] == folder


def drag_onto(page: ProjectPage, path: Path) -> tuple[QDragEnterEvent, QDropEvent | None]:
    """Drag ``path`` onto the page as a file manager does; drop it only if the drag is accepted."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    where = QPoint(page.width() // 2, page.height() // 2)  # a drag enters at a whole pixel
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(where, Qt.DropAction.CopyAction, mime, buttons, modifiers)
    QApplication.sendEvent(page, enter)
    if not enter.isAccepted():
        return enter, None
    drop = QDropEvent(QPointF(where), Qt.DropAction.CopyAction, mime, buttons, modifiers)
    QApplication.sendEvent(page, drop)
    return enter, drop


def test_dropping_a_folder_or_csv_chooses_it_and_other_files_are_refused(qtbot, page: ProjectPage,
                                                                         tmp_path: Path) -> None:
    (folder,) = make_folders(tmp_path, "flowers")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\ncats/a.png,cat\n")
    picture = tmp_path / "a.png"
    picture.write_bytes(b"\x89PNG")

    with qtbot.waitSignal(page.project_chosen) as chosen:
        drag_onto(page, folder)
    assert chosen.args[0] == folder
    with qtbot.waitSignal(page.project_chosen) as chosen:
        drag_onto(page, labels)
    assert chosen.args[0] == labels.resolve()
    enter, drop = drag_onto(page, picture)
    assert not enter.isAccepted() and drop is None
    assert not page.open_project(picture) and "is a file" in page.message_label.text()


def test_screenshot_with_recent_projects(qtbot, page: ProjectPage, tmp_path: Path) -> None:
    moved, *folders = make_folders(tmp_path, "old_holiday_photos", "plant_diseases", "bird_feeder_camera")
    labels = tmp_path / "xrays" / "labels.csv"
    labels.parent.mkdir()
    labels.write_text("path,label\n")
    for project in (moved, *folders, labels):
        choose(qtbot, page, project)
    shutil.rmtree(moved)
    page.refresh_recent()
    QApplication.processEvents()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(SCREENSHOT_DIR / "project_page.png"))

"""Where a project's runs live, seen from the GUI: the Project page's folder panel, the start, ``main.py PATH``.

Data folders are copies of demo photos under ``tmp_path``, and each test has its own user data
folder (per-user projects, chosen project folders). The root user can write anywhere, so an
unwritable data folder is made with the engine's injected faults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from demo_photos import copy_demo
from PySide6.QtCore import QSettings, QSize
from screenshots import SCREENSHOT_DIR

import main
from engine.core.atomic import FAULTS_ENV_VAR
from engine.core.paths import DATA_ENV_VAR, PROJECT_FOLDER_NAME, per_user_project_dir, project_dir_for
from gui import app
from gui.main_window import MainWindow
from gui.pages import ProjectPage, RunsPage
from gui.services import settings as ui_settings
from gui.services.run_controller import RunController

SCAN_TIMEOUT_MS = 30_000

# run_app and open_main_window read the user's QSettings: here, a temporary folder's (conftest).
pytestmark = pytest.mark.usefixtures("user_settings_folder")


@pytest.fixture(autouse=True)
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user data folder of the test's own: no choice made by another test is seen."""
    folder = tmp_path / "user-data"
    monkeypatch.setenv(DATA_ENV_VAR, str(folder))
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return copy_demo(tmp_path / "photos", classes=2, per_class=4).resolve()


@pytest.fixture
def make_window(qtbot, main_windows: list[MainWindow], tmp_path: Path) -> Callable[[], MainWindow]:
    def make() -> MainWindow:
        window = MainWindow(QSettings(str(tmp_path / "ui.ini"), QSettings.Format.IniFormat))
        main_windows.append(window)
        window.resize(QSize(1100, 700))
        window.show()
        qtbot.waitExposed(window)
        return window

    return make


@pytest.fixture
def user_settings() -> Iterator[QSettings]:
    """The user's settings (in the temporary folder), emptied before and after the test."""
    settings = ui_settings.open_settings()
    settings.clear()
    yield settings
    settings.clear()
    settings.sync()


def open_and_scan(qtbot, window: MainWindow, folder: Path) -> None:
    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS):
        window.open_dataset(folder)


def test_the_project_page_shows_the_project_folder_beside_the_data(qtbot, make_window, data: Path) -> None:
    window = make_window()
    open_and_scan(qtbot, window, data)
    panel = window.page(ProjectPage).folder_panel
    window.show_page(window.page(ProjectPage))

    assert panel.isVisible()
    assert panel.path_edit.isReadOnly() and panel.path_edit.text() == str(data / PROJECT_FOLDER_NAME)
    assert panel.title_label.text() == "Project folder of “photos”:"
    assert not panel.note_label.isVisible(), "the default place needs no explaining"
    assert not panel.default_button.isEnabled()


def test_choosing_a_folder_moves_the_runs_and_use_default_moves_them_back(qtbot, make_window, data: Path,
                                                                          tmp_path: Path) -> None:
    window = make_window()
    open_and_scan(qtbot, window, data)
    page = window.page(ProjectPage)
    window.show_page(page)
    elsewhere = tmp_path / "projects" / "photos"

    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS):
        assert page.folder_panel.choose_folder(elsewhere)
    assert project_dir_for(data) == elsewhere
    assert page.folder_panel.path_edit.text() == str(elsewhere)
    assert page.folder_panel.note_label.text() == "Chosen by you; “Use default” goes back to the usual place."
    assert page.folder_panel.note_label.toolTip() == f"project folder: {elsewhere} (chosen for {data})"
    assert page.folder_panel.default_button.isEnabled()
    assert window.page(RunsPage).project_dir == elsewhere
    assert (elsewhere / "scan_cache.json").is_file(), "the window opened the dataset again, from its new place"
    assert page.isVisible(), "the page stays where the user is"

    with qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS):
        page.folder_panel.default_button.click()
    assert project_dir_for(data) == data / PROJECT_FOLDER_NAME
    assert window.page(RunsPage).project_dir == data / PROJECT_FOLDER_NAME
    assert not page.folder_panel.note_label.isVisible() and not page.folder_panel.default_button.isEnabled()


def test_a_file_is_refused_as_project_folder_in_one_line(qtbot, make_window, data: Path, tmp_path: Path) -> None:
    window = make_window()
    open_and_scan(qtbot, window, data)
    panel = window.page(ProjectPage).folder_panel
    window.show_page(window.page(ProjectPage))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")

    with qtbot.assertNotEmitted(window.scan_started):
        assert not panel.choose_folder(a_file)
    assert panel.note_label.isVisible()
    assert panel.note_label.text() == f"Cannot use that folder: {a_file} is a file, not a folder"
    assert project_dir_for(data) == data / PROJECT_FOLDER_NAME


def test_the_folder_is_not_moved_under_a_running_training(qtbot, make_window, data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    window = make_window()
    open_and_scan(qtbot, window, data)
    panel = window.page(ProjectPage).folder_panel
    monkeypatch.setattr(RunController, "is_running", property(lambda _controller: True))

    assert not panel.choose_folder(tmp_path / "elsewhere")
    assert panel.note_label.text() == "Stop the training run first: it is writing into the current project folder."
    assert project_dir_for(data) == data / PROJECT_FOLDER_NAME


def test_an_unwritable_data_folder_gets_a_per_user_project_folder_and_says_why(
        qtbot, make_window, data: Path, user_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS_ENV_VAR, f"EROFS:{data}/*")
    window = make_window()
    open_and_scan(qtbot, window, data)
    page = window.page(ProjectPage)
    window.show_page(page)
    per_user = per_user_project_dir(data)

    assert per_user.is_relative_to(user_data)
    assert page.folder_panel.path_edit.text() == str(per_user)
    assert page.folder_panel.note_label.isVisible()
    assert page.folder_panel.note_label.text() == "In your user data folder, because “photos” cannot be written."
    assert page.folder_panel.note_label.toolTip() == f"project folder: {per_user} ({data} cannot be written)"
    assert (per_user / "scan_cache.json").is_file(), "the scan keeps its cache in the per-user folder"
    assert "Report saved to" in window.status_label.text()
    assert not (data / PROJECT_FOLDER_NAME).exists()

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(SCREENSHOT_DIR / "project_folder.png"))


def test_the_app_reopens_the_last_project(qtbot, main_windows: list[MainWindow], user_settings: QSettings,
                                          data: Path) -> None:
    user_settings.setValue(ui_settings.KEY_LAST_PROJECT, str(data))
    user_settings.sync()

    window = app.open_main_window()
    main_windows.append(window)
    assert window.dataset_path == data
    assert not window.page(ProjectPage).message_label.isVisible()
    qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS).wait()


def test_a_gone_last_project_opens_the_demo_and_says_so(qtbot, main_windows: list[MainWindow], user_settings: QSettings,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = copy_demo(tmp_path / "demo", classes=2, per_class=4).resolve()
    monkeypatch.setattr(app, "DEMO_PROJECT", demo)  # the bundled demo's project folder must stay untouched
    gone = tmp_path / "moved-away"
    user_settings.setValue(ui_settings.KEY_LAST_PROJECT, str(gone))
    user_settings.sync()

    window = app.open_main_window()
    main_windows.append(window)
    page = window.page(ProjectPage)
    assert window.dataset_path == demo
    assert page.isVisible()
    assert page.message_label.isVisible()
    assert page.message_label.text() == f"The last project, {gone}, is gone; opened the demo instead."
    qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS).wait()
    assert ui_settings.read_last_project(user_settings) == demo, "next time, the demo opens without a word"

    window.open_dataset(tmp_path / "demo")
    assert not page.message_label.isVisible(), "the line was about the project before"
    qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS).wait()


def test_the_first_start_opens_the_demo_silently(qtbot, main_windows: list[MainWindow], user_settings: QSettings,
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = copy_demo(tmp_path / "demo", classes=2, per_class=4).resolve()
    monkeypatch.setattr(app, "DEMO_PROJECT", demo)

    window = app.open_main_window()
    main_windows.append(window)
    assert window.dataset_path == demo
    assert not window.page(ProjectPage).message_label.isVisible()
    qtbot.waitSignal(window.scan_finished, timeout=SCAN_TIMEOUT_MS).wait()


def test_main_opens_a_folder_or_csv_given_alone(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path | None] = []
    monkeypatch.setattr(app, "run_app", lambda project=None: opened.append(project) or 0)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n")

    assert main.main([str(data)]) == 0
    assert main.main([str(labels)]) == 0
    assert main.main([]) == 0
    assert opened == [data, labels, None]


def test_main_refuses_a_missing_path_or_other_file_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(app, "run_app", lambda project=None: pytest.fail("the app must not start"))
    missing = tmp_path / "no-such-photos"
    assert main.main([str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such folder or file\n"

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main.main([str(text)]) == 2
    assert capsys.readouterr().err == f"error: {text}: not a data folder or a CSV of labels\n"


def test_a_command_name_stays_a_command_even_beside_a_folder_of_that_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(app, "run_app", lambda project=None: pytest.fail("the app must not start"))
    (tmp_path / "scan").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main.main(["scan"])
    assert refused.value.code == 2
    assert "scan: error: the following arguments are required: data" in capsys.readouterr().err

    with pytest.raises(SystemExit) as helped:
        main.main(["--help"])
    assert helped.value.code == 0
    assert "python main.py photos/" in capsys.readouterr().out

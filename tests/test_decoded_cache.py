"""The decoded-image cache: hits, invalidation, damaged entries, concurrent writers, the size limit, clearing."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.decoded_cache import (
    FORMAT_VERSION,
    DecodedCache,
    decoded_cache_dir,
    entry_bytes,
    fit_to_side,
    limit_bytes,
    stored_size,
)
from engine.data.images import ImageFileError, load_rgb
from engine.data.loading import ImageDataset

SIDE = 64


def _photo(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "engine.data.decoded_cache" and record.levelno == logging.WARNING]


def test_first_load_decodes_and_stores_then_the_entry_is_read(tmp_path: Path) -> None:
    path, digest = _photo(tmp_path / "a.jpg", 0)
    cache = DecodedCache(tmp_path / "cache")
    first = cache.load(path, digest, SIDE)
    assert first.size == stored_size(320, 240, SIDE) == (85, 64)
    entry = cache.path_for(digest, SIDE)
    assert entry.stat().st_size == entry_bytes(320, 240, SIDE)
    path.unlink()  # a hit never touches the original
    second = cache.load(path, digest, SIDE)
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_a_changed_file_or_side_is_a_new_entry(tmp_path: Path) -> None:
    path, digest = _photo(tmp_path / "a.jpg", 0)
    cache = DecodedCache(tmp_path / "cache")
    old = np.asarray(cache.load(path, digest, SIDE))
    path, new_digest = _photo(path, 1)
    assert new_digest != digest
    new = np.asarray(cache.load(path, new_digest, SIDE))
    assert not np.array_equal(old, new)
    assert cache.load(path, new_digest, 100).size == (133, 100)
    assert cache.usage().entries == 3


def _header(version: int = FORMAT_VERSION, height: int = 64, width: int = 85) -> bytes:
    return struct.pack("<4sHHII", b"TSDC", version, 3, height, width)


@pytest.mark.parametrize(("content", "says"), [
    (lambda: _header() + b"\x00" * 100, "cut short"),
    (lambda: b"TS", "cut short"),
    (lambda: _header(version=FORMAT_VERSION + 1) + b"\x00" * (85 * 64 * 3), "format version"),
    (lambda: b"JUNK" + _header()[4:] + b"\x00" * (85 * 64 * 3), "magic"),
])
def test_damaged_entries_are_rebuilt_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: object, says: str
) -> None:
    path, digest = _photo(tmp_path / "a.jpg", 0)
    cache = DecodedCache(tmp_path / "cache")
    good = np.asarray(cache.load(path, digest, SIDE))
    entry = cache.path_for(digest, SIDE)
    entry.write_bytes(content())  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        rebuilt = np.asarray(cache.load(path, digest, SIDE))
        again = np.asarray(cache.load(path, digest, SIDE))
    assert np.array_equal(good, rebuilt) and np.array_equal(good, again)
    messages = _warnings(caplog)
    assert len(messages) == 1 and says in messages[0] and str(entry) in messages[0]


def test_temp_files_of_a_dead_writer_are_removed_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, digest = _photo(tmp_path / "a.jpg", 0)
    cache = DecodedCache(tmp_path / "cache")
    cache.load(path, digest, SIDE)
    entry = cache.path_for(digest, SIDE)
    process = multiprocessing.get_context("spawn").Process(target=int)
    process.start()
    process.join()
    dead = entry.with_name(f"{entry.name}.{process.pid}-1.tmp")
    dead.write_bytes(b"half")
    import os

    live = entry.with_name(f"{entry.name}.{os.getpid()}-1.tmp")
    live.write_bytes(b"being written")
    with caplog.at_level(logging.WARNING):
        assert cache.remove_stale_temp_files() == 1
    assert not dead.exists() and live.exists() and entry.exists()
    assert len(_warnings(caplog)) == 1


def test_an_undecodable_file_stores_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    cache = DecodedCache(tmp_path / "cache")
    with pytest.raises(ImageFileError):
        cache.load(bad, "ab" * 32, SIDE)
    assert cache.usage().entries == 0


def _fill(root: str, items: list[tuple[str, str]]) -> None:
    cache = DecodedCache(Path(root))
    for path, digest in items:
        cache.load(Path(path), digest, SIDE)


def test_two_processes_fill_one_cache_together(tmp_path: Path) -> None:
    items = [tuple(map(str, _photo(tmp_path / f"{n}.jpg", n))) for n in range(12)]
    context = multiprocessing.get_context("spawn")
    # Both walk the same files in opposite orders, so they race on the same entries.
    workers = [context.Process(target=_fill, args=(str(tmp_path / "cache"), order))
               for order in (items, items[::-1])]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    cache = DecodedCache(tmp_path / "cache")
    assert cache.usage().entries == 12
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    for path, digest in items:
        expected = fit_to_side(load_rgb(path, min_side=SIDE), SIDE)
        cached = cache.get(digest, SIDE)
        assert cached is not None and cached.tobytes() == expected.tobytes()  # whole entries, whoever wrote them


def test_admit_respects_the_limit_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = DecodedCache(tmp_path / "cache")
    records = [(f"{n:064x}", 320, 240) for n in range(10)]
    one = entry_bytes(320, 240, SIDE)
    with caplog.at_level(logging.WARNING):
        assert not cache.admit("train", records, SIDE, limit=10 * one - 1)
    assert len(_warnings(caplog)) == 1 and "train" in _warnings(caplog)[0]
    assert cache.admit("train", records, SIDE, limit=10 * one)
    # The train split's reservation counts against the next split.
    assert not cache.admit("val", records[:1], 100, limit=10 * one)


def test_dataset_fills_the_cache_within_the_limit(tmp_path: Path) -> None:
    items = [_photo(tmp_path / f"{n}.jpg", n) for n in range(6)]
    cache = DecodedCache(tmp_path / "cache")
    limit = sum(entry_bytes(320, 240, SIDE) for _ in items)
    assert cache.admit("train", [(digest, 320, 240) for _, digest in items], SIDE, limit)
    dataset = ImageDataset([path for path, _ in items], range(6), lambda image: image, SIDE, cache=cache,
                           hashes=[digest for _, digest in items])
    for index in range(len(dataset)):
        image, _, error = dataset[index]
        assert error == "" and image.size == (85, 64)  # type: ignore[union-attr]
    usage = cache.usage()
    assert usage.entries == 6 and usage.size_bytes <= limit


def test_clear_deletes_everything(tmp_path: Path) -> None:
    path, digest = _photo(tmp_path / "a.jpg", 0)
    cache = DecodedCache(tmp_path / "cache")
    cache.load(path, digest, SIDE)
    cleared = cache.clear()
    assert cleared.entries == 1 and cleared.size_bytes == entry_bytes(320, 240, SIDE)
    assert cache.usage().entries == 0 and not cache.root.exists()


def test_limit_defaults_to_a_tenth_of_the_free_space(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert abs(limit_bytes(None, tmp_path / "not" / "yet") - free // 10) < free // 1000
    assert limit_bytes(1.5, tmp_path) == 1_500_000_000


def test_cache_lives_in_the_project_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    assert decoded_cache_dir(tmp_path / "photos") == tmp_path / "photos" / ".transfer-studio" / "cache" / "decoded"

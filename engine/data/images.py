"""Safe image reading with Pillow: headers without decoding, integrity checks, and RGB loading.

Every path into Pillow here refuses decompression bombs before any pixel data is
decoded, and every failure becomes an ``ImageFileError`` that names the file and says why.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.core.errors import DatasetError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""File suffixes (lower case, with the dot) that the app offers as images."""

MAX_IMAGE_PIXELS = 89_478_485
"""Largest width × height accepted; Pillow's own default, about 0.25 GiB of RGBA."""

# Pillow plugins raise these (beyond OSError) on damaged data; each is a property of the
# file, never of our code, so each becomes a reported problem rather than a crash.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    struct.error,
    zlib.error,
)

# warnings.catch_warnings swaps process-wide state, so concurrent scans serialise the
# (cheap, header-only) Image.open calls behind this lock; decoding happens outside it.
_OPEN_LOCK = threading.Lock()

# Magic numbers, to tell "damaged image" from "not an image" when Pillow identifies nothing.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

_PNG_IEND = b"IEND\xaeB`\x82"  # the chunk type plus its fixed CRC: never split, rarely found by chance
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageFileError(DatasetError):
    """One image file cannot be used; ``kind`` says why in a word the health report uses.

    Attributes:
        path: the file (or the name given for in-memory bytes).
        kind: one of ``unreadable``, ``zero_byte``, ``not_an_image``, ``corrupt``,
            ``truncated``, ``decompression_bomb``.
        reason: the explanation without the path, e.g. ``image file is truncated``.
    """

    def __init__(self, path: str | Path, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageFileError], tuple[Path, str, str]]:
        # Data-loader worker processes pickle exceptions; the default would lose kind and reason.
        return type(self), (self.path, self.kind, self.reason)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, read without decoding pixels.

    Attributes:
        width: pixels, as stored (before any EXIF rotation).
        height: pixels, as stored.
        format: Pillow's format name, e.g. ``JPEG``, ``PNG``, ``MPO``.
        mode: Pillow's mode, e.g. ``RGB``, ``L``, ``I;16``, ``P``.
    """

    width: int
    height: int
    format: str
    mode: str


def read_header(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Read an image's size, format and mode from its header; pixel data is never decoded.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (Pillow's own limit caps it).

    Raises:
        ImageFileError: the file is missing, empty, not an image, damaged or a decompression bomb.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
            if not head:
                raise ImageFileError(path, "zero_byte", "the file is empty (0 bytes)")
            handle.seek(0)
            # Pillow reads only the header here; the pixel data stays on disk.
            with _open_checked(handle, path, max_pixels, head) as image:
                return _header_of(image)
    except FileNotFoundError as error:
        raise ImageFileError(path, "unreadable", "file not found") from error
    except OSError as error:
        raise ImageFileError(path, "unreadable", f"cannot read the file ({error.strerror})") from error


def inspect_bytes(data: bytes, *, name: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Check a whole image file held in memory, cheaply, and return its header.

    Reads the header, refuses bombs, then looks for a cut-off tail from the bytes alone
    (JPEG/MPO must end with the FFD9 marker, allowing zero padding; PNG must hold its IEND
    chunk; GIF must end with 0x3B; WebP, BMP and TIFF must be as long as their headers
    say). Only a file that fails its tail test is decoded, to confirm the damage; PNG
    chunk checksums are verified without decompressing.

    Args:
        data: the complete file content.
        name: the file's path, used in messages.
        max_pixels: refuse images with more pixels than this (Pillow's own limit caps it).

    Raises:
        ImageFileError: with kind ``zero_byte``, ``not_an_image``, ``corrupt``,
            ``truncated`` or ``decompression_bomb``.
    """
    if not data:
        raise ImageFileError(name, "zero_byte", "the file is empty (0 bytes)")
    try:
        image = _open_checked(io.BytesIO(data), name, max_pixels, data[:16])
    except ImageFileError as error:
        # A header cut short often fails to parse at all: the tail test tells why.
        sniffed = _sniff(data[:16])
        gap = _missing_tail(data, sniffed) if error.kind == "corrupt" and sniffed else None
        if gap is not None:
            raise ImageFileError(name, "truncated", f"{gap}; {error.reason}") from error
        raise
    with image:
        header = _header_of(image)
        gap = _missing_tail(data, image.format, image)
        if gap is not None:
            # A failed tail test can be a false alarm (some cameras append data after
            # the JPEG end marker), so decoding decides; bombs were refused above.
            try:
                image.load()
            except _DECODE_ERRORS as error:
                raise ImageFileError(name, "truncated", f"{gap}; Pillow: {error}") from error
    if header.format == "PNG":
        with _open_checked(io.BytesIO(data), name, max_pixels, data[:16]) as image:
            try:
                image.verify()  # checks each chunk's CRC; does not inflate the pixel data
            except _DECODE_ERRORS as error:
                raise ImageFileError(name, "corrupt", f"PNG chunk check failed: {error}") from error
    return header


def load_rgb(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS, min_side: int | None = None) -> Image.Image:
    """Decode an image file into an upright 8-bit RGB image, ready for a model.

    EXIF orientation is applied; animations give their first frame; transparency is
    composited on white; 16-bit and float greyscale are scaled (not clipped) into 0..255;
    CMYK, YCbCr, palette and the other modes are converted.

    With ``min_side`` the image is decoded only as large as needed: a JPEG is decoded at
    the smallest DCT scale (1/2, 1/4, 1/8, Pillow's ``draft``) whose shorter side is still
    at least ``min_side``, which skips most of the decoding work, and any image then
    shrinks by the largest whole factor (``Image.reduce``, a box average) that keeps it
    there. Both are area averages, so the result is close to a full decode resized with
    an antialiasing filter. An image already smaller is returned at full size.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (Pillow's own limit caps it).
        min_side: pixels the upright result's shorter side must keep; None decodes at full size.

    Returns:
        A fully loaded image in mode ``RGB``, independent of the file.

    Raises:
        ImageFileError: the file is missing, empty, not an image, damaged or a decompression bomb.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise ImageFileError(path, "unreadable", "file not found") from error
    except OSError as error:
        raise ImageFileError(path, "unreadable", f"cannot read the file ({error.strerror})") from error
    if not data:
        raise ImageFileError(path, "zero_byte", "the file is empty (0 bytes)")
    with _open_checked(io.BytesIO(data), path, max_pixels, data[:16]) as image:
        if min_side is not None:
            _draft(image, min_side)
        try:
            image.load()
        except _DECODE_ERRORS as error:
            kind = "truncated" if "truncated" in str(error).lower() else "corrupt"
            raise ImageFileError(path, kind, f"cannot decode the image: {error}") from error
        upright = _exif_upright(image)
        try:
            rgb = to_rgb(upright)
        except ValueError as error:
            raise ImageFileError(path, "corrupt", f"cannot convert mode {image.mode} to RGB: {error}") from error
    return rgb if min_side is None else reduce_to(rgb, min_side)


def reduce_to(image: Image.Image, min_side: int) -> Image.Image:
    """Shrink ``image`` by the largest whole factor that keeps its shorter side >= ``min_side`` (box average)."""
    factor = min(image.size) // max(1, min_side)
    return image.reduce(factor) if factor >= 2 else image


def _draft(image: Image.Image, min_side: int) -> None:
    """Ask a JPEG's decoder for the smallest DCT scale whose shorter side stays >= ``min_side``.

    Pillow picks the scale ``s`` in 8, 4, 2, 1 with ``s <= size // requested`` on both axes and
    decodes ``ceil(size / s)`` pixels, so asking for the stored size scaled to a shorter side of
    ``min_side`` never gives less. A rotation by EXIF swaps the axes but keeps the shorter side.
    """
    if image.format not in ("JPEG", "MPO") or min_side <= 0:
        return
    width, height = image.size
    shorter = min(width, height)
    if shorter <= min_side:
        return
    requested = (max(1, -(-width * min_side // shorter)), max(1, -(-height * min_side // shorter)))
    try:
        image.draft(None, requested)
    except _DECODE_ERRORS:
        # A header Pillow can open but not scale is decoded at full size, where load() judges it.
        return


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit RGB (no EXIF handling).

    Transparent pixels become white; ``I;16*`` is scaled by 255/65535; ``I`` likewise when
    its values fit 0..65535, otherwise stretched from its minimum to its maximum; ``F`` is
    scaled by 255 when its values lie in 0..1, otherwise stretched the same way.

    Raises:
        ValueError: Pillow has no conversion from this mode to RGB.
    """
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        return _scale_to_8bit(image).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _open_checked(handle: BinaryIO, name: str | Path, max_pixels: int, head: bytes) -> Image.Image:
    """Image.open with bombs refused and every Pillow failure turned into an ImageFileError."""
    with _OPEN_LOCK, warnings.catch_warnings():
        # Between Pillow's limit and twice it, Pillow only warns; silence that here and
        # refuse below with the real size. Above twice its limit Pillow raises by itself.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle)
        except Image.DecompressionBombError as error:
            reason = _pillow_bomb_reason(error, _effective_limit(max_pixels))
            raise ImageFileError(name, "decompression_bomb", reason) from error
        except UnidentifiedImageError as error:
            raise ImageFileError(name, *_unidentified(head)) from error
        except _DECODE_ERRORS as error:
            raise ImageFileError(name, "corrupt", f"cannot read the image header: {error}") from error
    width, height = image.size
    limit = _effective_limit(max_pixels)
    if width * height > limit:
        image.close()
        raise ImageFileError(
            name,
            "decompression_bomb",
            f"decompression bomb, {width}×{height} pixels exceeds the limit of {limit}; refused without decoding",
        )
    return image


def _effective_limit(max_pixels: int) -> int:
    # Decoding can re-run Pillow's warning-level check (TIFF tiles, GIF frames) outside
    # the lock, so never admit more than Pillow's own limit.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)


def _pillow_bomb_reason(error: BaseException, limit: int) -> str:
    # Pillow's message carries the pixel count but not the width and height; the limit
    # quoted is ours (Pillow quotes twice its own, its hard stop).
    found = re.search(r"\((\d+) pixels\)", str(error))
    if found is None:
        return f"decompression bomb ({error}); refused without decoding"
    return f"decompression bomb, {int(found[1])} pixels exceeds the limit of {limit}; refused without decoding"


def _sniff(head: bytes) -> str | None:
    """Return the format whose magic number ``head`` starts with, if any."""
    for signature, format_name in _SIGNATURES:
        if head.startswith(signature):
            return format_name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _unidentified(head: bytes) -> tuple[str, str]:
    format_name = _sniff(head)
    if format_name is not None:
        return "corrupt", f"starts like a {format_name} file but its header cannot be read"
    return "not_an_image", "not an image Pillow can read (no known image format matches its content)"


def _header_of(image: Image.Image) -> ImageHeader:
    return ImageHeader(width=image.width, height=image.height, format=image.format or "unknown", mode=image.mode)


def _missing_tail(data: bytes, image_format: str | None, image: Image.Image | None = None) -> str | None:
    """Return why the bytes look cut short, or None when the cheap test for the format passes.

    TIFF needs the opened ``image`` (its strip offsets); the other tests need only the bytes.
    """
    if image_format in ("JPEG", "MPO"):
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return "JPEG data does not end with its end-of-image marker (FFD9)"
    elif image_format == "PNG":
        if _PNG_IEND not in data:
            return "PNG data has no IEND chunk"
    elif image_format == "GIF":
        if not data.rstrip(b"\x00").endswith(b"\x3b"):
            return "GIF data does not end with its trailer byte (3B)"
    elif image_format == "WEBP" and len(data) >= 8:
        declared = struct.unpack_from("<I", data, 4)[0] + 8
        if len(data) < declared:
            return f"WebP header declares {declared} bytes but the file has {len(data)}"
    elif image_format == "BMP" and len(data) >= 6:
        declared = struct.unpack_from("<I", data, 2)[0]
        # Some writers leave the size field 0; only a positive declared size can be checked.
        if 0 < len(data) < declared:
            return f"BMP header declares {declared} bytes but the file has {len(data)}"
    elif image_format == "TIFF" and image is not None:
        return _tiff_missing_tail(len(data), image)
    return None


def _tiff_missing_tail(length: int, image: Image.Image) -> str | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return None
    # Strips (273/279) or tiles (324/325): every block must lie inside the file.
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        end = max((offset + count for offset, count in zip(offsets, counts, strict=False)), default=0)
        if end > length:
            return f"TIFF image data runs to byte {end} but the file has {length}"
    return None


def _exif_upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        # A damaged EXIF block must not cost the picture: keep it as stored.
        return image


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values * (255.0 / 65535.0)
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        # A constant image carries no contrast to stretch; keep its value where it fits.
        scaled = np.clip(values, 0, 255)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))

"""Image reading with clear errors for missing, empty, corrupt and truncated files.

:func:`read_image` decodes with OpenCV from the file's bytes. OpenCV happily decodes a
*truncated* JPEG (libjpeg pads the missing rows with grey and only prints a warning), so
before decoding we check the container structure:

* JPEG: the marker segments are walked from SOI; entropy-coded scans are skipped up to the
  next marker. A file whose data ends before the EOI marker (``FF D9``) is truncated. Data
  after EOI (some cameras append it) is accepted.
* PNG: the chunks are walked from the signature; a file that ends before ``IEND`` (or inside a
  chunk) is truncated.

Other formats are only checked by the decoder itself.
"""

from __future__ import annotations

import re
from typing import Optional

import cv2
import numpy as np

from ..utils.errors import UserError

__all__ = ["ImageReadError", "read_image", "check_image_bytes"]

_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# In an entropy-coded segment, 0xFF is followed by 0x00 (byte stuffing), by RST0-7 (0xD0-0xD7)
# or by fill bytes (0xFF). Anything else after one or more 0xFF is the next marker.
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}
_SUPPORTED_FORMATS = ("RGB", "BGR", "L")


class ImageReadError(UserError, OSError):
    """An image file cannot be read: missing, empty, corrupt or truncated.

    A :class:`~reid_plugins.utils.errors.UserError`: the tools print it as one line.

    Attributes:
        filename: the path of the file.
        reason: a short description of what is wrong.
    """

    hint = (
        "fix or remove the file, or set DATALOADER.SKIP_CORRUPT True to skip unreadable images "
        "with a warning"
    )

    def __init__(self, filename: str, reason: Optional[str] = None):
        if reason is None:
            # Re-created from its message alone (DataLoader workers re-raise exceptions in the
            # main process as ``type(e)(formatted_traceback)``).
            message, filename, reason = filename, None, filename
        else:
            message = f"Cannot read image '{filename}': {reason}"
        super().__init__(message)
        self.filename = filename
        self.reason = reason
        self._message = message

    def __str__(self) -> str:
        return self._message

    def __reduce__(self):  # picklable across processes
        if self.filename is None:
            return (type(self), (self._message,))
        return (type(self), (self.filename, self.reason))


def _jpeg_problem(data: bytes) -> Optional[str]:
    """Return why a JPEG byte string is truncated, or None when it reaches its EOI marker.

    Structural oddities that are not truncation are left to the decoder (returns None).
    """
    n = len(data)
    pos = 2  # after SOI
    while True:
        # Skip fill bytes before a marker.
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 2 > n:
            return "truncated JPEG (file ends before the end-of-image marker FF D9)"
        if data[pos] != 0xFF:
            return None  # not a marker where one is expected: let the decoder judge
        marker = data[pos + 1]
        pos += 2
        if marker == 0xD9:
            return None  # EOI reached
        if marker in _STANDALONE_MARKERS:
            continue
        if pos + 2 > n:
            return "truncated JPEG (file ends inside a marker segment)"
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            return None
        pos += length
        if pos > n:
            return "truncated JPEG (file ends inside a marker segment)"
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            m = _NEXT_MARKER.search(data, pos)
            if m is None:
                return "truncated JPEG (file ends inside the compressed image data)"
            pos = m.end() - 2  # the last 0xFF before the marker byte


def _png_problem(data: bytes) -> Optional[str]:
    """Return why a PNG byte string is truncated, or None when its IEND chunk is complete."""
    n = len(data)
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > n:
            return "truncated PNG (file ends before the IEND chunk)"
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if pos > n:
            return f"truncated PNG (file ends inside the {ctype.decode('latin-1')!r} chunk)"
        if ctype == b"IEND":
            return None


def check_image_bytes(data: bytes) -> Optional[str]:
    """Cheap structural check of an encoded image.

    Args:
        data: the raw file content.

    Returns:
        None when no problem was found, otherwise a short reason (empty file, truncated JPEG,
        truncated PNG). Formats other than JPEG/PNG are only checked for emptiness.
    """
    if len(data) == 0:
        return "the file is empty"
    if data.startswith(_JPEG_SOI):
        return _jpeg_problem(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png_problem(data)
    return None


def _read_bytes(path: str) -> bytes:
    try:
        from iopath.common.file_io import g_pathmgr

        with g_pathmgr.open(path, "rb") as f:
            return f.read()
    except ImportError:  # pragma: no cover - iopath is a dependency
        with open(path, "rb") as f:
            return f.read()


def read_image(path: str, format: str = "RGB") -> np.ndarray:
    """Read an image file into a uint8 array.

    Args:
        path: file path (local, or any path iopath's ``g_pathmgr`` can open).
        format: "RGB" (default), "BGR" (OpenCV order) or "L" (grey scale).

    Returns:
        ``np.ndarray`` of dtype uint8, shape ``(H, W, 3)`` (``(H, W, 1)`` for "L").

    Raises:
        ImageReadError: (a subclass of ``OSError``) the file is missing, unreadable, empty,
            truncated or cannot be decoded; the message names the file.
        ValueError: unknown ``format``.
    """
    if format not in _SUPPORTED_FORMATS:
        raise ValueError(f"read_image: format must be one of {_SUPPORTED_FORMATS}, got {format!r}")
    try:
        data = _read_bytes(path)
    except OSError as e:
        reason = "file not found" if isinstance(e, FileNotFoundError) else str(e)
        raise ImageReadError(path, reason) from e
    problem = check_image_bytes(data)
    if problem is not None:
        raise ImageReadError(path, problem)
    buf = np.frombuffer(data, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if format == "L" else cv2.IMREAD_COLOR
    try:
        img = cv2.imdecode(buf, flag)
    except cv2.error as e:  # some decoders raise instead of returning None
        raise ImageReadError(path, f"OpenCV failed to decode the image ({e})") from e
    if img is None or img.size == 0:
        raise ImageReadError(path, "OpenCV could not decode the file (corrupt or not an image)")
    if format == "L":
        return img[:, :, None]
    if format == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)

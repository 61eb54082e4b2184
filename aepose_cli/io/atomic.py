"""Atomic files: every finished output appears in one rename, made by the run's `FileScope`.

A crash or an error never leaves a half-written output under the final name, only (at worst,
after a crash) a hidden `.NAME.tmp-XXXXXXXX` file beside it. The writes themselves are
`io.filesystem`'s; this module adds the image encoding and keeps the names callers use.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..errors import ConfigError
from .filesystem import FileScope, fsync_folder

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "fsync_folder", "write_image"]

DEFAULT_JPEG_QUALITY = 95  # cv2.imwrite's default, which the reference demo relies on


# ---------------------------------------------------------------------------------------------
# Atomic writes (through a run's `FileScope`, or one declaring just the file)


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb", *, scope: FileScope | None = None) -> Iterator[IO[Any]]:
    """Write `path` through a hidden temporary file in the same folder, renamed on success.

    The temporary file (`.NAME.tmp-XXXXXXXX`, its token recorded when it is made) is fsync'ed
    before the rename, so after a crash `path` holds either its old content or the complete new
    one. If the body raises, the temporary file is removed and the exception propagates. Missing
    parent folders are created. `mode` is 'wb' or 'w' (UTF-8 text). `scope`: the run's
    (`io.filesystem`), which must have declared `path`; None: a scope of this file alone.
    """
    with (scope or FileScope.of(path)).atomic_file(path, mode) as handle:
        yield handle


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, scope: FileScope | None = None) -> None:
    """Replace `path` with `data` in one step (see `atomic_output`)."""
    (scope or FileScope.of(path)).store_bytes(path, data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, scope: FileScope | None = None) -> None:
    """Replace `path` with UTF-8 `text` in one step (see `atomic_output`)."""
    (scope or FileScope.of(path)).store_text(path, text)


def write_image(
    path: str | os.PathLike[str], image_bgr: np.ndarray, jpeg_quality: int = DEFAULT_JPEG_QUALITY, *, scope: FileScope | None = None,
) -> None:
    """Encode a BGR image in the format its extension names and write it atomically.

    JPEG quality defaults to 95 like `cv2.imwrite` (the reference demo's writer).
    """
    target = Path(path)
    extension = target.suffix.lower()
    if not extension or not cv2.haveImageWriter(f"x{extension}"):
        raise ConfigError(f"{target}: cannot write images with extension {extension!r}")
    params: list[int] = []
    if extension in (".jpg", ".jpeg", ".jpe"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(extension, image_bgr, params)
    if not ok:
        raise ConfigError(f"{target}: OpenCV could not encode the image as {extension}")
    try:
        atomic_write_bytes(target, encoded.tobytes(), scope=scope)
    except OSError as error:
        from .output_plan import output_error

        raise output_error(error, target) from None

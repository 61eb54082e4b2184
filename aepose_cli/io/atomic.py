"""Atomic files: every finished output appears in one `os.replace`.

A crash or an error never leaves a half-written output under the final name, only (at worst)
a hidden `.NAME.tmp-XXXX` file beside it. The model cache (`zoo.py`) uses `fsync_folder` too.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from ..errors import ConfigError

DEFAULT_JPEG_QUALITY = 95  # cv2.imwrite's default, which the reference demo relies on


# ---------------------------------------------------------------------------------------------
# Atomic writes


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write `path` through a hidden temporary file in the same folder, renamed on success.

    The temporary file (`.NAME.tmp-XXXXXXXX`) is fsync'ed before `os.replace`, so after a crash
    `path` holds either its old content or the complete new one. If the body raises, the
    temporary file is removed and the exception propagates. Missing parent folders are created.
    `mode` is 'wb' or 'w' (UTF-8 text).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = _create_temp_beside(target)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        _remove_quietly(temp)
        raise
    fsync_folder(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` in one step (see `atomic_output`)."""
    with atomic_output(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path` with UTF-8 `text` in one step (see `atomic_output`)."""
    with atomic_output(path, "w") as handle:
        handle.write(text)


def write_image(
    path: str | os.PathLike[str], image_bgr: np.ndarray, jpeg_quality: int = DEFAULT_JPEG_QUALITY
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
        atomic_write_bytes(target, encoded.tobytes())
    except OSError as error:
        from .output_plan import output_error

        raise output_error(error, target) from None


def _create_temp_beside(target: Path) -> tuple[int, str]:
    """Create a fresh hidden file next to `target`; mode 0o666 so the umask applies as usual."""
    while True:
        temp = str(target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}"))
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def fsync_folder(folder: Path) -> None:
    """Persist the rename itself; best effort (not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

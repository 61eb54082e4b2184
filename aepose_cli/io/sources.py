"""Image files and folders of images: decoding exactly as the reference does, listing, sharding.

Decoding goes through `cv2.imdecode(np.fromfile(path), IMREAD_COLOR)` (what the reference's
`mmcv.imread` amounts to): the pixels are
bit-identical to the reference's, non-ASCII paths work on every platform, EXIF orientation is
applied, alpha is dropped, grayscale and 16-bit images become 8-bit BGR.

Folder listings are deterministic (sorted by relative POSIX path) so that a run, its resume and
the N shards of a split run all agree on which image is which.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Stem suffix of the images this tool writes (`photo.pose.jpg`); a second run over the same
# folder must not pick them up as inputs.
OUTPUT_STEM_SUFFIX = ".pose"

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"


# ---------------------------------------------------------------------------------------------
# Decoding


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 BGR array, as the reference does.

    Raises InputError (one line, naming the file) when the file is missing, is a directory, is
    empty, is not a decodable image, or is a JPEG cut short (OpenCV would silently return the
    decoded part with grey below it; the reference would too, but such a result is never what
    the user wants, so it is refused).
    """
    path = Path(path)
    data = _read_bytes(path)
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    # Checked before decoding: OpenCV 4.8 decodes a cut JPEG partially, newer 4.x refuse it;
    # either way the user gets the same, precise reason.
    if _is_truncated_jpeg(data):
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not an image or corrupt (OpenCV cannot decode it)")
    return image


def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an image file")
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _is_truncated_jpeg(data: np.ndarray) -> bool:
    """True for a JPEG whose last scan is not followed by an end-of-image marker.

    Inside entropy-coded data a 0xFF byte is always stuffed (FF 00) or a restart marker, so the
    last SOS marker is the start of the last scan and a complete file has an EOI after it.
    Thumbnails in EXIF come before the main image's scans, and trailing bytes after EOI (some
    cameras append data) do not matter.
    """
    raw = data.tobytes()
    if not raw.startswith(_JPEG_SOI):
        return False
    last_scan = raw.rfind(_JPEG_SOS)
    return last_scan < 0 or raw.find(_JPEG_EOI, last_scan + 2) < 0


# ---------------------------------------------------------------------------------------------
# Folders


def list_images(
    folder: str | os.PathLike[str],
    *,
    recursive: bool = False,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    shard: tuple[int, int] | None = None,
) -> list[Path]:
    """The image files of `folder`, sorted by relative POSIX path, optionally one shard of them.

    Extensions match case-insensitively. Hidden files and folders (name starting with '.') and
    this tool's own outputs (stem ending in '.pose') are skipped. Symbolic links to files are
    listed; symbolic links to folders are not descended into (no cycles).

    `shard=(i, n)` (1-based, 1 <= i <= n, as `parse_shard` returns) keeps the images at sorted
    positions p with p % n == i - 1 (round-robin), so n machines given the same folder split it
    exactly: the shards are disjoint and together hold every image, and each gets a mix of the
    folder's sub-folders. The position of a shard's k-th image in the full listing is
    `global_index(k, shard)`. A shard may be empty when n exceeds the number of images.

    Raises InputError when the folder is missing, is not a folder or holds no image.
    """
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    wanted = tuple(ext.lower() for ext in extensions)
    relative = sorted(
        rel for rel in _walk_relative(root, recursive) if _is_wanted_image(rel, wanted)
    )
    if not relative:
        scope = "or its sub-folders " if recursive else ""
        raise InputError(f"{root}: no image files ({', '.join(wanted)}) in the folder {scope}")
    if shard is not None:
        index, count = _validate_shard(shard)
        relative = relative[index - 1 :: count]
    return [root.joinpath(*rel.split("/")) for rel in relative]


def global_index(local_index: int, shard: tuple[int, int] | None) -> int:
    """Position in the unsharded listing of the `local_index`-th (0-based) image of a shard.

    Use it for image ids so the JSON files of the shards of one folder never share an id.
    """
    if shard is None:
        return local_index
    index, count = _validate_shard(shard)
    return (index - 1) + local_index * count


def _walk_relative(root: Path, recursive: bool) -> Iterable[str]:
    """Relative POSIX paths of the non-hidden files under `root`."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        # Pruning in place stops os.walk from descending into hidden folders.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if name.startswith(".") or not os.path.isfile(os.path.join(dirpath, name)):
                continue
            yield name if rel_dir == "." else f"{rel_dir}/{name}"


def _is_wanted_image(relative: str, extensions: tuple[str, ...]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return False
    return f".{ext.lower()}" in extensions and not stem.lower().endswith(OUTPUT_STEM_SUFFIX)


# ---------------------------------------------------------------------------------------------
# Sharding


def parse_shard(text: str) -> tuple[int, int]:
    """Parse '--shard I/N' (1-based: '1/4' is the first of four shards) into (I, N)."""
    index_text, slash, count_text = text.strip().partition("/")
    try:
        if not slash:
            raise ValueError
        shard = (int(index_text), int(count_text))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 1/4), got {text!r}") from None
    return _validate_shard(shard)


def _validate_shard(shard: tuple[int, int]) -> tuple[int, int]:
    index, count = shard
    if count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard {index}/{count}: need 1 <= I <= N (shards are numbered from 1)")
    return index, count

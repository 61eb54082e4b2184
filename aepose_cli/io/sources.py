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
import re
import stat
import struct
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..config import DEFAULT_MAX_PIXELS
from ..errors import ConfigError, InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# What `aepose video FOLDER` reads from a folder (case-insensitive). A file named on the command
# line, or matched by a pattern, is read whatever its extension.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")

# Stem suffix of the images this tool writes (`photo.pose.jpg`); a second run over the same
# folder must not pick them up as inputs.
OUTPUT_STEM_SUFFIX = ".pose"

_JPEG_SOI = b"\xff\xd8"


# ---------------------------------------------------------------------------------------------
# Decoding


def read_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a uint8 HxWx3 BGR array, as the reference does.

    Raises InputError (one line, naming the file) when the file is missing, is a directory or
    another non-regular file (a FIFO, a device: refused without opening it), is empty, is not a
    decodable image, is a JPEG cut short (OpenCV would silently return the decoded part with
    grey below it; the reference would too, but such a result is never what the user wants,
    so it is refused), or has more than `max_pixels` pixels by its header (checked before
    decoding, so a small file that claims a huge size never allocates it; None: no limit).
    """
    path = Path(path)
    data = _read_bytes(path)
    if data.size == 0:
        raise InputError(f"{path}: empty file")
    raw = data.tobytes()
    size = image_size_from_header(raw)
    if size is None:
        raise InputError(f"{path}: not an image (no JPEG, PNG, BMP, TIFF or WebP header)")
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: image header gives an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(
            f"{path}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise --max-pixels to allow it)"
        )
    # Checked before decoding: OpenCV 4.8 decodes a cut JPEG partially, newer 4.x refuse it;
    # either way the user gets the same, precise reason.
    if raw.startswith(_JPEG_SOI) and _is_truncated_jpeg(raw):
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not an image or corrupt (OpenCV cannot decode it)")
    return image


def check_regular_file(path: Path, what: str = "image") -> None:
    """InputError unless `path` is an existing regular file (or a link to one).

    Checked with stat, never by opening: opening a FIFO blocks until a writer comes.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not {'an' if what[:1] in 'aeiou' else 'a'} {what} file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); refused")


def _read_bytes(path: Path) -> np.ndarray:
    check_regular_file(path)
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------------
# Image headers: (width, height) without decoding


def image_size_from_header(raw: bytes) -> tuple[int, int] | None:
    """(width, height) stored in a JPEG, PNG, BMP, TIFF or WebP header; None for anything else
    (OpenCV decodes more formats, but only these are checked before any pixel is allocated, so
    only these are read). EXIF rotation does not change the pixel count."""
    try:
        if raw.startswith(_JPEG_SOI):
            return _jpeg_size(raw)
        if raw.startswith(b"\x89PNG\r\n\x1a\n") and raw[12:16] == b"IHDR":
            return struct.unpack(">II", raw[16:24])
        if raw.startswith(b"BM") and len(raw) >= 26:
            header_size = struct.unpack("<I", raw[14:18])[0]
            if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                w, h = struct.unpack("<HH", raw[18:22])
            else:
                w, h = struct.unpack("<ii", raw[18:26])
            return abs(w), abs(h)  # a negative height means top-down rows
        if raw[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(raw)
        if raw.startswith(b"RIFF") and raw[8:12] == b"WEBP":
            return _webp_size(raw)
    except (struct.error, IndexError, ValueError):
        return (0, 0)  # a known format with a cut or broken header: refused as empty
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int]:
    """Size from the first start-of-frame segment (any SOFn: baseline, progressive, ...)."""
    for marker, offset in _jpeg_segments(raw):
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack(">HH", raw[offset + 5 : offset + 9])
            return width, height
        if marker == 0xDA:
            break
    return (0, 0)


_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_segments(raw: bytes, start: int = 2):
    """(marker, offset of the FF byte) of each header segment from `start` up to and including
    the next SOS; stops at EOI or at the end of the data."""
    pos = start
    n = len(raw)
    while pos + 4 <= n:
        if raw[pos] != 0xFF:
            return
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        if marker == 0xD9:
            yield marker, pos
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        length = struct.unpack(">H", raw[pos + 2 : pos + 4])[0]
        yield marker, pos
        if marker == 0xDA:
            return
        pos += 2 + length


def _tiff_size(raw: bytes) -> tuple[int, int]:
    """Width and length of the first image (IFD) of a TIFF, the one OpenCV decodes."""
    order = "<" if raw[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", raw[4:8])
    (count,) = struct.unpack(order + "H", raw[ifd : ifd + 2])
    size = {}
    for i in range(count):
        entry = raw[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            value = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
            size[tag] = value
    return size.get(256, 0), size.get(257, 0)


def _webp_size(raw: bytes) -> tuple[int, int]:
    chunk = raw[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key-frame start code
        w, h = struct.unpack("<HH", raw[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit (size - 1) fields packed after the signature byte
        (bits,) = struct.unpack("<I", raw[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (size - 1) canvas fields
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    return (0, 0)


def _is_truncated_jpeg(raw: bytes) -> bool:
    """True for a JPEG whose last scan is not followed by an end-of-image marker.

    Walks the marker structure from the start: header segments are skipped by their lengths
    (so EXIF thumbnails inside APP1 do not count), and each scan's entropy-coded data ends at
    the first marker that is neither a stuffed FF 00 nor a restart marker. The file is complete
    once an EOI is reached; bytes after it (the video of a "motion photo", padding some cameras
    append) are ignored, whatever they contain.
    """
    pos = 2
    n = len(raw)
    while True:
        sos = None
        for marker, offset in _jpeg_segments(raw, pos):
            if marker == 0xD9:
                return False
            if marker == 0xDA:
                sos = offset
        if sos is None:
            return True  # the headers ran out (or broke) before EOI
        length = struct.unpack(">H", raw[sos + 2 : sos + 4])[0]
        pos = sos + 2 + length
        # Entropy-coded data: find the next marker that ends it.
        while True:
            pos = raw.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= n:
                return True
            following = raw[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                pos += 1 if following == 0xFF else 2
                continue
            break
        if following == 0xD9:
            return False


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


def list_videos(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The video files of `folder` (`VIDEO_EXTENSIONS`), sorted by relative POSIX path, with the
    same rules as `list_images`: hidden files and this tool's outputs (`*.pose.mp4`) skipped,
    links to folders not followed. InputError when the folder holds no video."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    relative = sorted(
        rel for rel in _walk_relative(root, recursive) if _is_wanted_image(rel, VIDEO_EXTENSIONS) and not is_own_output(rel)
    )
    if not relative:
        scope = "or its sub-folders " if recursive else ""
        raise InputError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in the folder {scope}")
    return [root.joinpath(*rel.split("/")) for rel in relative]


def is_own_output(path: str | os.PathLike[str]) -> bool:
    """True for a file this tool writes under its default names (`clip.pose.mp4`,
    `clip.pose.partial.mp4`, the journal `clip.pose.json.partial.jsonl`, the encoder's
    `clip.pose.mp4.part-1a2b3c4d.mp4`): a folder or a pattern such as 'clips/*' must not pick
    them up as inputs on a second run. (A name match only decides what a listing skips; nothing
    is ever deleted by it.)"""
    name = Path(path).name.lower()
    stem = name.rsplit(".", 1)[0]
    return (
        stem.endswith(OUTPUT_STEM_SUFFIX)
        or stem.endswith(OUTPUT_STEM_SUFFIX + ".partial")
        or re.search(r"\.pose\.[^.]+\.partial\.jsonl$", name) is not None
        or re.search(r"\.part-[0-9a-f]{8}\.mp4$", name) is not None
    )


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

"""Image decoding (as the reference does it), folder listing and sharding."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from aepose_cli.errors import ConfigError, InputError
from aepose_cli.io.sources import global_index, list_images, parse_shard, read_image

from paths import SHARED, needs_shared  # noqa: E402

BUS = SHARED / "data/ultralytics-assets/bus.jpg"
ZIDANE = SHARED / "data/ultralytics-assets/zidane.jpg"


# -- read_image: real files ---------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("path", [BUS, ZIDANE, SHARED / "data/mmpose-testdata/mhp/10084.jpg"])
def test_real_jpegs_decode_exactly_like_opencv(path):
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_COLOR))


@needs_shared
def test_bus_has_its_known_size():
    assert read_image(BUS).shape == (1080, 810, 3)


@needs_shared
def test_non_ascii_path(tmp_path):
    target = tmp_path / "фото 写真.jpg"
    shutil.copyfile(BUS, target)
    assert np.array_equal(read_image(target), read_image(BUS))


# -- read_image: formats ----------------------------------------------------------------------


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    image = read_image(path)
    assert image.shape == (48, 64, 3)
    for channel in range(3):
        assert np.array_equal(image[:, :, channel], gray)


def test_rgba_png_drops_alpha(tmp_path):
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0  # fully transparent
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    image = read_image(path)
    assert image.shape == (20, 30, 3)
    assert np.all(image == np.array([10, 20, 30], np.uint8))


def test_16_bit_png_becomes_8_bit(tmp_path):
    deep = np.full((10, 12, 3), 0x1234, np.uint16)
    deep[..., 2] = 0xFF00
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    image = read_image(path)
    assert image.dtype == np.uint8
    assert np.all(image[..., 0] == 0x12) and np.all(image[..., 2] == 0xFF)


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A baseline JPEG with an EXIF APP1 segment holding only the orientation tag."""
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    tiff = b"II*\x00" + struct.pack("<I", 8)  # little-endian TIFF header, IFD0 at offset 8
    tiff += struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack("<I", 0)  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    raw = encoded.tobytes()
    return raw[:2] + app1 + raw[2:]


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(image, 6))  # 6 = rotate 90° clockwise to display
    decoded = read_image(path)
    assert decoded.shape == (80, 40, 3)
    assert decoded[5, 20].mean() > 200 and decoded[75, 20].mean() < 50  # white half on top


# -- read_image: errors -----------------------------------------------------------------------


def _assert_input_error(path: Path, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_missing_file_and_directory(tmp_path):
    _assert_input_error(tmp_path / "absent.jpg", "no such file")
    _assert_input_error(tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_input_error(path, "empty")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    _assert_input_error(path, "not an image")


def test_random_bytes_behind_a_jpeg_header(tmp_path):
    path = tmp_path / "corrupt.jpg"
    rng = np.random.default_rng(0)
    path.write_bytes(b"\xff\xd8\xff\xe0" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="corrupt.jpg"):
        read_image(path)


@needs_shared
@pytest.mark.parametrize("fraction", [0.3, 0.99])
def test_truncated_jpeg_is_refused(tmp_path, fraction):
    data = BUS.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    # OpenCV alone decodes it (grey below the cut): the check must be ours.
    assert cv2.imread(str(path)) is not None
    _assert_input_error(path, "truncated")


@needs_shared
def test_jpeg_with_trailing_bytes_after_the_end_marker_is_fine(tmp_path):
    path = tmp_path / "trailer.jpg"
    # Some cameras append data after the end-of-image marker; that is not a truncation.
    path.write_bytes(BUS.read_bytes() + b"\x00" * 64 + b"camera maker notes")
    assert np.array_equal(read_image(path), read_image(BUS))


def test_truncated_png_is_refused(tmp_path):
    ok, encoded = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (64, 64, 3),
                                                                       dtype=np.uint8))
    path = tmp_path / "cut.png"
    path.write_bytes(encoded.tobytes()[:500])
    _assert_input_error(path, "not an image")


# -- list_images ------------------------------------------------------------------------------


def _touch(root: Path, *relatives: str) -> None:
    for relative in relatives:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _touch(
        tmp_path,
        "b.jpg", "a.PNG", "C.JpEg", "z.webp", "y.tiff", "x.bmp",
        "notes.txt", "noext", ".hidden.jpg", "photo.pose.jpg", "clip.POSE.png",
        "sub/d.jpg", "sub/deeper/e.png", ".git/f.jpg", "sub/.cache/g.jpg",
    )
    return tmp_path


def _relative(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_listing_is_filtered_and_sorted(folder):
    assert _relative(list_images(folder), folder) == [
        "C.JpEg", "a.PNG", "b.jpg", "x.bmp", "y.tiff", "z.webp",
    ]


def test_recursive_listing(folder):
    assert _relative(list_images(folder, recursive=True), folder) == [
        "C.JpEg", "a.PNG", "b.jpg", "sub/d.jpg", "sub/deeper/e.png", "x.bmp", "y.tiff", "z.webp",
    ]


def test_extension_filter(folder):
    found = list_images(folder, recursive=True, extensions=(".PNG",))
    assert _relative(found, folder) == ["a.PNG", "sub/deeper/e.png"]


def test_listing_errors(tmp_path, folder):
    with pytest.raises(InputError, match="no such folder"):
        list_images(tmp_path / "absent")
    with pytest.raises(InputError, match="not a folder"):
        list_images(folder / "b.jpg")
    empty = tmp_path / "empty"
    _touch(empty, "readme.txt", ".x.jpg")
    with pytest.raises(InputError, match="no image files"):
        list_images(empty)


@needs_shared
def test_real_folder():
    coco = SHARED / "data/coco-mini-val2017/val2017"
    found = list_images(coco)
    assert len(found) == 79
    assert found == sorted(found)
    assert all(p.suffix == ".jpg" for p in found)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 20])
def test_shards_partition_the_listing(tmp_path, count):
    _touch(tmp_path, *(f"dir{i % 3}/img{i:02d}.jpg" for i in range(17)))
    everything = list_images(tmp_path, recursive=True)
    shards = [list_images(tmp_path, recursive=True, shard=(i, count)) for i in range(1, count + 1)]
    flat = [p for shard in shards for p in shard]
    assert sorted(flat) == sorted(everything) and len(flat) == len(everything)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for i, shard in enumerate(shards, start=1):
        for local, path in enumerate(shard):
            assert everything[global_index(local, (i, count))] == path


@needs_shared
def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1/1 ") == (1, 1)
    for bad in ["0/4", "5/4", "2", "a/b", "2/0", "-1/3", "1/4/2", ""]:
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError):
        list_images(SHARED / "data/ultralytics-assets", shard=(3, 2))

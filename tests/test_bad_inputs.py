"""Hostile and malformed inputs (issue 8, input half): each ends in one line and the right exit
code, with no traceback, inputs byte-identical afterwards and no file left behind.

Every hostile file is made at test time from a few bytes (PNG/JPEG/BMP headers that claim a
huge size, extreme aspect ratios, a FIFO, a motion photo made from a real JPEG) or from the
real test data; nothing large is committed. The memory cases run under an address-space cap
of 4 GiB (`RLIMIT_AS` set in the child), so a run that tried to allocate what the header
claims would die instead of passing.

The memory cases, the FIFOs (a hang must not take the test run with it) and a few option and
annotation errors (the one-line stderr of the real process) run `aepose` as a subprocess; the
other cases call it in this process (`run_in_process`), which checks the same exit code, lines
and files without paying a Python + torch start-up for each.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cli_helpers import (
    COCO_IMAGES,
    FAST,
    MINI_VAL,
    MINI_VAL_ANN,
    TINY_CHECKPOINT,
    ZIDANE,
    assert_one_line_error,
    assert_untouched,
    cli_command,
    cli_env,
    describe,
    leftovers,
    load_json,
    run_cli,
    run_in_process,
    snapshot,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

ADDRESS_SPACE_CAP = 4 << 30


# -- helpers -----------------------------------------------------------------------------------
def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def run_capped(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`aepose ARGS` with at most 4 GiB of address space."""
    return subprocess.run(
        cli_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=cli_env(), preexec_fn=_cap_address_space,
    )


_CAPPED_RUNS = (
    "import json, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from cli_helpers import run_in_process\n"
    "runs = [run_in_process(*args) for args in json.loads(sys.argv[2])]\n"
    "print(json.dumps([[run.returncode, run.stdout, run.stderr] for run in runs]))\n"
)


def run_capped_each(commands: list[list]) -> list[subprocess.CompletedProcess]:
    """Each command line as `aepose ARGS`, one after the other in ONE child process with at most
    4 GiB of address space (`run_in_process` there: one Python + torch start-up for all), each
    with its own exit code and output."""
    argv = json.dumps([[str(a) for a in command] for command in commands])
    proc = subprocess.run(
        [sys.executable, "-c", _CAPPED_RUNS, str(Path(__file__).resolve().parent), argv],
        capture_output=True, text=True, timeout=600, env=cli_env(), preexec_fn=_cap_address_space,
    )
    assert proc.returncode == 0, describe(proc)
    results = json.loads(proc.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess(["aepose", *c], code, out, err) for c, (code, out, err) in zip(commands, results)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height (one real row of pixel data)."""
    row = b"\x00" + b"\x00" * 3 * min(width, 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(row))
        + _png_chunk(b"IEND", b"")
    )


def real_png(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return buf.tobytes()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG (zidane) whose start-of-frame segment claims width x height."""
    raw = bytearray(ZIDANE.read_bytes())
    pos = 2
    while raw[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + struct.unpack(">H", raw[pos + 2 : pos + 4])[0]
    raw[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 16


def motion_photo() -> bytes:
    """A valid JPEG followed by an MP4-like trailer that contains JPEG marker bytes."""
    trailer = b"\x00\x00\x00\x18ftypmp42" + b"\xff\xda\x00\x08junk" * 4 + b"\xff\xd8\xff\xda" + bytes(range(256)) * 8
    return ZIDANE.read_bytes() + trailer


# Files that must be refused one by one: (name, bytes or a maker, fragment of the reason).
HOSTILE_IMAGES = {
    "huge_20000.png": (lambda: png_claiming(20000, 20000), "over the limit"),
    "huge_32000.png": (lambda: png_claiming(32000, 32000), "over the limit"),
    "huge_60000.jpg": (lambda: jpeg_claiming(60000, 60000), "over the limit"),
    "huge.bmp": (lambda: bmp_claiming(50000, 50000), "over the limit"),
    "strip_1x2000.png": (lambda: real_png(1, 2000), "network canvas"),
    "strip_2x300.png": (lambda: real_png(2, 300), "network canvas"),
    "zero_size.png": (lambda: png_claiming(0, 10), "empty size"),
    "truncated.jpg": (lambda: ZIDANE.read_bytes()[: len(ZIDANE.read_bytes()) // 2], "truncated JPEG"),
}


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Two real photos in a folder of their own."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))[:2]:
        shutil.copy(COCO_IMAGES / name, folder / name)
    return folder


# -- 5. bounded memory: hostile images, one by one, under a 4 GiB cap ---------------------------
@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory):
    """`aepose image FILE` for each hostile file alone, all in one capped child process."""
    folder = tmp_path_factory.mktemp("hostile")
    for name, (make, _reason) in HOSTILE_IMAGES.items():
        (folder / name).write_bytes(make())
    before = snapshot(folder)
    names = sorted(HOSTILE_IMAGES)
    runs = run_capped_each([["image", folder / name, *FAST] for name in names])
    return folder, before, dict(zip(names, runs))


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_image_is_refused_in_one_line_under_a_memory_cap(hostile_runs, name):
    folder, before, runs = hostile_runs
    proc = runs[name]
    line = assert_one_line_error(proc, str(folder / name), HOSTILE_IMAGES[name][1], code=2)
    assert "MemoryError" not in line
    assert_untouched(folder, before)


def test_folder_with_every_hostile_file_mixed_in_does_all_the_good_images(tmp_path, photos):
    for name, (make, _reason) in HOSTILE_IMAGES.items():
        (photos / name).write_bytes(make())
    (photos / "motion.jpg").write_bytes(motion_photo())
    os.mkfifo(photos / "pipe.jpg")  # not listed: a folder run takes regular files only
    before = snapshot(photos)
    proc = run_capped("folder", photos, *FAST, "--kpt-thr", "0.1")
    assert proc.returncode == 1, describe(proc)  # some inputs failed
    assert "Traceback" not in proc.stderr, describe(proc)
    assert_untouched(photos, before)
    assert leftovers(tmp_path) == []
    good = sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))[:2] + ["motion.jpg"]
    done = sorted(im["file_name"] for im in load_json(tmp_path / "photos.pose.json")["images"])
    assert done == sorted(good)
    assert sorted(p.name for p in (tmp_path / "photos.pose").iterdir()) == sorted(good)
    for name, (_make, reason) in HOSTILE_IMAGES.items():
        lines = [line for line in proc.stderr.splitlines() if name in line and reason in line]
        assert len(lines) == 1, f"{name}: {reason!r} not reported once\n{describe(proc)}"
    assert "pipe.jpg" not in proc.stderr


def test_motion_photo_is_not_called_truncated(tmp_path):
    path = tmp_path / "motion.jpg"
    path.write_bytes(motion_photo())
    before = snapshot(tmp_path)
    proc = run_in_process("image", path, *FAST, "--no-images", "--json", tmp_path / "out.json")
    assert proc.returncode == 0, describe(proc)
    assert "truncated" not in proc.stderr
    assert load_json(tmp_path / "out.json")["images"][0]["width"] == 1280
    before["out.json"] = snapshot(tmp_path)["out.json"]
    assert_untouched(tmp_path, before)


def test_max_pixels_lowered_refuses_a_real_photo_and_names_the_option(tmp_path):
    path = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, path)
    before = snapshot(tmp_path)
    proc = run_in_process("image", path, *FAST, "--max-pixels", "100000")
    assert_one_line_error(proc, str(path), "1280x720", "--max-pixels", code=2)
    assert_untouched(tmp_path, before)


def test_max_pixels_raised_lets_a_large_image_through(tmp_path):
    path = tmp_path / "wide.png"
    path.write_bytes(real_png(1200, 900))
    proc = run_in_process("image", path, *FAST, "--no-images", "--no-json", "--max-pixels", "1080000")
    assert proc.returncode == 0, describe(proc)
    proc = run_in_process("image", path, *FAST, "--no-images", "--no-json", "--max-pixels", "1000")
    assert_one_line_error(proc, str(path), "over the limit", code=2)


# Formats OpenCV decodes but aepose does not read (README: only JPEG, PNG, BMP, TIFF and WebP,
# whose sizes are checked from the header before any pixel is decoded).
OTHER_FORMATS = (".ppm", ".hdr", ".pfm")
NOT_AN_IMAGE = "not an image (no JPEG, PNG, BMP, TIFF or WebP header)"


def _write_other_format(path: Path, suffix: str) -> None:
    """A real small photo in that format (8-bit PPM; float HDR and PFM), made by OpenCV."""
    photo = cv2.imread(str(ZIDANE))[200:296, 500:628]
    pixels = photo if suffix == ".ppm" else photo.astype(np.float32) / 255
    assert cv2.imwrite(str(path), pixels)
    assert cv2.imread(str(path)) is not None  # OpenCV itself would decode it


@pytest.mark.parametrize("suffix", OTHER_FORMATS)
def test_image_in_another_format_is_refused(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    _write_other_format(path, suffix)
    before = snapshot(tmp_path)
    proc = run_in_process("image", path, *FAST)
    assert_one_line_error(proc, str(path), NOT_AN_IMAGE, code=2)
    assert_untouched(tmp_path, before)


def test_folder_reads_only_the_listed_formats_and_fails_the_others_by_content(tmp_path, photos):
    """In a folder, `.ppm`/`.hdr`/`.pfm` files are not listed (not inputs at all); the same files
    renamed `.jpg` are listed, refused by their content, and named as failed items."""
    for suffix in OTHER_FORMATS:
        _write_other_format(photos / f"other{suffix}", suffix)
        _write_other_format(tmp_path / f"x{suffix}", suffix)
        shutil.move(tmp_path / f"x{suffix}", photos / f"renamed_{suffix[1:]}.jpg")
    before = snapshot(photos)
    proc = run_in_process("folder", photos, *FAST, "--no-images")
    assert proc.returncode == 1, describe(proc)
    for suffix in OTHER_FORMATS:
        named = [line for line in proc.stderr.splitlines() if f"renamed_{suffix[1:]}.jpg" in line]
        assert len(named) == 1 and NOT_AN_IMAGE in named[0], describe(proc)
        assert f"other{suffix}" not in proc.stderr
    done = [im["file_name"] for im in load_json(tmp_path / "photos.pose.json")["images"]]
    assert done == sorted(p.name for p in COCO_IMAGES.glob("*.jpg"))[:2]
    assert_untouched(photos, before)


@pytest.mark.parametrize("command,name", [("image", "pipe.jpg"), ("video", "clip.mp4")])
def test_fifo_given_as_input_is_refused_without_hanging(tmp_path, command, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    proc = run_cli(command, fifo, *FAST, timeout=120)
    assert_one_line_error(proc, str(fifo), "not a regular file", code=2)
    assert_untouched(tmp_path, {name: "fifo"})


# -- 6. every option checked at parse time ------------------------------------------------------
BAD_OPTIONS = [
    (["--scales", "inf"], "--scales"),
    (["--scales", "nan"], "--scales"),
    (["--scales", "0"], "--scales"),
    (["--scales=-1"], "--scales"),
    (["--scales", "100"], "--scales"),
    (["--kpt-thr", "nan"], "--kpt-thr"),
    (["--tag-threshold", "nan"], "--tag-threshold"),
    (["--tag-threshold", "0"], "--tag-threshold"),
    (["--detection-threshold", "-1"], "--detection-threshold"),
    (["--detection-threshold", "inf"], "--detection-threshold"),
    (["--max-people", "100000"], "--max-people"),
    (["--radius", "100000000"], "--radius"),
    (["--thickness", "100000"], "--thickness"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--max-pixels", "-1"], "--max-pixels"),
    (["--device", "foo"], "--device"),
    (["--device", "mps"], "--device"),
    (["--device", "meta"], "--device"),
    (["--precision", "fp16"], "--precision fp16"),
    (["--precision", "bf16"], "--precision bf16"),
]


# These also run as a real process: a click type error, a callback's, and one refused after parsing.
REAL_PROCESS_OPTIONS = {"--scales inf", "--max-people 100000", "--precision fp16"}


@pytest.mark.parametrize("bad,named", BAD_OPTIONS, ids=[" ".join(b) for b, _ in BAD_OPTIONS])
def test_bad_option_is_a_one_line_usage_error(tmp_path, bad, named):
    path = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, path)
    before = snapshot(tmp_path)
    run = run_cli if " ".join(bad) in REAL_PROCESS_OPTIONS else run_in_process
    proc = run("image", path, *FAST, *bad)  # the later option wins over FAST
    assert_one_line_error(proc, named, code=2)
    assert_untouched(tmp_path, before)


def test_cuda_device_without_a_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, path)
    proc = run_in_process("image", path, *FAST, "--device", "cuda")
    assert_one_line_error(proc, "--device", "CUDA is not available", code=2)


@pytest.mark.parametrize("bad", [["--start", "nan"], ["--end", "nan"], ["--end", "inf"], ["--start", "2", "--end", "1"]])
def test_bad_video_times_are_refused_before_opening_the_video(tmp_path, bad):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not even a video")  # never opened: the options fail first
    proc = run_in_process("video", clip, *FAST, *bad)
    assert_one_line_error(proc, bad[-2], code=2)
    assert_untouched(tmp_path, {"clip.mp4": hashlib.sha256(b"not even a video").hexdigest()})


# -- 6. annotation and results files checked before the model loads ------------------------------
def _mini_annotations() -> dict:
    return load_json(MINI_VAL_ANN)


def _break(data: dict, how: str) -> dict:
    if how == "images_not_a_list":
        data["images"] = 5
    elif how == "image_without_file_name":
        del data["images"][2]["file_name"]
    elif how == "categories_of_numbers":
        data["categories"] = [5]
    elif how == "list_valued_image_id":
        data["images"][1]["id"] = [1]
    elif how == "keypoints_of_wrong_length":
        data["annotations"][3]["keypoints"] = data["annotations"][3]["keypoints"][:-2]
    elif how == "string_in_bbox":
        data["annotations"][0]["bbox"][2] = "12"
    elif how == "no_images":
        data["images"] = []
    return data


BROKEN_ANNOTATIONS = {
    "images_not_a_list": "'images' must be a list",
    "image_without_file_name": "images[2]",
    "categories_of_numbers": "categories[0]",
    "list_valued_image_id": "images[1]: 'id' must be an integer",
    "keypoints_of_wrong_length": "annotations[3]: 'keypoints'",
    "string_in_bbox": "annotations[0]: 'bbox'",
    "no_images": "no images",
}


@pytest.mark.parametrize("how", sorted(BROKEN_ANNOTATIONS))
def test_malformed_annotations_are_refused_before_the_model_loads(tmp_path, how):
    run = run_cli if how == "image_without_file_name" else run_in_process  # one as a real process
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_break(_mini_annotations(), how)))
    images = tmp_path / "images"
    shutil.copytree(MINI_VAL / "val2017", images)
    before = snapshot(tmp_path)
    # A checkpoint that does not exist: reaching the model would be another error.
    proc = run("evaluate", "--ann", ann, "--images", images, "--checkpoint", tmp_path / "none.pth", "--device", "cpu")
    assert_one_line_error(proc, str(ann), BROKEN_ANNOTATIONS[how], code=2)
    assert_untouched(tmp_path, before)


def _results_from_ground_truth(data: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0, "bbox": a["bbox"]}
        for a in data["annotations"] if a.get("num_keypoints", 0) > 0
    ]


@pytest.mark.parametrize("how,fragment", [
    ("list_valued_image_id", "result [4]: 'image_id' must be an integer"),
    ("string_in_bbox", "result [0]: 'bbox'"),
    ("score_missing", "result [2]: 'score'"),
    ("not_a_list", "must be a JSON list"),
])
def test_malformed_predictions_are_refused_naming_the_first_bad_entry(tmp_path, how, fragment):
    results = _results_from_ground_truth(_mini_annotations())
    if how == "list_valued_image_id":
        results[4]["image_id"] = [results[4]["image_id"]]
    elif how == "string_in_bbox":
        results[0]["bbox"] = ["1", 2, 3, 4]
    elif how == "score_missing":
        del results[2]["score"]
    else:
        results = {"results": results}
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))
    ann = tmp_path / "ann.json"
    shutil.copy(MINI_VAL_ANN, ann)
    before = snapshot(tmp_path)
    proc = run_in_process("evaluate", "--ann", ann, "--pred", pred)
    assert_one_line_error(proc, str(pred), fragment, code=2)
    assert_untouched(tmp_path, before)


def test_max_images_with_a_full_results_file_scores_the_first_images(tmp_path):
    """Ground truth scored against itself, over the first 3 images: every detection matches its
    own annotation with OKS 1, so every AP and AR is exactly 1, and a size range with no
    annotation among those images is -1 (the reference evaluator's "no ground truth")."""
    from aepose_cli.evaluation.cocoeval import METRIC_NAMES

    data = _mini_annotations()
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(_results_from_ground_truth(data)))
    metrics = tmp_path / "metrics.json"
    before = snapshot(tmp_path)
    # A checkpoint that does not exist: scoring a results file never loads a model.
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", pred, "--max-images", "3", "--metrics-json", metrics,
                          "--checkpoint", tmp_path / "none.pth", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "<annotations>" not in proc.stdout + proc.stderr
    first = [im["id"] for im in data["images"][:3]]  # the first 3 images of the annotation file
    areas = [a["area"] for a in data["annotations"] if a["image_id"] in first and a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")]
    medium = 1.0 if any(32**2 <= a < 96**2 for a in areas) else -1.0
    large = 1.0 if any(a >= 96**2 for a in areas) else -1.0
    expected = dict(zip(METRIC_NAMES, (1.0, 1.0, 1.0, medium, large, 1.0, 1.0, 1.0, medium, large)))
    assert load_json(metrics) == expected
    for name, value in expected.items():  # the table on stdout says the same
        assert re.search(rf"[│|] {re.escape(name)} +[│|] +{value:.3f} [│|]", proc.stdout), (name, proc.stdout)
    before["metrics.json"] = snapshot(tmp_path)["metrics.json"]
    assert_untouched(tmp_path, before)


# -- 4. paths stay inside --images ---------------------------------------------------------------
def _climbing(tmp_path: Path, images: Path, outside_exists: bool) -> tuple[str, str]:
    if outside_exists:
        (tmp_path / "outside").mkdir()
        shutil.copy(ZIDANE, tmp_path / "outside" / "secret.jpg")
    return "../outside/secret.jpg", "'../outside/secret.jpg' is outside --images"


def _absolute(tmp_path: Path, images: Path) -> tuple[str, str]:
    return str(ZIDANE), "is outside --images"


def _link_out(tmp_path: Path, images: Path) -> tuple[str, str]:
    os.symlink(ZIDANE, images / "link.jpg")
    return "link.jpg", "'link.jpg' is outside --images"


@pytest.mark.parametrize("make", [
    functools.partial(_climbing, outside_exists=True), functools.partial(_climbing, outside_exists=False), _absolute, _link_out,
], ids=["climbing-secret-exists", "climbing-secret-absent", "absolute", "symlink-out"])
def test_evaluate_refuses_a_file_name_outside_images(tmp_path, make):
    images = tmp_path / "images"
    shutil.copytree(MINI_VAL / "val2017", images)
    file_name, reason = make(tmp_path, images)
    data = _mini_annotations()
    data["images"][0]["file_name"] = file_name
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    before = snapshot(tmp_path)
    proc = run_in_process("evaluate", "--ann", ann, "--images", images, *FAST)
    line = assert_one_line_error(proc, str(ann), reason, code=2)
    # Same words whether or not the file is there: no existence probe.
    assert "missing" not in line and "not an image" not in line and "no such" not in line
    assert_untouched(tmp_path, before)


# -- 7. undecodable frames in a video are counted and keep their place ---------------------------
def _video_with_a_broken_start(path: Path, frames: int = 12, broken: int = 4) -> None:
    """H.264 at 10 fps whose first `broken` packets are replaced by noise (dropped by the muxer
    or undecodable) and whose next key frame comes later: frames 0..broken do not decode."""
    import av

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.options = {"g": str(broken), "bf": "0"}
    packets = []
    for i in range(frames):
        image = np.full((48, 64, 3), 20 * i, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = i
        packets += list(stream.encode(frame))
    packets += list(stream.encode(None))
    noise = np.random.default_rng(0)
    for packet in packets:
        if packet.pts is not None and packet.pts < broken:
            bad = av.Packet(bytes(noise.integers(0, 256, packet.size, dtype=np.uint8)))
            bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
            out.mux(bad)
        else:
            out.mux(packet)
    out.close()


def test_video_with_undecodable_first_frames_keeps_true_indices_and_exits_1(tmp_path):
    clip = tmp_path / "clip.mp4"
    _video_with_a_broken_start(clip)
    before = snapshot(tmp_path)
    proc = run_in_process("video", clip, *FAST, "--no-video", "--json", tmp_path / "out.json", "--jsonl", tmp_path / "out.jsonl")
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("aepose: warning:")]
    assert len(warning) == 1, describe(proc)
    assert str(clip) in warning[0] and "undecodable, the first at frame 0" in warning[0], describe(proc)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    indices = [record["index"] for record in lines]
    assert indices == list(range(12 - len(indices), 12)) and indices[0] >= 4
    assert [round(record["timestamp"], 3) for record in lines] == [i / 10 for i in indices]
    assert all(record["source"] == str(clip) for record in lines)
    names = [im["file_name"] for im in load_json(tmp_path / "out.json")["images"]]
    assert names[0] == f"clip_{indices[0]:06d}.jpg"
    assert snapshot(tmp_path)["clip.mp4"] == before["clip.mp4"]
    assert leftovers(tmp_path) == []


# -- cosmetic ------------------------------------------------------------------------------------
def test_rate_column_is_items_over_elapsed_time():
    from aepose_cli.cli.console import _RateColumn

    column = _RateColumn("img")
    # 4 images finished together after 8 s: rich's own speed (last gap) would be huge.
    task = SimpleNamespace(completed=4, elapsed=8.0, finished=False, finished_time=None, speed=150.94, finished_speed=None)
    assert column.render(task).plain == "0.50 img/s"
    slow = SimpleNamespace(completed=1, elapsed=20.0, finished=True, finished_time=20.0, speed=99.0, finished_speed=99.0)
    assert column.render(slow).plain == "20.0 s/img"


def test_pickled_checkpoint_refusal_is_a_whole_sentence(tmp_path):
    import argparse

    import torch

    state = torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=True)
    pickled = tmp_path / "pickled.pth"
    torch.save({**state, "config": argparse.Namespace(lr=0.1)}, pickled)
    path = tmp_path / "zidane.jpg"
    shutil.copy(ZIDANE, path)
    before = snapshot(tmp_path)
    proc = run_in_process("image", path, "--checkpoint", pickled, *FAST[2:])
    line = assert_one_line_error(proc, str(pickled), "pickled Python objects", "state dict", code=3)
    assert line.rstrip().endswith(")")
    assert_untouched(tmp_path, before)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))

"""`aepose folder` end to end: mixed good and bad files, recursion, extensions, shards, resume.

Every input is made from real photos at run time: a JPEG cut to 40 %, a text file named
`.jpg`, and PNG variants (16-bit, grayscale, RGBA) that must count as good images. A PNG made
losslessly from a photo must give exactly the poses of that photo (16-bit -> 8-bit by the top
byte and RGBA -> BGR by dropping alpha are exact), which the run itself can check.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from aepose_cli.config import DrawConfig
from aepose_cli.draw import draw_poses
from aepose_cli.io.sources import read_image
from aepose_cli.keypoints import COCO as KEYPOINTS
from aepose_cli.types import Pose

from cli_helpers import (
    BUS,
    COCO_IMAGES,
    FAST,
    ZIDANE,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    describe,
    interrupt_when,
    load_json,
    poses_by_image,
    run_cli,
    start_cli,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

PHOTO_A = COCO_IMAGES / "000000000785.jpg"
PHOTO_B = COCO_IMAGES / "000000040083.jpg"
PHOTO_C = COCO_IMAGES / "000000196141.jpg"
PHOTO_D = COCO_IMAGES / "000000197388.jpg"


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


# ---------------------------------------------------------------------------------------------
# good and bad files together


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """A folder of good photos, broken files and PNG variants, with one photo in a sub-folder
    (not listed without --recursive); run once with default outputs."""
    root = tmp_path_factory.mktemp("mixed")
    folder = root / "photos"
    folder.mkdir()
    shutil.copy(PHOTO_A, folder / "a.jpg")
    shutil.copy(PHOTO_B, folder / "b.jpg")
    data = PHOTO_C.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) * 40 // 100])
    (folder / "notes.jpg").write_text("shopping list: bread, milk\n")
    photo_a = cv2.imread(str(PHOTO_A))
    _write_png(folder / "deep16.png", photo_a.astype(np.uint16) * 257)  # top byte = photo A
    _write_png(folder / "gray.png", cv2.cvtColor(cv2.imread(str(PHOTO_D)), cv2.COLOR_BGR2GRAY))
    photo_b = cv2.imread(str(PHOTO_B))
    _write_png(folder / "rgba.png", np.dstack([photo_b, np.full(photo_b.shape[:2], 200, np.uint8)]))
    (folder / "sub").mkdir()
    shutil.copy(PHOTO_D, folder / "sub" / "d.jpg")
    # Batch size 1: a batched convolution may round differently (1e-6) from a single one.
    proc = run_cli("folder", "photos", *FAST, "--kpt-thr", "0.1", "--batch-size", "1", cwd=root)
    return root, folder, proc


GOOD = ["a.jpg", "b.jpg", "deep16.png", "gray.png", "rgba.png"]
LISTING = ["a.jpg", "b.jpg", "cut.jpg", "deep16.png", "gray.png", "notes.jpg", "rgba.png"]


def test_bad_files_fail_the_run_and_are_named(mixed_run):
    _, _, proc = mixed_run
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    cut = [line for line in proc.stderr.splitlines() if "cut.jpg" in line]
    notes = [line for line in proc.stderr.splitlines() if "notes.jpg" in line]
    assert len(cut) == 1 and "truncated JPEG" in cut[0], proc.stderr
    assert len(notes) == 1 and "not an image" in notes[0], proc.stderr
    assert "5 image(s) done, 2 failed" in proc.stderr


def test_good_files_are_annotated(mixed_run):
    root, folder, proc = mixed_run
    out = root / "photos.pose"
    assert sorted(p.name for p in out.iterdir()) == GOOD, describe(proc)
    data = load_json(root / "photos.pose.json")
    ids = {im["file_name"]: im["id"] for im in data["images"]}
    for name in GOOD:
        # The drawing is exactly the JSON's people drawn on the decoded input, encoded as its
        # extension says: the written file must be those very bytes.
        poses = [
            Pose(np.column_stack([np.reshape(a["keypoints"], (-1, 3))[:, :2], a["keypoint_scores"]]).astype(np.float32), a["score"])
            for a in data["annotations"] if a["image_id"] == ids[name]
        ]
        expected = draw_poses(read_image(folder / name), poses, KEYPOINTS, DrawConfig(kpt_thr=0.1))
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if name.endswith(".jpg") else []
        ok, encoded = cv2.imencode(Path(name).suffix, expected, params)
        assert ok and (out / name).read_bytes() == encoded.tobytes(), name
        if name in ("a.jpg", "b.jpg"):  # these have people: the drawing changed the picture
            assert poses and not np.array_equal(expected, read_image(folder / name))


def test_json_lists_the_good_files_in_sorted_order(mixed_run):
    root, _, proc = mixed_run
    coco = COCO(str(root / "photos.pose.json"))
    images = [coco.imgs[i] for i in sorted(coco.getImgIds())]
    assert [im["file_name"] for im in images] == GOOD, describe(proc)
    # Image ids are positions in the full listing, so a failed file leaves a gap, not a shift.
    assert [im["id"] for im in images] == [LISTING.index(name) + 1 for name in GOOD]


def test_png_variants_give_the_poses_of_their_source(mixed_run):
    root, _, proc = mixed_run
    data = load_json(root / "photos.pose.json")
    ids = {im["file_name"]: im["id"] for im in data["images"]}
    poses = poses_by_image(data)
    assert poses[ids["a.jpg"]] and poses[ids["b.jpg"]], "these photos give people"
    assert_same_poses(poses[ids["deep16.png"]], poses[ids["a.jpg"]], "16-bit PNG of a.jpg")
    assert_same_poses(poses[ids["rgba.png"]], poses[ids["b.jpg"]], "RGBA PNG of b.jpg")


# ---------------------------------------------------------------------------------------------
# recursion, extensions, shards


@pytest.fixture(scope="module")
def nested(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nested")
    folder = root / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    shutil.copy(PHOTO_A, folder / "top.jpg")
    shutil.copy(PHOTO_B, folder / "sub" / "b.JPG")
    _write_png(folder / "sub" / "c.png", cv2.imread(str(PHOTO_C)))
    cv2.imwrite(str(folder / "sub" / "skip.bmp"), cv2.imread(str(PHOTO_D)))  # not in --ext
    shutil.copy(PHOTO_D, folder / ".hidden" / "h.jpg")  # hidden folders are skipped
    shutil.copy(PHOTO_D, folder / "top.pose.jpg")  # this tool's own output is never an input
    return root


RECURSIVE_JPG_PNG = ["sub/b.JPG", "sub/c.png", "top.jpg"]


def _shard(root: Path, shard: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_cli("folder", "tree", "--recursive", "--ext", "jpg,.PNG", "--shard", shard, "--no-images", *FAST, cwd=root)
    assert_ok(proc)
    index, count = shard.split("/")
    return proc, load_json(root / f"tree.pose.shard{index}of{count}.json")


def test_shards_split_a_recursive_listing_exactly(nested):
    _, first = _shard(nested, "1/2")
    _, second = _shard(nested, "2/2")
    names_1 = [im["file_name"] for im in first["images"]]
    names_2 = [im["file_name"] for im in second["images"]]
    assert names_1 == ["sub/b.JPG", "top.jpg"] and names_2 == ["sub/c.png"]
    assert sorted(names_1 + names_2) == RECURSIVE_JPG_PNG  # disjoint, complete
    ids = {im["file_name"]: im["id"] for im in first["images"] + second["images"]}
    assert ids == {name: RECURSIVE_JPG_PNG.index(name) + 1 for name in RECURSIVE_JPG_PNG}
    assert not (nested / "tree.pose").exists()  # --no-images


def test_without_recursive_sub_folders_are_not_searched(nested):
    """The only PNG is in a sub-folder (the mixed run shows the same for a JPEG)."""
    proc = run_cli("folder", "tree", "--ext", "png", *FAST, cwd=nested)
    assert_one_line_error(proc, "tree", "no image files", ".png", code=2)
    assert not (nested / "tree.pose.json").exists() and not (nested / "tree.pose").exists()


# ---------------------------------------------------------------------------------------------
# interrupted and resumed


RESUME_SOURCES = [PHOTO_A, PHOTO_B, PHOTO_C, PHOTO_D, ZIDANE, BUS]


def _journal_keys(journal: Path) -> list[str]:
    keys = []
    for line in journal.read_text().splitlines()[1:]:  # the first line is the header
        try:
            keys.append(json.loads(line)["key"])
        except ValueError:
            break  # a line torn by the kill
    return keys


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_interrupted_run_resumes_without_redoing_images(tmp_path, stop_signal):
    """Ctrl-C stops cleanly (exit 130, journal kept); SIGKILL is a crash (no clean-up at all)."""
    folder = tmp_path / "batch"
    folder.mkdir()
    names = []
    for i, source in enumerate(RESUME_SOURCES):
        names.append(f"{i:02d}_{source.name}")
        shutil.copy(source, folder / names[-1])
    journal = tmp_path / "batch.pose.json.partial.jsonl"
    final_json = tmp_path / "batch.pose.json"

    run = start_cli("folder", "batch", *FAST, "--batch-size", "1", cwd=tmp_path)
    stderr = interrupt_when(run, lambda: journal.exists() and len(_journal_keys(journal)) >= 2, "the journal held 2 records", stop_signal).stderr
    if stop_signal == signal.SIGINT:
        assert run.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    else:
        assert run.returncode == -signal.SIGKILL
    assert not final_json.exists() and journal.exists()
    done = _journal_keys(journal)
    assert 2 <= len(done) < len(names), f"interrupted too late to test resuming: {done}"
    assert done == names[: len(done)]
    drawn = {key: (folder.parent / "batch.pose" / key).stat() for key in done}

    proc = run_cli("folder", "batch", *FAST, "--skip-existing", cwd=tmp_path)
    assert_ok(proc)
    assert f"resuming: {len(done)} of {len(names)} images already done" in proc.stderr, describe(proc)
    assert f"{len(names) - len(done)} image(s) done, 0 failed" in proc.stderr, describe(proc)
    assert not journal.exists()
    data = load_json(final_json)
    assert [im["file_name"] for im in data["images"]] == names  # each exactly once, in order
    assert [im["id"] for im in data["images"]] == list(range(1, len(names) + 1))
    for key, before in drawn.items():
        after = (folder.parent / "batch.pose" / key).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), f"{key} was redone"
    # A crash may leave a hidden temporary file of the drawing it was writing; nothing else.
    drawings = sorted(p.name for p in (tmp_path / "batch.pose").iterdir() if not p.name.startswith("."))
    assert drawings == names

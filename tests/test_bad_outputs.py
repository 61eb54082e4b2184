"""Hostile and careless OUTPUT choices (issue 8, output half): nothing the user had is changed.

Every case runs the real command and checks: the exit code, one `aepose: error:` line naming
the file or option, no traceback, every input byte-identical before and after (sha256 of every
file the test made), and no temporary or partial file left (`.tmp-`, `.part-`,
`.partial.jsonl`, probe files). Most cases are refused by the output plan before the model
loads; the few that need a run use FAST options and the tiny checkpoint on two small images.

The command runs in this process (`run_in_process`: same exit code, stdout and stderr, files)
except where a second process is the point: a concurrent writer of the same journal, Ctrl-C
during a video, and a few refusals kept as real subprocesses for the real process's stderr.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import pytest

from cli_helpers import (
    COCO_IMAGES,
    DATA,
    FAST,
    MINI_VAL,
    MINI_VAL_ANN,
    TINY_CHECKPOINT,
    ZIDANE,
    assert_error_after_work,
    assert_inputs_kept,
    assert_one_line_error,
    describe,
    interrupt_when,
    leftovers,
    load_json,
    mounted_tmpfs,
    run_cli,
    run_in_process,
    snapshot,
    start_cli,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

TWO_IMAGES = sorted(COCO_IMAGES.glob("*.jpg"))[:2]
VIDEO = DATA / "mmpose-testdata" / "video" / "demo.mp4"  # 960x540, 5 frames


# ---------------------------------------------------------------------------------------------
# helpers


def two_image_folder(folder: Path) -> Path:
    """`folder`, made, holding copies of the two real photos under their own names."""
    folder.mkdir()
    for src in TWO_IMAGES:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture
def work(tmp_path) -> Path:
    """tmp_path with F/ (two real images) and a.jpg, b.jpg (copies of them)."""
    two_image_folder(tmp_path / "F")
    for name, src in zip(("a.jpg", "b.jpg"), TWO_IMAGES):
        shutil.copy(src, tmp_path / name)
    return tmp_path


def refused(work: Path, args, *fragments: str, code: int = 2, cwd: Path | None = None, real_process: bool = False) -> str:
    before = snapshot(work)
    proc = (run_cli if real_process else run_in_process)(*args, cwd=cwd or work)
    line = assert_one_line_error(proc, *fragments, code=code)
    assert_inputs_kept(before, work)
    assert leftovers(work) == [], leftovers(work)
    return line


# ---------------------------------------------------------------------------------------------
# 1. one output plan, checked before the model loads (refused in about a second)

BAD_CHECKPOINT = ["--checkpoint", "/nonexistent/never-loaded.pth", "--device", "cpu"]
# Also run as a real process: one clash per command.
REAL_PROCESS_CLASHES = {"folder-out-is-folder", "image-out-equals-json", "video-jsonl-is-input"}


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["folder", "F", "--out", "F", "--no-json"], ["would overwrite the input", "--out"]),
        (["folder", "F", "--out", "F/", "--json", "F.json"], ["would overwrite the input"]),
        (["folder", "F", "--no-images", "--json", "F/x.jpg"], ["F/x.jpg", "--json", "input images of F"]),
        (["folder", "F", "-r", "--json", "F/sub/x.png"], ["F/sub/x.png", "input images of F"]),
        (["image", "a.jpg", "b.jpg", "--out", "res/", "--json", "b.jpg"], ["b.jpg", "--json", "overwrite the input"]),
        (["image", "a.jpg", "--out", "o/same.jpg", "--json", "o/same.jpg"], ["o/same.jpg", "both write"]),
        (["image", "a.jpg", "a.jpg"], ["a.jpg", "given twice"]),
        (["image", "a.jpg", "./a.jpg", "--out", "res/"], ["given twice"]),
        (["image", "a.jpg", "F/../a.jpg"], ["given twice"]),
        (["image", "d1/p.jpg", "d2/p.jpg", "--out", "res/"], ["res/p.pose.jpg", "both write"]),
        (["image", "a.jpg", "F/" + TWO_IMAGES[0].name, "--out", "res/", "--json", "./F/" + TWO_IMAGES[0].name], ["--json", "overwrite the input"]),
        (["video", "clip.mp4", "--out", "o/x.mp4", "--json", "o/x.mp4"], ["o/x.mp4", "both write"]),
        (["video", "clip.mp4", "--jsonl", "clip.mp4"], ["clip.mp4", "--jsonl", "overwrite the input"]),
        (["video", "clip.mp4", "--out", "o/x.mp4", "--jsonl", "o/x.partial.mp4"], ["o/x.partial.mp4", "both write"]),
    ],
    ids=[
        "folder-out-is-folder", "folder-json-is-a-listed-name", "folder-json-on-input-jpg",
        "folder-json-inside-recursive", "image-json-is-second-input", "image-out-equals-json",
        "image-given-twice", "image-twice-other-spelling", "image-twice-via-dotdot",
        "two-inputs-one-output-name", "image-json-on-folder-image", "video-out-equals-json",
        "video-jsonl-is-input", "video-jsonl-on-partial-name",
    ],
)
def test_output_clash_is_refused_before_the_model_loads(request, work, args, fragments):
    (work / "d1").mkdir()
    (work / "d2").mkdir()
    shutil.copy(work / "a.jpg", work / "d1" / "p.jpg")
    shutil.copy(work / "b.jpg", work / "d2" / "p.jpg")
    (work / "F" / "sub").mkdir()
    shutil.copy(work / "a.jpg", work / "F" / "sub" / "s.jpg")
    shutil.copy(VIDEO, work / "clip.mp4")
    # A checkpoint that does not exist: the refusal must come first, before any model loads.
    real = request.node.callspec.id in REAL_PROCESS_CLASHES
    line = refused(work, [*args, *BAD_CHECKPOINT], *fragments, real_process=real)
    assert "checkpoint" not in line


def test_evaluate_metrics_json_on_the_annotations_or_predictions(tmp_path):
    ann = tmp_path / "ann.json"
    pred = tmp_path / "pred.json"
    shutil.copy(MINI_VAL_ANN, ann)
    pred.write_text("[]\n")
    for target, name in ((ann, "ann.json"), (pred, "pred.json")):
        refused(tmp_path, ["evaluate", "--ann", ann, "--pred", pred, "--metrics-json", target, *BAD_CHECKPOINT],
                name, "--metrics-json", "overwrite the input")


def test_evaluate_results_out_on_the_annotations_or_an_image(tmp_path):
    ann = tmp_path / "ann.json"
    shutil.copy(MINI_VAL_ANN, ann)
    images = MINI_VAL / "val2017"
    refused(tmp_path, ["evaluate", "--ann", ann, "--images", images, "--out", ann, *BAD_CHECKPOINT], "overwrite the input")
    first = load_json(MINI_VAL_ANN)["images"][0]["file_name"]
    line = refused(tmp_path, ["evaluate", "--ann", ann, "--images", images, "--out", images / first, *BAD_CHECKPOINT],
                   "--out", "overwrite the input")
    assert first in line
    refused(tmp_path, ["evaluate", "--ann", ann, "--images", images, "--out", tmp_path / "r.json",
                       "--metrics-json", tmp_path / "r.json", *BAD_CHECKPOINT], "r.json", "both write")


def test_file_name_too_long_is_one_line(tmp_path):
    long_name = "x" * 241 + ".jpg"  # 245 characters: the output name would pass 255 bytes
    shutil.copy(TWO_IMAGES[0], tmp_path / long_name)
    line = refused(tmp_path, ["image", long_name, *BAD_CHECKPOINT], "file name too long", code=6)
    assert "xxxx" in line


def test_output_folder_below_a_file(tmp_path, work):
    (work / "notadir").write_text("a file\n")
    refused(work, ["image", "a.jpg", "--out", "notadir/x.jpg", *BAD_CHECKPOINT], "notadir", "is a file", code=6)


# ---------------------------------------------------------------------------------------------
# file systems that refuse: read-only and full (tmpfs mounts; root only)


def test_read_only_output_folder_is_refused_before_inference(work):
    with mounted_tmpfs(work / "ro", "size=1m,ro"):
        line = refused(work, ["folder", "F", "--out", "ro/img/", "--json", "out.json", *BAD_CHECKPOINT],
                       "ro", "read-only file system", code=6)
        assert "--out" in line
        assert not (work / "out.json.partial.jsonl").exists()


@pytest.mark.parametrize("first_fits", [True, False], ids=["first-image-fits", "nothing-fits"])
def test_full_disk_in_a_folder_run(tmp_path, first_fits):
    """The disk fills at the second image (a 128x96 crop, drawn in a few KB, then a 1280x720
    photo, drawn in well over the 64 KB) or at the first: the journal is kept exactly when it
    holds a finished image, and then the line says how to finish; never a final JSON."""
    folder = tmp_path / "F"
    folder.mkdir()
    if first_fits:
        assert cv2.imwrite(str(folder / "a.jpg"), cv2.imread(str(TWO_IMAGES[0]))[:96, :128])
    else:
        shutil.copy(ZIDANE, folder / "a.jpg")
    shutil.copy(ZIDANE, folder / "b.jpg")
    before = snapshot(folder)
    with mounted_tmpfs(tmp_path / "full", "size=64k"):
        proc = run_in_process("folder", "F", "--out", "full/img/", "--json", "full/f.json", *FAST, cwd=tmp_path)
        line = assert_error_after_work(proc, "full/img/", "no space left on device", code=6)
        assert_inputs_kept(before, folder)
        assert leftovers(tmp_path / "full", allowed=(".partial.jsonl",)) == []
        assert not (tmp_path / "full" / "f.json").exists()
        journal = tmp_path / "full" / "f.json.partial.jsonl"
        if first_fits:
            assert journal.is_file() and "--skip-existing" in line, line
            assert [json.loads(record)["key"] for record in journal.read_text().splitlines()[1:]] == ["a.jpg"]
            assert sorted(p.name for p in (tmp_path / "full" / "img").iterdir()) == ["a.jpg"]
        else:
            assert not journal.exists() and "--skip-existing" not in line, line


def test_full_disk_in_a_video_run(tmp_path):
    shutil.copy(VIDEO, tmp_path / "clip.mp4")
    with mounted_tmpfs(tmp_path / "full", "size=48k"):
        before = snapshot(tmp_path)
        proc = run_in_process("video", "clip.mp4", "--out", "full/clip.mp4", "--no-json", *FAST, cwd=tmp_path)
        assert_error_after_work(proc, "full/clip.mp4", "no space left on device", code=6)
        assert_inputs_kept(before, tmp_path)
        assert not (tmp_path / "full" / "clip.mp4").exists()
        assert [p.name for p in (tmp_path / "full").iterdir() if ".part-" in p.name] == []


def test_full_disk_in_an_export(tmp_path):
    with mounted_tmpfs(tmp_path / "full", "size=64k"):
        proc = run_in_process("export", "--checkpoint", TINY_CHECKPOINT, "--format", "onnx", "--out", "full/tiny.onnx", cwd=tmp_path)
        assert_error_after_work(proc, "--out full/tiny.onnx", "no space left on device", code=6)
        assert list((tmp_path / "full").iterdir()) == []  # no partial file under any name


# ---------------------------------------------------------------------------------------------
# 2. exclusive, self-describing journals


def test_a_second_writer_of_the_same_json_is_refused_with_the_holders_pid(work):
    from aepose_cli.io.coco_json import CocoJsonWriter, journal_path
    from aepose_cli.keypoints import keypoint_set

    out = work / "shared.json"
    holder = CocoJsonWriter(out, "dataset", keypoint_set("coco"), 0.3)
    try:
        journal_before = journal_path(out).read_bytes()
        proc = run_cli("folder", "F", "--no-images", "--json", out, *FAST, cwd=work)
        assert_error_after_work(proc, "shared.json", f"pid {os.getpid()}", "another aepose run", code=6)
        assert journal_path(out).read_bytes() == journal_before  # not truncated
    finally:
        holder.discard()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished folder run (one garbage file mixed in, so one failure)."""
    root = tmp_path_factory.mktemp("finished")
    folder = two_image_folder(root / "F")
    (folder / "zz_bad.jpg").write_bytes(b"not an image at all")
    proc = run_in_process("folder", "F", "--no-images", "--json", "f.json", *FAST, cwd=root)
    assert proc.returncode == 1 and "zz_bad.jpg" in proc.stderr, describe(proc)
    return root


def _copy_of(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, its record pointed at the copied folder (as if made there)."""
    w = tmp_path / "w"
    shutil.copytree(finished, w)
    data = load_json(w / "f.json")
    data["info"]["aepose"]["input_root"] = os.path.realpath(w / "F")
    (w / "f.json").write_text(json.dumps(data))
    return w


def test_finished_json_records_what_made_it(finished):
    info = load_json(finished / "f.json")["info"]["aepose"]
    assert info["input_root"] == os.path.realpath(finished / "F")
    assert info["inputs"] == sorted([p.name for p in TWO_IMAGES] + ["zz_bad.jpg"])
    assert len(info["checkpoint_sha256"]) == 64
    assert info["settings"]["scales"] == [0.25] and info["settings"]["flip"] is False


def test_skip_existing_refuses_a_json_of_another_folder(finished, tmp_path):
    w = _copy_of(finished, tmp_path)
    shutil.copytree(w / "F", w / "G")  # same file names, another folder
    refused(w, ["folder", "G", "--no-images", "--json", "f.json", "--skip-existing", *FAST], "f.json", "input folder")


def test_skip_existing_refuses_other_settings(finished, tmp_path):
    w = _copy_of(finished, tmp_path)
    args = ["folder", "F", "--no-images", "--json", "f.json", "--skip-existing", *FAST]
    refused(w, [*args, "--detection-threshold", "0.2"], "f.json", "detection_threshold")
    refused(w, [*args, "--scales", "0.5"], "f.json", "scales")


def test_skip_existing_refuses_results_of_another_checkpoint(finished, tmp_path):
    """The same network in another file (a copy saved with other metadata): other bytes, so
    other results are possible; the refusal names both checkpoints' sha256."""
    import torch

    from aepose_cli.zoo import checkpoint_sha256

    w = _copy_of(finished, tmp_path)
    other = tmp_path / "retrained.pth"
    state = torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=True)
    torch.save({**state, "meta": {"note": "another training run"}}, other)
    then = load_json(w / "f.json")["info"]["aepose"]["checkpoint_sha256"]
    now = checkpoint_sha256(other)
    assert then == checkpoint_sha256(TINY_CHECKPOINT) != now
    refused(w, ["folder", "F", "--no-images", "--json", "f.json", "--skip-existing", "--checkpoint", other, *FAST[2:]],
            "f.json", "checkpoint", then, now)


def test_skip_existing_retries_the_images_that_failed(finished, tmp_path):
    w = _copy_of(finished, tmp_path)
    shutil.copy(TWO_IMAGES[0], w / "F" / "zz_bad.jpg")  # the user fixed the broken file
    before = load_json(w / "f.json")
    proc = run_in_process("folder", "F", "--no-images", "--json", "f.json", "--skip-existing", *FAST, cwd=w)
    assert proc.returncode == 0, describe(proc)
    assert "2 of 3 images already done" in proc.stderr
    after = load_json(w / "f.json")
    assert [im["file_name"] for im in after["images"]] == sorted([p.name for p in TWO_IMAGES] + ["zz_bad.jpg"])
    kept = {im["file_name"]: im["id"] for im in before["images"]}
    old = [a["keypoints"] for a in before["annotations"]]
    new = [a["keypoints"] for a in after["annotations"] if a["image_id"] in kept.values()]
    assert new == old  # the images done before are reused exactly, not recomputed
    assert leftovers(w) == []


def test_malformed_journal_is_one_line(finished, tmp_path):
    w = _copy_of(finished, tmp_path)
    (w / "f.json").unlink()
    (w / "f.json.partial.jsonl").write_text('{"aepose_journal": 2}\nnot json\n{"key": "x"}\n')
    before = (w / "f.json.partial.jsonl").read_bytes()
    proc = run_in_process("folder", "F", "--no-images", "--json", "f.json", "--skip-existing", *FAST, cwd=w)
    assert_error_after_work(proc, "f.json.partial.jsonl", "line 2", code=2)
    assert (w / "f.json.partial.jsonl").read_bytes() == before  # nothing cut off


def test_torn_last_line_still_resumes(work):
    run = run_in_process("folder", "F", "--no-images", "--json", "f.json", *FAST, cwd=work)
    assert run.returncode == 0, describe(run)
    final = load_json(work / "f.json")
    # Rebuild the journal a crash after the first image would leave, plus a torn line.
    from aepose_cli.io.coco_json import CocoJsonWriter
    from aepose_cli.keypoints import keypoint_set

    (work / "f.json").unlink()
    writer = CocoJsonWriter(work / "f.json", "dataset", keypoint_set("coco"), 0.3,
                            provenance=final["info"]["aepose"])
    writer.adopt_final({**final, "images": final["images"][:1]}, {final["images"][0]["file_name"]})
    writer.abort()
    with open(work / "f.json.partial.jsonl", "a") as handle:
        handle.write('{"key": "torn", "ima')
    proc = run_in_process("folder", "F", "--no-images", "--json", "f.json", "--skip-existing", *FAST, cwd=work)
    assert proc.returncode == 0, describe(proc)
    assert "1 of 2 images already done" in proc.stderr
    resumed = load_json(work / "f.json")
    assert resumed["images"] == final["images"]
    first = final["images"][0]["id"]
    # The image taken from the journal is reused exactly; the other was recomputed (in a batch
    # of its own, which may round differently in the last bits).
    assert [a for a in resumed["annotations"] if a["image_id"] == first] == [
        a for a in final["annotations"] if a["image_id"] == first
    ]
    assert leftovers(work) == []


# ---------------------------------------------------------------------------------------------
# 3. abort is honest (video)


def test_interrupted_video_is_kept_under_a_partial_name(tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(DATA / "mmaction2-videos" / "demo.mp4", clip)
    before = snapshot(tmp_path)
    proc = start_cli("video", clip, "--no-json", *FAST, cwd=tmp_path)

    def frames_written() -> bool:
        parts = [p for p in tmp_path.iterdir() if ".part-" in p.name]
        return bool(parts) and parts[0].stat().st_size > 4096

    run = interrupt_when(proc, frames_written, "frames were written")
    err = run.stderr
    assert run.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip().startswith("aepose:")]
    assert len(lines) == 1 and lines[0].startswith("aepose: interrupted: stopped"), err
    assert not (tmp_path / "clip.pose.mp4").exists()  # nothing complete-looking under the final name
    partial = tmp_path / "clip.pose.partial.mp4"
    assert partial.exists() and str(partial.name) in lines[0]
    assert [p for p in tmp_path.iterdir() if ".part-" in p.name] == []
    assert_inputs_kept(before, tmp_path)


def small_clip(path: Path, frames: int = 10) -> None:
    """A small H.264 clip made from a real photo (64x48, 10 fps): drawn and encoded in a few KB."""
    import av
    import numpy as np

    photo = cv2.resize(cv2.imread(str(TWO_IMAGES[0])), (64, 48))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(photo, 2 * i, axis=1), format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_interrupted_run_of_several_videos_keeps_the_finished_ones_and_resumes(tmp_path):
    """Ctrl-C during the second of two videos: exit 130, the first video's files complete, the
    second's frames kept under its partial name and named in the one line; `--skip-existing`
    then skips the first and redoes the second."""
    clips = tmp_path / "clips"
    clips.mkdir()
    small_clip(clips / "a.mp4")
    shutil.copy(DATA / "mmaction2-videos" / "demo.mp4", clips / "b.mp4")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    args = ["video", "clips", "--out", "out/", "--end", "3", *FAST]
    proc = start_cli(*args, cwd=tmp_path)

    def second_video_under_way() -> bool:  # the first finished, three frames of the second done
        journal = out / "b.pose.json.partial.jsonl"
        return (out / "a.pose.json").is_file() and journal.is_file() and journal.read_text().count("\n") > 3

    run = interrupt_when(proc, second_video_under_way, "the second video was under way")
    line = assert_error_after_work(run, "aepose: interrupted: stopped", "out/b.pose.partial.mp4", "(at clips/b.mp4; 1 of 2 video(s) finished)", code=130)
    assert sorted(p.name for p in out.iterdir()) == ["a.pose.json", "a.pose.mp4", "b.pose.partial.mp4"], line
    assert decoded_frames(out / "a.pose.mp4") == 10 and len(load_json(out / "a.pose.json")["images"]) == 10
    assert_inputs_kept(before, tmp_path)

    resumed = run_cli(*args, "--skip-existing", cwd=tmp_path)
    assert resumed.returncode == 0, describe(resumed)
    assert "skipped clips/a.mp4: its outputs are finished" in " ".join(resumed.stderr.split()), describe(resumed)
    assert sorted(p.name for p in out.iterdir()) == ["a.pose.json", "a.pose.mp4", "b.pose.json", "b.pose.mp4"]
    assert decoded_frames(out / "b.pose.mp4") == len(load_json(out / "b.pose.json")["images"]) > 0
    assert_inputs_kept(before, tmp_path)


def test_full_disk_in_a_run_of_several_videos(tmp_path):
    """The disk fills during the second video: exit 6 naming its file and how many videos
    finished; the first video's file stays complete, nothing of the second is left."""
    clips = tmp_path / "clips"
    clips.mkdir()
    small_clip(clips / "a.mp4")
    shutil.copy(VIDEO, clips / "b.mp4")  # 960x540: its first frames alone pass the 48 KB
    before = snapshot(tmp_path)
    with mounted_tmpfs(tmp_path / "full", "size=48k"):
        # The MP4s only: the JSON of the tiny model's many people would fill the disk first.
        proc = run_in_process("video", "clips", "--out", "full/", "--no-json", *FAST, cwd=tmp_path)
        line = assert_error_after_work(proc, "full/b.pose", "no space left on device", "(at clips/b.mp4; 1 of 2 video(s) finished)", code=6)
        # The disk filled before the second video's first frames left the encoder: no frames to
        # keep, so no partial file, and the line claims none.
        assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["a.pose.mp4"], line
        assert "partial" not in line, line
        assert decoded_frames(tmp_path / "full" / "a.pose.mp4") == 10
    assert_inputs_kept(before, tmp_path)


# ---------------------------------------------------------------------------------------------
# 4. evaluate: no placeholder names, nothing under the final name when there is nothing to do


def test_evaluate_annotations_without_images(tmp_path):
    ann = tmp_path / "empty.json"
    data = load_json(MINI_VAL_ANN)
    ann.write_text(json.dumps({**data, "images": [], "annotations": []}))
    refused(tmp_path, ["evaluate", "--ann", ann, "--images", MINI_VAL / "val2017", *BAD_CHECKPOINT], "empty.json", "no images")
    assert not (tmp_path / "empty.pose.json").exists()


# ---------------------------------------------------------------------------------------------
# the same refusals against a folder of real images with hostile files mixed in


@pytest.mark.parametrize("hostile", ["empty", "garbage", "text-named-jpg"])
def test_real_folder_with_one_hostile_file_does_every_good_image(tmp_path, hostile):
    folder = two_image_folder(tmp_path / "R")
    bad = folder / "hostile.jpg"
    bad.write_bytes({"empty": b"", "garbage": os.urandom(2000), "text-named-jpg": b"hello\n" * 50}[hostile])
    before = snapshot(tmp_path)
    # A clash with the folder is refused whatever the folder holds...
    refused(tmp_path, ["folder", "R", "--out", "R", *BAD_CHECKPOINT], "overwrite the input")
    # ...and a proper run does every good image and names the bad one.
    proc = run_in_process("folder", "R", "--out", "out/", "--json", "out/r.json", *FAST, cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr and "hostile.jpg" in proc.stderr
    data = load_json(tmp_path / "out" / "r.json")
    assert sorted(im["file_name"] for im in data["images"]) == sorted(p.name for p in TWO_IMAGES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*(p.name for p in TWO_IMAGES), "r.json"])
    assert_inputs_kept(before, tmp_path)
    assert leftovers(tmp_path) == []

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

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from cli_helpers import (
    COCO_IMAGES,
    DATA,
    FAST,
    MINI_VAL,
    MINI_VAL_ANN,
    assert_one_line_error,
    describe,
    freeze_when,
    load_json,
    run_cli,
    run_in_process,
    start_cli,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

TWO_IMAGES = sorted(COCO_IMAGES.glob("*.jpg"))[:2]
VIDEO = DATA / "mmpose-testdata" / "video" / "demo.mp4"  # 960x540, 5 frames
LEFTOVER_MARKS = (".tmp-", ".part-", ".partial.jsonl", ".aepose-probe", ".partial.mp4")


# ---------------------------------------------------------------------------------------------
# helpers


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(root: Path, allowed: tuple[str, ...] = ()) -> list[str]:
    return [
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if any(mark in p.name for mark in LEFTOVER_MARKS) and not any(a in p.name for a in allowed)
    ]


def assert_error_after_work(proc, *fragments: str) -> str:
    """A failure met during a run: the progress bar may have been drawn, but there is exactly
    one `aepose:` line, it is the last, it names every fragment, and there is no traceback."""
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("aepose:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), describe(proc)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_inputs_kept(before: dict[str, str], root: Path) -> None:
    after = snapshot(root)
    for name, digest in before.items():
        assert after.get(name) == digest, f"input {name} was changed or removed"


@pytest.fixture
def work(tmp_path) -> Path:
    """tmp_path with F/ (two real images) and a.jpg, b.jpg (copies of them)."""
    folder = tmp_path / "F"
    folder.mkdir()
    for i, src in enumerate(TWO_IMAGES):
        shutil.copy(src, folder / src.name)
        shutil.copy(src, tmp_path / ("a.jpg", "b.jpg")[i])
    return tmp_path


def refused(work: Path, args, *fragments: str, code: int = 2, cwd: Path | None = None, real_process: bool = False) -> str:
    before = snapshot(work)
    proc = (run_cli if real_process else run_in_process)(*args, cwd=cwd or work)
    line = assert_one_line_error(proc, *fragments)
    assert proc.returncode == code, describe(proc)
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


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str):
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_read_only_output_folder_is_refused_before_inference(work):
    with mounted_tmpfs(work / "ro", "size=1m,ro"):
        line = refused(work, ["folder", "F", "--out", "ro/img/", "--json", "out.json", *BAD_CHECKPOINT],
                       "ro", "read-only file system", code=6)
        assert "--out" in line
        assert not (work / "out.json.partial.jsonl").exists()


def test_full_disk_in_a_folder_run(work):
    with mounted_tmpfs(work / "full", "size=96k"):
        before = snapshot(work / "F")
        proc = run_in_process("folder", "F", "--out", "full/img/", "--json", "full/f.json", *FAST, cwd=work)
        assert_error_after_work(proc, "full/", "no space left on device")
        assert proc.returncode == 6, describe(proc)
        assert_inputs_kept(before, work / "F")
        left = leftovers(work / "full", allowed=(".partial.jsonl",))
        assert left == [], left
        journal = work / "full" / "f.json.partial.jsonl"
        if journal.exists():  # kept only when it holds finished images, and the line says so
            assert "--skip-existing" in proc.stderr
        assert not (work / "full" / "f.json").exists()


def test_full_disk_in_a_video_run(tmp_path):
    shutil.copy(VIDEO, tmp_path / "clip.mp4")
    with mounted_tmpfs(tmp_path / "full", "size=48k"):
        before = snapshot(tmp_path)
        proc = run_in_process("video", "clip.mp4", "--out", "full/clip.mp4", "--no-json", *FAST, cwd=tmp_path)
        assert_error_after_work(proc, "full/clip.mp4", "no space left on device")
        assert proc.returncode == 6, describe(proc)
        assert_inputs_kept(before, tmp_path)
        assert not (tmp_path / "full" / "clip.mp4").exists()
        assert [p.name for p in (tmp_path / "full").iterdir() if ".part-" in p.name] == []


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
        assert_error_after_work(proc, "shared.json", f"pid {os.getpid()}", "another aepose run")
        assert proc.returncode == 6, describe(proc)
        assert journal_path(out).read_bytes() == journal_before  # not truncated
    finally:
        holder.discard()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished folder run (one garbage file mixed in, so one failure)."""
    root = tmp_path_factory.mktemp("finished")
    folder = root / "F"
    folder.mkdir()
    for src in TWO_IMAGES:
        shutil.copy(src, folder / src.name)
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
    assert_error_after_work(proc, "f.json.partial.jsonl", "line 2")
    assert proc.returncode == 2
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

    try:
        freeze_when(proc, frames_written, "frames were written")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)  # the pending SIGINT is delivered as the run resumes
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip().startswith("aepose:")]
    assert len(lines) == 1 and lines[0].startswith("aepose: interrupted: stopped"), err
    assert not (tmp_path / "clip.pose.mp4").exists()  # nothing complete-looking under the final name
    partial = tmp_path / "clip.pose.partial.mp4"
    assert partial.exists() and str(partial.name) in lines[0]
    assert [p for p in tmp_path.iterdir() if ".part-" in p.name] == []
    assert_inputs_kept(before, tmp_path)


# ---------------------------------------------------------------------------------------------
# 4. evaluate: no placeholder names, nothing under the final name when there is nothing to do


def test_evaluate_max_images_with_a_full_prediction_file(tmp_path):
    ann = load_json(MINI_VAL_ANN)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in ann["annotations"] if a.get("num_keypoints")
    ]))
    before = snapshot(tmp_path)
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", pred, "--max-images", "3", *BAD_CHECKPOINT, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "<annotations>" not in proc.stdout + proc.stderr
    assert "AP" in proc.stdout
    assert_inputs_kept(before, tmp_path)


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
    folder = tmp_path / "R"
    folder.mkdir()
    for src in TWO_IMAGES:
        shutil.copy(src, folder / src.name)
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

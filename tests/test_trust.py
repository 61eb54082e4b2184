"""Nothing touched outside the plan (issue 22): every case of the issue, as a user meets it.

Each case runs the real command (in this process with `run_in_process`, or as a subprocess
where the process itself is the point: signals, a closed stdout, a second run racing the first)
and checks: the exit code exactly (the README's table), one line on stderr, no traceback, every
input's sha256 unchanged, and no leftover file (temporaries, locks, probes) or process.
The structure behind it (`io/filesystem.py`'s FileScope, the one way to change the file system)
is checked by `test_fs_scan.py` and, over random flag combinations, `test_plan_property.py`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import (
    COCO_IMAGES,
    DATA,
    FAST,
    GOLDEN,
    MINI_VAL_ANN,
    TINY_CHECKPOINT,
    assert_exit_code,
    assert_one_line_error,
    cli_command,
    cli_env,
    describe,
    freeze_when,
    interrupt_when,
    load_json,
    mounted_tmpfs,
    remux_video,
    run_cli,
    run_in_process,
    start_cli,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

CLIP = DATA / "mmpose-testdata" / "video" / "demo.mp4"  # 960x540, 5 frames
LONG_CLIP = DATA / "opencv-vtest" / "vtest.avi"  # 768x576, 795 frames at 10 fps
GOLDEN_RESULTS = GOLDEN / "grouping" / "results.json"
COCO_ANN = COCO_IMAGES / "test_coco.json"
MISSING_CHECKPOINT = ["--checkpoint", "no-such-checkpoint.pth", "--device", "cpu"]
# What a run may leave besides its outputs: nothing of these, ever.
LEFTOVER_MARKS = (".tmp-", ".part-", ".old-", ".aepose-probe", ".aepose-lock")


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root (links not followed), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if any(m in p.name for m in LEFTOVER_MARKS))


def refused(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    return assert_one_line_error(proc, *fragments, code=code)


def assert_done(proc: subprocess.CompletedProcess, code: int = 0) -> None:
    assert_exit_code(proc, code)
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)


def png_photos(folder: Path, names: list[str]) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name, source in zip(names, sorted(COCO_IMAGES.glob("*.jpg"))):
        assert cv2.imwrite(str(folder / name), cv2.imread(str(source)))


def annotations_of(folder: Path, target: Path) -> None:
    """The mmpose test annotations, their images renamed to the PNGs `png_photos` makes."""
    data = load_json(COCO_ANN)
    for image in data["images"]:
        image["file_name"] = image["file_name"].replace(".jpg", ".png")
    target.write_text(json.dumps(data))
    png_photos(folder, [image["file_name"] for image in data["images"]])


# ---------------------------------------------------------------------------------------------
# evaluate --report: a folder is an earlier report only by its own marker


def test_report_into_a_folder_of_the_users_photos_deletes_nothing(tmp_path):
    photos = tmp_path / "photos"
    png_photos(photos, ["holiday.png", "cat.png"])
    before = sha256_tree(tmp_path)
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--report", "photos/", cwd=tmp_path)
    refused(proc, 2, "photos", "not a previous report")
    assert sha256_tree(tmp_path) == before
    assert leftovers(tmp_path) == []


def test_report_naming_the_images_folder_is_refused(tmp_path):
    ann = tmp_path / "ann.json"
    annotations_of(tmp_path / "pngs", ann)
    before = sha256_tree(tmp_path)
    proc = run_in_process("evaluate", "--ann", ann, "--images", "pngs", "--report", "pngs", *MISSING_CHECKPOINT, cwd=tmp_path)
    refused(proc, 2, "pngs", "would replace the input")
    assert sha256_tree(tmp_path) == before
    assert leftovers(tmp_path) == []


def test_a_previous_report_is_replaced_removing_only_what_its_marker_lists(tmp_path):
    first = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--report", "rep", cwd=tmp_path)
    assert_done(first)
    marker = load_json(tmp_path / "rep" / ".aepose-report.json")
    assert marker["made_by"].startswith("aepose ") and "index.html" in marker["files"]
    # A file the report did not write makes the folder not a report's any more: refused, kept.
    (tmp_path / "rep" / "notes.txt").write_text("mine\n")
    before = sha256_tree(tmp_path)
    proc = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--report", "rep", cwd=tmp_path)
    refused(proc, 2, "notes.txt", "did not write")
    assert sha256_tree(tmp_path) == before
    (tmp_path / "rep" / "notes.txt").unlink()
    # Its own files only: replaced in one piece.
    again = run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", GOLDEN_RESULTS, "--report", "rep", cwd=tmp_path)
    assert_done(again)
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted([".aepose-report.json", *marker["files"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_a_forged_marker_cannot_list_paths_outside_the_folder(tmp_path):
    from aepose_cli.evaluation.report import earlier_report_files

    folder = tmp_path / "rep"
    folder.mkdir()
    for files in (["../victim.png"], ["/etc/passwd"], [".hidden.png"], ["notes.txt"], "index.html"):
        (folder / ".aepose-report.json").write_text(json.dumps({"aepose_report": 1, "files": files}))
        assert earlier_report_files(folder) is None, files


# ---------------------------------------------------------------------------------------------
# video: temporaries are deleted by the token their run recorded, never by a name pattern


def test_inputs_named_like_encoder_temporaries_survive_skip_existing(tmp_path):
    for name in ("clip.mp4", "clip.pose.mp4.part-final.mp4", "clip.pose.mp4.part-bystander.mp4"):
        shutil.copy(CLIP, tmp_path / name)
    before = sha256_tree(tmp_path)
    proc = run_in_process("video", "clip.mp4", "clip.pose.mp4.part-final.mp4", "--skip-existing", "--stride", "5", *FAST, cwd=tmp_path)
    assert_done(proc)
    after = sha256_tree(tmp_path)
    assert {name: after.get(name) for name in before} == before
    assert {"clip.pose.mp4", "clip.pose.mp4.part-final.pose.mp4"} <= set(after)


def test_skip_existing_removes_only_the_temporary_the_stopped_run_recorded(tmp_path):
    """A stopped run (killed: no clean-up) left its partial MP4, its journal (which records the
    encoder's token) and its temporary; a finished restart removes those, and leaves a file with
    the very same pattern that no run recorded."""
    from aepose_cli.config import VideoOptions
    from aepose_cli.io.coco_json import CocoJsonWriter
    from aepose_cli.io.encode import VideoSink
    from aepose_cli.keypoints import COCO

    shutil.copy(CLIP, tmp_path / "clip.mp4")
    out = tmp_path / "clip.pose.mp4"
    with CocoJsonWriter(tmp_path / "clip.pose.json", "dataset", COCO, 0.3, header_extra={"part_token": "1a2b3c4d"}) as writer:
        writer.abort()  # a journal with its header, as a killed run leaves it
    recorded = tmp_path / "clip.pose.mp4.part-1a2b3c4d.mp4"
    unrecorded = tmp_path / "clip.pose.mp4.part-99999999.mp4"
    recorded.write_bytes(CLIP.read_bytes()[:5000])
    unrecorded.write_bytes(b"the user's own file, named as the encoder names its temporaries")
    with VideoSink(tmp_path / "x.mp4", width=64, height=48, time_base=None) as sink:  # a partial of ours
        import numpy as np

        sink.write(np.zeros((48, 64, 3), np.uint8), 0)
    (tmp_path / "x.mp4").rename(tmp_path / "clip.pose.partial.mp4")
    proc = run_in_process("video", "clip.mp4", "--skip-existing", "--stride", "5", *FAST, cwd=tmp_path)
    assert_done(proc)
    assert out.is_file() and not recorded.exists() and not (tmp_path / "clip.pose.partial.mp4").exists()
    assert unrecorded.read_bytes().startswith(b"the user's own file")
    assert VideoOptions().part_token is None


def test_a_partial_mp4_without_our_mark_is_not_deleted(tmp_path):
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    foreign = tmp_path / "clip.pose.partial.mp4"
    shutil.copy(CLIP, foreign)  # a real MP4, not ours
    proc = run_in_process("video", "clip.mp4", "--skip-existing", "--stride", "5", *FAST, cwd=tmp_path)
    assert_done(proc)
    assert foreign.read_bytes() == CLIP.read_bytes()


# ---------------------------------------------------------------------------------------------
# video inputs: only media, only the file named


def _playlist(folder: Path, segment: Path) -> Path:
    playlist = folder / "list.m3u8"
    playlist.write_text(
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:20\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:20.0,\n{segment}\n#EXT-X-ENDLIST\n"
    )
    return playlist


def _transport_stream(target: Path) -> Path:
    return remux_video(CLIP, target, format="mpegts")


def test_a_playlist_naming_a_file_elsewhere_is_refused_unread(tmp_path):
    secret = _transport_stream(tmp_path / "private.ts")
    clips = tmp_path / "clips"
    clips.mkdir()
    _playlist(clips, secret)
    before = sha256_tree(tmp_path)
    proc = run_in_process("video", "clips/list.m3u8", *FAST, cwd=tmp_path)
    refused(proc, 2, "list.m3u8", "HLS playlist", "names other files")
    assert sha256_tree(tmp_path) == before


def test_a_playlist_naming_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.ts"
    os.mkfifo(fifo)
    _playlist(tmp_path, fifo)
    proc = run_cli("video", "list.m3u8", *FAST, cwd=tmp_path, timeout=120)  # a hang fails here
    refused(proc, 2, "list.m3u8", "names other files")


def test_a_pattern_that_matches_a_playlist_does_the_videos_and_names_it(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(CLIP, clips / "good.mp4")
    _playlist(clips, _transport_stream(tmp_path / "private.ts"))
    proc = run_in_process("video", "clips/*", "--stride", "5", *FAST, cwd=tmp_path)
    assert_done(proc, 1)
    assert "list.m3u8" in proc.stderr and "names other files" in proc.stderr
    assert (clips / "good.pose.mp4").is_file() and not (clips / "list.pose.mp4").exists()


def test_a_stream_url_may_not_reach_local_files():
    from aepose_cli.io.decode import _STREAM_PROTOCOLS

    assert "file" not in _STREAM_PROTOCOLS.split(",")


# ---------------------------------------------------------------------------------------------
# locks: taken before the model loads, also without JSON


def _hold_outputs(*args, cwd: Path, ready) -> subprocess.Popen:
    """A first run, frozen (SIGSTOP) once `ready()` holds (its lock is taken)."""
    proc = start_cli(*args, cwd=cwd)
    freeze_when(proc, ready, "the first run took its lock")
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("json_flags", [["--no-json"], ["--json", "out.json"]], ids=["no-json", "json"])
def test_a_second_run_on_the_same_outputs_is_refused_before_its_model_loads(tmp_path, json_flags):
    folder = tmp_path / "F"
    folder.mkdir()
    for image in sorted(COCO_IMAGES.glob("*.jpg")):
        shutil.copy(image, folder)
    first = _hold_outputs("folder", "F", "--out", "done", *json_flags, *FAST, cwd=tmp_path,
                          ready=lambda: (tmp_path / ".done.aepose-lock").is_file() and (tmp_path / ".done.aepose-lock").stat().st_size > 0)
    try:
        # A checkpoint that does not exist: only a lock taken before the model loads answers first.
        proc = run_in_process("folder", "F", "--out", "done", *json_flags, *MISSING_CHECKPOINT, cwd=tmp_path)
        refused(proc, 6, "another aepose run", f"(pid {first.pid})")
    finally:
        _release(first)
    assert leftovers(tmp_path) == []


def test_a_video_folder_is_in_the_output_plan(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(CLIP, clips / "a.mp4")
    before = sha256_tree(tmp_path)
    proc = run_in_process("video", "clips", "--json", "clips/x.mp4", "--no-video", *MISSING_CHECKPOINT, cwd=tmp_path)
    refused(proc, 2, "clips/x.mp4", "would land among the input videos of clips")
    proc = run_in_process("video", "clips/*.mp4", "--json", "clips/y.mp4", "--no-video", *MISSING_CHECKPOINT, cwd=tmp_path)
    refused(proc, 2, "clips/y.mp4", "would land among the inputs matched by")
    assert sha256_tree(tmp_path) == before


def test_a_finished_mp4_without_json_counts_as_done_only_by_its_mark(tmp_path):
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    out = tmp_path / "clip.pose.mp4"
    out.write_bytes(b"the user's own file\n")
    proc = run_in_process("video", "clip.mp4", "--no-json", "--skip-existing", "--stride", "5", *FAST, cwd=tmp_path)
    refused(proc, 2, "clip.pose.mp4", "not an MP4 this tool wrote")
    assert out.read_bytes() == b"the user's own file\n"
    out.unlink()
    assert_done(run_in_process("video", "clip.mp4", "--no-json", "--stride", "5", *FAST, cwd=tmp_path))
    made = out.read_bytes()
    skipped = run_in_process("video", "clip.mp4", "--no-json", "--skip-existing", "--stride", "5", *FAST, cwd=tmp_path)
    assert_done(skipped)
    assert "skipped" in skipped.stderr and out.read_bytes() == made
    other = run_in_process("video", "clip.mp4", "--no-json", "--skip-existing", "--stride", "1", *FAST, cwd=tmp_path)
    refused(other, 2, "clip.pose.mp4", "made by another run")
    assert out.read_bytes() == made


def test_a_file_where_the_journal_goes_is_not_overwritten(tmp_path):
    folder = tmp_path / "F"
    folder.mkdir()
    shutil.copy(sorted(COCO_IMAGES.glob("*.jpg"))[0], folder)
    journal = tmp_path / "out.json.partial.jsonl"
    journal.write_text("my notes\n")
    proc = run_in_process("folder", "F", "--json", "out.json", *MISSING_CHECKPOINT, cwd=tmp_path)
    refused(proc, 2, "out.json.partial.jsonl", "not a journal of aepose")
    assert journal.read_text() == "my notes\n"


# ---------------------------------------------------------------------------------------------
# signals: SIGTERM and SIGHUP as Ctrl-C


def test_sigterm_during_a_video_keeps_the_partial_and_exits_143(tmp_path):
    shutil.copy(LONG_CLIP, tmp_path / "clip.avi")
    before = sha256_tree(tmp_path)
    proc = start_cli("video", "clip.avi", "--no-json", *FAST, cwd=tmp_path)

    def frames_written() -> bool:
        parts = [p for p in tmp_path.iterdir() if ".part-" in p.name]
        return bool(parts) and parts[0].stat().st_size > 4096

    done = interrupt_when(proc, frames_written, "frames were written", stop=signal.SIGTERM)
    err = done.stderr
    assert done.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("aepose:")]
    assert len(lines) == 1 and lines[0].startswith("aepose: interrupted (SIGTERM): stopped"), err
    assert "clip.pose.partial.mp4" in lines[0]
    assert (tmp_path / "clip.pose.partial.mp4").is_file() and not (tmp_path / "clip.pose.mp4").exists()
    assert leftovers(tmp_path) == []
    assert {k: v for k, v in sha256_tree(tmp_path).items() if k in before} == before


def test_sighup_during_a_folder_run_keeps_the_journal_and_exits_129(tmp_path):
    folder = tmp_path / "F"
    folder.mkdir()
    for image in sorted((DATA / "coco-mini-val2017" / "val2017").glob("*.jpg"))[:12]:
        shutil.copy(image, folder)
    journal = tmp_path / "out.json.partial.jsonl"
    proc = start_cli("folder", "F", "--json", "out.json", "--no-images", "--batch-size", "1", *FAST, cwd=tmp_path)
    done = interrupt_when(proc, lambda: journal.is_file() and journal.read_bytes().count(b"\n") >= 3, "two images were done", stop=signal.SIGHUP)
    err = done.stderr
    assert done.returncode == 129, err
    lines = [line for line in err.splitlines() if line.startswith("aepose:")]
    assert len(lines) == 1 and lines[0].startswith("aepose: interrupted (SIGHUP): stopped"), err
    assert journal.name in lines[0] and journal.is_file()
    assert leftovers(tmp_path) == []
    resumed = run_in_process("folder", "F", "--json", "out.json", "--no-images", "--skip-existing", *FAST, cwd=tmp_path)
    assert_done(resumed)
    assert len(load_json(tmp_path / "out.json")["images"]) == 12


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("AEPOSE_TEST_RAY_SIGTERM") != "1",
    reason="opt-in (AEPOSE_TEST_RAY_SIGTERM=1) until a flake is explained: in one of six whole-suite "
    "or solo runs the command ended with exit 1 and no line instead of 143 (suspected: Ray's C++ core "
    "replacing the SIGTERM handler after the command re-installed its own)",
)
def test_sigterm_stops_a_ray_run_and_its_local_ray(tmp_path):
    pytest.importorskip("ray")
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to follow the run's processes")
    folder = tmp_path / "F"
    folder.mkdir()
    for image in sorted((DATA / "coco-mini-val2017" / "val2017").glob("*.jpg"))[:16]:
        shutil.copy(image, folder)
    journal = tmp_path / "out.json.partial.jsonl"
    proc = start_cli("folder", "F", "--engine", "ray", "--workers", "2", "--batch-size", "1", "--json", "out.json", "--no-images", *FAST, cwd=tmp_path)
    started: set[int] = set()

    def working() -> bool:
        started.update(_descendants(proc.pid))
        return journal.is_file() and journal.read_bytes().count(b"\n") >= 3

    try:
        freeze_when(proc, working, "Ray did two images", timeout_s=600)
        started.update(_descendants(proc.pid))
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "aepose: interrupted (SIGTERM): stopped" in err and "Traceback" not in err
    assert started, "the run started no process"
    deadline = time.monotonic() + 120
    while _alive(started) and time.monotonic() < deadline:  # Ray's processes notice the end in turn
        time.sleep(0.5)
    assert not _alive(started), [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in _alive(started)]
    assert journal.is_file() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# the ONNX cache verifies what it serves


needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def tiny_net():
    from aepose_cli.model import build_from_checkpoint

    return build_from_checkpoint(TINY_CHECKPOINT)[0]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AEPOSE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _backend(tiny_net):
    import torch

    from aepose_cli.backends import create_backend
    from aepose_cli.zoo import checkpoint_sha256

    return create_backend("onnxruntime", tiny_net, device=torch.device("cpu"), threads=1, checkpoint_sha256=checkpoint_sha256(TINY_CHECKPOINT))


def _other_graph(tiny_net, channels: int | None = None) -> bytes:
    """The graph of another network: the same one with other weights (another checkpoint's), or
    one whose output has `channels` channels."""
    import copy
    import io

    import torch

    from aepose_cli.backends.onnx_export import export_onnx

    if channels is None:
        net = copy.deepcopy(tiny_net)
        with torch.no_grad():
            net.keypoint_head.final_layer.weight.mul_(-1)
    else:
        net = _OtherChannels(tiny_net.spec, channels)
    buffer = io.BytesIO()
    export_onnx(net, buffer)
    return buffer.getvalue()


class _OtherChannels:
    """A network exported with the tiny model's output names but `channels` channels."""

    def __new__(cls, spec, channels: int):
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.spec = spec
                self.conv = torch.nn.Conv2d(3, channels, 4, stride=4)

            def raw_outputs(self, x):
                return [self.conv(x)]

        return Net()


@needs_ort
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["swapped", "truncated", "swapped-with-digest", "wrong-channels"])
def test_a_damaged_cache_entry_is_exported_again_with_one_note(home, tiny_net, damage):
    import torch

    from aepose_cli.backends.onnx_export import digest_path, graph_label, onnx_cache_path
    from aepose_cli.zoo import checkpoint_sha256

    reference = _backend(tiny_net)
    entry = onnx_cache_path(checkpoint_sha256(TINY_CHECKPOINT), network=graph_label(tiny_net))
    good = entry.read_bytes()
    if damage == "truncated":
        entry.write_bytes(good[: len(good) // 3])
    elif damage == "swapped":
        entry.write_bytes(_other_graph(tiny_net))
    elif damage == "swapped-with-digest":
        # another checkpoint's graph with a digest that matches it: the record names the checkpoint
        other = _other_graph(tiny_net)
        entry.write_bytes(other)
        record = json.loads(digest_path(entry).read_text())
        digest_path(entry).write_text(json.dumps({**record, "graph_sha256": hashlib.sha256(other).hexdigest(), "checkpoint_sha256": "0" * 64}))
    else:  # a graph whose digest matches but whose output has 10 channels, not 34
        wrong = _other_graph(tiny_net, channels=10)
        entry.write_bytes(wrong)
        record = json.loads(digest_path(entry).read_text())
        digest_path(entry).write_text(json.dumps({**record, "graph_sha256": hashlib.sha256(wrong).hexdigest()}))
    backend = _backend(tiny_net)
    assert len(backend.notes) == 1 and str(entry) in backend.notes[0] and "exported again" in backend.notes[0], backend.notes
    assert entry.read_bytes() == good  # rebuilt in place
    x = torch.zeros(1, 3, 128, 128)
    got, want = backend(x), reference(x)  # the head's outputs, a list
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert _backend(tiny_net).notes == []  # and trusted again


@needs_ort
def test_a_cache_that_cannot_be_written_falls_back_with_one_note(tmp_path, monkeypatch, tiny_net):
    home = tmp_path / "home"
    home.write_text("AEPOSE_HOME is a file\n")
    monkeypatch.setenv("AEPOSE_HOME", str(home))
    backend = _backend(tiny_net)
    assert len(backend.notes) == 1 and "cannot write the ONNX cache" in backend.notes[0], backend.notes
    assert home.read_text() == "AEPOSE_HOME is a file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


@needs_ort
def test_the_cache_note_is_one_line_of_the_command(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file\n")
    shutil.copy(sorted(COCO_IMAGES.glob("*.jpg"))[0], tmp_path / "a.jpg")
    proc = run_in_process("image", "a.jpg", "--backend", "onnxruntime", *FAST, cwd=tmp_path, env_extra={"AEPOSE_HOME": str(home)})
    assert_done(proc)
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cannot write the ONNX cache" in notes[0] and "not a folder" in notes[0], proc.stderr


# ---------------------------------------------------------------------------------------------
# export: bounds and write failures


def test_export_static_beyond_the_canvas_cap_is_one_line_without_allocating(tmp_path):
    proc = run_cli("export", "--checkpoint", TINY_CHECKPOINT, "--format", "onnx", "--static", "32000,32000", "--out", tmp_path / "big.onnx")
    refused(proc, 2, "--static 32000,32000", "4096")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_to_a_full_disk_is_exit_6_and_leaves_nothing(tmp_path, fmt):
    with mounted_tmpfs(tmp_path / "full", "size=64k"):
        proc = run_in_process("export", "--checkpoint", TINY_CHECKPOINT, "--format", fmt, "--out", "full/net.bin", cwd=tmp_path)
        refused(proc, 6, "full/net.bin", "no space left on device")
        assert list((tmp_path / "full").iterdir()) == []


def test_export_to_a_read_only_folder_is_exit_6_before_the_model_loads(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "size=64k,ro"):
        proc = run_in_process("export", "--checkpoint", "missing.pth", "--format", "onnx", "--out", "ro/net.onnx", cwd=tmp_path)
        refused(proc, 6, "ro/net.onnx", "read-only file system")


# ---------------------------------------------------------------------------------------------
# numbers from the user have bounds


def test_workers_beyond_the_maximum_are_refused_at_parse_time():
    proc = run_in_process("folder", str(COCO_IMAGES), "--engine", "ray", "--workers", "100000", *MISSING_CHECKPOINT)
    refused(proc, 2, "--workers", "256")


@pytest.mark.ray
def test_an_address_where_nothing_listens_is_exit_7_within_the_timeout(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = run_cli("folder", str(COCO_IMAGES), "--out", tmp_path / "o", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", *FAST, timeout=120)
    refused(proc, 7, f"--ray-address 127.0.0.1:{port}", "cannot connect")
    assert time.monotonic() - started < 100
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ray
def test_an_address_where_something_else_listens_is_exit_7_within_the_timeout(tmp_path):
    """A port that accepts the connection and never speaks Ray's gRPC (a stale forward, another
    server): `ray.init` waited there for minutes; our own check answers within its timeout."""
    pytest.importorskip("ray")
    import socket
    import threading

    from aepose_cli.config import RAY_CONNECT_TIMEOUT_S

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                accepted.append(server.accept()[0])  # and never answer
        except OSError:
            return

    threading.Thread(target=accept, daemon=True).start()
    started = time.monotonic()
    try:
        proc = run_in_process("folder", str(COCO_IMAGES), "--out", tmp_path / "o", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", *FAST)
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    refused(proc, 7, f"--ray-address 127.0.0.1:{port}", "cannot connect", f"no answer within {RAY_CONNECT_TIMEOUT_S:g} s")
    assert accepted, "the check never connected"
    assert time.monotonic() - started < RAY_CONNECT_TIMEOUT_S + 30
    assert list(tmp_path.iterdir()) == []


def test_ray_never_gets_more_actors_than_batches():
    import inspect

    pytest.importorskip("ray")
    from aepose_cli.engines import ray as ray_engine

    source = inspect.getsource(ray_engine._dataset) + inspect.getsource(ray_engine.RayRunner.map)
    assert "min(engine.workers, len(batches))" in source and "min(self.engine.workers, len(rows))" in source


# ---------------------------------------------------------------------------------------------
# annotation and results files checked before any model loads; the other tracebacks of the issue


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda d: d["images"][1].update(id=d["images"][0]["id"]), "image ids must be unique"),
        (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]), "annotation ids must be unique"),
        (lambda d: d["annotations"][0].update(image_id=123456789), "not among its images"),
        (lambda d: d["annotations"][0].update(category_id=7), "not among its categories"),
    ],
    ids=["duplicate-image-ids", "duplicate-annotation-ids", "annotation-of-no-image", "annotation-of-no-category"],
)
def test_inconsistent_annotations_are_one_line_before_the_model_loads(tmp_path, damage, fragment):
    data = load_json(COCO_ANN)
    damage(data)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    before = sha256_tree(tmp_path)
    proc = run_in_process("evaluate", "--ann", ann, "--images", COCO_IMAGES, *MISSING_CHECKPOINT, cwd=tmp_path)
    refused(proc, 2, "ann.json", fragment)
    assert sha256_tree(tmp_path) == before


def test_results_of_another_category_are_one_line(tmp_path):
    results = load_json(GOLDEN_RESULTS)
    results[3]["category_id"] = 2
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))
    refused(run_in_process("evaluate", "--ann", MINI_VAL_ANN, "--pred", pred), 2, "pred.json", "result [3]", "category_id 2")


def test_a_finished_json_whose_video_record_is_not_an_object_is_one_line(tmp_path):
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    assert_done(run_in_process("video", "clip.mp4", "--stride", "5", "--no-video", *FAST, cwd=tmp_path))
    target = tmp_path / "clip.pose.json"
    for value in ("x", None, [1, 2], 5):
        data = load_json(target)
        data["info"]["aepose"]["video"] = value
        target.write_text(json.dumps(data))
        before = target.read_bytes()
        proc = run_in_process("video", "clip.mp4", "--stride", "5", "--no-video", "--skip-existing", *FAST, cwd=tmp_path)
        refused(proc, 2, "clip.pose.json", "made by another run")
        assert target.read_bytes() == before


def test_jsonl_to_a_closed_stdout_is_one_line(tmp_path):
    shutil.copy(CLIP, tmp_path / "clip.mp4")
    command = " ".join(f"'{part}'" for part in cli_command("video", "clip.mp4", "--jsonl", "-", *FAST))
    proc = subprocess.run(["sh", "-c", f"exec {command} >&-"], cwd=tmp_path, capture_output=False, stderr=subprocess.PIPE,
                          text=True, env=cli_env(), timeout=300)
    proc.stdout = ""
    refused(proc, 6, "--jsonl -", "standard output is closed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_the_checkers_imports_stay_cheap():
    """`import aepose_cli` still imports neither the evaluator nor Ray (the new modules included)."""
    code = "import sys, aepose_cli, aepose_cli.io.filesystem; print(sorted(m for m in sys.modules if m.startswith(('ray', 'matplotlib'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr

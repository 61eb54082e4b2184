"""`aepose video` end to end on the first second of real clips, read back with PyAV.

What a user relies on: the annotated MP4 has the frames, timestamps and duration of the range
processed (29.97 fps stays 30000/1001), the JSON has one image per frame with its frame index
and timestamp, audio survives, the poses of frame n are those of `aepose image` on frame n, and
a broken input either fails in one line or keeps every frame decoded before the break.
Clips with audio, without video, without frames, or broken midway are made at run time from
real clips with PyAV. Many videos per command (folders, patterns, broken members, collisions,
--skip-existing, the exact JSON-only resume) run in-process with one tiny-model estimator,
except one subprocess run over a folder with broken videos.
"""
from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from aepose_cli.cli.video import run_video, run_videos
from aepose_cli.config import DrawConfig, InferenceConfig, ModelChoice, VideoOptions
from aepose_cli.errors import ConfigError, InputError, Interrupted
from aepose_cli.io.decode import VideoSource
from aepose_cli.jobs.video_plan import expand_sources

from cli_helpers import (
    DATA,
    FAST,
    TINY_CHECKPOINT,
    assert_exit_code,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    describe,
    keypoint_array,
    leftovers,
    load_json,
    poses_by_image,
    run_cli,
)
from paths import needs_shared

pytestmark = [pytest.mark.cli, needs_shared]

NTSC_CLIP = DATA / "mmaction2-videos" / "test_video_structuralize.mp4"  # 426x240, 30000/1001 fps
MMACTION_DEMO = DATA / "mmaction2-videos" / "demo.mp4"  # 340x256, 28 fps
MMPOSE_DEMO = DATA / "mmpose-testdata" / "video" / "demo.mp4"  # 960x540, 5 frames at 5 fps
VTEST = DATA / "opencv-vtest" / "vtest.avi"  # msmpeg4 in AVI, 10 fps
END_S = 0.3  # nine frames of the 29.97 fps clip


# ---------------------------------------------------------------------------------------------
# reading videos back


def video_frames(path: Path, end_s: float | None = None) -> list[Fraction]:
    """Presentation times (exact, in seconds) of the decoded video frames of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [Fraction(f.pts) * stream.time_base for f in container.decode(stream)]
    return [t for t in times if end_s is None or t < end_s]


def container_duration_s(path: Path) -> float:
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def audio_samples(path: Path) -> tuple[str, np.ndarray, int]:
    """(codec, mono float samples, sample rate) of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(frame.layout.nb_channels, -1)[0] if frame.format.is_planar
                  else frame.to_ndarray().reshape(-1, frame.layout.nb_channels)[:, 0]
                  for frame in container.decode(stream)]
        return stream.codec_context.name, np.concatenate(chunks).astype(np.float64), stream.codec_context.sample_rate


def copy_clip(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy(source, target)
    return target


# ---------------------------------------------------------------------------------------------
# a 29.97 fps clip: frames, timestamps, duration, JSON, and equality with `aepose image`


@pytest.fixture(scope="module")
def ntsc_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ntsc")
    clip = copy_clip(NTSC_CLIP, folder)
    # One frame per network batch, as `aepose image` runs it (batches round differently).
    proc = run_cli("video", clip.name, "--end", END_S, *FAST, "--batch-size", "1", cwd=folder)
    return folder, clip, proc


def test_output_has_the_frames_timestamps_and_duration_of_the_range(ntsc_run):
    folder, clip, proc = ntsc_run
    assert_ok(proc)
    source_times = video_frames(clip, end_s=END_S)
    assert len(source_times) == 9
    output = folder / "test_video_structuralize.pose.mp4"
    assert video_frames(output) == source_times  # exact: 1001/30000 steps survive
    frame_s = 1001 / 30000
    assert container_duration_s(output) == pytest.approx(float(source_times[-1]) + frame_s, abs=frame_s / 2)
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (426, 240)
        assert stream.average_rate == Fraction(30000, 1001)


def test_json_has_one_image_per_frame(ntsc_run):
    folder, clip, proc = ntsc_run
    assert_ok(proc)
    coco = COCO(str(folder / "test_video_structuralize.pose.json"))
    images = [coco.imgs[i] for i in sorted(coco.getImgIds())]
    source_times = video_frames(clip, end_s=END_S)
    assert [im["frame_index"] for im in images] == list(range(len(source_times)))
    assert [im["timestamp"] for im in images] == [float(t) for t in source_times]
    assert all((im["width"], im["height"]) == (426, 240) for im in images)
    assert coco.getAnnIds(), "random weights still give people"


def test_frame_poses_equal_aepose_image_on_that_frame(ntsc_run, tmp_path):
    folder, clip, proc = ntsc_run
    assert_ok(proc)
    n = 5
    with VideoSource(clip) as source:
        frame = next(f for f in source if f.index == n)
    still = tmp_path / "frame_n.png"
    assert cv2.imwrite(str(still), frame.image_bgr)  # lossless
    image_proc = run_cli("image", still, *FAST, "--no-images", "--json", tmp_path / "frame_n.json")
    assert_ok(image_proc)
    alone = poses_by_image(load_json(tmp_path / "frame_n.json"))[1]
    video_json = load_json(folder / "test_video_structuralize.pose.json")
    image_id = next(im["id"] for im in video_json["images"] if im["frame_index"] == n)
    in_video = poses_by_image(video_json)[image_id]
    assert in_video, f"frame {n} has people"
    assert_same_poses(in_video, alone, f"frame {n}")


# ---------------------------------------------------------------------------------------------
# options


def test_track_and_jsonl_on_the_whole_mmpose_clip(tmp_path):
    clip = copy_clip(MMPOSE_DEMO, tmp_path)
    proc = run_cli("video", clip.name, "--end", "1", *FAST, "--track", "--jsonl", "frames.jsonl", cwd=tmp_path)
    assert_ok(proc)
    source_times = video_frames(clip)
    assert len(source_times) == 5
    assert video_frames(tmp_path / "demo.pose.mp4") == source_times
    assert container_duration_s(tmp_path / "demo.pose.mp4") == pytest.approx(1.0, abs=0.1)
    data = load_json(tmp_path / "demo.pose.json")
    assert [im["frame_index"] for im in data["images"]] == [0, 1, 2, 3, 4]
    assert data["annotations"]
    per_frame: dict[int, list[int]] = {}
    for ann in data["annotations"]:
        per_frame.setdefault(ann["image_id"], []).append(ann["track_id"])
    for ids in per_frame.values():
        assert len(ids) == len(set(ids)), "one person per track id in a frame"
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line["timestamp"] for line in lines] == [float(t) for t in source_times]
    for line, image in zip(lines, data["images"]):
        in_json = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert [p["track_id"] for p in line["poses"]] == [a["track_id"] for a in in_json]
        assert_same_poses([np.asarray(p["keypoints"]) for p in line["poses"]], [keypoint_array(a) for a in in_json], "jsonl")


def test_stride_and_no_video(tmp_path):
    clip = copy_clip(MMACTION_DEMO, tmp_path)
    proc = run_cli("video", clip.name, "--end", "0.5", "--stride", "2", "--no-video", *FAST, cwd=tmp_path)
    assert_ok(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4", "demo.pose.json"]
    images = load_json(tmp_path / "demo.pose.json")["images"]
    assert [im["frame_index"] for im in images] == list(range(0, 14, 2))  # 28 fps
    times = video_frames(clip, end_s=0.5)
    assert [im["timestamp"] for im in images] == [float(t) for t in times[::2]]


def test_out_folder_holds_the_json_too(tmp_path):
    """`--out DIR/` without `--json`: the MP4 and the JSON both go into DIR."""
    clip = copy_clip(MMPOSE_DEMO, tmp_path)
    proc = run_cli("video", clip.name, "--end", "0.3", "--out", "out/", *FAST, cwd=tmp_path)
    assert_ok(proc)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.pose.json", "demo.pose.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4", "out"]
    assert [im["frame_index"] for im in load_json(tmp_path / "out" / "demo.pose.json")["images"]] == [0, 1]  # 5 fps


def _clip_with_audio(path: Path, frames: int = 20, fps: int = 10, tone_hz: float = 440.0) -> None:
    """Real frames (the first of the mmaction2 demo) at 10 fps over a sine tone in AAC."""
    with av.open(str(MMACTION_DEMO)) as source:
        images = [f.to_ndarray(format="bgr24") for _, f in zip(range(frames), source.decode(video=0))]
    rate = 44100
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="mono")
        for image in images:
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(video.encode(None))
        t = np.arange(int(rate * frames / fps)) / rate
        tone = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = rate, start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))


def test_audio_track_is_kept(tmp_path):
    clip = tmp_path / "speech.mp4"
    _clip_with_audio(clip)
    proc = run_cli("video", clip.name, "--end", "0.5", *FAST, cwd=tmp_path)
    assert_ok(proc)
    output = tmp_path / "speech.pose.mp4"
    assert len(video_frames(output)) == 5
    codec, samples, rate = audio_samples(output)
    assert codec == "aac"
    assert 0.4 <= len(samples) / rate <= 0.75  # the audio of the range, not of the whole clip
    spectrum = np.abs(np.fft.rfft(samples[2048:]))
    assert np.fft.rfftfreq(len(samples) - 2048, 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=5)


# ---------------------------------------------------------------------------------------------
# broken inputs


def _no_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".pose" in p.name)


def _truncated_mp4(folder: Path) -> tuple[Path, list[str]]:
    clip = folder / "cut.mp4"
    data = MMACTION_DEMO.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    return clip, [str(clip)]


def _file_without_video(folder: Path) -> tuple[Path, list[str]]:
    clip = folder / "tone.m4a"
    with av.open(str(clip), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=44100, layout="mono")
        tone = np.sin(np.arange(44100) / 10).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = 44100
        out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return clip, [str(clip), "no video stream"]


def _zero_frame_file(folder: Path) -> tuple[Path, list[str]]:
    clip = folder / "empty.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return clip, [str(clip)]


def _unreachable_stream(folder: Path) -> tuple[str, list[str]]:
    url = "rtsp://127.0.0.1:9/x"
    return url, [url]


@pytest.mark.parametrize("make", [_truncated_mp4, _file_without_video, _zero_frame_file, _unreachable_stream],
                         ids=["truncated-mp4", "file-without-video", "zero-frame-file", "unreachable-stream"])
def test_unreadable_video_is_one_line_and_writes_nothing(tmp_path, make):
    inputs = tmp_path / "in"
    inputs.mkdir()
    source, fragments = make(inputs)
    proc = run_cli("video", source, *FAST, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, *fragments, code=2)
    assert [p.name for p in tmp_path.iterdir()] == ["in"]
    assert _no_outputs(inputs) == []


def _short_avi(path: Path, packets: int = 12) -> None:
    """The first packets of vtest.avi, remuxed: a complete AVI whose header counts them."""
    with av.open(str(VTEST)) as source, av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        written = 0
        for packet in source.demux(video=0):
            if packet.size == 0:
                continue
            packet.stream = stream
            out.mux(packet)
            written += 1
            if written == packets:
                break


def test_video_that_breaks_midway_keeps_the_frames_before_the_break(tmp_path):
    whole = tmp_path / "whole.avi"
    _short_avi(whole)
    clip = tmp_path / "street.avi"
    data = whole.read_bytes()
    clip.write_bytes(data[: len(data) * 3 // 4])
    with VideoSource(clip) as source:
        decodable = [f.index for f in source]
        assert source.error, "the cut AVI must read as broken"
    assert 3 <= len(decodable) < 12

    proc = run_cli("video", clip.name, *FAST, cwd=tmp_path)
    assert_exit_code(proc, 1)  # a stream that broke off (README: 1), the frames before it kept
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aepose: error:")]
    assert len(errors) == 1 and "street.avi" in errors[0] and f"after {len(decodable)} frames" in errors[0], describe(proc)
    assert len(video_frames(tmp_path / "street.pose.mp4")) == len(decodable)
    images = load_json(tmp_path / "street.pose.json")["images"]
    assert [im["frame_index"] for im in images] == decodable


# ---------------------------------------------------------------------------------------------
# many videos per command (issue 10, point 1): in-process with one estimator where the
# subprocess is not the point; the model must never load when the plan is refused.

TINY = ModelChoice(checkpoint=TINY_CHECKPOINT)
# Batches of two: a resume must continue on a batch boundary to equal an uninterrupted run.
TINY_CONFIG = InferenceConfig(device="cpu", flip=False, scales=(0.25,), batch_size=2)


@pytest.fixture(scope="module")
def estimator():
    from aepose_cli.estimator import PoseEstimator

    return PoseEstimator(checkpoint=TINY_CHECKPOINT, config=TINY_CONFIG)


def never_load():
    pytest.fail("the model must not load: the plan is refused first")


def test_sources_expand_folders_and_patterns_in_name_order(tmp_path):
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    names = ("b.mp4", "a.mov", "A2.MP4", "notes.txt", ".hidden.mp4", "sub/c.mkv",
             "b.pose.mp4", "b.pose.partial.mp4", "b.pose.mp4.part-0123abcd.mp4")  # the last three: our outputs
    for name in names:
        (clips / name).write_bytes(b"x")
    assert expand_sources([str(clips)]) == [str(clips / n) for n in ("A2.MP4", "a.mov", "b.mp4")]
    assert expand_sources([str(clips)], recursive=True)[-1] == str(clips / "sub" / "c.mkv")
    # A quoted pattern is expanded by the command, sorted, without this tool's own outputs.
    assert expand_sources([str(clips / "*.m*")]) == [str(clips / "a.mov"), str(clips / "b.mp4")]
    assert expand_sources([str(clips / "b.mp4"), str(clips / "*.mov")]) == [str(clips / "b.mp4"), str(clips / "a.mov")]
    with pytest.raises(InputError, match=r"\*\.avi: no video file matches this pattern"):
        expand_sources([str(clips / "*.avi")])
    with pytest.raises(InputError, match="no video files"):
        expand_sources([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="no such file"):
        expand_sources([str(tmp_path / "gone.mp4")])
    link = tmp_path / "link.mov"
    link.symlink_to(clips / "a.mov")
    with pytest.raises(ConfigError, match="given twice"):
        expand_sources([str(clips), str(link)])
    with pytest.raises(ConfigError, match="stream or webcam is read alone"):
        expand_sources(["rtsp://127.0.0.1:9/x", str(clips / "a.mov")])


def test_a_clash_or_a_file_output_for_several_videos_is_refused_before_the_model_loads(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        copy_clip(MMPOSE_DEMO, tmp_path / folder)
    a, b = str(tmp_path / "a" / "demo.mp4"), str(tmp_path / "b" / "demo.mp4")
    draw = DrawConfig()
    with pytest.raises(ConfigError) as refused:
        run_videos([a, b], never_load, draw, VideoOptions(out=str(tmp_path / "out") + "/"), TINY, config=TINY_CONFIG)
    message = str(refused.value)
    assert f"annotated video of {a}" in message and f"annotated video of {b}" in message and "both write" in message
    for flag, options in (("--out", VideoOptions(out=str(tmp_path / "x.mp4"))),
                          ("--json", VideoOptions(json_out=str(tmp_path / "x.json"))),
                          ("--jsonl", VideoOptions(jsonl_out=str(tmp_path / "x.jsonl")))):
        with pytest.raises(ConfigError, match=f"^{flag} .*: several videos need a folder \\(end it with '/'\\)"):
            run_videos([a, b], never_load, draw, options, TINY, config=TINY_CONFIG)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["demo.mp4", "demo.mp4"]


def test_a_refused_plan_leaves_no_output_folder_behind(tmp_path):
    """`--out DIR/` is created only once the whole plan has passed: a clash found by the plan
    (here the JSON would overwrite an input video) leaves nothing, not even the folder."""
    from aepose_cli.jobs.video_plan import plan_videos

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        copy_clip(MMPOSE_DEMO, tmp_path / folder)
    a, b = str(tmp_path / "a" / "demo.mp4"), str(tmp_path / "b" / "demo.mp4")
    out = tmp_path / "new" / "out"
    with pytest.raises(ConfigError, match="would both write"):
        plan_videos([a, b], VideoOptions(out=f"{out}/"))
    with pytest.raises(ConfigError, match="would overwrite the input"):
        plan_videos([a], VideoOptions(out=f"{out}/", json_out=a))
    assert not (tmp_path / "new").exists()
    jobs = plan_videos([a], VideoOptions(out=f"{out}/"))  # a plan that passes makes its folder
    assert out.is_dir() and jobs[0].video_path == out / "demo.pose.mp4"


def test_several_videos_equal_one_at_a_time(tmp_path, estimator):
    many, alone = tmp_path / "many", tmp_path / "alone"
    many.mkdir()
    alone.mkdir()
    clips = [copy_clip(clip, many) for clip in (NTSC_CLIP, MMPOSE_DEMO, VTEST)]
    end = 0.15  # 5, 1 and 2 frames: the network is the slow part on a shared CPU
    run_videos([str(many)], estimator, DrawConfig(), VideoOptions(end=end, out=str(tmp_path / "out") + "/"), TINY, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{c.stem}.pose.{x}" for c in clips for x in ("json", "mp4"))
    for clip in clips:
        single = copy_clip(clip, alone)
        run_video(str(single), estimator, DrawConfig(), VideoOptions(end=end), TINY, progress=False)
        together = load_json(tmp_path / "out" / f"{clip.stem}.pose.json")
        one = load_json(alone / f"{clip.stem}.pose.json")
        assert together["images"] == one["images"], clip.name  # frame indices, timestamps, sizes
        assert together["annotations"] == one["annotations"], clip.name  # the poses, float for float
        assert together["images"] and together["annotations"], clip.name
        assert together["info"]["aepose"]["inputs"] == [str(clip)]
        frames = video_frames(clip, end_s=end)
        assert video_frames(tmp_path / "out" / f"{clip.stem}.pose.mp4") == video_frames(alone / f"{clip.stem}.pose.mp4") == frames
    assert leftovers(tmp_path) == []


def test_skip_existing_skips_finished_videos_and_restarts_a_half_done_one(tmp_path, estimator, capsys):
    done, half = copy_clip(MMPOSE_DEMO, tmp_path), copy_clip(VTEST, tmp_path)  # 2 and 3 frames
    pattern = [str(tmp_path / "*.mp4"), str(tmp_path / "*.avi")]
    options = VideoOptions(end=END_S, skip_existing=True)
    run_videos(pattern, estimator, DrawConfig(), options, TINY, progress=False)
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.glob("demo.pose.*")}
    assert len(finished) == 2
    # What a killed run leaves: a partial video, a journal (which records the encoder's
    # temporary, issue 22: only a recorded temporary is removed), that temporary; no final files.
    from aepose_cli.io.coco_json import CocoJsonWriter
    from aepose_cli.keypoints import COCO

    video, json_out = tmp_path / f"{half.stem}.pose.mp4", tmp_path / f"{half.stem}.pose.json"
    video.rename(tmp_path / f"{half.stem}.pose.partial.mp4")
    json_out.unlink()
    with CocoJsonWriter(json_out, "dataset", COCO, 0.3, header_extra={"part_token": "0123abcd"}) as journal:
        journal.abort()
    (tmp_path / f"{half.stem}.pose.mp4.part-0123abcd.mp4").write_bytes(b"torn")
    capsys.readouterr()
    run_videos(pattern, estimator, DrawConfig(), options, TINY, progress=False)
    err = capsys.readouterr().err
    assert f"skipped {done}: its outputs are finished" in " ".join(err.split())
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("demo.pose.*")} == finished  # not rewritten
    assert video_frames(video) == video_frames(half, end_s=END_S)
    assert [im["frame_index"] for im in load_json(json_out)["images"]] == [0, 1, 2]
    assert leftovers(tmp_path) == []  # no partial video, journal or encoder temporary
    # Everything finished: nothing to do, the model never loads.
    run_videos(pattern, never_load, DrawConfig(), options, TINY, config=TINY_CONFIG)
    assert "all 2 videos are finished" in capsys.readouterr().err
    # Outputs of other settings are not taken for finished ones: refused, naming the difference.
    with pytest.raises(ConfigError, match="made by another run .*stride"):
        run_videos(pattern, never_load, DrawConfig(), VideoOptions(end=END_S, stride=2, skip_existing=True), TINY, config=TINY_CONFIG)


def test_a_json_only_run_resumes_exactly_from_its_journal(tmp_path, estimator, monkeypatch, capsys):
    from dataclasses import replace

    from aepose_cli.jobs import video as video_command

    clip = copy_clip(NTSC_CLIP, tmp_path)
    options = VideoOptions(end=0.2, out=False, skip_existing=True)  # 6 frames
    reference, target = tmp_path / "reference.json", tmp_path / "resumed.json"
    run_video(str(clip), estimator, DrawConfig(), replace(options, json_out=str(reference)), TINY, progress=False)
    write = video_command._FrameSink.write
    written: list[int] = []

    def stop_after_three(self, item, image, result):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(item.index)
        write(self, item, image, result)

    monkeypatch.setattr(video_command._FrameSink, "write", stop_after_three)
    with pytest.raises(Interrupted, match=r"the 3 frame\(s\) done are kept in resumed.json.partial.jsonl"):
        run_video(str(clip), estimator, DrawConfig(), replace(options, json_out=str(target)), TINY, progress=False)
    monkeypatch.undo()
    assert not target.exists()
    capsys.readouterr()
    run_video(str(clip), estimator, DrawConfig(), replace(options, json_out=str(target)), TINY, progress=False)
    # Three frames were done; batches hold two, so the resume continues after frame 1.
    assert "resumed: 2 frame(s) were done by the stopped run" in capsys.readouterr().err
    resumed, uninterrupted = load_json(target), load_json(reference)
    # Resuming after frame 2 instead (other batches) changes annotations here: checked.
    assert resumed["images"] == uninterrupted["images"]
    assert resumed["annotations"] == uninterrupted["annotations"]
    assert leftovers(tmp_path) == []


def test_a_folder_of_videos_with_broken_ones_finishes_the_others(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    copy_clip(MMPOSE_DEMO, clips)
    copy_clip(VTEST, clips)
    (clips / "notes.mp4").write_text("not a video\n")
    data = MMACTION_DEMO.read_bytes()
    (clips / "cut.mov").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    proc = run_cli("video", "clips", "--end", "0.3", "--out", "out/", *FAST, cwd=tmp_path)
    assert proc.returncode == 1, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "2 input(s) failed:" in lines[-3], describe(proc)
    assert [line.split(":")[0].strip() for line in lines[-2:]] == ["clips/cut.mov", "clips/notes.mp4"], describe(proc)
    for name in ("cut.mov", "notes.mp4"):
        assert sum(name in line for line in lines) == 1, describe(proc)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo.pose.json", "demo.pose.mp4", "vtest.pose.json", "vtest.pose.mp4"]
    assert len(load_json(tmp_path / "out" / "vtest.pose.json")["images"]) == 3  # 10 fps
    assert leftovers(tmp_path) == []

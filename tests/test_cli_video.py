"""`aepose video` end to end on the first second of real clips, read back with PyAV.

What a user relies on: the annotated MP4 has the frames, timestamps and duration of the range
processed (29.97 fps stays 30000/1001), the JSON has one image per frame with its frame index
and timestamp, audio survives, the poses of frame n are those of `aepose image` on frame n, and
a broken input either fails in one line or keeps every frame decoded before the break.
Clips with audio, without video, without frames, or broken midway are made at run time from
real clips with PyAV.
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

from aepose_cli.io.decode import VideoSource

from cli_helpers import (
    DATA,
    FAST,
    assert_ok,
    assert_one_line_error,
    assert_same_poses,
    describe,
    keypoint_array,
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


def test_truncated_mp4(tmp_path):
    clip = tmp_path / "cut.mp4"
    data = MMACTION_DEMO.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: gone
    proc = run_cli("video", clip, *FAST)
    assert_one_line_error(proc, str(clip))
    assert _no_outputs(tmp_path) == []


def test_file_without_video(tmp_path):
    clip = tmp_path / "tone.m4a"
    with av.open(str(clip), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=44100, layout="mono")
        tone = np.sin(np.arange(44100) / 10).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = 44100
        out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    proc = run_cli("video", clip, *FAST)
    assert_one_line_error(proc, str(clip), "no video stream")
    assert _no_outputs(tmp_path) == []


def test_zero_frame_file(tmp_path):
    clip = tmp_path / "empty.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    proc = run_cli("video", clip, *FAST)
    assert_one_line_error(proc, str(clip))
    assert _no_outputs(tmp_path) == []


def test_unreachable_stream(tmp_path):
    url = "rtsp://127.0.0.1:9/x"
    proc = run_cli("video", url, *FAST, cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, url)
    assert list(tmp_path.iterdir()) == []


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
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aepose: error:")]
    assert len(errors) == 1 and "street.avi" in errors[0] and f"after {len(decodable)} frames" in errors[0], describe(proc)
    assert len(video_frames(tmp_path / "street.pose.mp4")) == len(decodable)
    images = load_json(tmp_path / "street.pose.json")["images"]
    assert [im["frame_index"] for im in images] == decodable

"""Video I/O through PyAV: decoding, timestamps, rotation, audio, ranges, broken inputs, atomic output.

Real clips come from ../shared/data; the special cases (29.97 fps, VFR, audio, rotation, broken
and non-video files) are generated with PyAV into tmp_path at run time, so no media is committed.
Generated frames show their index in binary as eight black or white vertical stripes, which
survives lossy coding, so the content of a decoded frame tells which source frame it was.
"""
from __future__ import annotations

import os
import socket
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from aepose_cli.errors import ConfigError, InputError
from aepose_cli.io.decode import DecodedFrame, VideoSource
from aepose_cli.io.encode import VideoSink

from paths import SHARED, needs_shared  # noqa: E402

DATA = SHARED / "data"
VTEST = DATA / "opencv-vtest" / "vtest.avi"
MMACTION_DEMO = DATA / "mmaction2-videos" / "demo.mp4"
MMACTION_2997 = DATA / "mmaction2-videos" / "test_video_structuralize.mp4"
MMPOSE_DEMO = DATA / "mmpose-testdata" / "video" / "demo.mp4"

NTSC = Fraction(30000, 1001)


# ---------------------------------------------------------------------------------------------
# Fixture generators


STRIPE = 8  # pixels per bit


def index_image(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    image = np.full((height, width, 3), 40, np.uint8)
    for bit in range(8):
        if index >> bit & 1:
            image[:, bit * STRIPE : (bit + 1) * STRIPE] = 220
    return image


def index_from_image(image: np.ndarray) -> int:
    bits = [image[:, b * STRIPE : (b + 1) * STRIPE].mean() > 130 for b in range(8)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def make_clip(
    path: Path,
    pts: list[int],
    time_base: Fraction,
    rate: Fraction,
    size: tuple[int, int] = (64, 48),
    rotation: int | None = None,
    marker: bool = False,
    audio_codec: str | None = None,
    container_format: str | None = None,
) -> Path:
    """Write a small H.264 clip with the given frame pts (and optionally a sine audio track)."""
    width, height = size
    container = av.open(str(path), "w", format=container_format)
    video = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "10"})
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.time_base = time_base
    video.codec_context.time_base = time_base
    if rotation is not None:
        video.set_display_rotation(rotation)
    audio = None
    if audio_codec is not None:
        audio = container.add_stream(audio_codec, rate=44100, layout="mono")
    for i, p in enumerate(pts):
        image = index_image(i, width, height)
        if marker:
            image[:, :] = 0
            image[: height // 4, : width // 4] = 255  # a white block in the top-left corner
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = p, time_base
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if audio is not None:
        duration_s = float((pts[-1] - pts[0]) * time_base) + float(1 / rate)
        write_sine(container, audio, duration_s)
    container.close()
    return path


def write_sine(container: av.container.OutputContainer, audio, duration_s: float) -> None:
    sample_rate, chunk = 44100, 1024
    total = int(duration_s * sample_rate)
    fmt = audio.codec_context.format.name
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / sample_rate).astype(np.float32)
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        if fmt.startswith("s16"):
            wave = (wave * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave, format=fmt, layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))


def ntsc_clip(path: Path, n: int = 30, **kwargs) -> Path:
    return make_clip(path, [i * 1001 for i in range(n)], Fraction(1, 30000), NTSC, **kwargs)


def decode_all(path: Path, **kwargs) -> list[DecodedFrame]:
    with VideoSource(path, **kwargs) as source:
        return list(source)


def transcode(source_path: Path, out: Path, **source_kwargs) -> tuple[list[DecodedFrame], VideoSink]:
    with VideoSource(source_path, **source_kwargs) as source:
        with VideoSink.for_source(out, source, preset="ultrafast") as sink:
            frames = []
            for frame in source:
                sink.write(frame.image_bgr, frame.pts)
                frames.append(frame)
    return frames, sink


def seconds(frame: DecodedFrame) -> Fraction:
    return frame.pts * frame.time_base


def stream_summary(path: Path) -> dict:
    with av.open(str(path)) as container:
        summary = {"duration_s": container.duration / 1e6}
        for stream in container.streams:
            summary[stream.type] = {
                "codec": stream.codec_context.name,
                "time_base": stream.time_base,
                "rate": getattr(stream, "average_rate", None),
                "duration_s": float(stream.duration * stream.time_base) if stream.duration else None,
                "packets": sum(1 for p in container.demux(stream) if p.size),
            }
            container.seek(0)
        return summary


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-12))


# ---------------------------------------------------------------------------------------------
# Decoding real clips


@needs_shared
def test_shared_data_is_present():
    for path in (VTEST, MMACTION_DEMO, MMACTION_2997, MMPOSE_DEMO):
        assert path.is_file(), f"missing shared test media {path}"


@needs_shared
@pytest.mark.parametrize(
    "path, size, rate, count",
    [
        (VTEST, (768, 576), Fraction(10), 795),
        (MMACTION_DEMO, (340, 256), Fraction(28), 280),
        (MMACTION_2997, (426, 240), NTSC, 300),
        (MMPOSE_DEMO, (960, 540), Fraction(5), 5),
    ],
)
def test_real_clips_open_with_their_properties(path, size, rate, count):
    with VideoSource(path, end_s=0.5) as source:
        assert (source.width, source.height) == size
        assert source.rate == rate
        assert source.frame_count == count
        assert source.rotation == 0 and not source.has_audio
        frames = list(source)
    assert frames[0].index == 0 and frames[0].image_bgr.shape == (size[1], size[0], 3)
    for frame in frames:
        image = frame.image_bgr
        assert image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert frame.timestamp_s < 0.5
        assert frame.timestamp_s == pytest.approx(float(seconds(frame)))
    # consecutive indices, constant step 1/rate (over at least two steps)
    assert len(frames) >= 3
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(seconds(b) - seconds(a) == 1 / rate for a, b in zip(frames, frames[1:]))


def opencv_frames(path: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(count):
        ok, frame = capture.read()
        assert ok
        frames.append(frame)
    capture.release()
    return frames


@needs_shared
@pytest.mark.parametrize("path", [MMACTION_DEMO, MMACTION_2997, MMPOSE_DEMO])
def test_frames_are_the_pixels_opencv_gives(path):
    """The reference reads video with cv2.VideoCapture: same BGR order, same colour conversion."""
    ours = [f.image_bgr for f in decode_all(path, end_s=0.5)][:5]
    assert len(ours) >= 3
    for mine, theirs in zip(ours, opencv_frames(path, len(ours))):
        assert np.array_equal(mine, theirs)


@needs_shared
def test_frames_match_opencv_on_msmpeg4():
    ours = [f.image_bgr for f in decode_all(VTEST, end_s=0.3)]
    assert len(ours) == 3  # 10 fps: 0.0, 0.1, 0.2 s
    for mine, theirs in zip(ours, opencv_frames(VTEST, len(ours))):
        assert np.abs(mine.astype(int) - theirs).max() <= 1  # decoder versions differ in rounding


@needs_shared
def test_bt709_tagged_video_is_converted_like_opencv(tmp_path):
    """Colour tags are ignored (always BT.601), as OpenCV 4.8 (the reference fixtures' version)
    does; newer 4.x VideoCapture honours a BT.709 tag, so the check against BT.601 is made with
    cvtColor (swscale and cvtColor round differently by a few levels; BT.709 is ~12 off)."""
    image = cv2.imread(str(DATA / "ultralytics-assets" / "bus.jpg"))[:320, :400]
    path = tmp_path / "bt709.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 400, 320, "yuv420p"
        stream.codec_context.colorspace = 1  # BT.709
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    ours = decode_all(path)[0].image_bgr
    bt601 = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)
    off = np.abs(ours.astype(int) - bt601)
    assert off.max() <= 3 and off.mean() < 1.2
    if cv2.__version__.startswith("4.8."):
        assert np.array_equal(ours, opencv_frames(path, 1)[0])
    assert np.abs(ours.astype(int) - image).mean() < 2


@needs_shared
def test_info_summarises_a_file():
    with VideoSource(MMACTION_2997) as source:
        summary = source.info.as_dict()
    assert summary["rate"] == "30000/1001" and summary["frame_count"] == 300
    assert summary["width"] == 426 and summary["height"] == 240
    assert summary["duration_s"] == pytest.approx(10.01, abs=1e-3)
    assert summary["has_audio"] is False and summary["rotation"] == 0


# ---------------------------------------------------------------------------------------------
# Ranges


def test_start_end_stride_on_generated_clip(tmp_path):
    clip = ntsc_clip(tmp_path / "ntsc.mp4")
    frames = decode_all(clip, start_s=0.3, end_s=0.8, stride=3)
    # frame k is at k * 1001/30000 s: k=9 is the first >= 0.3 s, k=23 the last < 0.8 s
    assert [f.index for f in frames] == [9, 12, 15, 18, 21]
    assert [f.pts for f in frames] == [k * 1001 for k in (9, 12, 15, 18, 21)]
    assert [index_from_image(f.image_bgr) for f in frames] == [9, 12, 15, 18, 21]


@needs_shared
def test_seeking_agrees_with_decoding_from_the_start():
    """After a seek, indices come from timestamps; they must match a plain decode's, pixel for pixel."""
    with VideoSource(MMACTION_DEMO, end_s=6.0) as source:
        reference = {f.index: f for f in source if f.timestamp_s >= 5.0}
    kept = decode_all(MMACTION_DEMO, start_s=5.0, end_s=6.0, stride=4)
    assert [f.index for f in kept] == list(range(140, 168, 4))
    for frame in kept:
        assert frame.pts == reference[frame.index].pts
        assert np.array_equal(frame.image_bgr, reference[frame.index].image_bgr)


@needs_shared
def test_start_after_the_end_is_an_input_error():
    with pytest.raises(InputError, match="no video frame at or after 99 s"):
        VideoSource(MMPOSE_DEMO, start_s=99)


def test_frames_without_pts_get_them_from_index_and_rate(tmp_path):
    raw = tmp_path / "raw.h264"
    make_clip(raw, list(range(8)), Fraction(1, 25), Fraction(25), container_format="h264")
    frames = decode_all(raw)
    assert [f.index for f in frames] == list(range(8))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 25 for i in range(8)])
    assert [index_from_image(f.image_bgr) for f in frames] == list(range(8))


# ---------------------------------------------------------------------------------------------
# Round trips through VideoSink


@needs_shared
def test_round_trip_real_clip_keeps_frames_timestamps_and_pixels(tmp_path):
    out = tmp_path / "vtest.pose.mp4"
    written, sink = transcode(VTEST, out, end_s=4.0)
    assert len(written) == 40 and sink.frames_written == 40 and sink.note is None
    summary = stream_summary(out)
    assert summary["video"]["codec"] == "h264" and summary["video"]["rate"] == 10
    assert summary["duration_s"] == pytest.approx(4.0)
    back = decode_all(out)
    assert len(back) == 40
    assert [seconds(f) for f in back] == [seconds(f) for f in written]
    assert min(psnr(a.image_bgr, b.image_bgr) for a, b in zip(back, written)) > 30


def test_round_trip_keeps_ntsc_rate_and_time_base(tmp_path):
    clip = ntsc_clip(tmp_path / "ntsc.mp4")
    out = tmp_path / "out.mp4"
    written, _ = transcode(clip, out)
    summary = stream_summary(out)
    assert summary["video"]["rate"] == NTSC
    assert summary["video"]["time_base"] == Fraction(1, 30000)
    back = decode_all(out)
    assert [f.pts for f in back] == [i * 1001 for i in range(30)]
    assert [index_from_image(f.image_bgr) for f in back] == list(range(30))
    assert summary["duration_s"] == pytest.approx(stream_summary(clip)["duration_s"], abs=1e-3)


def test_round_trip_keeps_variable_frame_rate(tmp_path):
    pts = [0, 40, 70, 150, 160, 260, 300, 420, 440, 500]  # milliseconds, irregular on purpose
    clip = make_clip(tmp_path / "vfr.mp4", pts, Fraction(1, 1000), Fraction(20))
    out = tmp_path / "out.mp4"
    written, _ = transcode(clip, out)
    assert [int(seconds(f) * 1000) for f in written] == pts
    back = decode_all(out)
    assert [seconds(f) for f in back] == [Fraction(p, 1000) for p in pts]
    assert [index_from_image(f.image_bgr) for f in back] == list(range(len(pts)))


def test_audio_is_copied_with_its_duration(tmp_path):
    clip = ntsc_clip(tmp_path / "with_audio.mp4", n=45, audio_codec="aac")
    out = tmp_path / "out.mp4"
    transcode(clip, out)
    source, result = stream_summary(clip), stream_summary(out)
    assert result["audio"]["codec"] == "aac"
    assert result["audio"]["packets"] == source["audio"]["packets"]
    assert result["audio"]["duration_s"] == pytest.approx(source["audio"]["duration_s"], abs=1e-3)
    assert result["duration_s"] == pytest.approx(source["duration_s"], abs=0.03)
    assert result["video"]["rate"] == NTSC


def test_audio_that_mp4_cannot_carry_is_transcoded_to_aac(tmp_path):
    clip = ntsc_clip(tmp_path / "pcm.mkv", n=30, audio_codec="pcm_s16le")
    out = tmp_path / "out.mp4"
    _, sink = transcode(clip, out)
    assert "transcoded from pcm_s16le to aac" in sink.note
    result = stream_summary(out)
    assert result["audio"]["codec"] == "aac"
    assert result["audio"]["duration_s"] == pytest.approx(30 / NTSC, abs=0.05)


def test_trimmed_output_starts_at_zero_with_audio_of_the_range(tmp_path):
    clip = ntsc_clip(tmp_path / "with_audio.mp4", n=60, audio_codec="aac")
    out = tmp_path / "out.mp4"
    # 0.48 s falls between frames 14 (0.467 s) and 15 (0.5005 s); an AAC packet starts at 0.4876 s
    written, _ = transcode(clip, out, start_s=0.48, end_s=1.5)
    assert written[0].index == 15 and written[-1].index == 44
    back = decode_all(out)
    assert back[0].pts == 0 and len(back) == 30
    # spacing kept exactly, shifted by the first kept frame
    assert [f.pts for f in back] == [f.pts - written[0].pts for f in written]
    assert [index_from_image(f.image_bgr) for f in back] == list(range(15, 45))
    result = stream_summary(out)
    assert result["audio"]["duration_s"] == pytest.approx(1.0, abs=0.05)
    assert result["duration_s"] == pytest.approx(1.0, abs=0.05)
    with av.open(str(out)) as container:
        first_audio = next(p for p in container.demux(audio=0) if p.size)
        # audio starts with the first kept frame, not before it
        assert 0 <= first_audio.pts * first_audio.time_base < 0.03


@pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
    reason="writing rotation metadata for the test clip needs a newer PyAV (reading it does not)",
)
def test_rotation_metadata_gives_upright_frames_and_swapped_size(tmp_path):
    # -90: the display matrix turns the picture a quarter clockwise, like a phone held upright
    clip = make_clip(tmp_path / "rotated.mp4", [i * 1001 for i in range(5)], Fraction(1, 30000),
                     NTSC, size=(64, 48), rotation=-90, marker=True)
    with VideoSource(clip) as source:
        assert source.rotation == 270
        assert (source.width, source.height) == (48, 64)
    frames = decode_all(clip)
    image = frames[0].image_bgr
    assert image.shape == (64, 48, 3)
    # the coded top-left block ends up top-right once turned clockwise
    assert image[:8, -8:].mean() > 200 and image[:8, :8].mean() < 50
    out = tmp_path / "out.mp4"
    transcode(clip, out)
    with VideoSource(out) as written:
        assert written.rotation == 0 and (written.width, written.height) == (48, 64)
        again = next(iter(written)).image_bgr
    assert again[:8, -8:].mean() > 200 and again[:8, :8].mean() < 50


def test_odd_sizes_are_padded_to_even(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoSink(out, width=65, height=49, time_base=Fraction(1, 25), rate=Fraction(25),
                   preset="ultrafast") as sink:
        for i in range(5):
            sink.write(index_image(i, 65, 49), i)
    assert "padded with black to 66x50" in sink.note
    frames = decode_all(out)
    assert frames[0].image_bgr.shape == (50, 66, 3)
    assert [index_from_image(f.image_bgr[:49, :65]) for f in frames] == list(range(5))


def test_missing_encoder_falls_back_with_a_note(tmp_path):
    out = tmp_path / "fallback.mp4"
    with VideoSink(out, width=64, height=48, time_base=Fraction(1, 30000), rate=NTSC,
                   encoders=("no_such_encoder", "mpeg4")) as sink:
        for i in range(6):
            sink.write(index_image(i), i * 1001)
    assert sink.note == "no_such_encoder is not available in this FFmpeg build; encoded with mpeg4"
    with VideoSource(out) as source:
        assert source.info.codec == "mpeg4" and source.rate == NTSC
        frames = list(source)
    assert [f.pts for f in frames] == [i * 1001 for i in range(6)]
    assert [index_from_image(f.image_bgr) for f in frames] == list(range(6))


@needs_shared
def test_bad_ranges_are_config_errors():
    with pytest.raises(ConfigError, match="stride must be at least 1"):
        VideoSource(MMPOSE_DEMO, stride=0)
    with pytest.raises(ConfigError, match="must be after start"):
        VideoSource(MMPOSE_DEMO, start_s=0.5, end_s=0.2)


def test_sink_keeps_colours(tmp_path):
    """BGR -> YUV must round, not truncate: swscale's default darkens every frame by ~3 levels."""
    colours = [(30, 30, 30), (128, 128, 128), (220, 220, 220), (40, 90, 200)]
    out = tmp_path / "colours.mp4"
    with VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), preset="ultrafast") as sink:
        for i, colour in enumerate(colours):
            sink.write(np.full((48, 64, 3), colour, np.uint8), i)
    decoded = decode_all(out)
    assert len(decoded) == len(colours)
    for frame, colour in zip(decoded, colours):
        error = np.abs(frame.image_bgr.reshape(-1, 3).mean(axis=0) - colour).max()
        grey = len(set(colour)) == 1
        assert error < (1.0 if grey else 2.5)  # saturated colours lose a little to 8-bit chroma
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.colorspace == 6  # tagged BT.601


def test_sink_repairs_non_increasing_pts(tmp_path):
    out = tmp_path / "dup.mp4"
    with VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), preset="ultrafast") as sink:
        for pts in (0, 1, 1, 3, None):
            sink.write(np.zeros((48, 64, 3), np.uint8), pts)
    assert sink.pts_fixed == 1
    assert [seconds(f) for f in decode_all(out)] == [Fraction(k, 25) for k in range(5)]


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_output_appears_only_on_close(tmp_path):
    out = tmp_path / "atomic.mp4"
    sink = VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), preset="ultrafast")
    for i in range(30):
        sink.write(np.zeros((48, 64, 3), np.uint8), i)
        assert not out.exists()
        assert all(p == sink.part_path for p in tmp_path.iterdir())
    assert sink.part_path.parent == tmp_path and sink.part_path.name.startswith("atomic.mp4.part-")
    assert sink.close() == out
    assert out.exists() and not sink.part_path.exists()
    assert list(tmp_path.iterdir()) == [out]


def test_failed_run_keeps_a_playable_file_with_what_was_written(tmp_path):
    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="network died"):
        with VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), preset="ultrafast") as sink:
            for i in range(7):
                sink.write(index_image(i), i)
            raise RuntimeError("network died")
    # Kept under a name that says it is partial, never under the final name.
    kept = tmp_path / "partial.partial.mp4"
    assert sink.kept_partial == kept and not out.exists()
    assert [index_from_image(f.image_bgr) for f in decode_all(kept)] == list(range(7))
    assert list(tmp_path.iterdir()) == [kept]


def test_no_frames_no_file(tmp_path):
    out = tmp_path / "nothing.mp4"
    sink = VideoSink(out, width=64, height=48, time_base=Fraction(1, 25))
    assert sink.close() is None
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        VideoSink(tmp_path / "no" / "out.mp4", width=64, height=48, time_base=Fraction(1, 25))


def test_a_part_token_names_the_temporary_so_a_retry_reuses_a_dead_attempts_file(tmp_path):
    """What `--engine ray` relies on when a video's worker died: the second attempt writes the
    same temporary (truncating the dead one's frames) and renames it; nothing else is left."""
    out = tmp_path / "retry.mp4"
    stale = tmp_path / "retry.mp4.part-0123abcd.mp4"
    stale.write_bytes(b"frames of an attempt whose process was killed" * 1000)
    with VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), preset="ultrafast", part_token="0123abcd") as sink:
        assert sink.part_path == stale
        for pts in range(3):
            sink.write(np.zeros((48, 64, 3), np.uint8), pts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retry.mp4"]
    assert len(decode_all(out)) == 3
    for bad in ("../../x", "0123ABCD", "12345"):
        with pytest.raises(ValueError, match="part_token"):
            VideoSink(tmp_path / "bad.mp4", width=64, height=48, time_base=Fraction(1, 25), part_token=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retry.mp4"]


_ENCODE_IN_CHILD = """
import sys
from aepose_cli.io.decode import VideoSource
from aepose_cli.io.encode import VideoSink
source = VideoSource(sys.argv[1], end_s=0.3)
with VideoSink.for_source(sys.argv[2], source) as sink:
    for frame in source:
        sink.write(frame.image_bgr, frame.pts)
"""


@needs_shared
def test_the_same_frames_give_the_same_bytes_whatever_the_heap_holds(tmp_path):
    """x264's AVX-512 kernels read memory x264 never wrote, so on an AVX-512 CPU the MP4 of the
    same frames depended on the heap (a Ray worker's tuned malloc gave other bytes than the
    single engine). Encoded in fresh processes whose malloc fills every block with another
    byte (`MALLOC_PERTURB_`), the files must be identical."""
    import subprocess
    import sys

    outputs = []
    for perturb in ("0", "85", "170"):
        out = tmp_path / f"perturb{perturb}.mp4"
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        subprocess.run([sys.executable, "-c", _ENCODE_IN_CHILD, str(MMACTION_2997), str(out)], env=env, check=True, timeout=300)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_x264_is_never_asked_for_its_avx512_kernels():
    from aepose_cli.io.encode import x264_capabilities_without_avx512

    capabilities = x264_capabilities_without_avx512()
    if capabilities is not None:  # this CPU has AVX-512 and x264 said what else it uses
        names = capabilities.split(",")
        assert "AVX512" not in names and "AVX2" in names


def test_failed_run_without_keep_partial_leaves_nothing(tmp_path):
    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError):
        with VideoSink(out, width=64, height=48, time_base=Fraction(1, 25), keep_partial=False,
                       preset="ultrafast") as sink:
            sink.write(np.zeros((48, 64, 3), np.uint8), 0)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Broken and unusable inputs


def faststart_copy(source: Path, out: Path) -> Path:
    """Remux with the index (moov) first, as streaming-friendly MP4s are, so a cut file opens."""
    from cli_helpers import remux_video

    return remux_video(source, out, options={"movflags": "faststart"})


@needs_shared
def test_truncated_mp4_yields_frames_before_the_break(tmp_path):
    whole = faststart_copy(MMACTION_DEMO, tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    reference = decode_all(whole)
    with VideoSource(cut) as source:
        frames = list(source)
    assert 100 < len(frames) < 280
    assert source.broken_at == len(frames)
    assert source.error == f"{cut}: stream broke after {len(frames)} frames (ended early, 280 frames expected)"
    assert len(reference) == 280
    for frame, ref in zip(frames, reference):
        assert frame.pts == ref.pts and np.array_equal(frame.image_bgr, ref.image_bgr)
    # every frame decodable before the break: a plain FFmpeg decode of the cut file finds no more
    with av.open(str(cut)) as container:
        stream = container.streams.video[0]
        decodable = 0
        for packet in container.demux(stream):
            try:
                decodable += len(packet.decode())
            except av.error.InvalidDataError:
                pass
    assert len(frames) == decodable


@needs_shared
def test_truncated_avi_reports_the_break(tmp_path):
    cut = tmp_path / "cut.avi"
    with open(VTEST, "rb") as handle:
        cut.write_bytes(handle.read(400_000))
    with VideoSource(cut) as source:
        frames = list(source)
    assert len(frames) > 10 and source.broken_at == len(frames)
    assert "stream broke after" in source.error and "795 frames expected" in source.error


@needs_shared
def test_complete_file_reports_no_break():
    with VideoSource(MMPOSE_DEMO) as source:
        assert len(list(source)) == 5
    assert source.error is None and source.broken_at is None


def assert_one_line_input_error(source, *fragments: str, **kwargs) -> None:
    with pytest.raises(InputError) as caught:
        VideoSource(source, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and str(source) in message
    for fragment in fragments:
        assert fragment in message
    assert caught.value.__cause__ is None or not isinstance(caught.value.__cause__, av.error.FFmpegError)


@needs_shared
def test_mp4_cut_before_its_index_is_an_input_error(tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(MMACTION_DEMO.read_bytes()[:300_000])  # moov is at the end of this file
    assert_one_line_input_error(cut, "not a readable video file")


def test_missing_file(tmp_path):
    assert_one_line_input_error(tmp_path / "nope.mp4", "no such file")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    assert_one_line_input_error(fake, "not a readable video file")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert_one_line_input_error(empty, "empty file")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        write_sine(container, container.add_stream("aac", rate=44100, layout="mono"), 0.5)
    assert_one_line_input_error(path, "no video stream (streams: audio)")


@pytest.mark.parametrize("suffix, fragment", [(".mp4", "no video stream"), (".avi", "no decodable video frames")])
def test_zero_frame_files(tmp_path, suffix, fragment):
    path = tmp_path / f"zero{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    assert path.stat().st_size > 0
    assert_one_line_input_error(path, fragment)


def within_hang_guard(check, guard_s: float = 120) -> None:
    """Run `check()` in a thread; fail if it has not returned after `guard_s` (a hang guard: the
    outcome is what `check` asserts, not how long it took)."""
    outcome: list[BaseException | None] = []

    def run():
        try:
            check()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(guard_s)
    if worker.is_alive():
        pytest.fail(f"still waiting after {guard_s} s: the open hangs")
    if outcome[0] is not None:
        raise outcome[0]


def test_refused_stream_url_fails_at_the_refusal():
    """A port where nothing listens: the connection is refused, and that is the reason given
    (not a timeout: the open did not wait for its 1 s limit)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"rtsp://127.0.0.1:{closed.getsockname()[1]}/none"
        within_hang_guard(lambda: assert_one_line_input_error(url, "cannot open stream", "refused", timeout_s=1.0))


def test_silent_stream_server_times_out():
    """A server that accepts the connection and never answers must not hang the run: the open
    connects, asks (an RTSP request), gets no answer within its limit and gives up, one line."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/live"
        within_hang_guard(lambda: assert_one_line_input_error(url, "cannot open stream", timeout_s=1.0))
        server.setblocking(False)
        connection, _ = server.accept()  # the client did connect...
        with connection:
            connection.settimeout(30)  # a hang guard: the client has already given up
            said = b""
            while chunk := connection.recv(4096):
                said += chunk
        assert said.startswith(b"OPTIONS rtsp://"), said  # ...asked, and hung up unanswered


def test_absent_webcam_is_an_input_error():
    index = 97  # no machine running these tests has 98 cameras
    if os.path.exists(f"/dev/video{index}"):
        pytest.fail("unexpected /dev/video97")
    with pytest.raises(InputError, match="webcam 97: cannot open capture device"):
        VideoSource(str(index))


@needs_shared
def test_source_is_single_pass():
    with VideoSource(MMPOSE_DEMO) as source:
        list(source)
        with pytest.raises(RuntimeError):
            list(source)


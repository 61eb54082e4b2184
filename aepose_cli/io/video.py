"""Video decoding and encoding through PyAV: the I/O layer of `aepose video`.

`VideoSource` turns a file, a stream URL or a webcam into upright BGR frames that carry their
source timestamps; `VideoSink` writes such frames as H.264 in MP4 with those timestamps, so a
29.97 fps clip stays 30000/1001 and a variable-frame-rate clip stays variable, and copies the
source's audio next to them. No pose code lives here.

Policies (chosen so that a long run never loses work silently):

* **Broken input.** Opening problems (missing file, not media, no video stream, no decodable
  frame, unreachable URL) raise `InputError` with one line naming the input. A stream that
  breaks *after* frames were decoded does not raise: iteration stops after the last decodable
  frame and `VideoSource.error` / `VideoSource.broken_at` say what happened, so the caller keeps
  what it wrote and reports the break. Single undecodable packets in the middle are skipped
  (as FFmpeg does) and counted in `VideoSource.skipped_packets`.
* **Atomic output.** `VideoSink` encodes into `<out>.part-<random>.mp4` next to `<out>` and
  `os.replace`s it onto `<out>` on `close()`. When the run fails (an exception inside the `with`
  block, or `abort()`), the partial file is still finalised into a playable MP4 holding every
  frame written so far and, with `keep_partial=True` (default), renamed to `<out>` all the
  same; the caller reports the error. With no frame written, or `keep_partial=False`, the part
  file is deleted and `<out>` is left untouched.
"""
from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np

from ..errors import AeposeError, ConfigError, InputError

# Audio codecs that MP4 carries and common players play; anything else is transcoded to AAC.
MP4_AUDIO_COPY_CODECS: frozenset[str] = frozenset(
    {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}
)
# FFmpeg's default layout for each channel count AAC carries; more channels are downmixed.
AAC_LAYOUTS: dict[int, str] = {
    1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"
}
# H.264 encoders to try, best first; the last one is not H.264 but every FFmpeg build has it.
VIDEO_ENCODER_PREFERENCE: tuple[str, ...] = ("libx264", "h264", "libopenh264", "mpeg4")
# Used when a source has no usable time base (should not happen with FFmpeg, but cheap to cover).
FALLBACK_TIME_BASE = Fraction(1, 90000)
# Nominal rate handed to the encoder's rate control when the source does not know its rate.
FALLBACK_RATE = Fraction(30)
# How far ahead of the last written video frame the sink interleaves copied audio.
AUDIO_LEAD_S = 0.5

_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


# ---------------------------------------------------------------------------------------------
# Decoded frames and source description


@dataclass(frozen=True)
class DecodedFrame:
    """One upright BGR frame with the timing it had in the source.

    `index` counts frames of the source stream from 0 (not the frames kept by --stride), `pts`
    is in `time_base` units exactly as the source stamped it (derived from index and rate when
    the source had none), and `timestamp_s` is seconds since the start of the stream. After a
    seek to `start_s` the first index is derived from the timestamp and the average rate, which
    is exact for constant-rate video and approximate for variable-rate video.
    """

    index: int
    pts: int
    time_base: Fraction
    timestamp_s: float
    image_bgr: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video source once it is open; also all a `VideoSink` needs."""

    name: str
    kind: str  # "file", "url" or "webcam"
    width: int  # displayed (upright) width
    height: int
    coded_width: int
    coded_height: int
    rate: Fraction | None  # average frame rate, None when unknown
    time_base: Fraction
    start_pts: int
    duration_s: float | None
    frame_count: int | None
    rotation: int  # degrees counter-clockwise applied to make frames upright (0/90/180/270)
    codec: str
    container_format: str
    has_audio: bool
    audio_codec: str | None
    path: Path | None = None  # set for files: the sink reopens it to copy the audio

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly summary (fractions as strings)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "coded_width": self.coded_width,
            "coded_height": self.coded_height,
            "rate": None if self.rate is None else str(self.rate),
            "fps": None if self.rate is None else float(self.rate),
            "time_base": str(self.time_base),
            "duration_s": self.duration_s,
            "frame_count": self.frame_count,
            "rotation": self.rotation,
            "codec": self.codec,
            "container_format": self.container_format,
            "has_audio": self.has_audio,
            "audio_codec": self.audio_codec,
        }


# ---------------------------------------------------------------------------------------------
# Opening inputs


def _one_line(error: BaseException) -> str:
    """FFmpeg's reason without errno noise, on one line."""
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        text = str(error.strerror)
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def source_kind(source: str | int | os.PathLike[str]) -> str:
    """'webcam' (an index that is not an existing file), 'url' (a stream scheme) or 'file'.

    The one test of what a video argument names: the decoder opens it by this, and the video
    command picks default output names and folders by it.
    """
    if _is_webcam(source):
        return "webcam"
    if isinstance(source, str) and _is_url(source):
        return "url"
    return "file"


def _is_webcam(source: str | int | os.PathLike[str]) -> bool:
    if isinstance(source, bool):
        return False
    if isinstance(source, int):
        return True
    return isinstance(source, str) and source.isdigit() and not Path(source).exists()


def _is_url(source: str) -> bool:
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in _STREAM_SCHEMES


def _webcam_open_args(index: int) -> tuple[str, str]:
    """(file, format) that FFmpeg's capture device of this platform understands."""
    if sys.platform.startswith("linux"):
        return f"/dev/video{index}", "v4l2"
    if sys.platform == "darwin":
        return str(index), "avfoundation"
    if sys.platform.startswith("win"):
        # dshow addresses cameras by name; `video_device_number` picks among same-named ones.
        # Users with several different cameras should pass "video=<name>" with --format dshow.
        return "video=", "dshow"
    raise InputError(f"webcam {index}: no capture device support on platform {sys.platform}")


def _open_container(
    source: str | int | os.PathLike[str], timeout_s: float
) -> tuple[av.container.InputContainer, str, str, Path | None]:
    """Open any supported input; returns (container, display name, kind, file path)."""
    if _is_webcam(source):
        index = int(source)
        name = f"webcam {index}"
        file, fmt = _webcam_open_args(index)
        options = {"video_device_number": str(index)} if fmt == "dshow" else {}
        try:
            container = av.open(file, format=fmt, options=options, timeout=timeout_s)
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(f"{name}: cannot open capture device ({_one_line(error)})") from None
        return container, name, "webcam", None

    text = os.fspath(source)
    if _is_url(text):
        options = {"rw_timeout": str(int(timeout_s * 1e6))}
        if text.lower().startswith(("rtsp", "http", "tcp", "udp")):
            # Socket timeout in microseconds; not for rtmp, where `timeout` means "listen".
            options["timeout"] = str(int(timeout_s * 1e6))
        try:
            container = av.open(text, options=options, timeout=(timeout_s, timeout_s))
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(f"{text}: cannot open stream ({_one_line(error)})") from None
        return container, text, "url", None

    path = Path(text)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        container = av.open(str(path), timeout=timeout_s)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable video file ({_one_line(error)})") from None
    return container, str(path), "file", path


def _pick_video_stream(
    container: av.container.InputContainer, name: str
) -> av.video.stream.VideoStream:
    """First real video stream; cover art (an `attached_pic` "video" stream) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise InputError(f"{name}: no video stream (streams: {', '.join(kinds)})")


def _first_audio_stream(
    container: av.container.InputContainer,
) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def _to_bgr(frame: av.VideoFrame) -> np.ndarray:
    """Convert exactly as cv2.VideoCapture (the reference's reader) does.

    OpenCV ignores the stream's colour tags and always uses BT.601 coefficients, limited range
    unless the pixel format itself is full-range (yuvj*). PyAV would honour the tags (BT.709
    for most HD video), giving pixels up to ~15 levels away from what the reference saw.
    """
    full_range = frame.format.name.startswith("yuvj")
    return frame.reformat(
        format="bgr24",
        src_colorspace="ITU601",
        src_color_range="JPEG" if full_range else "MPEG",
    ).to_ndarray()


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate counter-clockwise by `rotation` degrees (FFmpeg's display-matrix convention)."""
    quarter_turns = (rotation // 90) % 4
    if quarter_turns:
        image = np.rot90(image, k=quarter_turns)
    return np.ascontiguousarray(image)


def _normalise_rotation(degrees: float) -> int:
    """Display matrices carry any angle; frames can only be turned by quarter turns."""
    return int(round(degrees / 90.0)) * 90 % 360


# ---------------------------------------------------------------------------------------------
# VideoSource


class VideoSource:
    """Frames of a video file, stream URL or webcam, upright, BGR, with source timestamps.

    Iterate once (it is a stream, not a list): `for frame in source: ...` yields `DecodedFrame`
    objects for the frames with `start_s <= timestamp < end_s`, every `stride`-th of them.
    Opening decodes the first frame, so that a file without one fails here, with `InputError`,
    and so that the rotation (only known from decoded frames) fixes `width`/`height` up front.

    After iteration, `error` is None when the stream ended normally, or a one-line description
    when it broke; `broken_at` is then the number of source frames decoded before the break.
    """

    def __init__(
        self,
        source: str | int | os.PathLike[str],
        *,
        start_s: float | None = None,
        end_s: float | None = None,
        stride: int = 1,
        timeout_s: float = 5.0,
        threads: int = 0,
        frame_threads: bool = False,
    ) -> None:
        if stride < 1:
            raise ConfigError(f"stride must be at least 1, got {stride}")
        if end_s is not None and end_s <= (start_s or 0):
            raise ConfigError(f"end ({end_s:g} s) must be after start ({start_s or 0:g} s)")
        self.start_s = start_s if start_s and start_s > 0 else None
        self.end_s = end_s
        self.stride = stride
        self.error: str | None = None
        self.broken_at: int | None = None
        self.skipped_packets = 0
        self.frames_decoded = 0
        self._iterated = False

        self._container, self._name, self._kind, self._path = _open_container(source, timeout_s)
        try:
            self._stream = _pick_video_stream(self._container, self._name)
            # Frame threading decodes faster but silently drops the frames in flight when the
            # stream breaks, so it is opt-in; slice threading (the default) loses nothing.
            if frame_threads:
                self._stream.thread_type = "AUTO"
            if threads:
                self._stream.thread_count = threads
            self._time_base = self._stream.time_base or FALLBACK_TIME_BASE
            self._rate = self._stream.average_rate or None
            self._start_pts = self._stream.start_time or 0
            self._check_start_within_duration()
            seeked = self._seek_to_start()
            self._raw = self._raw_frames()
            self._first = self._first_frame(seeked)
            self._next_index = self._initial_index(seeked)
            self.info = self._describe()
        except BaseException:
            self._container.close()
            raise

    # -- opening helpers ------------------------------------------------------------------

    def _check_start_within_duration(self) -> None:
        """A start past the end would silently yield nothing; say so instead."""
        duration = self._duration_s()
        if self.start_s is not None and duration is not None and self.start_s >= duration:
            raise InputError(
                f"{self._name}: no video frame at or after {self.start_s:g} s "
                f"(duration {duration:.3f} s)"
            )

    def _seek_to_start(self) -> bool:
        """Seek near start_s when that is cheaper than decoding up to it.

        Frame indices after a seek are derived from timestamps, which needs a known rate; so
        streams without one (VFR webcams) and live inputs decode from where they are.
        """
        if self.start_s is None or self._kind != "file" or self._rate is None:
            return False
        target = self._start_pts + int(self.start_s / self._time_base)
        try:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError):
            return False  # unseekable: position unchanged, decode from the start
        return True

    def _first_frame(self, seeked: bool) -> av.VideoFrame:
        try:
            return next(self._raw)
        except StopIteration:
            if seeked:
                raise InputError(
                    f"{self._name}: no video frame at or after {self.start_s:g} s "
                    f"(duration {self._duration_s() or 0:.3f} s)"
                ) from None
            reason = f" ({self.error})" if self.error else ""
            raise InputError(f"{self._name}: no decodable video frames{reason}") from None

    def _initial_index(self, seeked: bool) -> int:
        if not seeked:
            return 0
        return self._index_from_pts(self._first.pts)

    def _index_from_pts(self, pts: int | None) -> int:
        if pts is None or self._rate is None:
            return 0
        return max(0, int(round((pts - self._start_pts) * self._time_base * self._rate)))

    def _duration_s(self) -> float | None:
        if self._stream.duration:
            return float(self._stream.duration * self._time_base)
        if self._container.duration:
            return self._container.duration / 1e6
        return None

    def _describe(self) -> VideoInfo:
        rotation = _normalise_rotation(self._first.rotation)
        coded_w, coded_h = self._first.width, self._first.height
        width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
        audio = _first_audio_stream(self._container)
        return VideoInfo(
            name=self._name,
            kind=self._kind,
            width=width,
            height=height,
            coded_width=coded_w,
            coded_height=coded_h,
            rate=self._rate,
            time_base=self._time_base,
            start_pts=self._start_pts,
            duration_s=self._duration_s(),
            frame_count=self._stream.frames or None,
            rotation=rotation,
            codec=self._stream.codec_context.name,
            container_format=self._container.format.name,
            has_audio=audio is not None,
            audio_codec=None if audio is None else audio.codec_context.name,
            path=self._path,
        )

    # -- decoding ---------------------------------------------------------------------------

    def _raw_frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in order; a read error ends the stream and is recorded, not raised.

        A packet the decoder rejects is skipped (counted), as FFmpeg itself does, because one
        damaged packet should not throw away the rest of a long video.
        """
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as error:
                self.error = f"read error: {_one_line(error)}"
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.skipped_packets += 1
                continue
            yield from frames

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._iterated:
            raise RuntimeError(f"{self._name}: a VideoSource can be iterated only once")
        self._iterated = True
        kept_in_range = 0
        last_pts: int | None = None
        index = self._next_index
        frames = self._frames_after_first()
        for raw in frames:
            pts = self._pts_of(raw, index, last_pts)
            last_pts = pts
            timestamp_s = float((pts - self._start_pts) * self._time_base)
            self.frames_decoded = index + 1
            if self.end_s is not None and timestamp_s >= self.end_s:
                return  # the end is a choice, not a break: no truncation check
            if self.start_s is None or timestamp_s >= self.start_s - 1e-9:
                if kept_in_range % self.stride == 0:
                    image = _upright(_to_bgr(raw), self.info.rotation)
                    yield DecodedFrame(index, pts, self._time_base, timestamp_s, image)
                kept_in_range += 1
            index += 1
        self._check_complete(index)

    def _frames_after_first(self) -> Iterator[av.VideoFrame]:
        yield self._first
        yield from self._raw

    def _pts_of(self, frame: av.VideoFrame, index: int, last_pts: int | None) -> int:
        """The frame's pts, or one derived from the previous pts / the index and the rate."""
        if frame.pts is not None:
            return int(frame.pts)
        step = 1 / ((self._rate or FALLBACK_RATE) * self._time_base)
        if last_pts is not None:
            return last_pts + max(1, int(round(step)))
        return self._start_pts + int(round(index * step))

    def _check_complete(self, decoded: int) -> None:
        """Flag a stream that stopped short of the frame count its header promised."""
        expected = self.info.frame_count
        if self.error is None and expected and decoded < expected - 1:
            self.error = f"ended early, {expected} frames expected"
        elif self.error is None and expected and self.skipped_packets and decoded < expected:
            self.error = f"{self.skipped_packets} undecodable packets"
        if self.error is not None:
            self.broken_at = decoded
            self.error = f"{self._name}: stream broke after {decoded} frames ({self.error})"

    # -- convenience --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @property
    def rate(self) -> Fraction | None:
        return self.info.rate

    @property
    def time_base(self) -> Fraction:
        return self.info.time_base

    @property
    def duration_s(self) -> float | None:
        return self.info.duration_s

    @property
    def frame_count(self) -> int | None:
        return self.info.frame_count

    @property
    def rotation(self) -> int:
        return self.info.rotation

    @property
    def has_audio(self) -> bool:
        return self.info.has_audio

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe(source: str | int | os.PathLike[str], timeout_s: float = 5.0) -> dict[str, Any]:
    """Summary of a video (size, rate, duration, rotation, audio...) as a plain dict."""
    with VideoSource(source, timeout_s=timeout_s) as video:
        return video.info.as_dict()


# ---------------------------------------------------------------------------------------------
# VideoSink


def _pick_encoder(candidates: Sequence[str]) -> tuple[str, str | None]:
    """(encoder name, note): the first encoder this FFmpeg build has; the note says when that
    is not the first choice, so the user learns why the output is not libx264 H.264."""
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):
            continue
        if name == candidates[0]:
            return name, None
        return name, f"{candidates[0]} is not available in this FFmpeg build; encoded with {name}"
    raise AeposeError(f"no usable video encoder among {', '.join(candidates)}")


def _even(n: int) -> int:
    return n + (n % 2)


@dataclass
class _AudioCopy:
    """Copies (or transcodes to AAC) the audio of a source file into the sink's container."""

    input: av.container.InputContainer
    in_stream: av.audio.stream.AudioStream
    out_stream: Any
    transcode: bool
    start_s: float | None
    end_s: float | None
    packets: Iterator[av.Packet] = field(init=False)
    pending: av.Packet | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.packets = self._packets_in_range()

    def _packets_in_range(self) -> Iterator[av.Packet]:
        time_base = self.in_stream.time_base
        if self.start_s is not None:
            target = int(self.start_s / time_base) + (self.in_stream.start_time or 0)
            try:
                self.input.seek(target, stream=self.in_stream, backward=True)
            except (av.error.FFmpegError, OSError):
                pass  # decode from the start; the range filter below still applies
        try:
            for packet in self.input.demux(self.in_stream):
                if packet.pts is None or packet.size == 0:
                    continue
                seconds = float(packet.pts * time_base)
                if self.start_s is not None and seconds < self.start_s - 1e-6:
                    continue
                if self.end_s is not None and seconds >= self.end_s:
                    return
                yield packet
        except (av.error.FFmpegError, OSError):
            return  # damaged audio ends the audio, never the video

    def seconds(self, packet: av.Packet) -> float:
        return float(packet.pts * self.in_stream.time_base)

    def close(self) -> None:
        self.input.close()


class VideoSink:
    """H.264/MP4 writer that keeps the source's time base and timestamps, and its audio.

    Frames are given as upright BGR uint8 arrays with their source `pts` (in `time_base`
    units). The output uses the same time base (MP4 may multiply the timescale by a power of
    two, which keeps every timestamp exactly), so frame rate, 29.97 and VFR survive. With
    `rebase=True` every timestamp (video and audio) is shifted so the first written frame is at
    0, which is what a trimmed (--start) or live run wants; otherwise pts are written unchanged.
    `audio_from` names a file whose first audio stream is copied (or transcoded to AAC when MP4
    cannot carry it), limited to `audio_start_s <= t < audio_end_s` in absolute source seconds.
    Odd sizes are padded with black to even ones (yuv420p needs them); `note` says so.
    Colours: BGR -> BT.601 limited-range YUV with OpenCV's rounding, tagged as such.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        time_base: Fraction | None,
        rate: Fraction | None = None,
        audio_from: str | os.PathLike[str] | None = None,
        audio_start_s: float | None = None,
        audio_end_s: float | None = None,
        rebase: bool = False,
        crf: int = 18,
        preset: str = "veryfast",
        encoders: Sequence[str] = VIDEO_ENCODER_PREFERENCE,
        keep_partial: bool = True,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base) if time_base else FALLBACK_TIME_BASE
        self.rate = Fraction(rate) if rate else None
        self.rebase = rebase
        self.keep_partial = keep_partial
        self.frames_written = 0
        self.pts_fixed = 0
        self._notes: list[str] = []
        self._origin_pts: int | None = None
        self._last_pts: int | None = None
        self._closed = False
        self._audio: _AudioCopy | None = None

        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path}: output folder {self.path.parent} does not exist")
        self.part_path = self.path.with_name(f"{self.path.name}.part-{secrets.token_hex(4)}.mp4")
        try:
            self._container = av.open(str(self.part_path), "w", format="mp4")
        except (av.error.FFmpegError, OSError) as error:
            raise ConfigError(f"{self.path}: cannot write ({_one_line(error)})") from None
        try:
            self._stream = self._add_video_stream(crf, preset, encoders)
            if audio_from is not None:
                self._audio = self._open_audio(Path(audio_from), audio_start_s, audio_end_s)
        except BaseException:
            self._discard()
            raise

    @classmethod
    def for_source(
        cls,
        path: str | os.PathLike[str],
        source: VideoSource | VideoInfo,
        *,
        copy_audio: bool = True,
        **options: Any,
    ) -> VideoSink:
        """A sink matching `source`: same display size, time base, rate, range and audio."""
        info = source.info if isinstance(source, VideoSource) else source
        start_s = source.start_s if isinstance(source, VideoSource) else None
        end_s = source.end_s if isinstance(source, VideoSource) else None
        stream_start_s = float(info.start_pts * info.time_base)
        audio_from = info.path if copy_audio and info.has_audio and info.path else None
        sink = cls(
            path,
            width=info.width,
            height=info.height,
            time_base=info.time_base,
            rate=info.rate,
            audio_from=audio_from,
            audio_start_s=None if start_s is None else start_s + stream_start_s,
            audio_end_s=None if end_s is None else end_s + stream_start_s,
            rebase=start_s is not None or info.kind != "file",
            **options,
        )
        if copy_audio and info.has_audio and info.path is None:
            sink._notes.append(f"audio of {info.kind} input {info.name} is not copied")
        return sink

    # -- setup --------------------------------------------------------------------------------

    def _add_video_stream(self, crf: int, preset: str, encoders: Sequence[str]) -> Any:
        name, note = _pick_encoder(encoders)
        if note:
            self._notes.append(note)
        self._coded_width, self._coded_height = _even(self.width), _even(self.height)
        if (self._coded_width, self._coded_height) != (self.width, self.height):
            self._notes.append(
                f"odd frame size {self.width}x{self.height} padded with black to "
                f"{self._coded_width}x{self._coded_height} for yuv420p"
            )
        options = {"crf": str(crf), "preset": preset} if name == "libx264" else {}
        stream = self._container.add_stream(name, rate=self.rate or FALLBACK_RATE, options=options)
        stream.width, stream.height = self._coded_width, self._coded_height
        stream.pix_fmt = "yuv420p"
        # Say which matrix the pixels use; untagged HD video is decoded as BT.709 by players.
        stream.codec_context.colorspace = 6  # SMPTE 170M (BT.601)
        stream.codec_context.color_primaries = 6
        stream.codec_context.color_trc = 6
        stream.codec_context.color_range = 1  # limited ("MPEG") range
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if name != "libx264":
            # Without crf, encoders default to a low bit rate; ~0.2 bit per pixel at 30 fps
            # keeps drawn skeletons crisp.
            stream.bit_rate = max(2_000_000, self._coded_width * self._coded_height * 6)
        return stream

    def _open_audio(
        self, source: Path, start_s: float | None, end_s: float | None
    ) -> _AudioCopy | None:
        try:
            audio_input = av.open(str(source))
        except (av.error.FFmpegError, OSError) as error:
            self._notes.append(f"audio not copied: cannot reopen {source} ({_one_line(error)})")
            return None
        in_stream = _first_audio_stream(audio_input)
        if in_stream is None:
            audio_input.close()
            return None
        try:
            return self._add_audio_stream(audio_input, in_stream, start_s, end_s)
        except (av.error.FFmpegError, ValueError) as error:
            audio_input.close()
            self._notes.append(f"audio not copied: {_one_line(error)}")  # video matters more
            return None

    def _add_audio_stream(
        self,
        audio_input: av.container.InputContainer,
        in_stream: av.audio.stream.AudioStream,
        start_s: float | None,
        end_s: float | None,
    ) -> _AudioCopy:
        codec = in_stream.codec_context.name
        transcode = not (
            codec in MP4_AUDIO_COPY_CODECS and codec in self._container.supported_codecs
        )
        if transcode:
            # A layout without channel order ("1 channels", e.g. PCM in MKV) is not one AAC
            # accepts; the default layout for that many channels is.
            channels = in_stream.codec_context.layout.nb_channels
            out_stream = self._container.add_stream(
                "aac",
                rate=in_stream.codec_context.sample_rate or 48000,
                layout=AAC_LAYOUTS.get(channels, "stereo"),
            )
            self._notes.append(f"audio transcoded from {codec} to aac")
        else:
            out_stream = self._container.add_stream_from_template(in_stream)
        return _AudioCopy(audio_input, in_stream, out_stream, transcode, start_s, end_s)

    # -- writing ------------------------------------------------------------------------------

    @property
    def note(self) -> str | None:
        """Human-readable notes on choices the sink had to make (encoder, padding, audio)."""
        return "; ".join(self._notes) if self._notes else None

    def write(self, image_bgr: np.ndarray, pts: int | None) -> None:
        """Encode one upright BGR frame at source timestamp `pts` (in the sink's time base).

        Non-increasing or missing pts (broken sources) are nudged one tick after the previous
        frame, because the encoder refuses them; `pts_fixed` counts how often.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: write after close")
        if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected HxWx3 uint8 BGR, got {image_bgr.dtype} {image_bgr.shape}")
        if image_bgr.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame is {image_bgr.shape[1]}x{image_bgr.shape[0]}, "
                f"sink is {self.width}x{self.height}"
            )
        out_pts = self._output_pts(pts)
        # OpenCV's BT.601 conversion rounds; swscale's truncates and darkens by ~3 levels.
        yuv = cv2.cvtColor(self._padded(image_bgr), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = out_pts
        frame.time_base = self.time_base
        self._mux_audio_until(float(out_pts * self.time_base) + AUDIO_LEAD_S)
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def _output_pts(self, pts: int | None) -> int:
        if pts is None:
            step = max(1, int(round(1 / ((self.rate or FALLBACK_RATE) * self.time_base))))
            pts = 0 if self._last_pts is None else self._last_pts + step
            if self._origin_pts is not None:
                pts += self._origin_pts
        if self._origin_pts is None:
            self._origin_pts = int(pts) if self.rebase else 0
        out = int(pts) - self._origin_pts
        if self._last_pts is not None and out <= self._last_pts:
            out = self._last_pts + 1
            self.pts_fixed += 1
        self._last_pts = out
        return out

    def _padded(self, image: np.ndarray) -> np.ndarray:
        if (self._coded_width, self._coded_height) == (self.width, self.height):
            return np.ascontiguousarray(image)
        canvas = np.zeros((self._coded_height, self._coded_width, 3), np.uint8)
        canvas[: self.height, : self.width] = image
        return canvas

    def _origin_s(self) -> float:
        return float((self._origin_pts or 0) * self.time_base)

    def _mux_audio_until(self, until_s: float | None) -> None:
        """Copy audio packets up to `until_s` (output time; None = all in range)."""
        audio = self._audio
        if audio is None or audio.done:
            return
        origin_s = self._origin_s()
        while True:
            packet = audio.pending if audio.pending is not None else next(audio.packets, None)
            audio.pending = None
            if packet is None:
                audio.done = True
                return
            seconds = audio.seconds(packet)
            if self.rebase and seconds < origin_s - 1e-6:
                continue  # a rebased output starts with its first video frame
            if until_s is not None and seconds - origin_s > until_s:
                audio.pending = packet
                return
            self._mux_audio_packet(audio, packet, origin_s)

    def _mux_audio_packet(self, audio: _AudioCopy, packet: av.Packet, origin_s: float) -> None:
        shift = int(round(origin_s / audio.in_stream.time_base))
        if not audio.transcode:
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = audio.out_stream
            self._container.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            return
        for frame in frames:
            if frame.pts is not None:
                seconds = float(frame.pts * frame.time_base) - origin_s
                frame.pts = int(round(seconds * frame.sample_rate))
                frame.time_base = Fraction(1, frame.sample_rate)
            self._container.mux(audio.out_stream.encode(frame))

    # -- finishing ----------------------------------------------------------------------------

    def close(self) -> Path | None:
        """Flush, finalise and move the file onto its final name; returns that path, or None
        when no frame was written (then no file is made: an empty MP4 would only mislead)."""
        if not self._closed:
            self._finish(complete=True)
        return self.path if self.frames_written else None

    def abort(self) -> None:
        """Finish after a failure: keep what was written (see module docstring)."""
        if not self._closed:
            self._finish(complete=False)

    def _finish(self, complete: bool) -> None:
        self._closed = True
        try:
            self._container.mux(self._stream.encode(None))
            if self.frames_written:
                self._mux_audio_until(None if complete else self._written_until_s())
            if self._audio is not None and self._audio.transcode:
                self._container.mux(self._audio.out_stream.encode(None))
        except BaseException:
            self._discard()
            raise
        finally:
            if self._audio is not None:
                self._audio.close()
        self._container.close()
        if self.frames_written and (complete or self.keep_partial):
            os.replace(self.part_path, self.path)
        else:
            self.part_path.unlink(missing_ok=True)

    def _written_until_s(self) -> float:
        return float((self._last_pts or 0) * self.time_base)

    def _discard(self) -> None:
        """Last resort when the container itself failed: close quietly, delete the part."""
        self._closed = True
        try:
            self._container.close()
        except (av.error.FFmpegError, OSError):
            pass
        self.part_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

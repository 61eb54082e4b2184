"""Video decoding through PyAV: files, stream URLs and webcams as upright BGR frames.

`VideoSource` turns a file, a stream URL or a webcam into upright BGR frames that carry their
source timestamps (the encoder in `encode.py` writes them back unchanged). No pose code lives here.

Broken input: opening problems (missing file, not media, no video stream, no decodable frame,
unreachable URL) raise `InputError` with one line naming the input. A stream that breaks
*after* frames were decoded does not raise: iteration stops after the last decodable frame and
`VideoSource.error` / `VideoSource.broken_at` say what happened, so the caller keeps what it
wrote and reports the break. Single undecodable packets in the middle are skipped (as FFmpeg
does) and counted in `VideoSource.skipped_packets`.
"""
from __future__ import annotations

import bisect
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from ..errors import ConfigError, InputError

# Used when a source has no usable time base (should not happen with FFmpeg, but cheap to cover).
FALLBACK_TIME_BASE = Fraction(1, 90000)
# Nominal rate handed to the encoder's rate control when the source does not know its rate.
FALLBACK_RATE = Fraction(30)

_STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")

# Only media, only the file named. A local video is opened through FFmpeg's `file` protocol
# alone (no `concat:`, `subfile:`, `pipe:`, network...) and with one of these demuxers, none of
# which opens another file or URL: an HLS or DASH playlist, a concat list, an image sequence
# (each names other files, which FFmpeg would read into the output; a FIFO among them would hang
# the run) are refused before FFmpeg reads past the probe. MP4's external data references are
# off (`enable_drefs` 0, FFmpeg's default, said explicitly).
VIDEO_DEMUXERS: tuple[str, ...] = (
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "mpeg", "mpegvideo",
    "flv", "asf", "ogg", "h264", "hevc", "m4v", "mjpeg", "yuv4mpegpipe", "nut", "dv", "ivf", "obu",
)
_FILE_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(VIDEO_DEMUXERS),
    "enable_drefs": "0",
}
# A stream URL the user gave may use network protocols only: never `file`, so that a remote
# playlist cannot name a local file.
_STREAM_PROTOCOLS = "http,https,tls,tcp,udp,rtp,srtp,rtsp,rtsps,rtmp,rtmps,rtmpt,rtmpts,rtmpe,rtmpte,srt,crypto,httpproxy"
# What a refused file that names other files begins with, for a message that says so.
_LIST_MAGIC = ((b"#EXTM3U", "an HLS playlist"), (b"ffconcat", "a concat list"), (b"<?xml", "an XML manifest (DASH?)"))


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


def one_line(error: BaseException) -> str:
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
            raise InputError(f"{name}: cannot open capture device ({one_line(error)})") from None
        return container, name, "webcam", None

    text = os.fspath(source)
    if _is_url(text):
        options = {"rw_timeout": str(int(timeout_s * 1e6)), "protocol_whitelist": _STREAM_PROTOCOLS}
        if text.lower().startswith(("rtsp", "http", "tcp", "udp")):
            # Socket timeout in microseconds; not for rtmp, where `timeout` means "listen".
            options["timeout"] = str(int(timeout_s * 1e6))
        try:
            container = av.open(text, options=options, timeout=(timeout_s, timeout_s))
        except (av.error.FFmpegError, OSError) as error:
            raise InputError(f"{text}: cannot open stream ({one_line(error)})") from None
        return container, text, "url", None

    path = Path(text)
    return open_media_file(path, timeout_s), str(path), "file", path


def open_media_file(path: Path, timeout_s: float = 5.0) -> av.container.InputContainer:
    """Open a local video file for reading, and only that file (see `VIDEO_DEMUXERS`).

    Checked with stat first, never by opening: a missing file, a folder, a FIFO, socket or
    device (opening a FIFO blocks until a writer comes), an empty file are one-line InputErrors;
    so is a format refused because it names other files (a playlist), or no media at all."""
    from .sources import check_regular_file

    check_regular_file(path, "video")
    if os.stat(path).st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        return av.open("file:" + os.path.abspath(path), options=dict(_FILE_OPTIONS), timeout=timeout_s)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        kind = _names_other_files(path)
        if kind is not None:
            raise InputError(f"{path}: {kind} names other files, which aepose does not open; give the video file itself") from None
        if getattr(error, "errno", None) == errno.EINVAL:  # a format FFmpeg knows, not among VIDEO_DEMUXERS
            raise InputError(
                f"{path}: not a video file aepose reads (its format is none of {', '.join(VIDEO_DEMUXERS[:12])}...)"
            ) from None
        raise InputError(f"{path}: not a readable video file ({one_line(error)})") from None


def _names_other_files(path: Path) -> str | None:
    """'an HLS playlist' (or another list format) when the file begins as one; else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    for magic, kind in _LIST_MAGIC:
        if head.startswith(magic):
            return kind
    return None


def media_comment(path: str | os.PathLike[str]) -> str | None:
    """The `comment` tag of a local media file (where aepose marks the MP4s it writes), or None
    when it has none or cannot be opened as media."""
    try:
        container = open_media_file(Path(path))
    except InputError:
        return None
    try:
        value = container.metadata.get("comment")
    finally:
        container.close()
    return value if isinstance(value, str) else None


def _pick_video_stream(
    container: av.container.InputContainer, name: str
) -> av.video.stream.VideoStream:
    """First real video stream; cover art (an `attached_pic` "video" stream) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise InputError(f"{name}: no video stream (streams: {', '.join(kinds)})")


def first_audio_stream(
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
        # Frames of the stream (packets read) that produced no picture: counted from the gaps
        # in the frame indices, which come from the packets' presentation times.
        self.undecodable_frames = 0
        self.first_undecodable: int | None = None
        self._packet_pts: list[int] = []
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
        """Index of the first decoded frame, from its timestamp: after a seek, and also from the
        start, where frames that did not decode (or are missing) before it keep their place."""
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
        audio = first_audio_stream(self._container)
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
                self.error = f"read error: {one_line(error)}"
                return
            if packet.pts is not None and packet.size:
                # Presentation times of every packet read: a frame's index is its rank among
                # them, so frames after undecodable ones keep their place in the stream.
                bisect.insort(self._packet_pts, int(packet.pts))
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
        # Index = offset + rank of the frame's pts among the packets read, where the offset maps
        # the first frame to its timestamp-derived index: frames lost before it or between
        # decoded ones (gaps in the ranks) keep their place and are counted.
        offset = 0
        if self._first.pts is not None and self._packet_pts:
            offset = index - bisect.bisect_left(self._packet_pts, int(self._first.pts))
        expected_next = 0 if self.start_s is None else index
        frames = self._frames_after_first()
        for raw in frames:
            if raw.pts is not None and self._packet_pts:
                index = max(index, offset + bisect.bisect_left(self._packet_pts, int(raw.pts)))
            if index > expected_next:
                self._count_undecodable(expected_next, index - expected_next)
            expected_next = index + 1
            pts = self._pts_of(raw, index, last_pts)
            last_pts = pts
            timestamp_s = float((pts - self._start_pts) * self._time_base)
            if self.end_s is not None and timestamp_s >= self.end_s:
                return  # the end is a choice, not a break: no truncation check
            if self.start_s is None or timestamp_s >= self.start_s - 1e-9:
                if kept_in_range % self.stride == 0:
                    image = _upright(_to_bgr(raw), self.info.rotation)
                    yield DecodedFrame(index, pts, self._time_base, timestamp_s, image)
                kept_in_range += 1
            index += 1
        # Frames lost after the last decoded one are not counted here: the header's frame count
        # reports them (`_check_complete`), as it does a stream cut short.
        self._check_complete(index)

    def _count_undecodable(self, first: int, count: int) -> None:
        self.undecodable_frames += count
        if self.first_undecodable is None:
            self.first_undecodable = first

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
        elif self.error is None and expected and self.skipped_packets and decoded < expected and not self.undecodable_frames:
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

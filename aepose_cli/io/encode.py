"""Video encoding through PyAV: H.264 in MP4 with the source's timestamps, written atomically.

`VideoSink` writes upright BGR frames with their source timestamps, so a 29.97 fps clip stays
30000/1001 and a variable-frame-rate clip stays variable; the source's audio is copied next to
them by `audio.py`.

Atomic output: `VideoSink` encodes into `<out>.part-<random>.mp4` next to `<out>` and
`os.replace`s it onto `<out>` on `close()`. When the run fails (an exception inside the `with`
block, or `abort()`), the partial file is still finalised into a playable MP4 holding every
frame written so far (audio up to its last frame) and, with `keep_partial=True` (default),
renamed to `<stem>.partial.mp4` (`partial_path`), never to `<out>`: nothing under the final
name looks complete when it is not; the caller reports the error. With no frame written, or
`keep_partial=False`, the part file is deleted. `<out>` is never touched by a failed run.
A write error of the file system (full disk, read-only) is an OutputError naming `<out>`, and
the part file is deleted.
"""
from __future__ import annotations

import functools
import io
import os
import re
import secrets
import threading
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.logging
import cv2
import numpy as np

from ..errors import AeposeError, ConfigError, OutputError
from .audio import AUDIO_LEAD_S, AudioCopy, open_audio_copy
from .decode import FALLBACK_RATE, FALLBACK_TIME_BASE, VideoInfo, VideoSource, one_line
from .output_paths import partial_name

# H.264 encoders to try, best first; the last one is not H.264 but every FFmpeg build has it.
VIDEO_ENCODER_PREFERENCE: tuple[str, ...] = ("libx264", "h264", "libopenh264", "mpeg4")


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


_X264_PROBE_LOCK = threading.Lock()


@functools.cache
def x264_capabilities_without_avx512() -> str | None:
    """The CPU capabilities libx264 detects on this machine, less AVX-512, as an `asm=` value;
    None where x264 uses no AVX-512 (then nothing is changed) or would not say.

    Why: x264's AVX-512 kernels make its output depend on memory it has not initialised (the
    same frames give other bytes under `MALLOC_PERTURB_`, or with malloc tuned otherwise, as a
    Ray worker's is), so two runs of one video on one AVX-512 machine could differ. Its other
    kernels do not. x264 names its capabilities in its start-up log line ("using cpu
    capabilities: MMX2 SSE2Fast ... AVX2 AVX512"); each name stands for a cumulative set of
    flags, so passing the names back without AVX512 keeps everything else it would use.
    Reading that line means raising PyAV's log level for the length of one encoder's opening,
    on this thread only, and putting it back.
    """
    try:
        av.codec.Codec("libx264", "w")
    except (av.error.FFmpegError, ValueError):
        return None
    with _X264_PROBE_LOCK:
        level = av.logging.get_level()
        av.logging.set_level(av.logging.INFO)
        try:
            with av.logging.Capture(local=True) as logs:
                with av.open(io.BytesIO(), "w", format="mp4") as container:
                    stream = container.add_stream("libx264", rate=30)
                    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
                    stream.codec_context.open()
        except (av.error.FFmpegError, ValueError, OSError):
            return None
        finally:
            av.logging.set_level(level)
    for _level, _name, message in logs:
        if message.startswith("using cpu capabilities:"):
            names = message.split(":", 1)[1].split()
            if "AVX512" not in names:
                return None
            kept = [name for name in names if name != "AVX512"]
            return ",".join(kept) if kept else None
    return None


def _reason(error: BaseException) -> str:
    from .output_plan import describe_os_error

    return describe_os_error(error) if isinstance(error, OSError) and error.errno else one_line(error)


def _even(n: int) -> int:
    return n + (n % 2)


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
        part_token: str | None = None,
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
        self._audio: AudioCopy | None = None

        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path}: output folder {self.path.parent} does not exist")
        if part_token is not None and re.fullmatch(r"[0-9a-f]{8}", part_token) is None:
            raise ValueError(f"part_token must be 8 lowercase hex digits, not {part_token!r}")
        # A caller that may run this video again after its process died (`--engine ray` retries)
        # passes one token for every attempt: the new attempt reuses the dead one's temporary.
        self.part_path = self.path.with_name(f"{self.path.name}.part-{part_token or secrets.token_hex(4)}.mp4")
        self.partial_path = partial_name(self.path)
        self.kept_partial: Path | None = None
        try:
            self._container = av.open(str(self.part_path), "w", format="mp4")
        except (av.error.FFmpegError, OSError) as error:
            raise OutputError(f"{self.path}: cannot write ({_reason(error)})") from None
        try:
            self._stream = self._add_video_stream(crf, preset, encoders)
            if audio_from is not None:
                self._audio = open_audio_copy(self._container, Path(audio_from), audio_start_s, audio_end_s, self._notes)
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
        if name == "libx264" and (capabilities := x264_capabilities_without_avx512()):
            options["x264-params"] = f"asm={capabilities}"  # deterministic output (see there)
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
        try:
            self._mux_audio_until(float(out_pts * self.time_base) + AUDIO_LEAD_S)
            self._container.mux(self._stream.encode(frame))
        except OSError as error:  # PyAV's errno errors are OSErrors too (full disk...)
            self._discard()
            raise OutputError(f"{self.path}: cannot write ({_reason(error)})") from None
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
        if self._audio is not None:
            self._audio.mux_until(self._container, until_s, self._origin_s(), self.rebase)

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
            if self._audio is not None:
                self._audio.flush(self._container)
            self._container.close()
        except OSError as error:
            self._discard()
            raise OutputError(f"{self.path}: cannot write ({_reason(error)})") from None
        except BaseException:
            self._discard()
            raise
        finally:
            if self._audio is not None:
                self._audio.close()
        if self.frames_written and complete:
            os.replace(self.part_path, self.path)
        elif self.frames_written and self.keep_partial:
            os.replace(self.part_path, self.partial_path)
            self.kept_partial = self.partial_path
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

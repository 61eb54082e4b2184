"""The source's audio in the annotated video: copied packet for packet, or transcoded to AAC.

MP4 carries the common codecs as they are; anything else (PCM, Vorbis...) is transcoded to AAC.
Packets are interleaved a little ahead of the last written video frame, limited to the range
of the video that was processed, and shifted with the video when its timestamps are rebased.
Damaged audio ends the audio, never the video.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from .decode import first_audio_stream, one_line

# Audio codecs that MP4 carries and common players play; anything else is transcoded to AAC.
MP4_AUDIO_COPY_CODECS: frozenset[str] = frozenset(
    {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}
)
# FFmpeg's default layout for each channel count AAC carries; more channels are downmixed.
AAC_LAYOUTS: dict[int, str] = {
    1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"
}

# How far ahead of the last written video frame the sink interleaves copied audio.
AUDIO_LEAD_S = 0.5


@dataclass
class AudioCopy:
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

    def mux_until(self, container: Any, until_s: float | None, origin_s: float, rebase: bool) -> None:
        """Mux packets up to `until_s` in output seconds (None: all in range) into `container`.

        `origin_s` is the source time of output time 0; a rebased output starts with its first
        video frame, so earlier audio is dropped.
        """
        if self.done:
            return
        while True:
            packet = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if packet is None:
                self.done = True
                return
            seconds = self.seconds(packet)
            if rebase and seconds < origin_s - 1e-6:
                continue
            if until_s is not None and seconds - origin_s > until_s:
                self.pending = packet
                return
            self._mux_packet(container, packet, origin_s)

    def _mux_packet(self, container: Any, packet: av.Packet, origin_s: float) -> None:
        shift = int(round(origin_s / self.in_stream.time_base))
        if not self.transcode:
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.out_stream
            container.mux(packet)
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
            container.mux(self.out_stream.encode(frame))

    def flush(self, container: Any) -> None:
        """Drain the AAC encoder (a copied stream has nothing buffered)."""
        if self.transcode:
            container.mux(self.out_stream.encode(None))


def open_audio_copy(
    container: Any, source: Path, start_s: float | None, end_s: float | None, notes: list[str]
) -> AudioCopy | None:
    """The first audio stream of `source` set up for `container`; None (with a note) when
    there is none or it cannot be copied: the video matters more."""
    from ..errors import InputError
    from .decode import open_media_file

    try:
        audio_input = open_media_file(source)
    except InputError as error:
        notes.append(f"audio not copied: cannot reopen {error}")
        return None
    in_stream = first_audio_stream(audio_input)
    if in_stream is None:
        audio_input.close()
        return None
    try:
        return _add_audio_stream(container, audio_input, in_stream, start_s, end_s, notes)
    except (av.error.FFmpegError, ValueError) as error:
        audio_input.close()
        notes.append(f"audio not copied: {one_line(error)}")
        return None


def _add_audio_stream(
    container: Any,
    audio_input: av.container.InputContainer,
    in_stream: av.audio.stream.AudioStream,
    start_s: float | None,
    end_s: float | None,
    notes: list[str],
) -> AudioCopy:
    codec = in_stream.codec_context.name
    transcode = not (codec in MP4_AUDIO_COPY_CODECS and codec in container.supported_codecs)
    if transcode:
        # A layout without channel order ("1 channels", e.g. PCM in MKV) is not one AAC
        # accepts; the default layout for that many channels is.
        channels = in_stream.codec_context.layout.nb_channels
        out_stream = container.add_stream(
            "aac",
            rate=in_stream.codec_context.sample_rate or 48000,
            layout=AAC_LAYOUTS.get(channels, "stereo"),
        )
        notes.append(f"audio transcoded from {codec} to aac")
    else:
        out_stream = container.add_stream_from_template(in_stream)
    return AudioCopy(audio_input, in_stream, out_stream, transcode, start_s, end_s)

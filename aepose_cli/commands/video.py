"""`aepose video`: frames from PyAV through the pipeline into an annotated MP4 and JSON.

The writer thread owns everything stateful and ordered: tracking, smoothing, drawing, the
encoder and the JSON writers, so frames leave in source order whatever the grouping pool does.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import DrawConfig
from ..console import err_console, progress, report_failures, stage_table
from ..errors import AeposeError, InputError, Interrupted
from ..estimator import PoseEstimator
from ..io.coco_json import CocoJsonWriter
from ..io.decode import VideoSource, source_kind
from ..io.encode import VideoSink
from ..io.jsonlines import JsonLinesWriter
from ..io.output_paths import OutputFlag, names_folder, resolve_output
from ..pipeline import WorkItem, run_pipeline
from .common import draw_and_write


@dataclass(frozen=True)
class VideoOptions:
    """What `aepose video` writes and which frames it reads.

    `out` / `json_out` follow the output-flag rule of `resolve_output` (None: default file,
    False: off); `jsonl_out` None is off, '-' is stdout. `smooth` implies `track`.
    """

    out: OutputFlag = None
    json_out: OutputFlag = None
    jsonl_out: str | None = None
    start: float | None = None
    end: float | None = None
    stride: int = 1
    track: bool = False
    smooth: bool = False
    progress: bool = True


def run_video(source: str, estimator, draw_cfg: DrawConfig, options: VideoOptions, model=None) -> None:
    """Run one video end to end; outputs are kept (and loadable) even if the stream breaks.

    `estimator` is a PoseEstimator or a function making one: it is called only after every
    output path has been checked (the output plan), so a clash costs no model load.
    Every writer is entered in one `ExitStack`, so each one's own `__exit__` decides: on
    success the MP4 and JSON are finalised; on an error or Ctrl-C the frames written so far
    are kept in `NAME.partial.mp4` (playable, audio up to the last of them; never under the
    final name), the COCO journal is deleted (a video run does not resume), the JSON lines are
    flushed, and the one-line error says how many frames were kept and where (exit 130 for
    Ctrl-C). `model` (a ModelChoice) lets the JSON record the checkpoint's sha256.
    """
    kind = source_kind(source)
    local = kind == "file"
    if local and not Path(source).exists():
        raise InputError(f"{source}: no such file")
    # Streams and webcams have no folder of their own: their outputs default to the cwd.
    anchor = source if local else _stream_stem(source, kind)
    default_dir = None if local else Path.cwd()
    json_out = options.json_out
    if isinstance(options.out, str) and names_folder(options.out):
        Path(options.out).mkdir(parents=True, exist_ok=True)  # as image and folder runs do
        if json_out is None:
            json_out = options.out  # --out DIR holds every output unless --json says otherwise
    video_path = resolve_output(options.out, anchor, ".mp4", default_dir=default_dir)
    json_path = resolve_output(json_out, anchor, ".json", default_dir=default_dir)
    _check_outputs(source if local else None, video_path, json_path, options.jsonl_out)
    if not isinstance(estimator, PoseEstimator):
        estimator = estimator()
    state: dict = {}
    try:
        _run(source, kind, local, estimator, draw_cfg, options, video_path, json_path, model, state)
    except KeyboardInterrupt:
        raise Interrupted("stopped" + _kept(state.get("sink"))) from None
    except AeposeError as error:
        kept = _kept(state.get("sink"))
        if not kept:
            raise
        try:
            told = type(error)(f"{error}{kept}")
        except TypeError:  # an error type with other constructor arguments: keep it as it is
            raise error from None
        raise told from None


def _kept(sink) -> str:
    """What a failed run kept: '; N frame(s) written so far are in X.partial.mp4' (or '')."""
    if sink is None or sink.kept_partial is None:
        return ""
    return f"; the {sink.frames_written} frame(s) written so far are in {sink.kept_partial} (audio up to the last of them)"


def _check_outputs(source, video_path, json_path, jsonl_out) -> None:
    """The output plan of a video run (see io/output_plan.py), before the model loads."""
    from ..io.coco_json import journal_path
    from ..io.encode import partial_name
    from ..io.output_plan import OutputPlan

    plan = OutputPlan()
    if source is not None:
        plan.add_input(source)
    plan.add_output(video_path, "--out")
    if video_path is not None:
        plan.add_output(partial_name(Path(video_path)), "partial video of --out")
    plan.add_output(json_path, "--json")
    if json_path is not None:
        plan.add_output(journal_path(json_path), "journal of --json")
    if jsonl_out and jsonl_out != "-":
        plan.add_output(jsonl_out, "--jsonl")
    plan.check()


def _run(source, kind, local, estimator, draw_cfg, options, video_path, json_path, model, state) -> None:
    from .common import provenance

    with contextlib.ExitStack() as stack:
        video_src = stack.enter_context(
            VideoSource(int(source) if kind == "webcam" else source, start_s=options.start, end_s=options.end, stride=options.stride)
        )
        sink = stack.enter_context(VideoSink.for_source(video_path, video_src)) if video_path is not None else None
        state["sink"] = sink
        coco = (
            stack.enter_context(CocoJsonWriter(
                json_path, "dataset", estimator.keypoints, draw_cfg.kpt_thr, keep_journal=False,
                provenance=None if model is None else provenance(source if local else None, [str(source)], model, estimator.config),
            ))
            if json_path is not None else None
        )
        lines = stack.enter_context(JsonLinesWriter(options.jsonl_out)) if options.jsonl_out else None
        frame_sink = _FrameSink(
            estimator, draw_cfg, sink, coco, lines,
            stem=Path(source).stem if local else _stream_stem(source, kind), source_name=video_src.name,
            track=options.track or options.smooth, smooth=options.smooth,
            fps=float(video_src.rate) if video_src.rate else 30.0,
        )
        total = _expected_frames(video_src, options.start, options.end, options.stride)
        items = (
            WorkItem(index=f.index, key=str(f.index), load=(lambda img=f.image_bgr: img), timestamp=f.timestamp_s, extra=f.pts)
            for f in video_src
        )
        with progress("frame", enabled=options.progress) as bar:
            task = bar.add_task(Path(str(source)).name[:40], total=total)
            times = run_pipeline(items, estimator, frame_sink, on_progress=lambda n: bar.advance(task, n))
    written = sink.close() if sink is not None else None  # already finished: returns its path
    if sink is not None and sink.note:
        err_console.print(f"note: {sink.note}")
    err_console.print(stage_table(times, "frame"))
    fps = times.items / times.wall if times.wall > 0 else 0.0
    err_console.print(f"{times.items} frame(s) in {times.wall:.1f} s ({fps:.2f} fps) on {estimator.config.device}")
    for path in (written, json_path):
        if path is not None:
            err_console.print(f"wrote {path}")
    report_failures(times.failures)
    if video_src.undecodable_frames:
        # Exit 1 ("some items failed"), as a folder run with unreadable images.
        print(
            f"aepose: warning: {video_src.name}: {video_src.undecodable_frames} frame(s) missing or "
            f"undecodable, the first at frame {video_src.first_undecodable}; the other frames keep "
            "their stream index and timestamp",
            file=sys.stderr,
        )
    if video_src.error:
        print(f"aepose: error: {video_src.error}; every frame before it was written", file=sys.stderr)
        sys.exit(1)
    if video_src.undecodable_frames:
        sys.exit(1)


def _stream_stem(source: str, kind: str) -> str:
    if kind == "webcam":
        return f"webcam{source}"
    tail = source.rstrip("/").rsplit("/", 1)[-1] or "stream"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tail.split("?")[0]) or "stream"


def _expected_frames(src: VideoSource, start, end, stride) -> int | None:
    count = src.frame_count
    rate = src.rate
    if count is None:
        return None
    first = int(round((start or 0) * float(rate))) if rate and start else 0
    last = min(count, int(round(end * float(rate)))) if rate and end else count
    return max(0, (last - first + stride - 1) // stride)


class _FrameSink:
    """Tracking, smoothing, drawing, encoding and JSON for each frame, in source order."""

    def __init__(self, estimator, draw_cfg, video_sink, coco, lines, *, stem, track, smooth, fps: float = 30.0, source_name: str = "") -> None:
        self.keypoints = estimator.keypoints
        self.draw_cfg = draw_cfg
        self.video_sink = video_sink
        self.coco = coco
        self.lines = lines
        self.stem = stem
        self.source_name = source_name
        self.tracker = None
        self.smoother = None
        if track:
            from ..tracking import PoseTracker

            self.tracker = PoseTracker(self.keypoints)
        if smooth:
            from ..tracking import KeypointSmoother

            self.smoother = KeypointSmoother(fps=fps)

    def write(self, item, image, result) -> None:
        result.source = self.source_name  # the video, not the frame's key (`index` has that)
        if self.tracker is not None:
            result.poses = self.tracker.update(result.poses)
        if self.smoother is not None and result.timestamp is not None:
            result.poses = self.smoother.update(result.poses, result.timestamp)
        if self.video_sink is not None:
            draw_and_write(
                lambda drawn: self.video_sink.write(drawn, item.extra),
                image, result.poses, self.keypoints, self.draw_cfg, result.timings,
            )
        if self.coco is not None:
            self.coco.add(result, file_name=f"{self.stem}_{item.index:06d}.jpg", image_id=item.index + 1, key=item.key)
        if self.lines is not None:
            self.lines.add(result)

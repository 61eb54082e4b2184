"""`aepose video`: frames from PyAV through the pipeline into an annotated MP4 and JSON.

The writer thread owns everything stateful and ordered: tracking, smoothing, drawing, the
encoder and the JSON writers, so frames leave in source order whatever the grouping pool does.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .config import DrawConfig
from .errors import InputError
from .estimator import PoseEstimator
from .io.outputs import CocoJsonWriter, JsonLinesWriter, resolve_output
from .io.video import VideoSink, VideoSource
from .pipeline import WorkItem, run_pipeline


def _source_arg(source: str) -> str | int:
    return int(source) if source.isdigit() else source


def _is_local_file(source: str) -> bool:
    return not source.isdigit() and "://" not in source


def run_video(
    source: str,
    estimator: PoseEstimator,
    draw_cfg: DrawConfig,
    *,
    out,
    json_out,
    jsonl_out,
    start,
    end,
    stride,
    track: bool,
    smooth: bool,
    console,
    progress_factory,
    stage_table,
    report_failures,
) -> None:
    """Run one video end to end; outputs are kept (and loadable) even if the stream breaks."""
    if _is_local_file(source) and not Path(source).exists():
        raise InputError(f"{source}: no such file")
    # Streams and webcams have no folder of their own: their outputs default to the cwd.
    anchor = source if _is_local_file(source) else f"{_stream_stem(source)}"
    default_dir = None if _is_local_file(source) else Path.cwd()
    video_path = resolve_output(out, anchor, ".mp4", default_dir=default_dir)
    json_path = resolve_output(json_out, anchor, ".json", default_dir=default_dir)
    video_src = VideoSource(_source_arg(source), start_s=start, end_s=end, stride=stride)
    sink = None
    writers = []
    try:
        if video_path is not None:
            sink = VideoSink.for_source(video_path, video_src)
        coco = CocoJsonWriter(json_path, "dataset", estimator.keypoints, draw_cfg.kpt_thr) if json_path else None
        lines = JsonLinesWriter(jsonl_out) if jsonl_out else None
        writers = [w for w in (coco, lines) if w is not None]
        frame_sink = _FrameSink(
            estimator, draw_cfg, sink, coco, lines, _stem(source), track, smooth,
            fps=float(video_src.rate) if video_src.rate else 30.0,
        )
        total = _expected_frames(video_src, start, end, stride)
        items = (
            WorkItem(index=f.index, key=str(f.index), load=(lambda img=f.image_bgr: img), timestamp=f.timestamp_s, extra=f.pts)
            for f in video_src
        )
        with progress_factory("frame") as progress:
            task = progress.add_task(Path(str(source)).name[:40], total=total)
            times = run_pipeline(items, estimator, frame_sink, on_progress=lambda n: progress.advance(task, n))
    except BaseException:
        for w in writers:
            if isinstance(w, CocoJsonWriter):
                w.abort()  # the journal (JSON lines) stays, loadable
            else:
                w.close()
        if sink is not None:
            sink.close()  # finalises a playable file with every frame written so far
        video_src.close()
        raise
    for w in writers:
        w.close()
    written = sink.close() if sink is not None else None
    video_src.close()
    if sink is not None and sink.note:
        console.print(f"note: {sink.note}")
    console.print(stage_table(times, "frame"))
    fps = times.items / times.wall if times.wall > 0 else 0.0
    console.print(f"{times.items} frame(s) in {times.wall:.1f} s ({fps:.2f} fps)")
    for path in (written, json_path):
        if path is not None:
            console.print(f"wrote {path}")
    report_failures(times.failures)
    if video_src.error:
        print(f"aepose: error: {video_src.error}; every frame before it was written", file=sys.stderr)
        sys.exit(1)


def _stem(source: str) -> str:
    return Path(source).stem if _is_local_file(source) else _stream_stem(source)


def _stream_stem(source: str) -> str:
    if source.isdigit():
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

    def __init__(self, estimator, draw_cfg, video_sink, coco, lines, stem, track, smooth, fps: float = 30.0) -> None:
        from .draw import draw_poses

        self.draw_poses = draw_poses
        self.keypoints = estimator.keypoints
        self.draw_cfg = draw_cfg
        self.video_sink = video_sink
        self.coco = coco
        self.lines = lines
        self.stem = stem
        self.tracker = None
        self.smoother = None
        if track:
            from .tracking import PoseTracker

            self.tracker = PoseTracker(self.keypoints)
        if smooth:
            from .tracking import KeypointSmoother

            self.smoother = KeypointSmoother(fps=fps)

    def write(self, item, image, result, times) -> None:
        if self.tracker is not None:
            result.poses = self.tracker.update(result.poses)
        if self.smoother is not None and result.timestamp is not None:
            result.poses = self.smoother.update(result.poses, result.timestamp)
        if self.video_sink is not None:
            t0 = time.perf_counter()
            drawn = self.draw_poses(image, result.poses, self.keypoints, self.draw_cfg)
            t1 = time.perf_counter()
            self.video_sink.write(drawn, item.extra)
            times.add("draw", t1 - t0)
            times.add("encode", time.perf_counter() - t1)
        if self.coco is not None:
            self.coco.add(result, file_name=f"{self.stem}_{item.index:06d}.jpg", image_id=item.index + 1, key=item.key)
        if self.lines is not None:
            self.lines.add(result)

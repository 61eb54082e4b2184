"""`aepose video`: frames from PyAV through the pipeline into an annotated MP4 and JSON.

The writer thread owns everything stateful and ordered: tracking, smoothing, drawing, the
encoder and the JSON writers, so frames leave in source order whatever the grouping pool does.

Three layers, so that another engine (Ray) can reuse the middle one:

* `expand_sources` + `plan_videos`: the command line's sources (files, folders, patterns, one
  stream) become `VideoJob`s, each with every path it will write; the whole plan is checked
  before any model loads;
* `process_video`: ONE job with an already-built estimator; it prints nothing but the progress
  bar it is given and returns a `VideoOutcome` (frames, failures, warnings, paths written);
* `run_video` (one video, the messages and exit codes of a single-video run) and `run_videos`
  (several: one progress display, failures reported at the end, exit 1 if any failed).
"""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import DrawConfig, InferenceConfig
from ..console import err_console, progress, report_failures, stage_table
from ..errors import AeposeError, ConfigError, InputError, Interrupted, with_context
from ..estimator import PoseEstimator
from ..io.coco_json import CocoJsonWriter
from ..io.decode import VideoSource, source_kind
from ..io.encode import VideoSink, partial_name
from ..io.jsonlines import JsonLinesWriter
from ..io.output_paths import OutputFlag, names_folder, resolve_output
from ..pipeline import run_pipeline
from ..types import StageTimes, WorkItem
from .common import draw_and_write


@dataclass(frozen=True)
class VideoOptions:
    """What `aepose video` writes and which frames it reads.

    `out` / `json_out` follow the output-flag rule of `resolve_output` (None: default file,
    False: off); `jsonl_out` None is off, '-' is stdout. `smooth` implies `track`.
    `skip_existing`: skip videos whose outputs a run with the same settings finished, restart
    half-done ones (or resume them exactly where that is possible, see `resumable`).
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
    skip_existing: bool = False
    # Names the encoder's temporary MP4 (`VideoSink(part_token=...)`); None: a random one.
    # `--engine ray` gives each run one token, so a video retried after its worker died
    # overwrites the dead attempt's temporary instead of leaving it beside the output.
    part_token: str | None = None


@dataclass(frozen=True)
class VideoJob:
    """One video of a run and every path it writes (None: that output is off)."""

    source: str
    kind: str  # "file", "url" or "webcam" (`io.decode.source_kind`)
    video_path: Path | None
    json_path: Path | None
    jsonl_out: str | None  # a file, '-' (stdout) or None

    @property
    def local(self) -> bool:
        return self.kind == "file"

    @property
    def stem(self) -> str:
        """The name frames get in the JSON (`STEM_000012.jpg`)."""
        return Path(self.source).stem if self.local else _stream_stem(self.source, self.kind)


@dataclass
class VideoOutcome:
    """What `process_video` did with one video.

    `error` is the exception that stopped the video before or while it ran (it could not be
    opened, say), with what was kept in its message; `broken` the one line of a stream that
    broke off (every frame before it was written); `warnings` one line each (frames that did
    not decode); `failures` the (key, reason) of frames the pipeline could not process.
    """

    job: VideoJob
    frames: int = 0
    times: StageTimes | None = None
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    broken: str | None = None
    error: AeposeError | None = None
    skipped: bool = False
    resumed_frames: int = 0

    @property
    def failed(self) -> bool:
        """Exit 1 material: not opened, broken off, frames that failed or did not decode."""
        return self.error is not None or self.broken is not None or bool(self.failures) or bool(self.warnings)

    def reason(self) -> str:
        """One line naming the video: why it counts as failed."""
        if self.error is not None:
            return str(self.error)
        if self.broken is not None:
            return f"{self.broken}; every frame before it was written"
        if self.failures:
            return f"{self.job.source}: {len(self.failures)} frame(s) failed, the first: {self.failures[0][1]}"
        return self.warnings[0] if self.warnings else f"{self.job.source}: done"


# ---------------------------------------------------------------------------------------------
# sources and the output plan


def expand_sources(args: list[str], *, recursive: bool = False) -> list[str]:
    """The videos the command-line arguments name, in order: a file as given; a folder's video
    files (`io.sources.VIDEO_EXTENSIONS`, sorted by relative path, sub-folders with
    `recursive`); a pattern the shell did not expand ('clips/*.mp4', sorted; `**` with
    `recursive`), without this tool's own outputs; a stream URL or webcam index alone.

    Raises InputError (a missing file, a folder without videos, a pattern matching nothing) and
    ConfigError (a stream mixed with other sources, the same file named twice), before any
    model loads.
    """
    from ..io.output_plan import real
    from ..io.sources import is_own_output, list_videos

    videos: list[str] = []
    for arg in args:
        kind = source_kind(arg)
        if kind != "file":
            videos.append(arg)
            continue
        path = Path(arg)
        if path.is_dir():
            videos += [str(p) for p in list_videos(path, recursive=recursive)]
        elif not os.path.lexists(arg) and any(c in arg for c in "*?["):
            matches = sorted(
                p for p in glob.glob(arg, recursive=recursive) if os.path.isfile(p) and not is_own_output(p)
            )
            if not matches:
                raise InputError(f"{arg}: no video file matches this pattern")
            videos += matches
        elif not path.exists():
            raise InputError(f"{arg}: no such file")
        else:
            videos.append(arg)
    streams = [v for v in videos if source_kind(v) != "file"]
    if streams and len(videos) > 1:
        raise ConfigError(f"{streams[0]}: a stream or webcam is read alone; give it in a command of its own")
    seen: dict[str, str] = {}
    for video in videos:
        if source_kind(video) != "file":
            continue
        key = real(video)
        if key in seen:
            raise ConfigError(f"{video}: given twice (as {seen[key]} too); give each video once")
        seen[key] = video
    return videos


def plan_videos(sources: list[str], options: VideoOptions) -> list[VideoJob]:
    """Every output path of every video, decided by the output rule and checked together
    (io/output_plan.py) before any model loads: no output may be an input or another output
    (`a/clip.mp4` and `b/clip.mp4` into one `--out DIR/` are refused, naming both).
    With several videos `--out`, `--json` and `--jsonl` must name folders (`--jsonl -` too)."""
    from ..io.coco_json import journal_path
    from ..io.output_plan import OutputPlan

    several = len(sources) > 1
    if several:
        for flag, value in (("--out", options.out), ("--json", options.json_out), ("--jsonl", options.jsonl_out)):
            if isinstance(value, (str, os.PathLike)) and os.fspath(value) != "-" and not names_folder(value):
                hint = " or '-' for standard output" if flag == "--jsonl" else ""
                raise ConfigError(f"{flag} {value}: several videos need a folder (end it with '/'){hint}")
    jobs = [_job(source, options) for source in sources]
    plan = OutputPlan()
    for job in jobs:
        if job.local:
            plan.add_input(job.source)
    for job in jobs:
        of = f" of {job.source}" if several else ""
        plan.add_output(job.video_path, f"annotated video{of}" if several else "--out")
        if job.video_path is not None:
            plan.add_output(partial_name(job.video_path), f"partial video{of}" if several else "partial video of --out")
        plan.add_output(job.json_path, f"JSON{of}" if several else "--json")
        if job.json_path is not None:
            plan.add_output(journal_path(job.json_path), f"journal of the JSON{of}" if several else "journal of --json")
        if job.jsonl_out and job.jsonl_out != "-":
            plan.add_output(job.jsonl_out, f"--jsonl{of}")
    plan.check()
    return jobs


def _job(source: str, options: VideoOptions) -> VideoJob:
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
    jsonl = options.jsonl_out
    if jsonl and jsonl != "-" and names_folder(jsonl):
        jsonl = str(resolve_output(jsonl, anchor, ".jsonl", default_dir=default_dir))
    return VideoJob(
        source=source,
        kind=kind,
        video_path=resolve_output(options.out, anchor, ".mp4", default_dir=default_dir),
        json_path=resolve_output(json_out, anchor, ".json", default_dir=default_dir),
        jsonl_out=jsonl,
    )


# ---------------------------------------------------------------------------------------------
# what made an output, and whether it is finished


def base_provenance(model, config: InferenceConfig) -> dict:
    """The part of the provenance shared by every video of a run (hashes the checkpoint once)."""
    from .common import provenance

    return provenance(None, [], model, config)


def job_provenance(base: dict, job: VideoJob, options: VideoOptions, draw_cfg: DrawConfig, batch_size: int) -> dict:
    """What produced a video's JSON: the common part, the video's own file, and every option
    that changes its frames or poses (the batch size only matters to an exact resume: frames
    are batched consecutively, and another batch composition rounds differently)."""
    return {
        **base,
        "input_root": os.path.realpath(job.source) if job.local else None,
        "inputs": [str(job.source)],
        "video": {
            "start": options.start, "end": options.end, "stride": options.stride,
            "track": bool(options.track or options.smooth), "smooth": options.smooth,
            "kpt_thr": draw_cfg.kpt_thr, "radius": draw_cfg.radius, "thickness": draw_cfg.thickness,
            "batch_size": batch_size,
        },
    }


def _comparable(produced_by: dict) -> dict:
    """Provenance fields that decide whether a finished output is this run's: not the input as
    typed (`./a.mp4` and `a.mp4` are one file: `input_root` holds its real path), not the
    batch size (it changes the pace; poses only by float rounding)."""
    video = {k: v for k, v in (produced_by.get("video") or {}).items() if k != "batch_size"}
    return {**produced_by, "inputs": None, "video": video}


def finished_state(job: VideoJob, produced_by: dict | None) -> str:
    """'finished' (every output there, made by a run with these settings), 'half-done' (a
    partial video or a journal left by a stopped run), or 'new'. ConfigError when a finished
    JSON was made by another run (other checkpoint, settings or range), as `folder` does."""
    import json

    from ..io.coco_json import _header_mismatch, is_complete, journal_path

    outputs = [p for p in (job.video_path, job.json_path) if p is not None]
    if job.video_path is not None and partial_name(job.video_path).exists():
        return "half-done"
    if job.json_path is not None and journal_path(job.json_path).exists():
        return "half-done"
    if not outputs or not all(Path(p).is_file() for p in outputs):
        return "new"
    if job.json_path is None or produced_by is None:
        return "finished"  # an MP4 alone records nothing to check: its presence is all there is
    if not is_complete(job.json_path):
        return "half-done"
    try:
        data = json.loads(Path(job.json_path).read_text(encoding="utf-8"))
        made_by = data["info"]["aepose"]
        if not isinstance(made_by, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{job.json_path}: finished without a record of what produced it; pass another --json or run without --skip-existing"
        ) from None
    header = {"aepose_journal": 0, "keypoint_set": 0, "num_joints": 0, "style": 0}
    reason = _header_mismatch({**header, "provenance": _comparable(made_by)}, {**header, "provenance": _comparable(produced_by)})
    if reason is not None:
        raise ConfigError(f"{job.json_path}: made by another run ({reason}); pass another --json or run without --skip-existing")
    return "finished"


def resumable(job: VideoJob, options: VideoOptions) -> bool:
    """Whether a stopped run of this job can be resumed exactly from its COCO journal: JSON only
    (no MP4 to continue), no tracking or smoothing (their state depends on every earlier frame),
    no --jsonl (written from scratch)."""
    return job.video_path is None and job.json_path is not None and job.jsonl_out is None and not (options.track or options.smooth)


# ---------------------------------------------------------------------------------------------
# one video


def process_video(
    job: VideoJob,
    estimator: PoseEstimator,
    draw_cfg: DrawConfig,
    options: VideoOptions,
    *,
    produced_by: dict | None = None,
    bar=None,
    resume: bool = False,
) -> VideoOutcome:
    """Run one planned video with a built estimator; print nothing but progress.

    Returns the outcome. A video that cannot be opened (not a video, truncated, no frames)
    becomes `outcome.error` and writes nothing; a stream that breaks off keeps every frame
    before the break (`outcome.broken`). Other errors (an output that cannot be written, ...)
    are raised, with what was kept in the message, as Ctrl-C is (`Interrupted`).
    Every writer is entered in one `ExitStack`, so each one's own `__exit__` decides: on
    success the MP4 and JSON are finalised; on an error or Ctrl-C the frames written so far
    are kept in `NAME.partial.mp4` (playable, audio up to the last of them; never under the
    final name), the COCO journal is deleted unless the job can resume exactly (`resumable`:
    then it is kept for `--skip-existing`), the JSON lines are flushed.
    `bar`: a rich Progress to add this video's frames task to (default: a bar of its own,
    as `options.progress` says). `resume`: continue the job's journal (`resumable` jobs only).
    """
    outcome = VideoOutcome(job)
    state: dict = {}
    keep_journal = resumable(job, options)
    if resume and keep_journal:
        from ..io.coco_json import trim_journal

        # Batches are consecutive groups of `batch_size` frames: continuing after a whole number
        # of them gives every later frame the batch it had in an uninterrupted run.
        trim_journal(job.json_path, lambda frames: frames // estimator.config.batch_size * estimator.config.batch_size)
    try:
        _run(job, estimator, draw_cfg, options, produced_by, bar, resume and keep_journal, keep_journal, state, outcome)
    except KeyboardInterrupt:
        raise Interrupted("stopped" + _kept(state)) from None
    except AeposeError as error:
        error = with_context(error, _kept(state))
        if isinstance(error, InputError) and state.get("opened") is None:
            outcome.error = error  # could not be opened: nothing written, the others go on
            return outcome
        raise error from None
    return outcome


def _kept(state: dict) -> str:
    """What a failed run kept: '; N frame(s) written so far are in X.partial.mp4' (or ''), and
    the journal of a resumable run."""
    sink, coco = state.get("sink"), state.get("coco")
    parts = []
    if sink is not None and sink.kept_partial is not None:
        parts.append(f"; the {sink.frames_written} frame(s) written so far are in {sink.kept_partial} (audio up to the last of them)")
    if coco is not None and coco.keep_journal and coco.frames and coco.journal_path.exists():
        parts.append(f"; the {coco.frames} frame(s) done are kept in {coco.journal_path.name}: run again with --skip-existing to finish")
    return "".join(parts)


def _run(job, estimator, draw_cfg, options, produced_by, bar, resume, keep_journal, state, outcome) -> None:
    with contextlib.ExitStack() as stack:
        video_src = stack.enter_context(
            VideoSource(
                int(job.source) if job.kind == "webcam" else job.source, start_s=options.start, end_s=options.end, stride=options.stride,
            )
        )
        state["opened"] = video_src
        sink = stack.enter_context(VideoSink.for_source(job.video_path, video_src, part_token=options.part_token)) if job.video_path is not None else None
        state["sink"] = sink
        coco = (
            stack.enter_context(CocoJsonWriter(
                job.json_path, "dataset", estimator.keypoints, draw_cfg.kpt_thr, keep_journal=keep_journal,
                resume=resume, provenance=produced_by,
            ))
            if job.json_path is not None else None
        )
        state["coco"] = coco
        lines = stack.enter_context(JsonLinesWriter(job.jsonl_out)) if job.jsonl_out else None
        frame_sink = _FrameSink(
            estimator, draw_cfg, sink, coco, lines,
            stem=job.stem, source_name=video_src.name,
            track=options.track or options.smooth, smooth=options.smooth,
            fps=float(video_src.rate) if video_src.rate else 30.0,
        )
        total = _expected_frames(video_src, options.start, options.end, options.stride)
        done = coco.finished_sources() if (resume and coco is not None) else frozenset()
        outcome.resumed_frames = len(done)
        items = (
            WorkItem(index=f.index, key=str(f.index), load=(lambda img=f.image_bgr: img), timestamp=f.timestamp_s, extra=f.pts)
            for f in video_src
            if str(f.index) not in done
        )
        if total is not None:
            total = max(0, total - len(done))
        with contextlib.ExitStack() as shown:
            own = bar is None
            if own:
                bar = shown.enter_context(progress("frame", enabled=options.progress))
            task = bar.add_task(Path(str(job.source)).name[:40], total=total)
            try:
                times = run_pipeline(items, estimator, frame_sink, on_progress=lambda n: bar.advance(task, n))
            finally:
                if not own:
                    bar.remove_task(task)
    outcome.times = times
    outcome.frames = times.items
    outcome.failures = list(times.failures)
    written = sink.close() if sink is not None else None  # already finished: returns its path
    if sink is not None and sink.note:
        outcome.notes.append(sink.note)
    outcome.written = [p for p in (written, job.json_path) if p is not None]
    if video_src.undecodable_frames:
        outcome.warnings.append(
            f"{video_src.name}: {video_src.undecodable_frames} frame(s) missing or "
            f"undecodable, the first at frame {video_src.first_undecodable}; the other frames keep "
            "their stream index and timestamp"
        )
    if video_src.error:
        outcome.broken = video_src.error


def remove_leftovers(job: VideoJob) -> None:
    """After a restarted video finished: the partial MP4 and encoder temporaries of the run that
    was stopped are obsolete (the finished files replaced them by rename)."""
    if job.video_path is None or not job.video_path.is_file():
        return  # nothing finished replaced them: what the stopped run kept stays
    partial_name(job.video_path).unlink(missing_ok=True)
    for stale in job.video_path.parent.glob(f"{glob.escape(job.video_path.name)}.part-*.mp4"):
        stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# the command


def run_video(
    source: str, estimator, draw_cfg: DrawConfig, options: VideoOptions, model=None, *, config: InferenceConfig | None = None,
) -> None:
    """Run one video end to end; outputs are kept (and loadable) even if the stream breaks.

    `estimator` is a PoseEstimator or a function making one: it is called only after every
    output path has been checked (the output plan), so a clash costs no model load.
    On an error or Ctrl-C the frames written so far are kept in `NAME.partial.mp4` and the
    one-line error says how many frames were kept and where (exit 130 for Ctrl-C). `model`
    (a ModelChoice) lets the JSON record the checkpoint's sha256; `config` lets
    `--skip-existing` decide before the model loads.
    """
    (job,) = plan_videos([source], options)
    skips, resume, base = _skips([job], estimator, draw_cfg, options, model, config)
    if skips:
        return
    resume = bool(resume)
    if not isinstance(estimator, PoseEstimator):
        estimator = estimator()
    if model is not None and base is None:
        base = base_provenance(model, estimator.config)
    produced_by = None if base is None else job_provenance(base, job, options, draw_cfg, estimator.config.batch_size)
    outcome = process_video(job, estimator, draw_cfg, options, produced_by=produced_by, resume=resume)
    if outcome.error is not None:
        raise outcome.error
    if options.skip_existing:
        remove_leftovers(job)
    times = outcome.times
    for note in outcome.notes:
        err_console.print(f"note: {note}")
    if outcome.resumed_frames:
        err_console.print(f"resumed: {outcome.resumed_frames} frame(s) were done by the stopped run")
    err_console.print(stage_table(times, "frame"))
    fps = times.items / times.wall if times.wall > 0 else 0.0
    err_console.print(f"{times.items} frame(s) in {times.wall:.1f} s ({fps:.2f} fps) on {estimator.config.device}")
    for path in outcome.written:
        err_console.print(f"wrote {path}")
    report_failures(outcome.failures)
    for warning in outcome.warnings:
        # Exit 1 ("some items failed"), as a folder run with unreadable images.
        print(f"aepose: warning: {warning}", file=sys.stderr)
    if outcome.broken:
        print(f"aepose: error: {outcome.broken}; every frame before it was written", file=sys.stderr)
        sys.exit(1)
    if outcome.warnings:
        sys.exit(1)


def run_videos(
    args: list[str], estimator, draw_cfg: DrawConfig, options: VideoOptions, model=None, *,
    config: InferenceConfig | None = None, recursive: bool = False, engine=None,
) -> None:
    """`aepose video SRC...`: files, folders and patterns (see `expand_sources`).

    One video runs as `run_video` (its messages and exit codes). Several share one model and
    one progress display (videos, and the current video's frames); a video that cannot be read
    or breaks off does not stop the others and is named on one line at the end (exit 1).
    With `skip_existing`, finished videos are skipped with a one-line note and half-done ones
    restarted (or resumed, where exact) before the model loads.
    """
    on_ray = engine is not None and engine.engine == "ray"
    if on_ray:
        from .common import require_engine

        require_engine(engine)
    sources = expand_sources(args, recursive=recursive)
    if on_ray:
        streams = [s for s in sources if source_kind(s) != "file"]
        if streams:
            raise ConfigError(f"{streams[0]}: a stream or webcam is read by this process; run it without --engine ray")
    elif len(sources) == 1:
        run_video(sources[0], estimator, draw_cfg, options, model, config=config)
        return
    jobs = plan_videos(sources, options)
    skips, resume, base = _skips(jobs, estimator, draw_cfg, options, model, config)
    todo = [i for i in range(len(jobs)) if i not in skips]
    if not todo:
        err_console.print(f"all {len(jobs)} videos are finished; nothing to do")
        return
    if on_ray:
        _run_videos_on_ray(jobs, todo, resume, base, draw_cfg, options, model, config, engine)
        return
    if not isinstance(estimator, PoseEstimator):
        estimator = estimator()
    if model is not None and base is None:
        base = base_provenance(model, estimator.config)
    outcomes: list[VideoOutcome] = []
    total = StageTimes()
    with progress("frame", enabled=options.progress) as bar:
        overall = bar.add_task("videos", total=len(todo), unit="video")
        for n, i in enumerate(todo):
            job = jobs[i]
            produced_by = None if base is None else job_provenance(base, job, options, draw_cfg, estimator.config.batch_size)
            try:
                outcome = process_video(job, estimator, draw_cfg, options, produced_by=produced_by, bar=bar, resume=i in resume)
            except Interrupted as stop:
                raise Interrupted(f"{stop} (at {job.source}; {n} of {len(todo)} video(s) finished before it)") from None
            except AeposeError as error:
                raise with_context(error, f" (at {job.source}; {n} of {len(todo)} video(s) finished before it)") from None
            outcomes.append(outcome)
            if options.skip_existing and outcome.error is None:
                remove_leftovers(job)
            _summarise_one(outcome, total)
            bar.advance(overall, 1)
    _report_videos(outcomes, total, skipped=len(jobs) - len(todo), where=str(estimator.config.device))


def _run_videos_on_ray(jobs, todo, resume, base, draw_cfg, options, model, config, engine) -> None:
    """`--engine ray`: one Ray task per video on `--workers` actors that each load the model
    once; every task runs `process_video` (a long video stays one task, its frames in order on
    one worker) and writes that video's outputs itself; the outcomes are reported here as the
    videos finish, as `run_videos` reports them (a failed video is named at the end, exit 1)."""
    import time

    from ..engines.ray import RayRunner

    runner = RayRunner(model, config, engine)
    options = replace(options, part_token=secrets.token_hex(4))  # one per run: see VideoOptions
    if model is not None and base is None:
        base = base_provenance(model, config)
    tasks = [
        (jobs[i], None if base is None else job_provenance(base, jobs[i], options, draw_cfg, config.batch_size), i in resume)
        for i in todo
    ]
    outcomes: dict[int, VideoOutcome] = {}
    total = StageTimes()
    with runner, progress("frame", enabled=options.progress) as bar:
        overall = bar.add_task("videos", total=len(tasks), unit="video")
        start = time.perf_counter()
        for seq, outcome in runner.run_videos(tasks, draw_cfg, options):
            job = tasks[seq][0]
            if not isinstance(outcome, VideoOutcome):  # the error that stopped this video's run
                raise with_context(outcome, f" (at {job.source}; {len(outcomes)} of {len(tasks)} video(s) finished)") from None
            outcomes[seq] = outcome
            if options.skip_existing and outcome.error is None:
                remove_leftovers(job)
            _summarise_one(outcome, total)
            bar.advance(overall, 1)
        total.wall = time.perf_counter() - start  # the videos ran side by side: elapsed, not summed
    _report_videos([outcomes[seq] for seq in sorted(outcomes)], total, skipped=len(jobs) - len(todo), where=runner.description)


def _report_videos(outcomes: list[VideoOutcome], total: StageTimes, *, skipped: int, where: str) -> None:
    """The end of a many-videos run, for either engine: stage table, one summary line, the failed
    videos named one per line; exit 1 if any failed."""
    failed = [o for o in outcomes if o.failed]
    if total.items:
        err_console.print(stage_table(total, "frame"))
    fps = total.items / total.wall if total.wall > 0 else 0.0
    err_console.print(
        f"{len(outcomes) - len(failed)} video(s) done, {len(failed)} failed"
        + (f", {skipped} skipped (finished)" if skipped else "")
        + f"; {total.items} frame(s) in {total.wall:.1f} s ({fps:.2f} fps) on {where}"
    )
    report_failures([(o.job.source, o.reason()) for o in failed])
    if failed:
        sys.exit(1)


def _skips(jobs, estimator, draw_cfg, options, model, config) -> tuple[set[int], set[int], dict | None]:
    """`--skip-existing`, before the model loads: (finished jobs, with a one-line note each;
    half-done jobs that resume exactly; the run's common provenance, if it was needed).
    Without the flag nothing is decided, nor is the checkpoint hashed before the model loads."""
    if isinstance(estimator, PoseEstimator):
        config = estimator.config
    if not options.skip_existing or config is None:
        return set(), set(), None
    base = base_provenance(model, config) if model is not None else None
    skips: set[int] = set()
    resume: set[int] = set()
    for i, job in enumerate(jobs):
        produced_by = job_provenance(base, job, options, draw_cfg, config.batch_size) if base is not None else None
        state = finished_state(job, produced_by)
        if state == "finished":
            err_console.print(
                f"skipped {job.source}: its outputs are finished (--skip-existing)", markup=False, highlight=False, soft_wrap=True,
            )
            skips.add(i)
        elif state == "half-done" and _can_resume(job, options, produced_by):
            resume.add(i)
    return skips, resume, base


def _summarise_one(outcome: VideoOutcome, total: StageTimes) -> None:
    """One line per finished video while the others run; its times go into the run's table."""
    if outcome.error is not None:
        return  # named once, in the failure report at the end
    times = outcome.times
    total.items += times.items
    total.wall += times.wall
    total.failures += times.failures
    for stage, seconds in times.totals.items():
        total.add(stage, seconds)
    for note in outcome.notes:
        err_console.print(f"note: {outcome.job.source}: {note}", markup=False, highlight=False, soft_wrap=True)
    resumed = f" (resumed after {outcome.resumed_frames})" if outcome.resumed_frames else ""
    wrote = "; wrote " + ", ".join(str(p) for p in outcome.written) if outcome.written else ""
    err_console.print(
        f"{outcome.job.source}: {times.items} frame(s){resumed} in {times.wall:.1f} s{wrote}", markup=False, highlight=False, soft_wrap=True,
    )


def _can_resume(job: VideoJob, options: VideoOptions, produced_by: dict | None) -> bool:
    """A half-done job resumes from its journal when that is exact: a `resumable` job whose
    journal was written by a run with this very provenance (batch size included) and whose
    video was not also left half-written. Anything else restarts from scratch."""
    from ..io.coco_json import journal_path
    from ..io.jsonlines import iter_records

    if not resumable(job, options) or produced_by is None:
        return False
    journal = journal_path(job.json_path)
    try:
        header = next(iter_records(journal), None)
    except OSError:
        return False
    return isinstance(header, dict) and header.get("provenance") == produced_by


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

"""One video through the pipeline into an annotated MP4 and JSON (`process_video`), and ONE run
loop for many videos on any engine (`run_videos`).

The writer thread owns everything stateful and ordered: tracking, smoothing, drawing, the
encoder and the JSON writers, so frames leave in source order whatever the grouping pool does.

* `process_video`: ONE planned job (`jobs.video_plan.VideoJob`) on a runner that holds the model
  in this process (`engines.single.SingleRunner`); it shows progress only where it is told to and returns a `VideoOutcome` (frames, failures,
  warnings, paths written);
* `decide_resume`: `--skip-existing` before the model loads: finished videos to skip, half-done
  ones to resume exactly from their journal;
* `run_videos`: several jobs on a `Runner` (`jobs.base`), one task per video (`video_task`), as
  this process runs them one after the other or Ray runs them side by side; each outcome is
  handed to the caller as it comes, the run's stage times summed.

Nothing here prints or exits: the command line (`cli/video.py`) reports the outcomes.
"""
from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import DrawConfig, InferenceConfig, ModelChoice, VideoOptions
from ..draw import draw_and_write
from ..errors import AeposeError, InputError, Interrupted, with_context
from ..io.coco_json import CocoJsonWriter
from ..io.decode import VideoSource
from ..io.encode import VideoSink
from ..io.jsonlines import JsonLinesWriter
from ..io.keypoint_csv import KeypointCsvWriter
from ..io.output_paths import journal_path, partial_name
from ..types import Progress, StageTimes, WorkItem
from .base import Runner
from .provenance import check_finished_json, check_finished_video, provenance, record_digest
from .video_plan import VideoJob


@dataclass
class VideoOutcome:
    """What `process_video` did with one video.

    `error` is the exception that stopped the video before or while it ran (it could not be
    opened, say), with what was kept in its message; `broken` the one line of a stream that
    broke off (every frame before it was written); `warnings` one line each (frames that did
    not decode); `failures` the (key, reason) of frames the pipeline could not process.
    `notes` are one line each about how it was written (the encoder's, say).
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
# what made an output, and whether it is finished


def base_provenance(model: ModelChoice, config: InferenceConfig, *, progress: Progress | None = None) -> dict:
    """The part of the provenance shared by every video of a run (hashes the checkpoint once)."""
    return provenance(None, [], model, config, progress=progress)


def job_provenance(base: dict, job: VideoJob, options: VideoOptions, draw_cfg: DrawConfig, batch_size: int) -> dict:
    """What produced a video's JSON: the common part, the video's own file, and every option
    that changes its frames or poses (the batch size only matters to an exact resume: frames
    are batched consecutively, and another batch composition rounds differently)."""
    import os

    return {
        **base,
        "input_root": os.path.realpath(job.source) if job.local else None,
        "inputs": [str(job.source)],
        "video": {
            "start": options.start, "end": options.end, "stride": options.stride,
            "track": bool(options.track or options.smooth), "smooth": options.smooth,
            **draw_cfg.recorded(),
            "batch_size": batch_size,
        },
    }


def finished_state(job: VideoJob, produced_by: dict | None) -> str:
    """'finished' (every output there, made by a run with these settings), 'half-done' (a
    partial video or a journal left by a stopped run), or 'new'. ConfigError when a finished
    JSON was made by another run (other checkpoint, settings or range), as `folder` does
    (`provenance.check_finished_json`)."""
    from ..errors import ConfigError
    from ..io.keypoint_csv import is_own_csv

    outputs = [p for p in (job.video_path, job.json_path, job.csv_path) if p is not None]
    if job.video_path is not None and partial_name(job.video_path).exists():
        return "half-done"
    if any(p is not None and journal_path(p).exists() for p in (job.json_path, job.csv_path)):
        return "half-done"
    if not outputs or not all(Path(p).is_file() for p in outputs):
        return "new"
    if job.json_path is not None and produced_by is not None:
        check_finished_json(job.json_path, produced_by)  # first: it names what differs
    if job.video_path is not None:
        # Never its presence alone: the MP4's own mark, and the digest of what produced it.
        check_finished_video(job.video_path, produced_by)
    if job.csv_path is not None:
        # A CSV records nothing of what produced it: it is this run's only beside a JSON or an
        # MP4 that says so (checked above), written by the same run.
        if not is_own_csv(job.csv_path):
            raise ConfigError(f"{job.csv_path}: not a CSV this tool wrote; pass another --csv or run without --skip-existing")
        if job.json_path is None and job.video_path is None:
            raise ConfigError(
                f"{job.csv_path}: a finished CSV records nothing of what produced it (only a finished JSON or MP4 beside it can); "
                "pass another --csv or run without --skip-existing"
            )
    return "finished"


def recorded_temporaries(job: VideoJob) -> list[str]:
    """The tokens of the encoder temporaries a stopped run of this job recorded in its journal
    (read before a new run restarts the journal), for `remove_leftovers`."""
    from ..io.coco_json import is_own_journal
    from ..io.jsonlines import iter_records

    if job.json_path is None or job.video_path is None:
        return []
    journal = journal_path(job.json_path)
    if not is_own_journal(journal):
        return []
    try:
        header = next(iter_records(journal), None)
    except OSError:
        return []
    token = header.get("part_token") if isinstance(header, dict) else None
    return [token] if isinstance(token, str) else []


def resumable(job: VideoJob, options: VideoOptions) -> bool:
    """Whether a stopped run of this job can be resumed exactly from its journals (the COCO
    JSON's, the CSV's): JSON and CSV only (no MP4 to continue), no tracking or smoothing (their
    state depends on every earlier frame), no --jsonl (written from scratch)."""
    return (
        job.video_path is None and (job.json_path is not None or job.csv_path is not None) and job.jsonl_out is None
        and not (options.track or options.smooth)
    )


def can_resume(job: VideoJob, options: VideoOptions, produced_by: dict | None) -> bool:
    """A half-done job resumes from its journal when that is exact: a `resumable` job whose
    journal was written by a run with this very provenance (batch size included) and whose
    video was not also left half-written. Anything else restarts from scratch."""
    from ..io.jsonlines import iter_records

    if not resumable(job, options) or produced_by is None:
        return False
    for output in (job.json_path, job.csv_path):
        if output is None:
            continue
        try:
            header = next(iter_records(journal_path(output)), None)
        except OSError:
            return False
        if not (isinstance(header, dict) and header.get("provenance") == produced_by):
            return False
    return True



@dataclass
class ResumePlan:
    """What `--skip-existing` decided before the model loads: the positions of finished jobs
    (skipped), of half-done jobs that resume exactly from their journal, and the run's common
    provenance when it had to be computed (None otherwise)."""

    skip: set[int] = field(default_factory=set)
    resume: set[int] = field(default_factory=set)
    base: dict | None = None
    leftovers: dict[int, list[str]] = field(default_factory=dict)  # position -> recorded temporaries


def decide_resume(
    jobs: Sequence[VideoJob], options: VideoOptions, draw_cfg: DrawConfig, model: ModelChoice | None, config: InferenceConfig | None, *,
    progress: Progress | None = None, on_skip: Callable[[VideoJob], None] | None = None,
) -> ResumePlan:
    """`--skip-existing`, before the model loads: which jobs are finished (`on_skip` is told
    of each), which half-done ones resume exactly, and the run's common provenance if it was
    needed. Without the flag (or without a config) nothing is decided, nor is the checkpoint
    hashed before the model loads."""
    decided = ResumePlan()
    if not options.skip_existing or config is None:
        return decided
    decided.base = base_provenance(model, config, progress=progress) if model is not None else None
    for i, job in enumerate(jobs):
        produced_by = job_provenance(decided.base, job, options, draw_cfg, config.batch_size) if decided.base is not None else None
        state = finished_state(job, produced_by)
        if state == "half-done":
            decided.leftovers[i] = recorded_temporaries(job)
        if state == "finished":
            if on_skip is not None:
                on_skip(job)
            decided.skip.add(i)
        elif state == "half-done" and can_resume(job, options, produced_by):
            decided.resume.add(i)
    return decided


# ---------------------------------------------------------------------------------------------
# one video


def process_video(
    job: VideoJob,
    runner: Runner,
    draw_cfg: DrawConfig,
    options: VideoOptions,
    *,
    produced_by: dict | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> VideoOutcome:
    """Run one planned video on `runner`, which runs its frames in this process (the single
    engine: `engines.single.SingleRunner`); show nothing but its progress, if given.

    Returns the outcome. A video that cannot be opened (not a video, truncated, no frames)
    becomes `outcome.error` and writes nothing; a stream that breaks off keeps every frame
    before the break (`outcome.broken`). Other errors (an output that cannot be written, ...)
    are raised, with what was kept in the message, as Ctrl-C is (`Interrupted`).
    Every writer is entered in one `ExitStack`, so each one's own `__exit__` decides: on
    success the MP4 and JSON are finalised; on an error or Ctrl-C the frames written so far
    are kept in `NAME.partial.mp4` (playable, audio up to the last of them; never under the
    final name), the COCO journal is deleted unless the job can resume exactly (`resumable`:
    then it is kept for `--skip-existing`), the JSON lines are flushed.
    `progress`: where the video's frames are counted (None: nowhere). `produced_by`: the record
    its JSON keeps (`job_provenance`), whose digest its MP4 carries. `resume`: continue the job's
    journal (`resumable` jobs only). Every file goes through the job's `FileScope`.
    """
    outcome = VideoOutcome(job)
    state: dict = {}
    keep_journal = resumable(job, options)
    scope = job.file_scope()
    with scope:
        if resume and keep_journal:
            from ..io.coco_json import trim_journal

            # Batches are consecutive groups of `batch_size` frames: continuing after a whole number
            # of them gives every later frame the batch it had in an uninterrupted run. The JSON's
            # and the CSV's journals are cut to the same frames (a crash between their two writes
            # leaves one a frame ahead).
            journaled = [p for p in (job.json_path, job.csv_path) if p is not None]
            held = min(trim_journal(p, lambda frames: frames, scope=scope) for p in journaled)
            batch = runner.config.batch_size
            for output in journaled:
                trim_journal(output, lambda frames: held // batch * batch, scope=scope)
        return _process(job, runner, draw_cfg, options, produced_by, progress, resume and keep_journal, keep_journal, state, outcome, scope)


def _process(job, runner, draw_cfg, options, produced_by, progress, resume, keep_journal, state, outcome, scope) -> VideoOutcome:
    try:
        _run(job, runner, draw_cfg, options, produced_by, progress, resume, keep_journal, state, outcome, scope)
    except KeyboardInterrupt as stop:
        raise Interrupted("stopped" + _kept(state), signal=getattr(stop, "signal_name", None)) from None
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
    sink = state.get("sink")
    parts = []
    if sink is not None and sink.kept_partial is not None:
        parts.append(f"; the {sink.frames_written} frame(s) written so far are in {sink.kept_partial} (audio up to the last of them)")
    for journaled in (state.get("coco"), state.get("table")):
        if journaled is not None and journaled.keep_journal and journaled.frames and journaled.journal_path.exists():
            parts.append(
                f"; the {journaled.frames} frame(s) done are kept in {journaled.journal_path.name}: run again with --skip-existing to finish"
            )
    return "".join(parts)


def _run(job, runner, draw_cfg, options, produced_by, progress, resume, keep_journal, state, outcome, scope) -> None:
    with contextlib.ExitStack() as stack:
        video_src = stack.enter_context(
            VideoSource(
                int(job.source) if job.kind == "webcam" else job.source, start_s=options.start, end_s=options.end, stride=options.stride,
            )
        )
        state["opened"] = video_src
        sink = (
            stack.enter_context(VideoSink.for_source(
                job.video_path, video_src, part_token=options.part_token, scope=scope,
                record_digest=None if produced_by is None else record_digest(produced_by),
            ))
            if job.video_path is not None else None
        )
        state["sink"] = sink
        coco = (
            stack.enter_context(CocoJsonWriter(
                job.json_path, "dataset", runner.keypoints, draw_cfg.kpt_thr, keep_journal=keep_journal,
                resume=resume, provenance=produced_by, scope=scope,
                # The encoder's temporary, so that a later run can remove it if this one is killed.
                header_extra=None if sink is None else {"part_token": sink.part_token},
            ))
            if job.json_path is not None else None
        )
        state["coco"] = coco
        table = (
            stack.enter_context(KeypointCsvWriter(
                job.csv_path, runner.keypoints, keep_journal=keep_journal, resume=resume, provenance=produced_by, scope=scope,
            ))
            if job.csv_path is not None else None
        )
        state["table"] = table
        lines = stack.enter_context(JsonLinesWriter(job.jsonl_out, scope=scope)) if job.jsonl_out else None
        frame_sink = _FrameSink(
            runner.keypoints, draw_cfg, sink, coco, lines,
            stem=job.stem, source_name=video_src.name,
            track=options.track or options.smooth, smooth=options.smooth,
            fps=float(video_src.rate) if video_src.rate else 30.0, table=table,
        )
        total = _expected_frames(video_src, options.start, options.end, options.stride)
        journaled = [w for w in (coco, table) if w is not None]
        # A resumed job's journals were cut to the same frames (`process_video`).
        done = frozenset.intersection(*(w.finished_sources() for w in journaled)) if (resume and journaled) else frozenset()
        outcome.resumed_frames = len(done)
        items = (
            WorkItem(index=f.index, key=str(f.index), load=(lambda img=f.image_bgr: img), timestamp=f.timestamp_s, extra=f.pts)
            for f in video_src
            if str(f.index) not in done
        )
        if total is not None:
            total = max(0, total - len(done))
        shown = progress.task(Path(str(job.source)).name[:40], total, "frame") if progress is not None else contextlib.nullcontext(None)
        with shown as advance:
            times = runner.run(items, frame_sink, on_progress=advance)
    outcome.times = times
    outcome.frames = times.items
    outcome.failures = list(times.failures)
    written = sink.close() if sink is not None else None  # already finished: returns its path
    if sink is not None and sink.note:
        outcome.notes.append(sink.note)
    outcome.written = [p for p in (written, job.json_path, job.csv_path) if p is not None]
    if video_src.undecodable_frames:
        outcome.warnings.append(
            f"{video_src.name}: {video_src.undecodable_frames} frame(s) missing or "
            f"undecodable, the first at frame {video_src.first_undecodable}; the other frames keep "
            "their stream index and timestamp"
        )
    if video_src.error:
        outcome.broken = video_src.error


def remove_leftovers(job: VideoJob, tokens: Sequence[str] = ()) -> None:
    """After a restarted video finished: the partial MP4 and encoder temporaries of the run that
    was stopped are obsolete (the finished files replaced them by rename). Only what is provably
    that run's goes: the partial MP4 by this tool's mark in it, a temporary by the token the
    stopped run recorded in its journal (`recorded_temporaries`), never by a name pattern."""
    from ..io.encode import PART_PATTERN, is_own_mp4

    if job.video_path is None or not job.video_path.is_file():
        return  # nothing finished replaced them: what the stopped run kept stays
    scope = job.file_scope()
    scope.remove(partial_name(job.video_path), proof=is_own_mp4)
    for token in tokens:
        scope.remove_recorded_temporary(job.video_path, PART_PATTERN, token)


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

    def __init__(
        self, keypoints, draw_cfg, video_sink, coco, lines, *, stem, track, smooth, fps: float = 30.0, source_name: str = "", table=None,
    ) -> None:
        self.keypoints = keypoints
        self.draw_cfg = draw_cfg
        self.video_sink = video_sink
        self.coco = coco
        self.table = table
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
        for journaled in (self.coco, self.table):
            if journaled is not None:
                journaled.add(result, file_name=f"{self.stem}_{item.index:06d}.jpg", image_id=item.index + 1, key=item.key)
        if self.lines is not None:
            self.lines.add(result)


# ---------------------------------------------------------------------------------------------
# many videos, on any engine


@dataclass(frozen=True)
class VideoTask:
    """One video of a run as `Runner.map` ships it: the job, what its JSON records, whether it
    resumes its journal, and the run's drawing and video options."""

    job: VideoJob
    produced_by: dict | None
    resume: bool
    draw_cfg: DrawConfig
    options: VideoOptions


def video_task(runner: Runner, task: VideoTask, progress: Progress | None) -> VideoOutcome:
    """`process_video` as a job function (`jobs.base.TaskFunction`): what a runner calls for each
    video with the runner of the process that holds the model (this one, or a Ray worker)."""
    return process_video(task.job, runner, task.draw_cfg, task.options, produced_by=task.produced_by, progress=progress, resume=task.resume)


@dataclass
class VideosRun:
    """What `run_videos` did: each video's outcome in the jobs' order, and the run's stage times
    (the finished videos' items and stages summed; `wall` is the run's elapsed time)."""

    outcomes: list[VideoOutcome]
    times: StageTimes


def run_videos(
    runner: Runner, jobs: Sequence[VideoJob], draw_cfg: DrawConfig, options: VideoOptions, *,
    batch_size: int, base: dict | None = None, resume: set[int] | frozenset[int] = frozenset(),
    progress: Progress | None = None, on_outcome: Callable[[VideoOutcome], None] | None = None,
    leftovers: dict[int, list[str]] | None = None,
) -> VideosRun:
    """Every job on `runner`, one task per video (`video_task`), whatever the engine: this
    process runs them in turn, Ray side by side (a long video stays one task, its frames in
    order on one worker). `base`: the run's common provenance (each video's JSON records it with
    its own part, `job_provenance`); `resume`: positions of jobs that continue their journal.

    Each outcome goes to `on_outcome` as it comes (a video that could not be opened is an
    outcome with `error`, and the others go on); after a restarted video finished, the stopped
    run's partial video and the temporaries it recorded (`leftovers`: position -> tokens) are
    removed. An error that stops a video's run (a full
    disk, Ctrl-C) is raised with which video it met and how many had finished.
    """
    options = replace(options, part_token=options.part_token or secrets.token_hex(4))  # one per run: see VideoOptions
    tasks = [
        VideoTask(job, None if base is None else job_provenance(base, job, options, draw_cfg, batch_size), i in resume, draw_cfg, options)
        for i, job in enumerate(jobs)
    ]
    outcomes: dict[int, VideoOutcome] = {}
    total = StageTimes()
    start = time.perf_counter()
    shown = progress.task("videos", len(tasks), "video") if progress is not None else contextlib.nullcontext(None)
    with shown as advance:
        for position, answer in runner.map(video_task, tasks, progress=progress):
            job = tasks[position].job
            if not isinstance(answer, VideoOutcome):  # the error that stopped this video's run
                raise with_context(answer, f" (at {job.source}; {len(outcomes)} of {len(tasks)} video(s) finished)") from None
            outcomes[position] = answer
            if options.skip_existing and answer.error is None:
                remove_leftovers(job, (leftovers or {}).get(position, ()))
            if answer.error is None:
                total.merge(answer.times)
            if on_outcome is not None:
                on_outcome(answer)
            if advance is not None:
                advance(1)
    total.wall = time.perf_counter() - start  # elapsed: on Ray the videos ran side by side
    return VideosRun([outcomes[p] for p in sorted(outcomes)], total)

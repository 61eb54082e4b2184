"""`aepose video`: sources, plan, `--skip-existing`, the runner, the video jobs, and the report.

One video runs as `run_video` (its messages and exit codes: a stream that breaks off keeps every
frame before it and exits 1). Several share one model and one progress display (videos, and the
current video's frames), on this process or on Ray (`jobs.video.run_videos`: one loop for either
engine); a video that cannot be read or breaks off does not stop the others and is named on one
line at the end (exit 1).
"""
from __future__ import annotations

import click

from ..config import DrawConfig, EngineConfig, InferenceConfig, ModelChoice, VideoOptions
from ..errors import ConfigError
from ..estimator import PoseEstimator
from ..io.decode import source_kind
from ..io.output_plan import entered
from ..jobs.video import (
    VideoOutcome,
    VideosRun,
    base_provenance,
    decide_resume,
    job_provenance,
    process_video,
    remove_leftovers,
)
from ..jobs.video import (
    run_videos as run_video_jobs,
)
from ..jobs.video_plan import VideoJob, expand_sources, plan_video_run, source_listings
from .console import Bars, DownloadBar, err_console, report_failures, stage_table
from .runtime import build_runner, require_engine


def run_video(
    source: str, estimator, draw_cfg: DrawConfig, options: VideoOptions, model: ModelChoice | None = None, *,
    config: InferenceConfig | None = None, progress: bool = True, listings: list[tuple[str, str]] | None = None,
    recursive: bool = False,
) -> int:
    """Run one video end to end; outputs are kept (and loadable) even if the stream breaks.
    Returns the exit status.

    `estimator` is a PoseEstimator or a function making one: it is called only after every
    output path has been checked (the output plan), so a clash costs no model load.
    On an error or Ctrl-C the frames written so far are kept in `NAME.partial.mp4` and the
    one-line error says how many frames were kept and where (exit 130 for Ctrl-C). `model`
    lets the JSON record the checkpoint's sha256; `config` lets `--skip-existing` decide before
    the model loads. `progress`: draw the progress bar. `listings`: the folder or pattern the
    video was found in (`source_listings`), which no output may land in.
    """
    (job,), scope = plan_video_run([source], options, listings=listings, recursive=recursive)
    with entered(scope):  # the outputs locked before anything is decided or loaded
        known = estimator.requested_config if isinstance(estimator, PoseEstimator) else config
        decided = decide_resume([job], options, draw_cfg, model, known, progress=DownloadBar(), on_skip=_skipped)
        if decided.skip:
            return 0
        runner = build_runner(model, known, estimator=estimator if isinstance(estimator, PoseEstimator) else estimator())
        base = decided.base
        if model is not None and base is None:
            base = base_provenance(model, known if known is not None else runner.config, progress=DownloadBar())
        produced_by = None if base is None else job_provenance(base, job, options, draw_cfg, runner.config.batch_size)
        outcome = process_video(
            job, runner, draw_cfg, options, produced_by=produced_by, progress=Bars("frame", enabled=progress), resume=bool(decided.resume),
        )
        if outcome.error is not None:
            raise outcome.error
        if options.skip_existing:
            remove_leftovers(job, decided.leftovers.get(0, ()))
    times = outcome.times
    for note in outcome.notes:
        err_console.print(f"note: {note}")
    if outcome.resumed_frames:
        err_console.print(f"resumed: {outcome.resumed_frames} frame(s) were done by the stopped run")
    err_console.print(stage_table(times, "frame"))
    fps = times.items / times.wall if times.wall > 0 else 0.0
    err_console.print(f"{times.items} frame(s) in {times.wall:.1f} s ({fps:.2f} fps) on {runner.description}")
    for path in outcome.written:
        err_console.print(f"wrote {path}")
    report_failures(outcome.failures)
    for warning in outcome.warnings:
        # Exit 1 ("some items failed"), as a folder run with unreadable images.
        click.echo(f"aepose: warning: {warning}", err=True)
    if outcome.broken:
        click.echo(f"aepose: error: {outcome.broken}; every frame before it was written", err=True)
        return 1
    return 1 if outcome.warnings else 0


def run_videos(
    args: list[str], estimator, draw_cfg: DrawConfig, options: VideoOptions, model: ModelChoice | None = None, *,
    config: InferenceConfig | None = None, recursive: bool = False, engine: EngineConfig | None = None, progress: bool = True,
) -> int:
    """`aepose video SRC...`: files, folders and patterns (see `expand_sources`). Returns the
    exit status.

    One video runs as `run_video`. Several share one model and one progress display; a video
    that cannot be read or breaks off does not stop the others and is named on one line at the
    end (exit 1). With `skip_existing`, finished videos are skipped with a one-line note and
    half-done ones restarted (or resumed, where exact) before the model loads. `estimator` (a
    PoseEstimator or a function making one) runs them in this process; `engine` `--engine ray`
    runs them on Ray (one task per video) from `model` and `config`.
    """
    on_ray = engine is not None and engine.engine == "ray"
    if on_ray:
        require_engine(engine)
    sources = expand_sources(args, recursive=recursive)
    listings = source_listings(args)
    if on_ray:
        streams = [s for s in sources if source_kind(s) != "file"]
        if streams:
            raise ConfigError(f"{streams[0]}: a stream or webcam is read by this process; run it without --engine ray")
    elif len(sources) == 1:
        return run_video(sources[0], estimator, draw_cfg, options, model, config=config, progress=progress, listings=listings, recursive=recursive)
    jobs, scope = plan_video_run(sources, options, listings=listings, recursive=recursive)
    with entered(scope):  # the outputs locked before anything is decided or loaded
        known = estimator.requested_config if isinstance(estimator, PoseEstimator) else config
        decided = decide_resume(jobs, options, draw_cfg, model, known, progress=DownloadBar(), on_skip=_skipped)
        todo = [i for i in range(len(jobs)) if i not in decided.skip]
        if not todo:
            err_console.print(f"all {len(jobs)} videos are finished; nothing to do")
            return 0
        if on_ray:
            runner = build_runner(model, config, engine)
        else:
            runner = build_runner(model, known, estimator=estimator if isinstance(estimator, PoseEstimator) else estimator())
        base = decided.base
        if model is not None and base is None:
            base = base_provenance(model, known if known is not None else runner.config, progress=DownloadBar())
        with runner:
            run = run_video_jobs(
                runner, [jobs[i] for i in todo], draw_cfg, options, batch_size=runner.config.batch_size, base=base,
                resume={n for n, i in enumerate(todo) if i in decided.resume}, progress=Bars("frame", enabled=progress),
                on_outcome=_summarise_one, leftovers={n: decided.leftovers.get(i, []) for n, i in enumerate(todo)},
            )
    return _report_videos(run, skipped=len(jobs) - len(todo), where=runner.description)


def _skipped(job: VideoJob) -> None:
    err_console.print(f"skipped {job.source}: its outputs are finished (--skip-existing)", markup=False, highlight=False, soft_wrap=True)


def _summarise_one(outcome: VideoOutcome) -> None:
    """One line per finished video while the others run."""
    if outcome.error is not None:
        return  # named once, in the failure report at the end
    times = outcome.times
    for note in outcome.notes:
        err_console.print(f"note: {outcome.job.source}: {note}", markup=False, highlight=False, soft_wrap=True)
    resumed = f" (resumed after {outcome.resumed_frames})" if outcome.resumed_frames else ""
    wrote = "; wrote " + ", ".join(str(p) for p in outcome.written) if outcome.written else ""
    err_console.print(
        f"{outcome.job.source}: {times.items} frame(s){resumed} in {times.wall:.1f} s{wrote}", markup=False, highlight=False, soft_wrap=True,
    )


def _report_videos(run: VideosRun, *, skipped: int, where: str) -> int:
    """The end of a many-videos run, for either engine: stage table, one summary line, the failed
    videos named one per line; exit status 1 if any failed."""
    total = run.times
    failed = [o for o in run.outcomes if o.failed]
    if total.items:
        err_console.print(stage_table(total, "frame"))
    fps = total.items / total.wall if total.wall > 0 else 0.0
    err_console.print(
        f"{len(run.outcomes) - len(failed)} video(s) done, {len(failed)} failed"
        + (f", {skipped} skipped (finished)" if skipped else "")
        + f"; {total.items} frame(s) in {total.wall:.1f} s ({fps:.2f} fps) on {where}"
    )
    report_failures([(o.job.source, o.reason()) for o in failed])
    return 1 if failed else 0

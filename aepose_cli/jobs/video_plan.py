"""The videos a run reads and every path it writes, decided and checked before any model loads.

`expand_sources` turns the command line's sources (files, folders, patterns, one stream or
webcam) into the list of videos; `plan_videos` gives each a `VideoJob` with all its outputs,
checked together by the output plan (`io.output_plan`): no output may be an input or another
output. Nothing is created until the plan has passed (the `--out DIR/` folder included).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import VideoOptions
from ..errors import ConfigError, InputError, OutputError
from ..io.decode import source_kind
from ..io.filesystem import FileScope
from ..io.output_paths import journal_path, names_folder, partial_name, resolve_output


@dataclass(frozen=True)
class VideoJob:
    """One video of a run and every path it writes (None: that output is off). `scope`: the
    part of the run's `FileScope` that declares this video's outputs (None: a scope of them
    alone is made when it runs)."""

    source: str
    kind: str  # "file", "url" or "webcam" (`io.decode.source_kind`)
    video_path: Path | None
    json_path: Path | None
    jsonl_out: str | None  # a file, '-' (stdout) or None
    scope: FileScope | None = field(default=None, compare=False, repr=False)
    csv_path: Path | None = None  # the `--csv` table

    def outputs(self) -> list[Path]:
        """Every file this video's run may write (its MP4 and partial MP4, JSON and CSV and their
        journals, JSON lines)."""
        paths: list[Path] = []
        if self.video_path is not None:
            paths += [self.video_path, partial_name(self.video_path)]
        for journaled in (self.json_path, self.csv_path):
            if journaled is not None:
                paths += [journaled, journal_path(journaled)]
        if self.jsonl_out and self.jsonl_out != "-":
            paths.append(Path(self.jsonl_out))
        return paths

    def file_scope(self) -> FileScope:
        """Its scope: the run's part for it, or one of its own outputs."""
        return self.scope if self.scope is not None else FileScope.of(*self.outputs(), name=f"outputs of {self.source}")

    @property
    def local(self) -> bool:
        return self.kind == "file"

    @property
    def stem(self) -> str:
        """The name frames get in the JSON (`STEM_000012.jpg`)."""
        return Path(self.source).stem if self.local else stream_stem(self.source, self.kind)


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


def source_listings(args: list[str]) -> list[tuple[str, str]]:
    """The arguments that list inputs rather than name one: ('folder', path) for a folder of
    videos, ('pattern', text) for a pattern the shell did not expand. The output plan refuses an
    output that a later run's listing would read as an input (`--json clips/x.mp4`)."""
    listings = []
    for arg in args:
        if source_kind(arg) != "file":
            continue
        if Path(arg).is_dir():
            listings.append(("folder", arg))
        elif not os.path.lexists(arg) and any(c in arg for c in "*?["):
            listings.append(("pattern", arg))
    return listings


def plan_videos(
    sources: list[str], options: VideoOptions, *, listings: list[tuple[str, str]] | None = None, recursive: bool = False,
) -> list[VideoJob]:
    """The jobs of `plan_video_run` (its checks, its folders made), without the run's scope."""
    return plan_video_run(sources, options, listings=listings, recursive=recursive)[0]


def plan_video_run(
    sources: list[str], options: VideoOptions, *, listings: list[tuple[str, str]] | None = None, recursive: bool = False,
) -> tuple[list[VideoJob], FileScope]:
    """Every output path of every video, decided by the output rule and checked together
    (io/output_plan.py) before any model loads: no output may be an input or another output
    (`a/clip.mp4` and `b/clip.mp4` into one `--out DIR/` are refused, naming both), nor one
    that the folders and patterns of `listings` (`source_listings`) would read as a video.
    With several videos `--out`, `--json` and `--jsonl` must name folders (`--jsonl -` too).
    The `--out DIR/` folder is created only once the plan has passed. Returns the jobs, each
    with its part of the run's `FileScope` (`VideoJob.scope`), and the whole of it (whose locks
    the command takes, `io.output_plan.entered`, before the model loads)."""
    from ..io.jsonlines import stdout_is_open
    from ..io.output_plan import OutputPlan
    from ..io.sources import VIDEO_EXTENSIONS, is_own_output

    several = len(sources) > 1
    if several:
        for flag, value in (("--out", options.out), ("--json", options.json_out), ("--jsonl", options.jsonl_out), ("--csv", options.csv_out)):
            if isinstance(value, (str, os.PathLike)) and os.fspath(value) != "-" and not names_folder(value):
                hint = " or '-' for standard output" if flag == "--jsonl" else ""
                raise ConfigError(f"{flag} {value}: several videos need a folder (end it with '/'){hint}")
    if options.jsonl_out == "-" and not stdout_is_open():
        raise OutputError("--jsonl -: standard output is closed; give a file or a folder instead")
    jobs = [_job(source, options) for source in sources]
    plan = OutputPlan()
    if isinstance(options.out, (str, os.PathLike)) and names_folder(options.out):
        plan.add_folder(options.out)  # as image and folder runs do: the outputs' folder is made
    for kind, value in listings or ():
        if kind == "folder":
            plan.add_input_folder(value, VIDEO_EXTENSIONS, recursive, skip=is_own_output, what="input videos")
        else:
            plan.add_input_pattern(value, recursive, skip=is_own_output)
    for job in jobs:
        if job.local:
            plan.add_input(job.source)
    for job in jobs:
        of = f" of {job.source}" if several else ""
        plan.add_video(job.video_path, f"annotated video{of}" if several else "--out", f"partial video{of}" if several else None)
        plan.add_json(job.json_path, f"JSON{of}" if several else "--json")
        plan.add_json(job.csv_path, f"CSV{of}" if several else "--csv")
        if job.jsonl_out and job.jsonl_out != "-":
            plan.add_output(job.jsonl_out, f"--jsonl{of}", lock=True)
    scope = plan.check()
    scope.make_declared_folders()
    return [replace(job, scope=scope.subset(job.outputs(), name=f"outputs of {job.source}")) for job in jobs], scope


def _job(source: str, options: VideoOptions) -> VideoJob:
    kind = source_kind(source)
    local = kind == "file"
    if local and not Path(source).exists():
        raise InputError(f"{source}: no such file")
    # Streams and webcams have no folder of their own: their outputs default to the cwd.
    anchor = source if local else stream_stem(source, kind)
    default_dir = None if local else Path.cwd()
    json_out = options.json_out
    if json_out is None and isinstance(options.out, (str, os.PathLike)) and names_folder(options.out):
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
        csv_path=None if options.csv_out is None else resolve_output(options.csv_out, anchor, ".csv", default_dir=default_dir),
    )


def stream_stem(source: str, kind: str) -> str:
    """The name a stream's or webcam's outputs take (no file of its own to name them after)."""
    if kind == "webcam":
        return f"webcam{source}"
    tail = source.rstrip("/").rsplit("/", 1)[-1] or "stream"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tail.split("?")[0]) or "stream"

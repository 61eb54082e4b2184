"""Image files through a runner into annotated images and one COCO JSON (`aepose image`,
`aepose folder`).

* `plan_images` / `plan_folder`: the inputs and every output path, checked together by the
  output plan before any model loads (`ImagesPlan`);
* `finished_seed`: `--skip-existing` meeting a finished JSON (THE provenance check of
  `jobs.provenance`): nothing to do, or the file's images to keep;
* `run_images`: the images on a `Runner` (`jobs.base`) into drawings and the JSON; returns an
  `ImagesOutcome`. Nothing here prints or exits.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DrawConfig
from ..draw import draw_and_write
from ..errors import ConfigError, InputError, Interrupted, OutputError
from ..io.filesystem import FileScope
from ..io.output_paths import OutputFlag, journal_path
from ..io.output_plan import entered
from ..io.sources import IMAGE_EXTENSIONS, OUTPUT_STEM_SUFFIX
from ..types import Progress, StageTimes, WorkItem
from .base import Runner
from .provenance import check_finished_json


@dataclass(frozen=True)
class ImagesPlan:
    """The images of a run and every path it writes.

    `entries`: (image index in the JSON, key, file) per image; `targets`: the annotated image of
    each key (None: off); `json_path`: the COCO JSON (None: off); `file_names`: the name each key
    gets in the JSON; `input_root`: the folder of a folder run (None for listed images);
    `resumable`: whether a stopped run keeps its journal for `--skip-existing`; `scope`: the
    run's `FileScope` (every path it may write, and its locks, taken before the model loads by
    entering it: `io.output_plan.entered`); None: one of the plan's own outputs is made.
    """

    entries: list[tuple[int, str, Path]]
    targets: dict[str, Path | None]
    json_path: Path | None
    file_names: dict[str, str]
    input_root: Path | None = None
    resumable: bool = False
    scope: FileScope | None = None

    @property
    def keys(self) -> list[str]:
        return [key for _, key, _ in self.entries]

    def file_scope(self) -> FileScope:
        if self.scope is not None:
            return self.scope
        paths = [t for t in self.targets.values() if t is not None]
        if self.json_path is not None:
            paths += [self.json_path, journal_path(self.json_path)]
        return FileScope.of(*paths, name="image outputs")


@dataclass
class ImagesOutcome:
    """What `run_images` did: the stage times (with the failed images' keys and reasons), the
    JSON written (None: off), and how many images an earlier run had done (resumed)."""

    times: StageTimes
    json_path: Path | None
    done_before: int = 0


def annotated_suffix(path: Path) -> str:
    """The annotated image keeps its input's format when OpenCV writes it, else JPEG."""
    suffix = path.suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".jpg"


def plan_images(images: list[Path], out: OutputFlag, json_out: OutputFlag) -> ImagesPlan:
    """One or more image files; `out`/`json_out` False turns that output off.

    The same image given twice, or two images whose annotated copies would get the same name
    (`a/p.jpg` and `b/p.jpg` into one `--out DIR/`), are refused before the model loads.
    """
    from ..io.output_paths import names_folder, resolve_output
    from ..io.output_plan import OutputPlan, real

    if out and len(images) > 1 and not names_folder(out):
        raise ConfigError(f"--out {out}: several images need a folder (end it with '/')")
    check_images_exist(images)
    seen: dict[str, Path] = {}
    for img in images:
        if real(img) in seen:
            raise ConfigError(f"{img}: given twice (as {seen[real(img)]} too); give each image once")
        seen[real(img)] = img
    if json_out is None and out and names_folder(out):
        json_out = out  # one rule for every command: --out DIR holds all the outputs
    json_anchor = images[0] if len(images) == 1 else images[0].parent / "images"
    json_path = resolve_output(json_out, json_anchor, ".json")
    targets = {str(img): (None if out is False else resolve_output(out, img, annotated_suffix(img))) for img in images}
    plan = OutputPlan()
    for img in images:
        plan.add_input(img)
    for img in images:
        plan.add_output(targets[str(img)], f"annotated image of {img}", lock=True)
    plan.add_json(json_path, "--json")
    scope = plan.check()
    return ImagesPlan(
        entries=[(i, str(img), img) for i, img in enumerate(images)],
        targets=targets,
        json_path=json_path,
        file_names={str(img): _relative_to(img, json_path.parent if json_path else Path.cwd()) for img in images},
        scope=scope,
    )


def plan_folder(
    folder: Path, *, recursive: bool, extensions: tuple[str, ...], shard: str | None, out: OutputFlag, json_out: OutputFlag,
) -> ImagesPlan:
    """Every image of a folder (sorted, sharded with `shard` "I/N"), its annotated copy under
    `out` (default: FOLDER.pose/ beside the folder) and the COCO JSON, checked before any model
    loads: no output may land among the folder's images."""
    from ..io.output_paths import resolve_output
    from ..io.output_plan import OutputPlan
    from ..io.sources import global_index, list_images, parse_shard

    shard_spec = parse_shard(shard) if shard else None
    if not extensions:
        raise ConfigError("--ext names no extension")
    paths = list_images(folder, recursive=recursive, extensions=extensions, shard=shard_spec)
    suffix = ".json" if shard_spec is None else f".shard{shard_spec[0]}of{shard_spec[1]}.json"
    json_path = resolve_output(json_out, folder, suffix)
    if out is False:
        images_dir = None
    elif out is None:
        images_dir = Path(os.path.abspath(folder)).parent / f"{Path(os.path.abspath(folder)).name}{OUTPUT_STEM_SUFFIX}"
    else:
        images_dir = Path(out)
    keys = [p.relative_to(folder).as_posix() for p in paths]
    targets = {key: (None if images_dir is None else images_dir / key) for key in keys}
    plan = OutputPlan()
    plan.add_input_folder(folder, extensions, recursive)
    for path in paths:
        plan.add_input(path)
    for key in keys:
        plan.add_output(targets[key], "--out")
    if images_dir is not None:
        plan.add_lock(images_dir)  # the folder of annotated images is one output unit
    plan.add_json(json_path, "--json")
    scope = plan.check()
    return ImagesPlan(
        entries=[(global_index(i, shard_spec), key, path) for i, (key, path) in enumerate(zip(keys, paths))],
        targets=targets,
        json_path=json_path,
        file_names={key: key for key in keys},
        input_root=folder,
        resumable=True,
        scope=scope,
    )


def check_images_exist(images) -> None:
    """Fail before loading the model when an input is not there at all."""
    for img in images:
        if not img.exists():
            raise InputError(f"{img}: no such file")
        if img.is_dir():
            raise InputError(f"{img}: is a directory, not an image file (use `aepose folder`)")


def _relative_to(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive on Windows
        return Path(os.path.abspath(path)).as_posix()


def drawing_record(plan: ImagesPlan, draw_cfg: DrawConfig) -> dict[str, Any]:
    """What a folder run's JSON records of its drawing (`info.aepose.drawing`): the threshold
    (it decides the JSON's visibility flags), and the widths as given ("auto" or a number) when
    the run draws images, so that a resumed run does not mix two looks in one folder."""
    record = draw_cfg.recorded()
    if not any(target is not None for target in plan.targets.values()):
        record = {"kpt_thr": record["kpt_thr"]}
    return record


def finished_seed(plan: ImagesPlan, produced_by: dict) -> dict[str, Any] | None:
    """A complete JSON met by `--skip-existing`: None when it covers every image of the plan
    (nothing to do), else the file's content to seed the journal with (its images are kept, the
    failed or new ones are done). Refused when another run made it (`check_finished_json`)."""
    data = check_finished_json(plan.json_path, produced_by)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not isinstance(data.get("annotations"), list):
        raise ConfigError(f"{plan.json_path}: not a COCO JSON this tool wrote ('images' or 'annotations' is not a list); pass another --json or run without --skip-existing")
    names = {img.get("file_name") for img in images if isinstance(img, dict) and isinstance(img.get("file_name"), str)}
    if set(plan.keys) <= names:
        return None
    return data


def run_images(
    plan: ImagesPlan, runner: Runner, draw_cfg: DrawConfig, json_style: str, *, resume: bool = False,
    provenance: dict | None = None, seed: dict | None = None, progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ImagesOutcome:
    """The plan's images on `runner` (entered here) into drawings and the JSON.

    `resume`: skip the images an earlier run finished (its journal, or the annotated images
    there when there is no JSON); `provenance`: what the JSON records of this run; `seed`: a
    finished JSON whose images are kept (`finished_seed`). `on_note` hears, in one line, how many
    images were done before. The JSON writer's own `__exit__` decides: assembled on success; on
    any failure or interrupt the journal is kept for `--skip-existing` when the plan can resume
    and it holds finished images, else deleted. A single image that cannot be read is a plain
    InputError (no JSON is written).
    """
    from ..io.coco_json import CocoJsonWriter
    from ..io.sources import read_image

    max_pixels = runner.config.max_pixels
    writer = None
    done_before = 0
    scope = plan.file_scope()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(entered(scope))  # the run's locks (already held when the command took them)
            stack.enter_context(runner)
            if plan.json_path is not None:
                writer = stack.enter_context(
                    CocoJsonWriter(plan.json_path, json_style, runner.keypoints, draw_cfg.kpt_thr, resume=resume and seed is None,
                                   provenance=provenance, keep_journal=plan.resumable, scope=scope)
                )
                if seed is not None:
                    try:
                        writer.adopt_final(seed, set(plan.file_names))
                    except (KeyError, TypeError, ValueError, AttributeError):
                        raise ConfigError(
                            f"{plan.json_path}: not a COCO JSON this tool wrote (a malformed image or annotation); "
                            "pass another --json or run without --skip-existing"
                        ) from None
            if not resume:
                done: set[str] = set()
            elif writer is not None:
                done = set(writer.finished_sources())
            else:
                done = {key for key, target in plan.targets.items() if target is not None and Path(target).is_file()}
            todo = [(idx, key, path) for idx, key, path in plan.entries if key not in done]
            done_before = len(plan.entries) - len(todo)
            if done and on_note is not None:
                on_note(f"resuming: {done_before} of {len(plan.entries)} images already done")
            items = (WorkItem(index=idx, key=key, load=(lambda p=path: read_image(p, max_pixels))) for idx, key, path in todo)
            sink = _ImageSink(runner.keypoints, draw_cfg, plan.targets, writer, plan.file_names, scope)
            keep_images = any(plan.targets.get(key) is not None for _, key, _ in todo)
            shown = progress.task("images", len(todo), "img") if progress is not None and len(todo) > 1 else contextlib.nullcontext(None)
            with shown as advance:
                times = runner.run(items, sink, on_progress=advance, keep_images=keep_images)
            if len(plan.entries) == 1 and times.failures:
                # A single input that cannot be read is a plain error: no empty JSON, no report.
                if writer is not None:
                    writer.discard()
                raise InputError(times.failures[0][1])
    except OutputError as error:
        raise OutputError(f"{error}{_kept(writer, plan)}") from None
    except KeyboardInterrupt as stop:
        raise Interrupted(f"stopped{_kept(writer, plan)}", signal=getattr(stop, "signal_name", None)) from None
    return ImagesOutcome(times, plan.json_path, done_before)


def _kept(writer, plan: ImagesPlan) -> str:
    """What a stopped or failed run kept: '; the N image(s) done are kept in X: run again with
    --skip-existing to finish', or ''."""
    if writer is not None and plan.resumable and writer.frames and writer.journal_path.exists():
        return f"; the {writer.frames} image(s) done are kept in {writer.journal_path.name}: run again with --skip-existing to finish"
    return ""


class _ImageSink:
    """Draws and writes annotated images, records results in the JSON writer."""

    def __init__(self, keypoints, draw_cfg, targets, writer, file_names, scope: FileScope) -> None:
        self.keypoints = keypoints
        self.draw_cfg = draw_cfg
        self.targets = targets
        self.writer = writer
        self.file_names = file_names
        self.scope = scope

    def write(self, item, image, result) -> None:
        from ..io.atomic import write_image

        target = self.targets.get(item.key)
        if target is not None:
            draw_and_write(
                lambda drawn: write_image(target, drawn, scope=self.scope), image, result.poses, self.keypoints, self.draw_cfg, result.timings,
            )
        if self.writer is not None:
            self.writer.add(result, file_name=self.file_names[item.key], image_id=item.index + 1, key=item.key)

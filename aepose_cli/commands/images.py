"""`aepose image` and `aepose folder`: image files through the pipeline into drawings and JSON."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from ..config import DrawConfig, EngineConfig, InferenceConfig, ModelChoice
from ..console import err_console, progress, report_failures
from ..errors import ConfigError, InputError
from ..io.sources import IMAGE_EXTENSIONS, OUTPUT_STEM_SUFFIX
from .common import build_runner, draw_and_write, require_engine


def annotated_suffix(path: Path) -> str:
    """The annotated image keeps its input's format when OpenCV writes it, else JPEG."""
    suffix = path.suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".jpg"


def run_image(
    images: list[Path], out: str | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig,
) -> None:
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
        plan.add_output(targets[str(img)], f"annotated image of {img}")
    _plan_json(plan, json_path)
    plan.check()
    _run_images(
        [(i, str(img), img) for i, img in enumerate(images)],
        targets, json_path, json_style, model, config, draw_cfg,
        file_names={str(img): _relative_to(img, json_path.parent if json_path else Path.cwd()) for img in images},
        resume=False, resumable=False,
    )


def _plan_json(plan, json_path: Path | None, what: str = "--json") -> None:
    from ..io.coco_json import journal_path

    if json_path is not None:
        plan.add_output(json_path, what)
        plan.add_output(journal_path(json_path), f"journal of {what}")


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


def run_folder(
    folder: Path, *, recursive: bool, extensions: tuple[str, ...], shard: str | None, skip_existing: bool,
    out: str | bool | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig, engine: EngineConfig | None = None,
) -> None:
    """Every image of a folder (streamed, resumable, shardable), in this process or on Ray."""
    from ..io.coco_json import is_complete
    from ..io.output_paths import resolve_output
    from ..io.output_plan import OutputPlan
    from ..io.sources import global_index, list_images, parse_shard
    from .common import provenance

    require_engine(engine)
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
    _plan_json(plan, json_path)
    plan.check()
    produced_by = provenance(folder, keys, model, config) if json_path is not None else None
    seed = None
    if json_path is not None and is_complete(json_path) and skip_existing:
        seed = _finished_run(json_path, produced_by, keys)
        if seed is None:
            err_console.print(f"{json_path}: already complete for these {len(keys)} images; nothing to do")
            return
    _run_images(
        [(global_index(i, shard_spec), key, path) for i, (key, path) in enumerate(zip(keys, paths))],
        targets, json_path, json_style, model, config, draw_cfg,
        file_names={key: key for key in keys},
        resume=skip_existing, resumable=True, provenance=produced_by, seed=seed, engine=engine,
    )


def _finished_run(path: Path, produced_by: dict, keys: list[str]) -> dict | None:
    """A finished JSON met by --skip-existing: None when it covers every image (nothing to do),
    else the file's content to seed the journal with (its images are kept, the failed or new
    ones are done). Refused when another run made it (other folder, checkpoint, settings)."""
    from ..io.coco_json import _header_mismatch

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{path}: not a COCO JSON this tool wrote; pass another --json or run without --skip-existing") from None
    made_by = data.get("info", {}).get("aepose") if isinstance(data, dict) and isinstance(data.get("info"), dict) else None
    if made_by is None:
        raise ConfigError(
            f"{path}: finished without a record of what produced it (a results-style or older file); "
            "pass another --json or run without --skip-existing"
        )
    old = {"aepose_journal": 0, "keypoint_set": 0, "num_joints": 0, "style": 0, "provenance": {**made_by, "inputs": None}}
    new = {**old, "provenance": {**produced_by, "inputs": None}}
    reason = _header_mismatch(old, new)
    if reason is not None:
        raise ConfigError(f"{path}: made by another run ({reason}); pass another --json or run without --skip-existing")
    names = {img.get("file_name") for img in data.get("images", []) if isinstance(img, dict)}
    if set(keys) <= names:
        return None
    return data


def _run_images(
    entries, targets, json_path, json_style, model, config, draw_cfg, *, file_names, resume: bool,
    resumable: bool, provenance: dict | None = None, seed: dict | None = None, engine: EngineConfig | None = None,
) -> None:
    """Shared by `image` and `folder`: pipeline over image files into drawings and JSON.

    The JSON writer's own `__exit__` decides: assembled on success; on any failure or interrupt
    the journal is kept for `--skip-existing` when the command can resume (`resumable`) and it
    holds finished images, else deleted.
    """
    from ..errors import OutputError
    from ..io.coco_json import CocoJsonWriter
    from ..io.sources import read_image
    from ..types import WorkItem

    runner = build_runner(model, config, engine)
    writer = None
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(runner)
            if json_path is not None:
                writer = stack.enter_context(
                    CocoJsonWriter(json_path, json_style, runner.keypoints, draw_cfg.kpt_thr, resume=resume and seed is None,
                                   provenance=provenance, keep_journal=resumable)
                )
                if seed is not None:
                    writer.adopt_final(seed, set(file_names))
            if not resume:
                done: set[str] = set()
            elif writer is not None:
                done = set(writer.finished_sources())
            else:
                done = {key for key, target in targets.items() if target is not None and Path(target).is_file()}
            todo = [(idx, key, path) for idx, key, path in entries if key not in done]
            if done:
                err_console.print(f"resuming: {len(entries) - len(todo)} of {len(entries)} images already done")
            items = (WorkItem(index=idx, key=key, load=(lambda p=path: read_image(p, config.max_pixels))) for idx, key, path in todo)
            sink = _ImageSink(runner.keypoints, draw_cfg, targets, writer, file_names)
            keep_images = any(targets.get(key) is not None for _, key, _ in todo)
            with progress("img", enabled=len(todo) > 1) as bar:
                task = bar.add_task("images", total=len(todo))
                times = runner.run(items, sink, on_progress=lambda n: bar.advance(task, n), keep_images=keep_images)
            if len(entries) == 1 and times.failures:
                # A single input that cannot be read is a plain error: no empty JSON, no report.
                if writer is not None:
                    writer.discard()
                raise InputError(times.failures[0][1])
    except OutputError as error:
        if writer is not None and resumable and writer.frames and writer.journal_path.exists():
            raise OutputError(
                f"{error}; the {writer.frames} image(s) done are kept in {writer.journal_path.name}: "
                "run again with --skip-existing to finish"
            ) from None
        raise
    if writer is not None:
        err_console.print(f"wrote {json_path}")
    ok = times.items - len(times.failures)
    err_console.print(f"{ok} image(s) done, {len(times.failures)} failed, {times.wall:.1f} s on {runner.description}")
    report_failures(times.failures)
    if times.failures:
        sys.exit(1)


class _ImageSink:
    """Draws and writes annotated images, records results in the JSON writer."""

    def __init__(self, keypoints, draw_cfg, targets, writer, file_names) -> None:
        self.keypoints = keypoints
        self.draw_cfg = draw_cfg
        self.targets = targets
        self.writer = writer
        self.file_names = file_names

    def write(self, item, image, result) -> None:
        from ..io.atomic import write_image

        target = self.targets.get(item.key)
        if target is not None:
            draw_and_write(lambda drawn: write_image(target, drawn), image, result.poses, self.keypoints, self.draw_cfg, result.timings)
        if self.writer is not None:
            self.writer.add(result, file_name=self.file_names[item.key], image_id=item.index + 1, key=item.key)

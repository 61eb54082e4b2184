"""`aepose image` and `aepose folder`: image files through the pipeline into drawings and JSON."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from ..config import DrawConfig, InferenceConfig
from ..console import err_console, progress, report_failures
from ..errors import ConfigError, InputError
from ..io.sources import IMAGE_EXTENSIONS, OUTPUT_STEM_SUFFIX
from .common import ModelChoice, build_estimator, draw_and_write


def annotated_suffix(path: Path) -> str:
    """The annotated image keeps its input's format when OpenCV writes it, else JPEG."""
    suffix = path.suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".jpg"


def run_image(
    images: list[Path], out: str | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig,
) -> None:
    """One or more image files; `out`/`json_out` False turns that output off."""
    from ..io.output_paths import names_folder, resolve_output

    if out and len(images) > 1 and not names_folder(out):
        raise ConfigError(f"--out {out}: several images need a folder (end it with '/')")
    check_images_exist(images)
    if json_out is None and out and names_folder(out):
        json_out = out  # one rule for every command: --out DIR holds all the outputs
    json_anchor = images[0] if len(images) == 1 else images[0].parent / "images"
    json_path = resolve_output(json_out, json_anchor, ".json")
    targets = {str(img): (None if out is False else resolve_output(out, img, annotated_suffix(img))) for img in images}
    _run_images(
        [(i, str(img), img) for i, img in enumerate(images)],
        targets, json_path, json_style, model, config, draw_cfg,
        file_names={str(img): _relative_to(img, json_path.parent if json_path else Path.cwd()) for img in images},
        resume=False,
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


def run_folder(
    folder: Path, *, recursive: bool, extensions: tuple[str, ...], shard: str | None, skip_existing: bool,
    out: str | bool | None, json_out: str | bool | None, json_style: str,
    model: ModelChoice, config: InferenceConfig, draw_cfg: DrawConfig,
) -> None:
    """Every image of a folder (streamed, resumable, shardable)."""
    from ..io.coco_json import is_complete
    from ..io.output_paths import resolve_output
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
    if json_path is not None and is_complete(json_path):
        if skip_existing and _complete_json_covers(json_path, keys):
            err_console.print(f"{json_path}: already complete for these {len(keys)} images; nothing to do")
            return
        if skip_existing:
            raise ConfigError(f"{json_path}: a finished run with other images is there; pass another --json")
    targets = {key: (None if images_dir is None else images_dir / key) for key in keys}
    _run_images(
        [(global_index(i, shard_spec), key, path) for i, (key, path) in enumerate(zip(keys, paths))],
        targets, json_path, json_style, model, config, draw_cfg,
        file_names={key: key for key in keys},
        resume=skip_existing,
    )


def _complete_json_covers(path: Path, keys: list[str]) -> bool:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if isinstance(data, dict):
        names = {img.get("file_name") for img in data.get("images", [])}
        return set(keys) <= names
    return False


def _run_images(entries, targets, json_path, json_style, model, config, draw_cfg, *, file_names, resume: bool) -> None:
    """Shared by `image` and `folder`: pipeline over image files into drawings and JSON.

    The JSON writer's own `__exit__` decides: assembled on success, journal kept (resumable)
    on any failure or interrupt.
    """
    from ..io.coco_json import CocoJsonWriter
    from ..io.sources import read_image
    from ..pipeline import WorkItem, run_pipeline

    estimator = build_estimator(model, config)
    with contextlib.ExitStack() as stack:
        writer = None
        if json_path is not None:
            writer = stack.enter_context(
                CocoJsonWriter(json_path, json_style, estimator.keypoints, draw_cfg.kpt_thr, resume=resume)
            )
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
        sink = _ImageSink(estimator.keypoints, draw_cfg, targets, writer, file_names)
        with progress("img", enabled=len(todo) > 1) as bar:
            task = bar.add_task("images", total=len(todo))
            times = run_pipeline(items, estimator, sink, on_progress=lambda n: bar.advance(task, n))
        if len(entries) == 1 and times.failures:
            # A single input that cannot be read is a plain error: no empty JSON, no report.
            if writer is not None:
                writer.discard()
            raise InputError(times.failures[0][1])
    if writer is not None:
        err_console.print(f"wrote {json_path}")
    ok = times.items - len(times.failures)
    err_console.print(f"{ok} image(s) done, {len(times.failures)} failed, {times.wall:.1f} s on {config.device}")
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

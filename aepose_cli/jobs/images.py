"""Image files through a runner into annotated images, one COCO JSON and the `--csv` table
(`aepose image`, `aepose folder`).

* `plan_images` / `plan_folder`: the inputs and every output path, checked together by the
  output plan before any model loads, and the images' ids (`number_images`, `--image-ids`)
  (`ImagesPlan`);
* `finished_json` / `finished_csv_state`: `--skip-existing` meeting a finished JSON (THE
  provenance check of `jobs.provenance`) or CSV: nothing to do, or the file's images to keep;
* `run_images`: the images on a `Runner` (`jobs.base`) into drawings, the JSON and the CSV;
  returns an `ImagesOutcome`. Nothing here prints or exits.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import MAX_IMAGE_ID, DrawConfig, ImageIds
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

    `entries`: (image index in the run, key, file) per image; `targets`: the annotated image of
    each key (None: off); `json_path`: the COCO JSON (None: off); `file_names`: the name each key
    gets in the JSON; `image_ids`: the id each key gets there (`--image-ids`; None: the index + 1);
    `csv_path`: the `--csv` table (None: off);
    `input_root`: the folder of a folder run (None for listed images);
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
    image_ids: dict[str, int] | None = None
    csv_path: Path | None = None

    @property
    def keys(self) -> list[str]:
        return [key for _, key, _ in self.entries]

    def image_id(self, key: str, index: int) -> int:
        """The id of the image `key` (at `index` in the run) in the JSON."""
        return index + 1 if self.image_ids is None else self.image_ids[key]

    def file_scope(self) -> FileScope:
        if self.scope is not None:
            return self.scope
        paths = [t for t in self.targets.values() if t is not None]
        for journaled in (self.json_path, self.csv_path):
            if journaled is not None:
                paths += [journaled, journal_path(journaled)]
        return FileScope.of(*paths, name="image outputs")


@dataclass
class ImagesOutcome:
    """What `run_images` did: the stage times (with the failed images' keys and reasons), the
    JSON and CSV written (None: off), and how many images an earlier run had done (resumed)."""

    times: StageTimes
    json_path: Path | None
    done_before: int = 0
    csv_path: Path | None = None


def annotated_suffix(path: Path) -> str:
    """The annotated image keeps its input's format when OpenCV writes it, else JPEG."""
    suffix = path.suffix.lower()
    return suffix if suffix in IMAGE_EXTENSIONS else ".jpg"


def plan_images(
    images: list[Path], out: OutputFlag, json_out: OutputFlag, image_ids: ImageIds | None = None, csv_out: OutputFlag = None,
) -> ImagesPlan:
    """One or more image files; `out`/`json_out` False turns that output off; `image_ids`: how
    the JSON numbers them (`number_images`; None: 1, 2, ... in the given order); `csv_out`: the
    `--csv` table (None or False: none; a folder: IMG.pose.csv, or images.pose.csv, in it).

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
    csv_path = csv_output(csv_out, json_anchor)
    targets = {str(img): (None if out is False else resolve_output(out, img, annotated_suffix(img))) for img in images}
    entries = [(i, str(img), img) for i, img in enumerate(images)]
    ids = number_images(image_ids, [(key, Path(img.name)) for _, key, img in entries], {str(img): img for img in images})
    plan = OutputPlan()
    for img in images:
        plan.add_input(img)
    if image_ids is not None and image_ids.annotations is not None:
        plan.add_input(image_ids.annotations)
    for img in images:
        plan.add_output(targets[str(img)], f"annotated image of {img}", lock=True)
    plan.add_json(json_path, "--json")
    plan.add_json(csv_path, "--csv")
    scope = plan.check()
    return ImagesPlan(
        entries=entries,
        targets=targets,
        json_path=json_path,
        file_names={str(img): _relative_to(img, json_path.parent if json_path else Path.cwd()) for img in images},
        scope=scope,
        image_ids=ids,
        csv_path=csv_path,
    )


def csv_output(csv_out: OutputFlag, anchor: str | os.PathLike[str], suffix: str = ".csv") -> Path | None:
    """Where `--csv` goes: nowhere unless asked for (None or False); a folder: the default name
    (`ANCHOR.pose.csv`, or `ANCHOR.pose<suffix>`) in it; else that file (the output rule of
    every flag, but opt-in)."""
    from ..io.output_paths import resolve_output

    if csv_out is None or csv_out is False:
        return None
    return resolve_output(csv_out, anchor, suffix)


def plan_folder(
    folder: Path, *, recursive: bool, extensions: tuple[str, ...], shard: str | None, out: OutputFlag, json_out: OutputFlag,
    image_ids: ImageIds | None = None, csv_out: OutputFlag = None,
) -> ImagesPlan:
    """Every image of a folder (sorted, sharded with `shard` "I/N"), its annotated copy under
    `out` (default: FOLDER.pose/ beside the folder) and the COCO JSON, checked before any model
    loads: no output may land among the folder's images. `image_ids`: how the JSON numbers the
    images (`number_images`; None: their position in the whole listing + 1); `csv_out`: the
    `--csv` table (None or False: none; a folder: FOLDER.pose.csv in it, sharded as the JSON)."""
    from ..io.output_paths import resolve_output
    from ..io.output_plan import OutputPlan
    from ..io.sources import global_index, list_images, parse_shard

    shard_spec = parse_shard(shard) if shard else None
    if not extensions:
        raise ConfigError("--ext names no extension")
    paths = list_images(folder, recursive=recursive, extensions=extensions, shard=shard_spec)
    suffix = ".json" if shard_spec is None else f".shard{shard_spec[0]}of{shard_spec[1]}.json"
    json_path = resolve_output(json_out, folder, suffix)
    csv_path = csv_output(csv_out, folder, suffix.removesuffix(".json") + ".csv")
    if out is False:
        images_dir = None
    elif out is None:
        images_dir = Path(os.path.abspath(folder)).parent / f"{Path(os.path.abspath(folder)).name}{OUTPUT_STEM_SUFFIX}"
    else:
        images_dir = Path(out)
    keys = [p.relative_to(folder).as_posix() for p in paths]
    targets = {key: (None if images_dir is None else images_dir / key) for key in keys}
    ids = number_images(image_ids, [(key, Path(key)) for key in keys], dict(zip(keys, paths)))
    plan = OutputPlan()
    plan.add_input_folder(folder, extensions, recursive)
    for path in paths:
        plan.add_input(path)
    if image_ids is not None and image_ids.annotations is not None:
        plan.add_input(image_ids.annotations)
    for key in keys:
        plan.add_output(targets[key], "--out")
    if images_dir is not None:
        plan.add_lock(images_dir)  # the folder of annotated images is one output unit
    plan.add_json(json_path, "--json")
    plan.add_json(csv_path, "--csv")
    scope = plan.check()
    return ImagesPlan(
        entries=[(global_index(i, shard_spec), key, path) for i, (key, path) in enumerate(zip(keys, paths))],
        targets=targets,
        json_path=json_path,
        file_names={key: key for key in keys},
        input_root=folder,
        resumable=True,
        scope=scope,
        image_ids=ids,
        csv_path=csv_path,
    )


def number_images(image_ids: ImageIds | None, names: list[tuple[str, Path]], files: dict[str, Path]) -> dict[str, int] | None:
    """The id of each image in the JSON (`--image-ids`), decided before any model loads; None
    for `sequential` (each image's position + 1, as before). `names`: (key, name) per image, the
    name being its path relative to the folder (a folder run) or its file name (listed images);
    `files`: each key's file, for messages.

    `stem`: the number the file is named by (`000000129648.jpg` -> 129648). `from`: the id the
    annotation file gives that name (its `file_name` equal to the name, or else to the name's
    last part). ConfigError (exit 2), in one line naming the image: a stem that is not a number,
    two images with one id, an image the annotation file does not list."""
    if image_ids is None or image_ids.kind == "sequential":
        return None
    if image_ids.kind == "stem":
        ids = {}
        for key, name in names:
            stem = name.stem
            if re.fullmatch(r"[0-9]+", stem) is None or int(stem) > MAX_IMAGE_ID:
                raise ConfigError(
                    f"{files[key]}: --image-ids stem needs file names that are numbers (as 000000129648.jpg), "
                    f"not {stem!r}; use --image-ids sequential or from:ANN.json"
                )
            ids[key] = int(stem)
    else:
        ids = _ids_from_annotations(image_ids.annotations, names, files)
    seen: dict[int, str] = {}
    for key, _ in names:
        if ids[key] in seen:
            raise ConfigError(
                f"{files[key]}: --image-ids {image_ids.kind}: it and {files[seen[ids[key]]]} would both get image id {ids[key]}; "
                "give each image its own"
            )
        seen[ids[key]] = key
    return ids


def _ids_from_annotations(annotations: Path, names: list[tuple[str, Path]], files: dict[str, Path]) -> dict[str, int]:
    """`--image-ids from:ANN.json`: each image's id in the annotation file, by `file_name`."""
    from ..evaluation.cocofiles import check_consistency, load_annotations

    if not os.path.isfile(annotations):
        raise InputError(f"{annotations}: no such annotation file (--image-ids from:)")
    data = load_annotations(annotations)
    check_consistency(data, str(annotations))
    by_name: dict[str, int] = {}
    for entry in data.get("images", []):
        name = entry.get("file_name")
        if not isinstance(name, str):
            continue
        if name in by_name and by_name[name] != entry["id"]:
            raise ConfigError(f"{annotations}: file_name {name!r} has two ids ({by_name[name]} and {entry['id']}); --image-ids from: needs one")
        by_name[name] = entry["id"]
    ids = {}
    for key, name in names:
        for candidate in (name.as_posix(), name.name):
            if candidate in by_name:
                ids[key] = by_name[candidate]
                break
        else:
            raise ConfigError(
                f"{files[key]}: not among the images of {annotations} (no file_name {name.as_posix()!r}); "
                "--image-ids from: numbers only the images it lists"
            )
    return ids


def image_ids_record(image_ids: ImageIds) -> str:
    """What a folder run's provenance records of `--image-ids`: the kind, and for `from:` the
    annotation file's real path and the start of its sha256 (the ids are its content)."""
    import hashlib

    if image_ids.annotations is None:
        return image_ids.recorded()
    digest = hashlib.sha256(Path(image_ids.annotations).read_bytes()).hexdigest()
    return f"{image_ids.recorded()} sha256:{digest[:16]}"


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


def finished_json(plan: ImagesPlan, produced_by: dict) -> tuple[dict[str, Any], bool]:
    """A complete JSON met by `--skip-existing`: its content (to seed the journal with: its
    images are kept, the failed or new ones are done) and whether it covers every image of the
    plan. Refused when another run made it (`check_finished_json`)."""
    data = check_finished_json(plan.json_path, produced_by)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not isinstance(data.get("annotations"), list):
        raise ConfigError(f"{plan.json_path}: not a COCO JSON this tool wrote ('images' or 'annotations' is not a list); pass another --json or run without --skip-existing")
    names = {img.get("file_name") for img in images if isinstance(img, dict) and isinstance(img.get("file_name"), str)}
    return data, set(plan.keys) <= names


def finished_csv_state(plan: ImagesPlan, json_finished: bool) -> str:
    """`--skip-existing` meeting the plan's CSV: 'off', 'finished' or 'to do'. A finished CSV
    records nothing of what produced it, so it counts as this run's only beside a finished JSON
    whose record matches (`finished_json`, checked by the caller): the run that wrote both.
    Alone, or beside an unfinished JSON, it is refused (ConfigError), as a results-style JSON
    is; so is a file that does not begin with this tool's header row."""
    from ..io.coco_json import is_complete
    from ..io.keypoint_csv import is_own_csv

    if plan.csv_path is None:
        return "off"
    if not is_complete(plan.csv_path):
        return "to do"
    if not is_own_csv(plan.csv_path):
        raise ConfigError(f"{plan.csv_path}: not a CSV this tool wrote; pass another --csv or run without --skip-existing")
    if not json_finished:
        raise ConfigError(
            f"{plan.csv_path}: a finished CSV records nothing of what produced it (only a finished JSON beside it can); "
            "pass another --csv or run without --skip-existing"
        )
    return "finished"


def run_images(
    plan: ImagesPlan, runner: Runner, draw_cfg: DrawConfig, json_style: str, *, resume: bool = False,
    provenance: dict | None = None, seed: dict | None = None, progress: Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> ImagesOutcome:
    """The plan's images on `runner` (entered here) into drawings, the JSON and the CSV.

    `resume`: skip the images an earlier run finished (in every journal the plan writes, or the
    annotated images there when it writes neither JSON nor CSV); `provenance`: what the JSON and
    the CSV's journal record of this run; `seed`: a finished JSON whose images are kept
    (`finished_json`), in the JSON and in the CSV, which is built from it. `on_note` hears, in
    one line, how many images were done before. Each writer's own `__exit__` decides: assembled
    on success; on any failure or interrupt its journal is kept for `--skip-existing` when the
    plan can resume and it holds finished images, else deleted. A single image that cannot be
    read is a plain InputError (no JSON or CSV is written).
    """
    from ..io.coco_json import CocoJsonWriter
    from ..io.keypoint_csv import KeypointCsvWriter
    from ..io.sources import read_image

    max_pixels = runner.config.max_pixels
    writer = table = None
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
            if plan.csv_path is not None:
                table = stack.enter_context(
                    KeypointCsvWriter(plan.csv_path, runner.keypoints, resume=resume and seed is None, provenance=provenance,
                                      keep_journal=plan.resumable, scope=scope)
                )
            if seed is not None:
                try:
                    for seeded in (writer, table):
                        if seeded is not None:
                            seeded.adopt_final(seed, set(plan.file_names))
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ConfigError(
                        f"{plan.json_path}: not a COCO JSON this tool wrote (a malformed image or annotation); "
                        "pass another --json or run without --skip-existing"
                    ) from None
            journaled = [w for w in (writer, table) if w is not None]
            if not resume:
                done: set[str] = set()
            elif journaled:
                # An image counts as done when every journal has it (a crash between two writes
                # leaves it in one only: it is done again, and written where it is missing).
                done = set.intersection(*(set(w.finished_sources()) for w in journaled))
            else:
                done = {key for key, target in plan.targets.items() if target is not None and Path(target).is_file()}
            todo = [(idx, key, path) for idx, key, path in plan.entries if key not in done]
            done_before = len(plan.entries) - len(todo)
            if done and on_note is not None:
                on_note(f"resuming: {done_before} of {len(plan.entries)} images already done")
            items = (WorkItem(index=idx, key=key, load=(lambda p=path: read_image(p, max_pixels))) for idx, key, path in todo)
            sink = _ImageSink(runner.keypoints, draw_cfg, plan, writer, scope, table)
            keep_images = any(plan.targets.get(key) is not None for _, key, _ in todo)
            shown = progress.task("images", len(todo), "img") if progress is not None and len(todo) > 1 else contextlib.nullcontext(None)
            with shown as advance:
                times = runner.run(items, sink, on_progress=advance, keep_images=keep_images)
            if len(plan.entries) == 1 and times.failures:
                # A single input that cannot be read is a plain error: no empty JSON, no report.
                for journaled_writer in journaled:
                    journaled_writer.discard()
                raise InputError(times.failures[0][1])
    except OutputError as error:
        raise OutputError(f"{error}{_kept((writer, table), plan)}") from None
    except KeyboardInterrupt as stop:
        raise Interrupted(f"stopped{_kept((writer, table), plan)}", signal=getattr(stop, "signal_name", None)) from None
    return ImagesOutcome(times, plan.json_path, done_before, plan.csv_path)


def _kept(writers, plan: ImagesPlan) -> str:
    """What a stopped or failed run kept: '; the N image(s) done are kept in X: run again with
    --skip-existing to finish' for each journal kept, or ''."""
    kept = ""
    for writer in writers:
        if writer is not None and plan.resumable and writer.frames and writer.journal_path.exists():
            kept += f"; the {writer.frames} image(s) done are kept in {writer.journal_path.name}: run again with --skip-existing to finish"
    return kept


class _ImageSink:
    """Draws and writes annotated images, records results in the JSON writer and the CSV's
    (`table`), each only where its journal lacks the image (a resumed run)."""

    def __init__(self, keypoints, draw_cfg, plan: ImagesPlan, writer, scope: FileScope, table=None) -> None:
        self.keypoints = keypoints
        self.draw_cfg = draw_cfg
        self.plan = plan
        self.targets = plan.targets
        self.writer = writer
        self.file_names = plan.file_names
        self.scope = scope
        self.table = table

    def write(self, item, image, result) -> None:
        from ..io.atomic import write_image

        target = self.targets.get(item.key)
        if target is not None:
            draw_and_write(
                lambda drawn: write_image(target, drawn, scope=self.scope), image, result.poses, self.keypoints, self.draw_cfg, result.timings,
            )
        name, image_id = self.file_names[item.key], self.plan.image_id(item.key, item.index)
        for writer in (self.writer, self.table):
            if writer is not None and not writer.has(item.key):
                writer.add(result, file_name=name, image_id=image_id, key=item.key, source=name)

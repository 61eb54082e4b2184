"""Inference over an annotated dataset for `aepose evaluate --images`: the annotation file's
images on a runner into a COCO results file, resumable, ready for the evaluator.

* `evaluation_plan`: the output plan of an evaluation (results file, its journal, the metrics),
  checked against every input before the model loads;
* `dataset_images`: each annotated image's file, refused when its name leads outside the image
  folder; the missing ones (an error unless allowed);
* `run_dataset`: the present images on a `Runner` into the results file; returns a
  `DatasetOutcome`. Nothing here prints or exits.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AnnotationError, InputError
from ..types import Progress, StageTimes, WorkItem
from .base import Runner


@dataclass
class DatasetOutcome:
    """What `run_dataset` wrote (`results_path`), its stage times (failed images listed), how
    many images it ran, and the ids of the images its results cover (for the score)."""

    results_path: Path
    times: StageTimes
    ran: int
    evaluated: set = field(default_factory=set)


def evaluation_plan(ann_path, pred_path, images_dir, image_entries, results_path, metrics_json) -> None:
    """The output plan of `evaluate` (see io/output_plan.py): neither the results file, its
    journal nor --metrics-json may be the annotations, the predictions, an annotated image or
    each other; checked before the model loads."""
    from ..io.output_plan import OutputPlan

    plan = OutputPlan()
    plan.add_input(ann_path)
    if pred_path is not None:
        plan.add_input(pred_path)
    if images_dir is not None:
        for im in image_entries:
            name = im.get("file_name") if isinstance(im, dict) else None
            if isinstance(name, str) and name:
                plan.add_input(Path(images_dir) / name)
    plan.add_json(results_path, "--out")
    plan.add_output(metrics_json, "--metrics-json")
    plan.check()


def image_paths(ann_path: Path, image_entries: list[dict], images_dir: Path) -> list[tuple[dict, Path]]:
    """Each image's file under `images_dir`, refused (fatal, before the model loads) when its
    `file_name` leads outside the folder.

    A `file_name` is joined to the folder and resolved (`realpath`: `..`, absolute paths and
    symbolic links all followed); the result must lie inside the resolved folder. A link inside
    the folder that points out of it is refused too. The message is the same whether the
    outside file exists, is unreadable or is absent (nothing outside is looked at), so the
    annotation file cannot be used to probe the file system. The whole run stops: a file that
    names paths outside its image folder is not a dataset to score.
    """
    root = os.path.realpath(images_dir)
    paths = []
    for i, im in enumerate(image_entries):
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            raise AnnotationError(f"{ann_path}: images[{i}] (id {im.get('id')}) has no 'file_name'")
        inside = "\0" not in name and not os.path.isabs(name)
        resolved = os.path.realpath(os.path.join(root, name)) if inside else ""
        if not inside or os.path.commonpath([root, resolved]) != root:
            raise AnnotationError(
                f"{ann_path}: images[{i}] file_name {name!r} is outside --images {images_dir}; refused"
            )
        paths.append((im, Path(resolved)))
    return paths


def dataset_images(
    ann_path: Path, image_entries: list[dict], images_dir: Path, *, allow_missing: bool,
) -> tuple[list[tuple[dict, Path]], list[tuple[dict, Path]]]:
    """(present, missing) annotated images: (image entry, file) each. InputError when the folder
    is not there, or images are missing and `allow_missing` is off (naming the first five)."""
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found")
    present, missing = [], []
    for im, path in image_paths(ann_path, image_entries, images_dir):
        # Anything there is tried (a FIFO or folder then fails as that image, in one line).
        (present if os.path.lexists(path) else missing).append((im, path))
    if missing and not allow_missing:
        raise InputError(f"{images_dir}: {len(missing)} annotated image(s) missing: {missing_names(missing)} (use --allow-missing to skip them)")
    return present, missing


def missing_names(missing: Sequence[tuple[dict, Path]]) -> str:
    """The first five missing images' names, for one line."""
    return ", ".join(im["file_name"] for im, _ in missing[:5]) + (" ..." if len(missing) > 5 else "")


def run_dataset(
    present: list[tuple[dict, Path]], results_path: Path, runner: Runner, *, provenance: dict | None,
    skip_existing: bool, progress: Progress | None = None,
) -> DatasetOutcome:
    """The present images on `runner` (entered here) into a COCO results file (`results_path`,
    written atomically, its journal resumed with `skip_existing`). Failed images are listed in
    the outcome's times and left out of `evaluated`."""
    from ..io.coco_json import CocoJsonWriter
    from ..io.sources import read_image

    max_pixels = runner.config.max_pixels
    with contextlib.ExitStack() as stack:
        stack.enter_context(runner)
        writer = stack.enter_context(
            CocoJsonWriter(results_path, "results", runner.keypoints, 0.0, resume=skip_existing, provenance=provenance)
        )
        done = writer.finished_sources() if skip_existing else frozenset()
        todo = [(im, p) for im, p in present if im["file_name"] not in done]
        items = (
            WorkItem(index=i, key=im["file_name"], load=(lambda p=p: read_image(p, max_pixels)), extra=im["id"])
            for i, (im, p) in enumerate(todo)
        )

        class _ResultsSink:
            def write(self, item, image, result):
                writer.add(result, file_name=item.key, image_id=item.extra, key=item.key)

        shown = progress.task("evaluate", len(todo), "img") if progress is not None and len(todo) > 1 else contextlib.nullcontext(None)
        with shown as advance:
            times = runner.run(items, _ResultsSink(), on_progress=advance, keep_images=False)
    failed = {key for key, _ in times.failures}
    return DatasetOutcome(results_path, times, len(todo), {im["id"] for im, _ in present if im["file_name"] not in failed})

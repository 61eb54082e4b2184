"""`aepose evaluate`: COCO keypoint AP/AR of a model on annotated images, or of a results file."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ..config import EngineConfig, InferenceConfig, ModelChoice
from ..console import err_console, metrics_table, out_console, progress, report_failures, stage_table
from ..errors import AnnotationError, ConfigError, InputError
from .common import build_runner, require_engine


def run_evaluate(
    ann_path: Path, *, images_dir: Path | None, pred_path: Path | None, results_out: str | None,
    metrics_json: Path | None, max_images: int | None, allow_missing: bool, skip_existing: bool,
    model: ModelChoice, config: InferenceConfig, report_dir: Path | None = None, engine: EngineConfig | None = None,
) -> None:
    from ..evaluation.cocoeval import evaluate_keypoints_detailed
    from ..evaluation.cocofiles import annotation_num_joints, load_annotations, load_results, predictions_of, subset_annotations
    from ..keypoints import keypoint_set, keypoint_set_for

    if (images_dir is None) == (pred_path is None):
        raise ConfigError("give exactly one of --images DIR (run inference) or --pred RESULTS.json")
    if pred_path is not None and engine is not None and engine.engine != "single":
        raise ConfigError("--engine ray runs inference: it goes with --images, not --pred")
    require_engine(engine)
    if report_dir is not None:
        # Before any inference: a missing matplotlib or a report folder that holds an input
        # fails now, not after minutes of work.
        from ..evaluation.report import check_report_dir

        check_report_dir(report_dir, [ann_path, pred_path, results_out, metrics_json])
    ann = load_annotations(ann_path)
    ann_k = annotation_num_joints(ann, ann_path)
    image_entries = list(ann.get("images", []))
    if not image_entries:
        raise AnnotationError(f"{ann_path}: no images to evaluate ('images' is empty)")
    if max_images is not None:
        image_entries = image_entries[:max_images]
    subset = None
    if max_images is not None:
        subset = subset_annotations(ann, {im["id"] for im in image_entries})
    results_planned = None if pred_path is not None else _results_path(results_out, ann_path)
    _check_outputs(ann_path, pred_path, images_dir, image_entries, results_planned, metrics_json)
    results_name = None
    if pred_path is not None:
        kps = keypoint_set(model.keypoints) if model.keypoints else keypoint_set_for(ann_k)
        if kps.num_joints != ann_k:
            raise ConfigError(f"--keypoints {kps.name} has {kps.num_joints} joints but {ann_path} has {ann_k}")
        results_path, results_name = load_results(pred_path)  # every entry checked
        if subset is not None:
            # --max-images N scores the first N images: results for the others are left out.
            results_path = predictions_of(results_path, results_name, ann, subset)
        timing = None
    else:
        results_path, kps, timing, evaluated = _evaluate_inference(
            ann_path, ann_k, image_entries, images_dir, results_planned, model, config, allow_missing, skip_existing, engine
        )
        if len(evaluated) < len(image_entries):
            # Images skipped by --allow-missing are left out of the score, not counted as misses.
            subset = subset_annotations(ann, evaluated)
    evaluation = evaluate_keypoints_detailed(
        subset if subset is not None else ann_path, results_path, kps.sigmas, kps.use_area,
        annotations_name=str(ann_path), results_name=results_name,
    )
    metrics = evaluation.metrics
    out_console.print(metrics_table(metrics, title=f"COCO keypoint evaluation ({kps.name}, use_area={kps.use_area})"))
    if timing is not None:
        out_console.print(timing)
    if metrics_json is not None:
        from ..io.atomic import atomic_write_text

        atomic_write_text(metrics_json, json.dumps(metrics, indent=2) + "\n")
        err_console.print(f"wrote {metrics_json}")
    if report_dir is not None:
        from ..evaluation.report import write_report

        write_report(
            report_dir, evaluation, subset if subset is not None else ann_path, results_path, kps,
            title=f"aepose evaluate: {Path(pred_path or results_path).name} vs {Path(ann_path).name}",
        )
        err_console.print(f"wrote {report_dir / 'index.html'}")


def _results_path(results_out, ann_path: Path) -> Path:
    from ..io.output_paths import resolve_output

    return resolve_output(results_out, ann_path, ".json")


def _check_outputs(ann_path, pred_path, images_dir, image_entries, results_path, metrics_json) -> None:
    """The output plan of `evaluate` (see io/output_plan.py): neither the results file, its
    journal nor --metrics-json may be the annotations, the predictions, an annotated image or
    each other; checked before the model loads."""
    from ..io.coco_json import journal_path
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
    plan.add_output(results_path, "--out")
    if results_path is not None:
        plan.add_output(journal_path(results_path), "journal of --out")
    plan.add_output(metrics_json, "--metrics-json")
    plan.check()


def _image_paths(ann_path: Path, image_entries: list[dict], images_dir: Path) -> list[tuple[dict, Path]]:
    """Each image's file under `images_dir`, refused (fatal, before the model loads) when its
    `file_name` leads outside the folder.

    A `file_name` is joined to the folder and resolved (`realpath`: `..`, absolute paths and
    symbolic links all followed); the result must lie inside the resolved folder. A link inside
    the folder that points out of it is refused too. The message is the same whether the
    outside file exists, is unreadable or is absent (nothing outside is looked at), so the
    annotation file cannot be used to probe the file system. The whole run stops: a file that
    names paths outside its image folder is not a dataset to score.
    """
    from ..errors import AnnotationError

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


def _evaluate_inference(ann_path, ann_k, image_entries, images_dir, results_out, model, config, allow_missing, skip_existing, engine=None):
    from ..io.coco_json import CocoJsonWriter
    from ..io.sources import read_image
    from ..types import WorkItem

    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found")
    present, missing = [], []
    for im, path in _image_paths(ann_path, image_entries, images_dir):
        # Anything there is tried (a FIFO or folder then fails as that image, in one line).
        (present if os.path.lexists(path) else missing).append((im, path))
    if missing:
        names = ", ".join(im["file_name"] for im, _ in missing[:5]) + (" ..." if len(missing) > 5 else "")
        if not allow_missing:
            raise InputError(f"{images_dir}: {len(missing)} annotated image(s) missing: {names} (use --allow-missing to skip them)")
        err_console.print(f"[yellow]warning:[/] skipping {len(missing)} image(s) missing from {images_dir}: {names}")
    runner = build_runner(model, config, engine)
    kps = runner.keypoints
    if kps.num_joints != ann_k:
        raise ConfigError(f"the model predicts {kps.num_joints} keypoints but {ann_path} has {ann_k}")
    from .common import provenance

    results_path = results_out
    produced_by = provenance(images_dir, [im["file_name"] for im, _ in present], model, config)
    with contextlib.ExitStack() as stack:
        stack.enter_context(runner)
        writer = stack.enter_context(
            CocoJsonWriter(results_path, "results", kps, 0.0, resume=skip_existing, provenance=produced_by)
        )
        done = writer.finished_sources() if skip_existing else frozenset()
        todo = [(im, p) for im, p in present if im["file_name"] not in done]
        items = (
            WorkItem(index=i, key=im["file_name"], load=(lambda p=p: read_image(p, config.max_pixels)), extra=im["id"])
            for i, (im, p) in enumerate(todo)
        )

        class _ResultsSink:
            def write(self, item, image, result):
                writer.add(result, file_name=item.key, image_id=item.extra, key=item.key)

        with progress("img", enabled=len(todo) > 1) as bar:
            task = bar.add_task("evaluate", total=len(todo))
            times = runner.run(items, _ResultsSink(), on_progress=lambda n: bar.advance(task, n), keep_images=False)
    err_console.print(f"wrote {results_path} ({len(todo)} image(s) on {runner.description})")
    report_failures(times.failures)
    if times.failures and not allow_missing:
        raise InputError(f"{len(times.failures)} image(s) could not be processed; results are incomplete")
    timing = stage_table(times, "image")
    failed = {key for key, _ in times.failures}
    return results_path, kps, timing, {im["id"] for im, _ in present if im["file_name"] not in failed}

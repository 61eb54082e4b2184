"""`aepose evaluate`: COCO keypoint AP/AR of a model on annotated images (`jobs.dataset` on a
runner), or of a results file; the metrics table, and the report if asked for."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import EngineConfig, InferenceConfig, ModelChoice
from ..errors import AnnotationError, ConfigError, InputError
from ..io.output_plan import entered
from .console import Bars, DownloadBar, err_console, metrics_table, out_console, report_failures, stage_table
from .runtime import build_runner, require_engine


def run_evaluate(
    ann_path: Path, *, images_dir: Path | None, pred_path: Path | None, results_out: str | None,
    metrics_json: Path | None, max_images: int | None, allow_missing: bool, skip_existing: bool,
    model: ModelChoice, config: InferenceConfig, report_dir: Path | None = None, engine: EngineConfig | None = None,
) -> int:
    from ..evaluation.cocofiles import annotation_num_joints, check_consistency, load_annotations, subset_annotations
    from ..jobs.dataset import evaluation_plan

    if (images_dir is None) == (pred_path is None):
        raise ConfigError("give exactly one of --images DIR (run inference) or --pred RESULTS.json")
    if pred_path is not None and engine is not None and engine.engine != "single":
        raise ConfigError("--engine ray runs inference: it goes with --images, not --pred")
    require_engine(engine)
    if report_dir is not None:
        # Before any inference: a missing matplotlib or a report folder that holds an input
        # fails now, not after minutes of work.
        from ..evaluation.report import check_report_dir

        check_report_dir(report_dir, [ann_path, pred_path, results_out, metrics_json, images_dir])
    ann = load_annotations(ann_path)
    ann_k = annotation_num_joints(ann, ann_path)
    image_entries = list(ann.get("images", []))
    if not image_entries:
        raise AnnotationError(f"{ann_path}: no images to evaluate ('images' is empty)")
    check_consistency(ann, str(ann_path))  # unique ids, annotations of its own images: before any model loads
    if max_images is not None:
        image_entries = image_entries[:max_images]
    subset = None
    if max_images is not None:
        subset = subset_annotations(ann, {im["id"] for im in image_entries})
    results_planned = None if pred_path is not None else _results_path(results_out, ann_path)
    scope = evaluation_plan(ann_path, pred_path, images_dir, image_entries, results_planned, metrics_json, report_dir)
    with entered(scope):  # the outputs locked before the model loads
        return _evaluate(
            ann_path, ann, ann_k, image_entries, subset, images_dir=images_dir, pred_path=pred_path, results_planned=results_planned,
            metrics_json=metrics_json, allow_missing=allow_missing, skip_existing=skip_existing, model=model, config=config,
            report_dir=report_dir, engine=engine, scope=scope,
        )


def _evaluate(
    ann_path, ann, ann_k, image_entries, subset, *, images_dir, pred_path, results_planned, metrics_json, allow_missing, skip_existing,
    model, config, report_dir, engine, scope,
) -> int:
    from ..evaluation.cocoeval import evaluate_keypoints_detailed
    from ..evaluation.cocofiles import check_results_refer, load_results, predictions_of, subset_annotations
    from ..keypoints import keypoint_set

    results_name = None
    if pred_path is not None:
        kps = keypoint_set(model.keypoints) if model.keypoints else _annotation_keypoint_set(ann, ann_k, ann_path)
        if kps.num_joints != ann_k:
            raise ConfigError(f"--keypoints {kps.name} has {kps.num_joints} joints but {ann_path} has {ann_k}")
        results_path, results_name = load_results(pred_path)  # every entry checked
        check_results_refer(results_path, results_name, ann, str(ann_path))
        if subset is not None:
            # --max-images N scores the first N images: results for the others are left out.
            results_path = predictions_of(results_path, results_name, ann, subset)
        timing = None
    else:
        results_path, kps, timing, evaluated = _evaluate_inference(
            ann, ann_path, ann_k, image_entries, images_dir, results_planned, model, config, allow_missing, skip_existing, engine, scope
        )
        if len(evaluated) < len(image_entries):
            # Images skipped by --allow-missing are left out of the score, not counted as misses.
            subset = subset_annotations(ann, evaluated)
    evaluation = evaluate_keypoints_detailed(
        subset if subset is not None else ann_path, results_path, kps.sigmas, kps.use_area,
        annotations_name=str(ann_path), results_name=results_name, mode=kps.evaluation,
    )
    metrics = evaluation.metrics
    out_console.print(metrics_table(metrics, title=f"COCO keypoint evaluation ({kps.name}, {kps.evaluation}, use_area={kps.use_area})"))
    if timing is not None:
        out_console.print(timing)
    if metrics_json is not None:
        scope.store_text(metrics_json, json.dumps(metrics, indent=2) + "\n")
        err_console.print(f"wrote {metrics_json}")
    if report_dir is not None:
        from ..evaluation.report import write_report

        write_report(
            report_dir, evaluation, subset if subset is not None else ann_path, results_path, kps,
            title=f"aepose evaluate: {Path(pred_path or results_path).name} vs {Path(ann_path).name}", scope=scope,
        )
        err_console.print(f"wrote {report_dir / 'index.html'}")
    return 0


def _annotation_keypoint_set(ann: dict, ann_k: int, ann_path: Path):
    """The keypoint set of an annotation file: the only one with its K, else, for 14 joints,
    CrowdPose when every image has a `crowdIndex` (CrowdPose's files do) or when the category's
    keypoint names start as CrowdPose's (left side first), AIC when they start as AIC's; a
    ConfigError asking for --keypoints otherwise."""
    from ..errors import ConfigError
    from ..keypoints import AIC, CROWDPOSE, keypoint_set_for, keypoint_sets_with

    if len(keypoint_sets_with(ann_k)) != 1 and ann_k == CROWDPOSE.num_joints:
        images = ann.get("images") or []
        if images and all(isinstance(im, dict) and isinstance(im.get("crowdIndex"), (int, float)) for im in images):
            return CROWDPOSE
        names = next((cat.get("keypoints") for cat in ann.get("categories", []) if isinstance(cat, dict) and cat.get("keypoints")), None)
        first = str(names[0]).lower().replace(" ", "_") if names else ""
        if first == AIC.names[0]:
            return AIC
        if first == CROWDPOSE.names[0]:
            return CROWDPOSE
    try:
        return keypoint_set_for(ann_k, str(ann_path))
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("does not say which", "its images have no crowdIndex")) from None


def _check_annotation_set(ann: dict, ann_k: int, ann_path: Path, kps) -> None:
    """An annotation file that says its keypoint set (CrowdPose's crowdIndex, AIC's names) must be
    the model's: the same K with other joints would be scored with the wrong sigmas."""
    from ..errors import ConfigError

    try:
        theirs = _annotation_keypoint_set(ann, ann_k, ann_path)
    except ConfigError:
        return
    if theirs.name != kps.name:
        raise ConfigError(f"{ann_path} holds {theirs.label} keypoints but the model predicts {kps.label}'s; pass --keypoints {theirs.name} if the checkpoint is a {theirs.label} model")


def _results_path(results_out, ann_path: Path) -> Path:
    from ..io.output_paths import resolve_output

    return resolve_output(results_out, ann_path, ".json")


def _evaluate_inference(ann, ann_path, ann_k, image_entries, images_dir, results_out, model, config, allow_missing, skip_existing, engine=None, scope=None):
    from ..jobs.dataset import dataset_images, missing_names, run_dataset
    from ..jobs.provenance import provenance

    present, missing = dataset_images(ann_path, image_entries, images_dir, allow_missing=allow_missing)
    if missing:
        err_console.print(f"[yellow]warning:[/] skipping {len(missing)} image(s) missing from {images_dir}: {missing_names(missing)}")
    runner = build_runner(model, config, engine)
    kps = runner.keypoints
    if kps.num_joints != ann_k:
        raise ConfigError(f"the model predicts {kps.num_joints} keypoints but {ann_path} has {ann_k}")
    _check_annotation_set(ann, ann_k, ann_path, kps)
    produced_by = provenance(images_dir, [im["file_name"] for im, _ in present], model, config, progress=DownloadBar())
    outcome = run_dataset(present, results_out, runner, provenance=produced_by, skip_existing=skip_existing, progress=Bars("img"), scope=scope)
    times = outcome.times
    err_console.print(f"wrote {outcome.results_path} ({outcome.ran} image(s) on {runner.description})")
    report_failures(times.failures)
    if times.failures and not allow_missing:
        raise InputError(f"{len(times.failures)} image(s) could not be processed; results are incomplete")
    return outcome.results_path, kps, stage_table(times, "image"), outcome.evaluated

"""The `aepose` command line: parse options into frozen configs, run, report.

Nothing here computes poses; each command builds a `PoseEstimator`, a source of work items and
a sink, and hands them to `pipeline.run_pipeline`. Library errors (`AeposeError`) become one
line on stderr and a non-zero exit code here, and only here.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from . import __version__
from .config import DrawConfig, InferenceConfig
from .errors import AeposeError, ConfigError, InputError

err_console = Console(stderr=True)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# -- option groups ---------------------------------------------------------------------------
def _parse_scales(_ctx, _param, value: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 2,1,0.5, got {value!r}")
    if not scales:
        raise click.BadParameter("at least one scale is needed")
    return scales


def model_options(func):
    """Options that choose the model and how inference runs (shared by every command)."""
    options = [
        click.option("--model", "model_name", default=None, help="Zoo model to use (see `aepose models`); default hrnet_w32_coco."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Local checkpoint (.pth, mmpose layout); never touches the network."),
        click.option("--keypoints", type=click.Choice(["coco", "aic", "mhp"]), default=None, help="Keypoint set of the checkpoint; default chosen by its number of joints."),
        click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, or auto (CUDA when available)."),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True, help="fp32 is exact to the reference; fp16/bf16 are faster on GPUs."),
        click.option("--scales", default="1", show_default=True, callback=_parse_scales, help="Test scales, e.g. 2,1,0.5 for multi-scale testing."),
        click.option("--flip/--no-flip", default=True, show_default=True, help="Flip test (average with the mirrored image)."),
        click.option("--adjust/--no-adjust", default=True, show_default=True, help="Quarter-pixel refinement of peaks."),
        click.option("--refine/--no-refine", default=True, show_default=True, help="Fill missing joints from the heatmaps near each person's tag."),
        click.option("--max-people", default=30, show_default=True, type=click.IntRange(min=1), help="Candidates per joint (top-k)."),
        click.option("--detection-threshold", default=0.1, show_default=True, type=float, help="Minimum heatmap value of a joint candidate."),
        click.option("--tag-threshold", default=1.0, show_default=True, type=float, help="Maximum tag distance to join a person."),
        click.option("--pose-nms", default=None, type=click.FloatRange(0, 1, min_open=True), help="OKS threshold of pose NMS (default 0.9; evaluate: off)."),
        click.option("--no-pose-nms", is_flag=True, default=False, help="Turn pose NMS off (the reference's evaluation path)."),
        click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Images per network pass (equal sizes are batched; lower it for multi-scale on small GPUs)."),
    ]
    for option in reversed(options):
        func = option(func)
    return backend_options(func)


def backend_options(func):
    """`--backend` and `--threads`: who runs the network (aepose_cli.backends) and on how many threads."""
    options = [
        # Literal choices (aepose_cli.backends.BACKEND_CHOICES): declaring options must not import torch.
        click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "openvino"]), default="torch", show_default=True, help="Network runtime: torch (exact: the reference's numbers); onnxruntime or openvino (faster on CPU; their rounding can flip near-ties); auto: the fastest installed (onnxruntime on CPU, torch on CUDA). README 'Speed'."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of the network (default: as many as torch uses, i.e. the cores)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def json_options(func):
    """`--no-json` and `--json-style`, shared by the image commands."""
    options = [
        click.option("--no-json", is_flag=True, help="Do not write JSON."),
        click.option("--json-style", type=click.Choice(["dataset", "results"]), default="dataset", show_default=True, help="COCO dataset file, or the flat results list COCO evaluation takes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def draw_options(func):
    options = [
        click.option("--kpt-thr", default=0.3, show_default=True, type=float, help="Draw joints whose score is at least this."),
        click.option("--radius", default=4, show_default=True, type=click.IntRange(min=0), help="Joint circle radius in pixels."),
        click.option("--thickness", default=1, show_default=True, type=click.IntRange(min=1), help="Skeleton line thickness in pixels."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _inference_config(opts: dict, *, nms_default: float | None = 0.9) -> InferenceConfig:
    if opts["no_pose_nms"] and opts["pose_nms"] is not None:
        raise ConfigError("--pose-nms and --no-pose-nms contradict each other")
    pose_nms = None if opts["no_pose_nms"] else (opts["pose_nms"] if opts["pose_nms"] is not None else nms_default)
    return InferenceConfig(
        scales=opts["scales"],
        flip=opts["flip"],
        max_people=opts["max_people"],
        detection_threshold=opts["detection_threshold"],
        tag_threshold=opts["tag_threshold"],
        adjust=opts["adjust"],
        refine=opts["refine"],
        pose_nms=pose_nms,
        device=_device(opts["device"]),
        precision=opts["precision"],
        batch_size=opts["batch_size"],
        backend=opts["backend"],
        threads=opts["threads"],
    )


def _draw_config(opts: dict) -> DrawConfig:
    return DrawConfig(kpt_thr=opts["kpt_thr"], radius=opts["radius"], thickness=opts["thickness"])


def _estimator(opts: dict, config: InferenceConfig):
    from .estimator import PoseEstimator

    if opts.get("threads"):
        import torch

        torch.set_num_threads(opts["threads"])  # the CLI owns the process; the library does not
    return PoseEstimator(
        opts["model_name"], opts["checkpoint"], keypoints=opts["keypoints"], config=config, progress=True
    )


# -- progress --------------------------------------------------------------------------------
class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"-- {self.unit}/s", style="progress.data.speed")


def _progress(unit: str, enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not enabled,
        transient=False,
    )


def _report_failures(failures: list[tuple[str, str]]) -> None:
    if not failures:
        return
    err_console.print(f"[bold red]{len(failures)} input(s) failed:[/]")
    for _key, reason in failures:
        # The reason already names the file.
        click.echo(f"  {reason}", err=True)


def _stage_table(times, unit: str) -> Table:
    table = Table(title=f"per-{unit} stage times (ms, mean over {max(times.items, 1)})")
    for stage in ("decode", "preprocess", "network", "grouping", "draw", "encode"):
        if stage in times.totals:
            table.add_column(stage, justify="right")
    table.add_column("wall", justify="right")
    n = max(times.items, 1)
    row = [f"{1000 * times.totals[s] / n:.1f}" for s in ("decode", "preprocess", "network", "grouping", "draw", "encode") if s in times.totals]
    row.append(f"{1000 * times.wall / n:.1f}")
    table.add_row(*row)
    return table


# -- the group -------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aepose")
def cli() -> None:
    """Bottom-up multi-person pose estimation (Associative Embedding + HRNet), exact to the
    mmpose 0.x reference."""


@cli.command()
def models() -> None:
    """List the published models, their COCO/AIC/MHP AP and whether they are cached."""
    from .zoo import models_table

    Console().print(models_table())


# -- image and folder ----------------------------------------------------------------------
def _annotated_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    return suffix if suffix in _IMAGE_SUFFIXES else ".jpg"


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", default=None, help="Annotated image file, or a folder for them (default: IMG.pose.jpg next to each input).")
@click.option("--no-images", is_flag=True, help="Do not write annotated images.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: IMG.pose.json, or images.pose.json for several inputs).")
@json_options
@model_options
@draw_options
def image(images, out, no_images, json_out, no_json, json_style, **opts) -> None:
    """Estimate poses in one or more images; write annotated images and one COCO JSON."""
    from .io.outputs import resolve_output

    if out is not None and len(images) > 1 and not (out.endswith(("/", os.sep)) or Path(out).is_dir()):
        raise ConfigError(f"--out {out}: several images need a folder (end it with '/')")
    _check_images_exist(images)
    config = _inference_config(opts)
    json_anchor = images[0] if len(images) == 1 else images[0].parent / "images"
    json_path = resolve_output(False if no_json else json_out, json_anchor, ".json")
    targets = {
        str(img): (None if no_images else resolve_output(out, img, _annotated_suffix(img))) for img in images
    }
    _run_images(
        [(i, str(img), img) for i, img in enumerate(images)],
        targets,
        json_path,
        json_style,
        config,
        _draw_config(opts),
        opts,
        file_names={str(img): _relative_to(img, json_path.parent if json_path else Path.cwd()) for img in images},
        resume=False,
    )


def _check_images_exist(images) -> None:
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


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Include images in sub-folders.")
@click.option("--ext", default=",".join(_IMAGE_SUFFIXES), show_default=True, help="Comma-separated extensions to include (case-insensitive).")
@click.option("--shard", default=None, help="Process shard I of N (1-based, e.g. 2/4) so N machines split one folder.")
@click.option("--skip-existing", "--resume", "skip_existing", is_flag=True, help="Resume: skip images already done by an interrupted run.")
@click.option("--out", "out", default=None, help="Folder for annotated images (default: FOLDER.pose/ beside the folder).")
@click.option("--no-images", is_flag=True, help="Do not write annotated images.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: FOLDER.pose.json beside the folder).")
@json_options
@model_options
@draw_options
def folder(folder, recursive, ext, shard, skip_existing, out, no_images, json_out, no_json, json_style, **opts) -> None:
    """Estimate poses for every image of a folder (streamed, resumable, shardable)."""
    from .io.outputs import is_complete, resolve_output
    from .io.sources import list_images, parse_shard

    shard_spec = parse_shard(shard) if shard else None
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in (x.strip().lower() for x in ext.split(",")) if e)
    if not extensions:
        raise ConfigError("--ext names no extension")
    config = _inference_config(opts)
    root = folder
    paths = list_images(root, recursive=recursive, extensions=extensions, shard=shard_spec)
    suffix = ".json" if shard_spec is None else f".shard{shard_spec[0]}of{shard_spec[1]}.json"
    json_path = resolve_output(False if no_json else json_out, root, suffix)
    if no_images:
        images_dir = None
    elif out is None:
        images_dir = Path(os.path.abspath(root)).parent / f"{Path(os.path.abspath(root)).name}.pose"
    else:
        images_dir = Path(out)
    keys = [p.relative_to(root).as_posix() for p in paths]
    if json_path is not None and is_complete(json_path):
        if skip_existing and _complete_json_covers(json_path, keys):
            err_console.print(f"{json_path}: already complete for these {len(keys)} images; nothing to do")
            return
        if skip_existing:
            raise ConfigError(f"{json_path}: a finished run with other images is there; pass another --json")
    targets = {
        key: (None if images_dir is None else images_dir / key) for key in keys
    }
    from .io.sources import global_index

    _run_images(
        [(global_index(i, shard_spec), key, path) for i, (key, path) in enumerate(zip(keys, paths))],
        targets,
        json_path,
        json_style,
        config,
        _draw_config(opts),
        opts,
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


def _run_images(entries, targets, json_path, json_style, config, draw_cfg, opts, *, file_names, resume: bool) -> None:
    """Shared by `image` and `folder`: pipeline over image files into drawings and JSON."""
    from .io.outputs import CocoJsonWriter, journal_path
    from .io.sources import read_image
    from .pipeline import WorkItem, run_pipeline

    estimator = _estimator(opts, config)
    writer = None
    if json_path is not None:
        writer = CocoJsonWriter(json_path, json_style, estimator.keypoints, draw_cfg.kpt_thr, resume=resume)
    done = set(writer.finished_sources()) if (writer is not None and resume) else set()
    if resume and writer is None:
        done = {key for key, target in targets.items() if target is not None and Path(target).is_file()}
    todo = [(idx, key, path) for idx, key, path in entries if key not in done]
    if done:
        err_console.print(f"resuming: {len(entries) - len(todo)} of {len(entries)} images already done")
    items = (WorkItem(index=idx, key=key, load=(lambda p=path: read_image(p))) for idx, key, path in todo)
    sink = _ImageSink(estimator.keypoints, draw_cfg, targets, writer, file_names)
    try:
        with _progress("img", enabled=len(todo) > 1) as progress:
            task = progress.add_task("images", total=len(todo))
            times = run_pipeline(items, estimator, sink, on_progress=lambda n: progress.advance(task, n))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if len(entries) == 1 and times.failures:
        # A single input that cannot be read is a plain error: no empty JSON, no report.
        if writer is not None:
            writer.abort()
            journal_path(json_path).unlink(missing_ok=True)
        raise InputError(times.failures[0][1])
    if writer is not None:
        writer.close()
        err_console.print(f"wrote {json_path}")
    ok = times.items - len(times.failures)
    err_console.print(f"{ok} image(s) done, {len(times.failures)} failed, {times.wall:.1f} s")
    _report_failures(times.failures)
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

    def write(self, item, image, result, times) -> None:
        from .draw import draw_poses
        from .io.outputs import write_image

        target = self.targets.get(item.key)
        if target is not None:
            t0 = time.perf_counter()
            drawn = draw_poses(image, result.poses, self.keypoints, self.draw_cfg)
            t1 = time.perf_counter()
            write_image(target, drawn)
            times.add("draw", t1 - t0)
            times.add("encode", time.perf_counter() - t1)
        if self.writer is not None:
            self.writer.add(result, file_name=self.file_names[item.key], image_id=item.index + 1, key=item.key)


# -- evaluate --------------------------------------------------------------------------------
@cli.command()
@click.option("--ann", "ann_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="COCO person_keypoints annotation file.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder holding the annotated images (runs inference).")
@click.option("--pred", "pred_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Score an existing COCO results file instead of running inference.")
@click.option("--out", "results_out", default=None, help="Results JSON to write (default: ANN.pose.json beside the annotations).")
@click.option("--metrics-json", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the ten metrics as JSON here.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Only the first N images of the annotation file (a quick check).")
@click.option("--allow-missing", is_flag=True, help="Skip images missing from --images with a warning (and leave them out of the score) instead of failing.")
@click.option("--skip-existing", "--resume", "skip_existing", is_flag=True, help="Resume an interrupted inference run.")
@model_options
def evaluate(ann_path, images_dir, pred_path, results_out, metrics_json, max_images, allow_missing, skip_existing, **opts) -> None:
    """COCO keypoint AP/AR exactly as the reference evaluator computes it."""
    from .evaluate import evaluate_keypoints, metrics_table
    from .keypoints import keypoint_set, keypoint_set_for

    if (images_dir is None) == (pred_path is None):
        raise ConfigError("give exactly one of --images DIR (run inference) or --pred RESULTS.json")
    ann = _load_annotations(ann_path)
    ann_k = _annotation_num_joints(ann, ann_path)
    image_entries = list(ann.get("images", []))
    if max_images is not None:
        image_entries = image_entries[:max_images]
    subset = None
    if max_images is not None:
        subset = _subset_annotations(ann, {im["id"] for im in image_entries})
    if pred_path is not None:
        kps = keypoint_set(opts["keypoints"]) if opts["keypoints"] else keypoint_set_for(ann_k)
        if kps.num_joints != ann_k:
            raise ConfigError(f"--keypoints {kps.name} has {kps.num_joints} joints but {ann_path} has {ann_k}")
        results_path = pred_path
        timing = None
    else:
        config = _inference_config(opts, nms_default=None)
        results_path, kps, timing, evaluated = _evaluate_inference(ann_path, ann_k, image_entries, images_dir, results_out, config, opts, allow_missing, skip_existing)
        if len(evaluated) < len(image_entries):
            # Images skipped by --allow-missing are left out of the score, not counted as misses.
            subset = _subset_annotations(ann, evaluated)
    metrics = evaluate_keypoints(subset if subset is not None else ann_path, results_path, kps.sigmas, kps.use_area)
    Console().print(metrics_table(metrics, title=f"COCO keypoint evaluation ({kps.name}, use_area={kps.use_area})"))
    if timing is not None:
        Console().print(timing)
    if metrics_json is not None:
        from .io.outputs import atomic_write_text

        atomic_write_text(metrics_json, json.dumps(metrics, indent=2) + "\n")
        err_console.print(f"wrote {metrics_json}")


def _load_annotations(path: Path) -> dict:
    from .errors import AnnotationError

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read annotations ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise AnnotationError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
    return data


def _annotation_num_joints(ann: dict, path: Path) -> int:
    from .errors import AnnotationError

    for cat in ann.get("categories", []):
        if cat.get("keypoints"):
            return len(cat["keypoints"])
    for a in ann.get("annotations", []):
        if a.get("keypoints"):
            return len(a["keypoints"]) // 3
    raise AnnotationError(f"{path}: no keypoints in any category or annotation")


def _subset_annotations(ann: dict, image_ids: set) -> dict:
    subset = dict(ann)
    subset["images"] = [im for im in ann["images"] if im["id"] in image_ids]
    subset["annotations"] = [a for a in ann["annotations"] if a["image_id"] in image_ids]
    return subset


def _evaluate_inference(ann_path, ann_k, image_entries, images_dir, results_out, config, opts, allow_missing, skip_existing):
    from .io.outputs import CocoJsonWriter, resolve_output
    from .io.sources import read_image
    from .pipeline import WorkItem, run_pipeline

    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found")
    present, missing = [], []
    for im in image_entries:
        path = images_dir / im["file_name"]
        (present if path.is_file() else missing).append((im, path))
    if missing:
        names = ", ".join(im["file_name"] for im, _ in missing[:5]) + (" ..." if len(missing) > 5 else "")
        if not allow_missing:
            raise InputError(f"{images_dir}: {len(missing)} annotated image(s) missing: {names} (use --allow-missing to skip them)")
        err_console.print(f"[yellow]warning:[/] skipping {len(missing)} image(s) missing from {images_dir}: {names}")
    estimator = _estimator(opts, config)
    kps = estimator.keypoints
    if kps.num_joints != ann_k:
        raise ConfigError(f"the model predicts {kps.num_joints} keypoints but {ann_path} has {ann_k}")
    results_path = resolve_output(results_out, ann_path, ".json")
    writer = CocoJsonWriter(results_path, "results", kps, 0.0, resume=skip_existing)
    done = writer.finished_sources() if skip_existing else frozenset()
    todo = [(im, p) for im, p in present if im["file_name"] not in done]
    items = (WorkItem(index=i, key=im["file_name"], load=(lambda p=p: read_image(p)), extra=im["id"]) for i, (im, p) in enumerate(todo))

    class _ResultsSink:
        def write(self, item, image, result, times):
            writer.add(result, file_name=item.key, image_id=item.extra, key=item.key)

    try:
        with _progress("img", enabled=len(todo) > 1) as progress:
            task = progress.add_task("evaluate", total=len(todo))
            times = run_pipeline(items, estimator, _ResultsSink(), on_progress=lambda n: progress.advance(task, n))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    err_console.print(f"wrote {results_path}")
    _report_failures(times.failures)
    if times.failures and not allow_missing:
        raise InputError(f"{len(times.failures)} image(s) could not be processed; results are incomplete")
    timing = _stage_table(times, "image")
    failed = {key for key, _ in times.failures}
    return results_path, kps, timing, {im["id"] for im, _ in present if im["file_name"] not in failed}


# -- export ----------------------------------------------------------------------------------
@cli.command("export")
@click.option("--model", "model_name", default=None, help="Zoo model to export (default hrnet_w32_coco).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Local checkpoint (.pth, mmpose layout) to export.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), required=True, help="File format of the network.")
@click.option("--opset", type=click.IntRange(min=1), default=None, help="ONNX opset (default 17).")
@click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width (the default).")
@click.option("--static", "static", default=None, metavar="H,W", help="Fixed input [1, 3, H, W] instead (multiples of 32).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="File to write (atomically).")
def export(model_name, checkpoint, fmt, opset, dynamic, static, out) -> None:
    """Write the network alone (HRNet + AE head, no grouping) as ONNX or TorchScript."""
    from .commands.export import parse_static, run_export

    if dynamic and static is not None:
        raise ConfigError("--dynamic and --static contradict each other")
    static_hw = parse_static(static)
    path = run_export(model_name=model_name, checkpoint=checkpoint, fmt=fmt, out=out, opset=opset, static_hw=static_hw)
    shape = "[N, 3, H, W]" if static_hw is None else f"[1, 3, {static_hw[0]}, {static_hw[1]}]"
    err_console.print(f"wrote {path}: input 'image' {shape} (RGB, normalised), output 'maps' [N, 2K, H/4, W/4] (heatmaps then tags; README 'Export')")


# -- video -----------------------------------------------------------------------------------
@cli.command()
@click.argument("source")
@click.option("--out", "out", default=None, help="Annotated video (.mp4) file or folder (default: SOURCE.pose.mp4 next to the input).")
@click.option("--no-video", is_flag=True, help="Write JSON only, no annotated video.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: SOURCE.pose.json).")
@click.option("--no-json", is_flag=True, help="Do not write COCO JSON.")
@click.option("--jsonl", "jsonl_out", default=None, help="Also write one JSON line per frame to this file ('-' for stdout).")
@click.option("--start", type=float, default=None, help="Start time in seconds.")
@click.option("--end", type=float, default=None, help="End time in seconds.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Process every N-th frame.")
@click.option("--track", is_flag=True, help="Give each person a stable id across frames (greedy OKS matching).")
@click.option("--smooth", is_flag=True, help="One-Euro filter on tracked keypoints (implies --track).")
@model_options
@draw_options
def video(source, out, no_video, json_out, no_json, jsonl_out, start, end, stride, track, smooth, **opts) -> None:
    """Estimate poses in a video file, stream URL or webcam index; write H.264 MP4 and JSON."""
    from .video_command import run_video

    config = _inference_config(opts)
    estimator = _estimator(opts, config)
    run_video(
        source,
        estimator,
        _draw_config(opts),
        out=False if no_video else out,
        json_out=False if no_json else json_out,
        jsonl_out=jsonl_out,
        start=start,
        end=end,
        stride=stride,
        track=track or smooth,
        smooth=smooth,
        console=err_console,
        progress_factory=_progress,
        stage_table=_stage_table,
        report_failures=_report_failures,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors and exit codes for library failures."""
    try:
        cli.main(args=argv, prog_name="aepose", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aepose: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AeposeError as exc:
        click.echo(f"aepose: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("aepose: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)

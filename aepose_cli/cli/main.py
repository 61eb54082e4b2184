"""The `aepose` command line: click declarations only.

Each command parses its options into frozen configs and calls the body in its own module of
`cli/` (images and folder, video, evaluate, export, models), which returns an exit status. Option groups are plain decorator functions so
a new command or option slots in without touching the others. Library errors (`AeposeError`)
become one line on stderr and a non-zero exit code in `main`, and only there.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from .. import __version__
from ..config import (
    BACKEND_CHOICES,
    ENGINES,
    FAMILIES,
    MAX_INPUT_SIZE,
    MAX_WORKERS,
    MIN_INPUT_SIZE,
    PRECISIONS,
    DrawConfig,
    EngineConfig,
    ImageIds,
    InferenceConfig,
    ModelChoice,
    VideoOptions,
    check_engine_device,
)
from ..errors import AeposeError, ConfigError, Interrupted
from ..io.coco_json import JSON_STYLES
from ..io.sources import IMAGE_EXTENSIONS
from ..keypoints import KEYPOINT_SETS

# -- option types ----------------------------------------------------------------------------
# Upper bounds that keep one image's memory sane whatever the flags (issue 8): the reference
# uses 30 candidates per joint, scales up to 2, batches of a few images, radius 4, thickness 1.
MAX_PEOPLE = 1000
MAX_SCALE = 4.0
MAX_BATCH = 256
MAX_RADIUS = 100
MAX_THICKNESS = 100
# The defaults are the configs' own (config.py defines each once); the options show them.
_INFERENCE = InferenceConfig()
_DRAW = DrawConfig()
_ENGINE = EngineConfig()
_VIDEO = VideoOptions()


class FiniteFloat(click.ParamType):
    """A float that is finite (no nan, inf) and within [low, high] (each side open or closed)."""

    name = "float"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            self.fail(f"{value!r} is not {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        if self.high is not None and number > self.high:
            self.fail(f"{value!r} is not <= {self.high:g}", param, ctx)
        return number


def _parse_scales(_ctx, _param, value: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers such as 2,1,0.5, got {value!r}") from None
    if not scales:
        raise click.BadParameter("at least one scale is needed")
    for s in scales:
        if not math.isfinite(s) or not 0 < s <= MAX_SCALE:
            raise click.BadParameter(f"every scale must be a finite number in (0, {MAX_SCALE:g}], got {s:g}")
    return scales


def _check_input_size(_ctx, _param, value: int | None) -> int | None:
    if value is not None and value % _INFERENCE.size_divisor:
        raise click.BadParameter(f"{value} is not a multiple of {_INFERENCE.size_divisor} (the published models: 512 or 640)")
    return value


def _check_device(_ctx, _param, value: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N` where this machine has that GPU; anything else is refused
    here, before a model loads (torch accepts `meta`, `mps`, ... that this tool cannot run on)."""
    name = value.strip().lower()
    if name in ("auto", "cpu"):
        return name
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise click.BadParameter(f"{value!r}: expected auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r}: CUDA is not available on this machine (use cpu)")
    if index and int(index) >= torch.cuda.device_count():
        raise click.BadParameter(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


# -- option groups ---------------------------------------------------------------------------


def model_options(func):
    """Options that choose the model and how inference runs (shared by every command)."""
    options = [
        click.option("--model", "model_name", default=None, help="Zoo model to use (see `aepose models`); default hrnet_w32_coco."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Local checkpoint (.pth, mmpose layout); never touches the network."),
        click.option("--keypoints", type=click.Choice(list(KEYPOINT_SETS)), default=None, help="Keypoint set of the checkpoint; default: its zoo entry's or metadata's, else chosen by its number of joints (14 needs aic or crowdpose)."),
        click.option("--input-size", type=click.IntRange(MIN_INPUT_SIZE, MAX_INPUT_SIZE), default=None, callback=_check_input_size, help="Input size of a checkpoint that does not say it (512 or 640 for the published models); default: its zoo entry's or metadata's, else 512."),
        click.option("--udp/--no-udp", "use_udp", default=None, help="Run a checkpoint that does not say it with (or without) UDP, as mmpose's *_udp models; default: its zoo entry's or metadata's, else without."),
        click.option("--device", default="auto", show_default=True, callback=_check_device, help="Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=_INFERENCE.precision, show_default=True, help="fp32 is exact to the reference; fp16/bf16 are faster on GPUs (refused on CPU, where they are slower)."),
        click.option("--scales", default=",".join(f"{s:g}" for s in _INFERENCE.scales), show_default=True, callback=_parse_scales, help=f"Test scales, e.g. 2,1,0.5 for multi-scale testing (each in (0, {MAX_SCALE:g}])."),
        click.option("--flip/--no-flip", default=_INFERENCE.flip, show_default=True, help="Flip test (average with the mirrored image)."),
        click.option("--adjust/--no-adjust", default=_INFERENCE.adjust, show_default=True, help="Quarter-pixel refinement of peaks."),
        click.option("--refine/--no-refine", default=_INFERENCE.refine, show_default=True, help="Fill missing joints from the heatmaps near each person's tag."),
        click.option("--max-people", default=_INFERENCE.max_people, show_default=True, type=click.IntRange(1, MAX_PEOPLE), help="Candidates per joint (top-k)."),
        click.option("--detection-threshold", default=_INFERENCE.detection_threshold, show_default=True, type=FiniteFloat(0.0, 1.0), help="Minimum heatmap value of a joint candidate, in [0, 1]."),
        click.option("--tag-threshold", default=_INFERENCE.tag_threshold, show_default=True, type=FiniteFloat(0.0, low_open=True), help="Maximum tag distance to join a person (> 0)."),
        click.option("--pose-nms", default=None, type=click.FloatRange(0, 1, min_open=True), help=f"OKS threshold of pose NMS (default {_INFERENCE.pose_nms:g}; evaluate: off)."),
        click.option("--no-pose-nms", is_flag=True, default=False, help="Turn pose NMS off (the reference's evaluation path)."),
        click.option("--batch-size", default=_INFERENCE.batch_size, show_default=True, type=click.IntRange(1, MAX_BATCH), help="Images per network pass (equal sizes are batched; lower it for multi-scale on small GPUs)."),
        click.option("--max-pixels", default=_INFERENCE.max_pixels, show_default=True, type=click.IntRange(min=0), help="Refuse images with more pixels than this, read from the file header before decoding (0: no limit)."),
    ]
    for option in reversed(options):
        func = option(func)
    return backend_options(func)


def backend_options(func):
    """`--backend` and `--threads`: who runs the network (aepose_cli.backends) and on how many threads."""
    options = [
        click.option("--backend", type=click.Choice(list(BACKEND_CHOICES)), default=_INFERENCE.backend, show_default=True, help="Network runtime: torch (exact: the reference's numbers); onnxruntime or openvino (faster on CPU; their rounding can flip near-ties); auto: the fastest installed (openvino, then onnxruntime, on CPU; torch on CUDA). README 'Speed'."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of the network (default: as many as torch uses, i.e. the cores)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def engine_options(func):
    """`--engine` and what it takes: who runs the stages (this process, or Ray workers)."""
    options = [
        click.option("--engine", type=click.Choice(list(ENGINES)), default=_ENGINE.engine, show_default=True, help="single: this process (threads around one network); ray: Ray Data workers on this machine or a cluster (needs aepose-cli[ray]; README 'Scale out')."),
        click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None, help=f"--engine ray: network workers (actors), each loading the model once; at most {MAX_WORKERS}, and never more than there are batches or videos [default: 1]."),
        click.option("--gpus-per-worker", type=FiniteFloat(0.0), default=None, help="--engine ray: GPUs per network worker (1: one worker per card; 0: CPU) [default: 0]."),
        click.option("--ray-address", default=None, metavar="ADDR", help="--engine ray: join this Ray cluster (auto, ray://HOST:10001, HOST:6379) instead of starting a local Ray."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _engine_config(opts: dict) -> EngineConfig:
    """The engine options, removed from `opts`; those of Ray are refused without --engine ray
    (a flag that would change nothing is an error, not a silent no-op)."""
    engine = opts.pop("engine")
    ray_only = {"--workers": opts.pop("workers"), "--gpus-per-worker": opts.pop("gpus_per_worker"), "--ray-address": opts.pop("ray_address")}
    if engine != "ray":
        given = [name for name, value in ray_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --engine ray")
        return EngineConfig()
    config = EngineConfig(
        engine="ray", workers=ray_only["--workers"] or 1, gpus_per_worker=ray_only["--gpus-per-worker"] or 0.0,
        ray_address=ray_only["--ray-address"],
    )
    # The workers' device follows --gpus-per-worker (Ray gives each worker its own cards);
    # --device may only say the same (`config.check_engine_device`, once the configs are built).
    if opts["device"] == "auto":
        opts["device"] = config.worker_device
    return config


def _parse_image_ids(_ctx, _param, value: str) -> ImageIds:
    try:
        return ImageIds.parse(value)
    except ConfigError as error:
        raise click.BadParameter(str(error).removeprefix("--image-ids ")) from None


def json_options(func):
    """`--no-json`, `--json-style` and `--image-ids`, shared by the image commands."""
    options = [
        click.option("--no-json", is_flag=True, help="Do not write JSON."),
        click.option("--json-style", type=click.Choice(JSON_STYLES), default="dataset", show_default=True, help="COCO dataset file, or the flat results list COCO evaluation takes."),
        click.option("--image-ids", default="sequential", show_default=True, metavar="sequential|stem|from:ANN.json", callback=_parse_image_ids, help="Image ids in the JSON: 1, 2, ... in input order; the number the file is named by (000000129648.jpg -> 129648, as COCO's splits); or the ids an annotation file gives the same file_name."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def draw_options(func):
    options = [
        click.option("--kpt-thr", default=_DRAW.kpt_thr, show_default=True, type=FiniteFloat(0.0), help="Draw joints whose score is at least this."),
        click.option("--radius", default=_DRAW.radius, type=click.IntRange(0, MAX_RADIUS), help="Joint circle radius in pixels [default: the line width + 1, which scales with the picture; 4 with --thickness 1 is the mmpose demo's look]."),
        click.option("--thickness", default=_DRAW.thickness, type=click.IntRange(1, MAX_THICKNESS), help="Skeleton line thickness in pixels [default: scaled with the picture, max(round(0.003 * (W + H) / 2), 2)]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _inference_config(opts: dict, *, nms_default: float | None = _INFERENCE.pose_nms, engine: EngineConfig | None = None) -> InferenceConfig:
    if opts["no_pose_nms"] and opts["pose_nms"] is not None:
        raise ConfigError("--pose-nms and --no-pose-nms contradict each other")
    device = _device(opts["device"])
    pose_nms = None if opts["no_pose_nms"] else (opts["pose_nms"] if opts["pose_nms"] is not None else nms_default)
    config = InferenceConfig(
        scales=opts["scales"],
        flip=opts["flip"],
        max_people=opts["max_people"],
        detection_threshold=opts["detection_threshold"],
        tag_threshold=opts["tag_threshold"],
        adjust=opts["adjust"],
        refine=opts["refine"],
        pose_nms=pose_nms,
        device=device,
        precision=opts["precision"],
        batch_size=opts["batch_size"],
        backend=opts["backend"],
        threads=opts["threads"],
        max_pixels=opts["max_pixels"] or None,
        input_size=opts["input_size"],
        use_udp=opts["use_udp"],
    )
    if engine is not None:
        check_engine_device(config, engine)
    return config


def _draw_config(opts: dict) -> DrawConfig:
    return DrawConfig(kpt_thr=opts["kpt_thr"], radius=opts["radius"], thickness=opts["thickness"])


def _model_choice(opts: dict) -> ModelChoice:
    return ModelChoice(opts["model_name"], opts["checkpoint"], opts["keypoints"])


# -- the group -------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aepose")
def cli() -> None:
    """Bottom-up multi-person pose estimation (Associative Embedding + HRNet), exact to the
    mmpose 0.x reference."""


@cli.command()
@click.option("--urls", is_flag=True, help="Also show each model's download URL and cache path.")
@click.option("--family", type=click.Choice(list(FAMILIES)), default=None, help="Only this family's models.")
@click.option("--download", "download", metavar="NAME", default=None, help="Fetch this model into the cache (for offline machines) and print its path.")
def models(urls, family, download) -> None:
    """List the published models by family, their published AP and whether they are cached."""
    from .models import run_download, run_models

    if download is not None:
        return run_download(download)
    return run_models(urls=urls, family=family)


# -- image and folder ----------------------------------------------------------------------
@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", default=None, help="Annotated image file, or a folder for them and the JSON (default: IMG.pose.jpg next to each input).")
@click.option("--no-images", is_flag=True, help="Do not write annotated images.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: IMG.pose.json, or images.pose.json for several inputs, next to the inputs or in the --out folder).")
@json_options
@click.option("--csv", "csv_out", default=None, metavar="FILE|DIR/", help="Also write the keypoints as a table: one row per person per image per keypoint (default: none; a folder: IMG.pose.csv in it).")
@model_options
@draw_options
def image(images, out, no_images, json_out, no_json, json_style, image_ids, csv_out, **opts) -> None:
    """Estimate poses in one or more images; write annotated images and one COCO JSON.

    No output may be an input or share its name with another output: the same image given
    twice, or two images whose annotated copies would get one name (a/p.jpg and b/p.jpg with
    --out DIR/), are refused before the model loads (not renamed)."""
    from .images import run_image

    return run_image(
        list(images), False if no_images else out, False if no_json else json_out, json_style,
        _model_choice(opts), _inference_config(opts), _draw_config(opts), image_ids=image_ids, csv_out=csv_out,
    )


@cli.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--recursive", "-r", is_flag=True, help="Include images in sub-folders.")
@click.option("--ext", default=",".join(IMAGE_EXTENSIONS), show_default=True, help="Comma-separated extensions to include (case-insensitive).")
@click.option("--shard", default=None, help="Process shard I of N (1-based, e.g. 2/4) so N machines split one folder.")
@click.option("--skip-existing", "--resume", "skip_existing", is_flag=True, help="Resume: skip images already done by an interrupted run.")
@click.option("--out", "out", default=None, help="Folder for annotated images (default: FOLDER.pose/ beside the folder).")
@click.option("--no-images", is_flag=True, help="Do not write annotated images.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: FOLDER.pose.json beside the folder).")
@json_options
@click.option("--csv", "csv_out", default=None, metavar="FILE|DIR/", help="Also write the keypoints as a table: one row per person per image per keypoint, streamed and resumable as the JSON (default: none; a folder: FOLDER.pose.csv in it).")
@model_options
@draw_options
@engine_options
def folder(folder, recursive, ext, shard, skip_existing, out, no_images, json_out, no_json, json_style, image_ids, csv_out, **opts) -> None:
    """Estimate poses for every image of a folder (streamed, resumable, shardable; on Ray
    workers with --engine ray)."""
    from .images import run_folder

    engine = _engine_config(opts)
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in (x.strip().lower() for x in ext.split(",")) if e)
    return run_folder(
        folder, recursive=recursive, extensions=extensions, shard=shard, skip_existing=skip_existing,
        out=False if no_images else out, json_out=False if no_json else json_out, json_style=json_style,
        model=_model_choice(opts), config=_inference_config(opts, engine=engine), draw_cfg=_draw_config(opts), engine=engine,
        image_ids=image_ids, csv_out=csv_out,
    )


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
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Also write an error-diagnosis report (index.html, plots, analysis.json) into this folder; needs aepose-cli[report].")
@model_options
@engine_options
def evaluate(ann_path, images_dir, pred_path, results_out, metrics_json, max_images, allow_missing, skip_existing, report_dir, **opts) -> None:
    """COCO keypoint AP/AR exactly as the reference evaluator computes it."""
    from .evaluate import run_evaluate

    engine = _engine_config(opts)
    model = _model_choice(opts)
    # Inference for evaluation runs without pose NMS unless asked (the reference's test path).
    config = _inference_config(opts, nms_default=None, engine=engine) if pred_path is None else None
    return run_evaluate(
        ann_path, images_dir=images_dir, pred_path=pred_path, results_out=results_out,
        metrics_json=metrics_json, max_images=max_images, allow_missing=allow_missing,
        skip_existing=skip_existing, model=model, config=config, report_dir=report_dir, engine=engine,
    )


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
    """Write the network alone (backbone + AE head, no grouping) as ONNX or TorchScript."""
    from .console import DownloadBar, err_console
    from .export import parse_static, run_export

    if dynamic and static is not None:
        raise ConfigError("--dynamic and --static contradict each other")
    static_hw = parse_static(static)
    path, outputs = run_export(model_name=model_name, checkpoint=checkpoint, fmt=fmt, out=out, opset=opset, static_hw=static_hw, progress=DownloadBar())
    shape = "[N, 3, H, W]" if static_hw is None else f"[1, 3, {static_hw[0]}, {static_hw[1]}]"
    label = "output" if len(outputs) == 1 else "outputs"
    err_console.print(f"wrote {path}: input 'image' {shape} (RGB, normalised), {label} {', '.join(outputs)} (heatmaps then tags; docs/export.md)")


# -- video -----------------------------------------------------------------------------------
@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--recursive", "-r", is_flag=True, help="With a folder: include videos in sub-folders; with a pattern: '**' matches sub-folders.")
@click.option("--skip-existing", "--resume", "skip_existing", is_flag=True, help="Skip videos whose outputs a run with the same settings finished; restart half-done ones (resume a JSON-only one from its journal).")
@click.option("--out", "out", default=None, help="Annotated video (.mp4) file, or a folder for the videos and the JSON (default: SOURCE.pose.mp4 next to each input).")
@click.option("--no-video", is_flag=True, help="Write JSON only, no annotated video.")
@click.option("--json", "json_out", default=None, help="COCO JSON file or folder (default: SOURCE.pose.json next to each input, or in the --out folder).")
@click.option("--no-json", is_flag=True, help="Do not write COCO JSON.")
@click.option("--jsonl", "jsonl_out", default=None, help="Also write one JSON line per frame to this file, or a folder (one SOURCE.pose.jsonl per video), or '-' for stdout.")
@click.option("--csv", "csv_out", default=None, metavar="FILE|DIR/", help="Also write the keypoints as a table: one row per person per frame per keypoint with time and track id, streamed and resumable as the JSON (default: none; a folder: SOURCE.pose.csv in it per video).")
@click.option("--start", type=FiniteFloat(0.0), default=None, help="Start time in seconds.")
@click.option("--end", type=FiniteFloat(0.0, low_open=True), default=None, help="End time in seconds (after --start).")
@click.option("--stride", type=click.IntRange(min=1), default=_VIDEO.stride, show_default=True, help="Process every N-th frame.")
@click.option("--track", is_flag=True, help="Give each person a stable id across frames (greedy OKS matching).")
@click.option("--smooth", is_flag=True, help="One-Euro filter on tracked keypoints (implies --track).")
@model_options
@draw_options
@engine_options
def video(sources, recursive, skip_existing, out, no_video, json_out, no_json, jsonl_out, csv_out, start, end, stride, track, smooth, **opts) -> None:
    """Estimate poses in videos (files, folders of videos, quoted patterns such as 'clips/*.mp4'),
    a stream URL or a webcam index; write H.264 MP4 and JSON per video.

    The model loads once for all videos; a video that cannot be read is named at the end and
    does not stop the others (exit 1). An interrupted or failed run keeps the frames written so
    far as NAME.partial.mp4 (audio up to the last of them), never under the final name, and
    exits non-zero (130 on Ctrl-C)."""
    from .runtime import build_estimator
    from .video import run_videos

    if start is not None and end is not None and end <= start:
        raise click.BadParameter(f"--end {end:g} must be after --start {start:g}", param_hint="--end")
    engine = _engine_config(opts)
    config = _inference_config(opts, engine=engine)
    options = VideoOptions(
        out=False if no_video else out, json_out=False if no_json else json_out, jsonl_out=jsonl_out, csv_out=csv_out,
        start=start, end=end, stride=stride, track=track or smooth, smooth=smooth, skip_existing=skip_existing,
    )
    model = _model_choice(opts)
    return run_videos(
        list(sources), lambda: build_estimator(model, config), _draw_config(opts), options, model, config=config,
        recursive=recursive, engine=engine,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors and exit codes for library failures."""
    from .runtime import configure_process

    configure_process()
    try:
        status = cli.main(args=argv, prog_name="aepose", standalone_mode=False)
    except click.exceptions.Abort as exc:  # a KeyboardInterrupt (Ctrl-C, or SIGTERM/SIGHUP: `Stopped`)
        stop = exc.__cause__ or exc.__context__
        name = getattr(stop, "signal_name", None)
        click.echo(f"aepose: interrupted{f' ({name})' if name else ''}", err=True)
        sys.exit(getattr(stop, "exit_code", 130))
    except click.UsageError as exc:
        # One line like every other error (click's own form adds a usage block and a hint).
        message = " ".join(exc.format_message().split())
        click.echo(f"aepose: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        click.echo(f"aepose: interrupted{f' ({exc.signal})' if exc.signal else ''}: {exc}", err=True)
        sys.exit(exc.exit_code)
    except AeposeError as exc:
        click.echo(f"aepose: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as stop:
        name = getattr(stop, "signal_name", None)
        click.echo(f"aepose: interrupted{f' ({name})' if name else ''}", err=True)
        sys.exit(getattr(stop, "exit_code", 130))
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:  # a write the commands did not foresee (full disk...): still one line
        from ..errors import OutputError
        from ..io.output_plan import describe_os_error

        click.echo(f"aepose: error: {exc.filename or 'output'}: {describe_os_error(exc)}", err=True)
        sys.exit(OutputError.exit_code)
    if status:  # a command's own exit status: 1 when some inputs failed
        sys.exit(status)

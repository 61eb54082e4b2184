"""Frozen configuration objects, built once (by the CLI or the API) and passed down explicitly.

Defaults are the reference's `test_cfg` (configs/body/2d_kpt_sview_rgb_img/associative_embedding/coco/
hrnet_w32_coco_512x512.py in mmpose 0.29) so that a default run reproduces mmpose 0.x.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
# The mmpose 0.x associative-embedding families aepose runs (`aepose_cli.model`), and what users
# call them (messages, tables, `aepose models --family`).
FAMILIES = {
    "hrnet": "HRNet",
    "higherhrnet": "HigherHRNet",
    "resnet": "ResNet",
    "mobilenetv2": "MobileNetV2",
    "hourglass": "Hourglass-AE",
}
# Who runs the network (`aepose_cli.backends`), and what `--backend` accepts: those or "auto".
BACKENDS = ("torch", "onnxruntime", "openvino")
BACKEND_CHOICES = ("auto", *BACKENDS)

# As Pillow's MAX_IMAGE_PIXELS (89 MP): a decoded 100 MP image is 300 MB of BGR.
DEFAULT_MAX_PIXELS = 100_000_000
# Longest side of the network canvas of the largest scale. The canvas keeps the image's aspect
# with a 512-pixel short side at scale 1, so this admits 8:1 panoramas at scale 1 and 16:9 at
# scale 4; an extreme aspect ratio (a 2x300 strip would need a 512x76800 canvas) is refused
# instead of becoming a gigabyte tensor.
MAX_CANVAS_SIDE = 4096
# The test-time input size (`InferenceConfig.input_size`): every published model uses 512 or 640.
DEFAULT_INPUT_SIZE = 512
MIN_INPUT_SIZE = 128
MAX_INPUT_SIZE = 2048


@dataclass(frozen=True)
class InferenceConfig:
    """How frames become poses: test scales, flip test, grouping thresholds, device numerics."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    # The model's test-time input size (mmpose's `data_cfg.image_size`: the short side of the
    # scale-1 canvas, 512 or 640 for the published models) and whether it runs with UDP
    # (`test_cfg.use_udp`). None: what the model says (`model_settings`: its zoo entry or its
    # checkpoint's metadata; 512 and no UDP for a model that says nothing). An engine given None
    # without a model resolution uses 512 and no UDP.
    input_size: int | None = None
    use_udp: bool | None = None
    size_divisor: int = 64
    max_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    adjust: bool = True
    refine: bool = True
    # OKS-NMS threshold as the reference's inference API applies it; None disables it (the
    # evaluation path of the reference runs without NMS).
    pose_nms: float | None = 0.9
    device: str = "cpu"
    # "fp32" is exact (TF32 off on CUDA); fp16/bf16 are the fast modes.
    precision: str = "fp32"
    # Images per network pass (flip test doubles the samples); equal sizes only.
    batch_size: int = 4
    # Who runs the network (aepose_cli.backends): "torch" (exact), "onnxruntime", "openvino", or
    # "auto" (for fp32 on CPU the fastest installed: OpenVINO, then ONNX Runtime; torch otherwise
    # and on CUDA).
    backend: str = "torch"
    # Threads of the ONNX Runtime / OpenVINO network; None: as many as torch uses.
    threads: int | None = None
    # Images with more pixels are refused from their header, before decoding (None: no limit).
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.scales:
            raise ConfigError("--scales needs at least one scale")
        if any(not math.isfinite(s) or s <= 0 for s in self.scales):
            raise ConfigError(f"scales must be positive finite numbers, got {self.scales}")
        for name, value in (("detection_threshold", self.detection_threshold), ("tag_threshold", self.tag_threshold)):
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ConfigError("max_pixels must be positive (None: no limit)")
        if len(self.scales) > 1 and 1.0 not in self.scales:
            # The reference takes tags from the scale-1 pass only (`AssociativeEmbedding.forward_test`).
            raise ConfigError("multi-scale testing needs scale 1 among --scales (tags come from it)")
        if len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"--scales has duplicates: {self.scales}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and not str(self.device).startswith("cuda"):
            # Half precision on CPU runs ~20x slower than fp32 and is not exact: never what is wanted.
            raise ConfigError(f"--precision {self.precision} needs a CUDA device; on {self.device} use fp32 (the default)")
        if self.max_people < 1:
            raise ConfigError("--max-people must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be at least 1")
        if self.pose_nms is not None and not 0 < self.pose_nms <= 1:
            raise ConfigError("--pose-nms must be in (0, 1]")
        if self.input_size is not None and not (isinstance(self.input_size, int) and MIN_INPUT_SIZE <= self.input_size <= MAX_INPUT_SIZE and self.input_size % self.size_divisor == 0):
            raise ConfigError(
                f"--input-size must be a multiple of {self.size_divisor} in [{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}] "
                f"(the published models: 512 or 640), got {self.input_size}"
            )

    @property
    def canvas_input_size(self) -> int:
        """The input size preprocessing uses: the resolved one, else 512."""
        return self.input_size if self.input_size is not None else DEFAULT_INPUT_SIZE

    @property
    def udp(self) -> bool:
        """Whether this run uses UDP (resolved, else no)."""
        return bool(self.use_udp)


@dataclass(frozen=True)
class DrawConfig:
    """How poses are drawn: the reference demo's colours and score threshold
    (mmpose 0.29's demo/bottom_up_img_demo.py), with widths that follow the picture.

    `radius` (joint circles) and `thickness` (skeleton lines) in pixels; None, the default, scales
    them with each image (`draw.drawing_widths`: about 0.3 % of its mean side, as Ultralytics
    does), so a 1080p frame gets lines that can be seen and a 320x240 clip keeps its people
    visible. `radius=4, thickness=1` draws exactly as the reference demo.
    """

    kpt_thr: float = 0.3
    radius: int | None = None
    thickness: int | None = None
    draw_track_ids: bool = True

    def __post_init__(self) -> None:
        if self.radius is not None and self.radius < 0:
            raise ConfigError("--radius must be at least 0")
        if self.thickness is not None and self.thickness < 1:
            raise ConfigError("--thickness must be at least 1")

    def recorded(self) -> dict[str, float | int | str]:
        """What a provenance record keeps of the drawing: the threshold and each width as given
        (a number, or "auto" when it follows the picture)."""
        return {
            "kpt_thr": self.kpt_thr,
            "radius": "auto" if self.radius is None else self.radius,
            "thickness": "auto" if self.thickness is None else self.thickness,
        }


# How `image` and `folder` number the images of their COCO JSON (`--image-ids`).
IMAGE_ID_CHOICES = ("sequential", "stem", "from:ANN.json")
# The largest image id written: COCO's ids are 64-bit integers in its own tools.
MAX_IMAGE_ID = 2**63 - 1


@dataclass(frozen=True)
class ImageIds:
    """How the images of a COCO JSON are numbered (`--image-ids`).

    `sequential` (the default): 1, 2, ... in the order of the inputs (a folder's sorted listing,
    so shards keep their place in the whole). `stem`: the number the file is named by
    (`000000129648.jpg` -> 129648), as COCO's own splits are; `annotations`: the ids that an
    annotation file gives the same `file_name` (`from:ANN.json`). With either of the last two
    a results-style JSON can be scored against the split's annotations as it is.
    """

    kind: str = "sequential"
    annotations: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("sequential", "stem", "from"):
            raise ConfigError(f"--image-ids must be one of {', '.join(IMAGE_ID_CHOICES)}, got {self.kind!r}")
        if (self.kind == "from") != (self.annotations is not None):
            raise ConfigError("--image-ids from:ANN.json needs the annotation file, and only 'from' takes one")

    @classmethod
    def parse(cls, text: str) -> ImageIds:
        """`sequential`, `stem` or `from:PATH` (ConfigError otherwise)."""
        value = text.strip()
        if value.startswith("from:"):
            path = value[len("from:"):]
            if not path:
                raise ConfigError("--image-ids from: needs an annotation file, e.g. from:annotations/person_keypoints_val2017.json")
            return cls("from", Path(path))
        if value not in ("sequential", "stem"):
            raise ConfigError(f"--image-ids must be one of {', '.join(IMAGE_ID_CHOICES)}, got {text!r}")
        return cls(value)

    def recorded(self) -> str:
        """What a provenance record keeps: the kind, with the annotation file's real path."""
        if self.annotations is None:
            return self.kind
        return f"from:{os.path.realpath(self.annotations)}"


ENGINES = ("single", "ray")
# Most network workers (Ray actors) one run starts: each is a process holding the model.
MAX_WORKERS = 256
# How long `--ray-address` may take to answer a TCP connection before the run gives up (exit 7).
RAY_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EngineConfig:
    """Who runs the stages: this process (`single`: threads around one network), or a Ray
    cluster (`ray`: `workers` network actors with `gpus_per_worker` GPUs each, on the cluster at
    `ray_address`, or on a local Ray started and stopped by the command when it is None)."""

    engine: str = "single"
    workers: int = 1
    gpus_per_worker: float = 0.0
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be in 1..{MAX_WORKERS}")
        if not math.isfinite(self.gpus_per_worker) or self.gpus_per_worker < 0:
            raise ConfigError("--gpus-per-worker must be a finite number >= 0")

    @property
    def worker_device(self) -> str:
        """The device Ray's workers run the network on: their GPUs with `gpus_per_worker`, else CPUs."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


def check_engine_device(config: InferenceConfig, engine: EngineConfig) -> None:
    """Refuse an inference device the engine will not use: Ray gives each worker its own cards
    (`gpus_per_worker`), so a Ray run's device follows them and may only say the same."""
    if engine.engine != "ray":
        return
    wanted = engine.worker_device
    if str(config.device) != wanted:
        raise ConfigError(
            f"--device {config.device} with --engine ray: the workers run on "
            + ("their GPUs (--gpus-per-worker > 0); leave --device auto" if wanted == "cuda" else "CPUs without --gpus-per-worker; give --gpus-per-worker 1 for one GPU each")
        )


@dataclass(frozen=True)
class ModelChoice:
    """Which model a run uses: a zoo model `name` (None: the default), a local `checkpoint`
    (never touches the network), the `keypoints` set's name (None: the zoo entry's, the
    checkpoint metadata's, else chosen by its number of joints). The CLI's `--model`,
    `--checkpoint`, `--keypoints` as given (`--input-size` and `--udp` are the
    `InferenceConfig`'s)."""

    name: str | None = None
    checkpoint: Path | None = None
    keypoints: str | None = None


@dataclass(frozen=True)
class VideoOptions:
    """What a video run writes and which frames it reads (`aepose video`'s own options).

    `out` / `json_out` follow the output-flag rule of `io.output_paths.resolve_output` (None:
    the default file, False: off, a folder, a file); `jsonl_out` None is off, '-' is stdout;
    `csv_out` None is off, a folder holds SOURCE.pose.csv.
    `smooth` implies `track`. `skip_existing`: skip videos whose outputs a run with the same
    settings finished, restart half-done ones (or resume them exactly where that is possible,
    see `jobs.video.resumable`).
    """

    out: str | os.PathLike[str] | bool | None = None
    json_out: str | os.PathLike[str] | bool | None = None
    jsonl_out: str | None = None
    # `--csv`: the keypoint table (None: none; a folder: SOURCE.pose.csv in it, per video).
    csv_out: str | os.PathLike[str] | None = None
    start: float | None = None
    end: float | None = None
    stride: int = 1
    track: bool = False
    smooth: bool = False
    skip_existing: bool = False
    # Names the encoder's temporary MP4 (`VideoSink(part_token=...)`); None: a random one.
    # A run of several videos gives itself one token, so a video retried after its Ray worker
    # died overwrites the dead attempt's temporary instead of leaving it beside the output.
    part_token: str | None = None

"""Frozen configuration objects, built once (by the CLI or the API) and passed down explicitly.

Defaults are the reference's `test_cfg` (configs/body/2d_kpt_sview_rgb_img/associative_embedding/coco/
hrnet_w32_coco_512x512.py in mmpose 0.29) so that a default run reproduces mmpose 0.x.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class InferenceConfig:
    """How frames become poses: test scales, flip test, grouping thresholds, device numerics."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    input_size: int = 512
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
    # "auto" (ONNX Runtime on CPU when installed, torch otherwise and on CUDA).
    backend: str = "torch"
    # Threads of the ONNX Runtime / OpenVINO network; None: as many as torch uses.
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.scales:
            raise ConfigError("--scales needs at least one scale")
        if any(s <= 0 for s in self.scales):
            raise ConfigError(f"scales must be positive, got {self.scales}")
        if len(self.scales) > 1 and 1.0 not in self.scales:
            # The reference takes tags from the scale-1 pass only (`AssociativeEmbedding.forward_test`).
            raise ConfigError("multi-scale testing needs scale 1 among --scales (tags come from it)")
        if len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"--scales has duplicates: {self.scales}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.max_people < 1:
            raise ConfigError("--max-people must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.backend not in ("auto", "torch", "onnxruntime", "openvino"):
            raise ConfigError(f"--backend must be one of auto, torch, onnxruntime, openvino, got {self.backend!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be at least 1")
        if self.pose_nms is not None and not 0 < self.pose_nms <= 1:
            raise ConfigError("--pose-nms must be in (0, 1]")


@dataclass(frozen=True)
class DrawConfig:
    """How poses are drawn (defaults of mmpose 0.29's demo/bottom_up_img_demo.py)."""

    kpt_thr: float = 0.3
    radius: int = 4
    thickness: int = 1
    draw_track_ids: bool = True

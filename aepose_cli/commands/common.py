"""What every inference command shares: which model to load."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import InferenceConfig

if TYPE_CHECKING:
    from ..estimator import PoseEstimator


@dataclass(frozen=True)
class ModelChoice:
    """`--model`, `--checkpoint`, `--keypoints` as given (None: the default)."""

    name: str | None = None
    checkpoint: Path | None = None
    keypoints: str | None = None


def build_estimator(model: ModelChoice, config: InferenceConfig) -> PoseEstimator:
    """The estimator of a command, with a download progress bar if the model is fetched."""
    from ..estimator import PoseEstimator

    if config.threads:
        import torch

        # The command owns the process (the library never changes the thread count): torch's
        # threads run the torch backend; ONNX Runtime and OpenVINO take config.threads themselves.
        torch.set_num_threads(config.threads)
    return PoseEstimator(model.name, model.checkpoint, keypoints=model.keypoints, config=config, progress=True)


def draw_and_write(write, image, poses, keypoints, draw_cfg, timings: dict[str, float]) -> None:
    """Draw the poses on the image and hand it to `write`, timing both as "draw" and "encode"."""
    import time

    from ..draw import draw_poses

    t0 = time.perf_counter()
    drawn = draw_poses(image, poses, keypoints, draw_cfg)
    t1 = time.perf_counter()
    write(drawn)
    timings["draw"] = t1 - t0
    timings["encode"] = time.perf_counter() - t1

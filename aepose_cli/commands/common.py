"""What every inference command shares: which model to load."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import EngineConfig, InferenceConfig, ModelChoice

if TYPE_CHECKING:
    from ..estimator import PoseEstimator
    from ..keypoints import KeypointSet
    from ..types import StageTimes


def build_estimator(model: ModelChoice, config: InferenceConfig) -> PoseEstimator:
    """The estimator of a command, with a download progress bar if the model is fetched."""
    from ..estimator import PoseEstimator

    if config.threads:
        import torch

        # The command owns the process (the library never changes the thread count): torch's
        # threads run the torch backend; ONNX Runtime and OpenVINO take config.threads themselves.
        torch.set_num_threads(config.threads)
    return PoseEstimator(model.name, model.checkpoint, keypoints=model.keypoints, config=config, progress=True)


class SingleRunner:
    """The single-process engine for a command (`pipeline.run_pipeline` around one estimator);
    `engines.ray.RayRunner` has the same face."""

    def __init__(self, estimator: PoseEstimator) -> None:
        self.estimator = estimator
        self.keypoints: KeypointSet = estimator.keypoints
        self.description = estimator.config.device

    def __enter__(self) -> SingleRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def run(self, items, sink, *, on_progress=None, keep_images: bool = True) -> StageTimes:
        from ..pipeline import run_pipeline

        return run_pipeline(items, self.estimator, sink, on_progress=on_progress)


def build_runner(model: ModelChoice, config: InferenceConfig, engine: EngineConfig | None = None):
    """What runs a command's items: this process, or Ray (`--engine ray`, imported only then).

    Enter it (`with runner:`) before any output or progress bar: Ray starts or is joined then,
    so that its failures come first, and it is stopped or left on exit."""
    if engine is not None and engine.engine == "ray":
        from ..engines.ray import RayRunner

        return RayRunner(model, config, engine)
    return SingleRunner(build_estimator(model, config))


def require_engine(engine: EngineConfig | None) -> None:
    """Fail before any work (before outputs are planned or a model loads) when the engine's
    package is missing: `--engine ray` without Ray is one line naming the extra."""
    if engine is not None and engine.engine == "ray":
        import aepose_cli.engines.ray  # noqa: F401  (MissingDependencyError when Ray is absent)


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


def model_sha256(model: ModelChoice) -> str:
    """sha256 of the checkpoint a run uses (fetched into the cache first for a zoo model)."""
    from ..zoo import checkpoint_sha256, resolve_checkpoint

    path, _ = resolve_checkpoint(model.name, model.checkpoint, progress=True)
    return checkpoint_sha256(path)


def provenance(input_root, keys, model: ModelChoice, config: InferenceConfig) -> dict:
    """What produced a journal or a finished JSON: input root, input keys, checkpoint sha256
    and every inference setting (batch size aside: it changes the pace, not the poses)."""
    import dataclasses
    import os

    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items() if k != "batch_size"}
    return {
        "input_root": None if input_root is None else os.path.realpath(input_root),
        "inputs": list(keys),
        "checkpoint_sha256": model_sha256(model),
        "keypoints": model.keypoints,
        "settings": settings,
    }

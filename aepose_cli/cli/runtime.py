"""The process owner: what a command does to its process, and the runner it hands its job.

A command owns its process; the library changes nothing process-wide. So this module, for the
command line: sets torch's threads (`--threads`), hands the library the console's bars, and
builds the runner (this process, or Ray with its core logs kept off the terminal).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import EngineConfig, InferenceConfig, ModelChoice

if TYPE_CHECKING:
    from ..estimator import PoseEstimator
    from ..jobs.base import Runner


def build_estimator(model: ModelChoice, config: InferenceConfig) -> PoseEstimator:
    """The estimator of a command, with a download bar if the model is fetched."""
    from ..estimator import PoseEstimator
    from .console import DownloadBar

    if config.threads:
        import torch

        # The command owns the process (the library never changes the thread count): torch's
        # threads run the torch backend; ONNX Runtime and OpenVINO take config.threads themselves.
        torch.set_num_threads(config.threads)
    return PoseEstimator(model.name, model.checkpoint, keypoints=model.keypoints, config=config, progress=DownloadBar())


def build_runner(model: ModelChoice, config: InferenceConfig, engine: EngineConfig | None = None, estimator=None) -> Runner:
    """What runs a command's items: this process (around `estimator`, or one built now), or Ray
    (`--engine ray`, imported only then; Ray's core logs kept off the terminal).

    Enter it (`with runner:`) before any output or progress bar: Ray starts or is joined then,
    so that its failures come first, and it is stopped or left on exit."""
    if engine is not None and engine.engine == "ray":
        from ..engines.ray import RayRunner
        from .console import DownloadBar

        return RayRunner(model, config, engine, progress=DownloadBar(), filter_core_logs=True)
    from ..engines.single import SingleRunner

    return SingleRunner(estimator if estimator is not None else build_estimator(model, config))


def require_engine(engine: EngineConfig | None) -> None:
    """Fail before any work (before outputs are planned or a model loads) when the engine's
    package is missing: `--engine ray` without Ray is one line naming the extra."""
    if engine is not None and engine.engine == "ray":
        import aepose_cli.engines.ray  # noqa: F401  (MissingDependencyError when Ray is absent)

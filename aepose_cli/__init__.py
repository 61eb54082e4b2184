"""aepose: bottom-up multi-person pose estimation (Associative Embedding + HRNet), exact to the
mmpose 0.x reference and fast.

Importing it, building a `PoseEstimator` and predicting change nothing process-wide: no bar is
drawn (pass a `types.Progress` to see a download), torch's threads and malloc are left as they
are. A program that owns its process and runs the network on the CPU with torch may call
`keep_freed_memory()` once for the command line's speed (`aepose_cli.host_memory`).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import DrawConfig, InferenceConfig
from .estimator import PoseEstimator, load_model
from .host_memory import keep_freed_memory
from .types import FrameResult, Pose

__all__ = ["PoseEstimator", "Pose", "FrameResult", "InferenceConfig", "DrawConfig", "load_model", "keep_freed_memory", "__version__"]

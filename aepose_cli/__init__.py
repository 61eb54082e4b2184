"""aepose: bottom-up multi-person pose estimation (Associative Embedding + HRNet), exact to the
mmpose 0.x reference and fast."""
from __future__ import annotations

__version__ = "0.1.0"

from .config import DrawConfig, InferenceConfig
from .estimator import PoseEstimator, load_model
from .types import FrameResult, Pose

__all__ = ["PoseEstimator", "Pose", "FrameResult", "InferenceConfig", "DrawConfig", "load_model", "__version__"]

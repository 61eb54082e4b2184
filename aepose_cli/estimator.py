"""`PoseEstimator`: the library's front door, from a model name or checkpoint to poses.

It wires the stages (preprocess + network in `inference`, grouping, pose NMS) without knowing
which command runs it; the CLI and the video pipeline call the same methods. `resolve_model` is
the one place a model name or checkpoint becomes a checked network and its keypoint set: the
estimator and the Ray engine (which ships the checkpoint's bytes to its workers) both build from it.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .backends import resolve_backend
from .config import InferenceConfig
from .errors import CheckpointError
from .grouping import group, poses_from
from .inference import InferenceEngine, resolve_device
from .io.sources import read_image
from .keypoints import KeypointSet
from .model import AENet, build_from_checkpoint
from .model_settings import ModelSettings, resolve_settings
from .oks import oks_nms
from .types import AggregatedMaps, FrameResult, Pose, Progress
from .zoo import ZooModel, checkpoint_sha256, resolve_checkpoint, zoo_model_for_file


@dataclass(frozen=True)
class ResolvedModel:
    """A model located, read and checked: the network built from the checkpoint, its keypoint
    set, its zoo entry (None for a local checkpoint that is no published one), the file, the
    settings the tensors do not say (input size, UDP; `model_settings`), and (when asked for)
    the file's bytes, for a worker that has no access to the file."""

    net: AENet
    keypoints: KeypointSet
    zoo_entry: ZooModel | None
    path: Path
    data: bytes | None = None
    settings: ModelSettings | None = None

    def configured(self, config: InferenceConfig) -> InferenceConfig:
        """`config` with this model's input size and UDP flag filled in (where it left them to
        the model): the config every engine of this model runs with."""
        if self.settings is None:
            return config
        return replace(config, input_size=self.settings.input_size, use_udp=self.settings.use_udp)

    def sha256_for(self, backend: str) -> str | None:
        """The checkpoint's sha256 where `backend` needs it to name its cached ONNX graph
        (ONNX Runtime, OpenVINO); None for torch, which caches nothing."""
        return checkpoint_sha256(self.path) if backend != "torch" else None


def resolve_model(
    model: str | None = None,
    checkpoint: str | Path | None = None,
    keypoints: str | KeypointSet | None = None,
    *,
    progress: Progress | None = None,
    keep_bytes: bool = False,
    input_size: int | None = None,
    use_udp: bool | None = None,
) -> ResolvedModel:
    """The one resolution of a model name and/or checkpoint file: the zoo model fetched into the
    cache if needed (`progress`: where the download shows; None: nowhere), the network built
    from the checkpoint's tensors (any family), the settings its tensors do not say and the
    keypoint set (`model_settings.resolve_settings`: `keypoints`, `input_size` and `use_udp`
    as given win; None leaves them to the zoo entry, the checkpoint's metadata, the defaults).
    A local checkpoint with a published file name is that zoo model. `keep_bytes`: read the
    file once and keep its bytes (the network is built from them)."""
    path, zoo_entry = resolve_checkpoint(model, checkpoint, progress=progress)
    if zoo_entry is None:
        zoo_entry = zoo_model_for_file(path)
    data = None
    if keep_bytes:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    net, meta = build_from_checkpoint(path, data, families=None)
    settings = resolve_settings(
        net, path, meta, zoo_entry, input_size=input_size, use_udp=use_udp, keypoints=keypoints, data=data,
    )
    return ResolvedModel(net, settings.keypoints, zoo_entry, Path(path), data, settings)


def load_model(
    model: str | None = None,
    checkpoint: str | Path | None = None,
    keypoints: str | KeypointSet | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[AENet, KeypointSet, ZooModel | None]:
    """Network, keypoint metadata and zoo entry for a model name and/or a checkpoint file.

    The architecture comes from the checkpoint's tensors; the keypoint set from `keypoints`
    (K must agree), the zoo entry, the checkpoint's metadata, else K. `progress`: where a
    download shows.
    """
    resolved = resolve_model(model, checkpoint, keypoints, progress=progress)
    return resolved.net, resolved.keypoints, resolved.zoo_entry


class PoseEstimator:
    """Multi-person 2D pose estimation with an associative-embedding model of mmpose 0.x (HRNet,
    HigherHRNet, ResNet, MobileNetV2, Hourglass-AE; with or without UDP).

    >>> est = PoseEstimator(checkpoint="model.pth", scales=(2, 1, 0.5))   # doctest: +SKIP
    >>> poses = est.predict("photo.jpg")                                    # doctest: +SKIP

    `model` names a zoo model (downloaded and cached on first use); `checkpoint` loads a local
    file and never touches the network. `config` is a whole `InferenceConfig`; `device`,
    `scales`, `flip` and any other keyword naming a field of it (e.g. `pose_nms=None`,
    `refine=False`, `precision="fp16"`, `backend="onnxruntime"`, `threads=2`) override that
    field, of `config` when one is given; `input_size` (512, 640) and `use_udp` left None are
    the model's (`model_settings`), and `self.config` holds them resolved;
    `self.requested_config` is the config as asked, with them still None where the model
    decided: what a run's record (`jobs.provenance`) keeps, since the checkpoint's sha256 then
    decides them, and a run that has not loaded the model yet knows only that. `progress` is
    where a model download shows its progress (`types.Progress`); by default nothing is drawn.

    Nothing process-wide is changed: on the CPU, `aepose_cli.keep_freed_memory()` (called once
    by the program that owns the process, as the command line does) makes the torch network's
    passes 1.25-1.37x faster by letting malloc keep their buffers (`aepose_cli.host_memory`).
    """

    def __init__(
        self,
        model: str | None = None,
        checkpoint: str | Path | None = None,
        *,
        device: str | None = None,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        keypoints: str | KeypointSet | None = None,
        config: InferenceConfig | None = None,
        progress: Progress | None = None,
        **overrides,
    ) -> None:
        if device is not None:
            overrides["device"] = device
        if scales is not None:
            overrides["scales"] = tuple(float(s) for s in scales)
        if flip is not None:
            overrides["flip"] = flip
        config = replace(config, **overrides) if config is not None else InferenceConfig(**overrides)
        resolved = resolve_model(
            model, checkpoint, keypoints, progress=progress, input_size=config.input_size, use_udp=config.use_udp,
        )
        self.requested_config = config
        config = resolved.configured(config)
        self.config = config
        self.keypoints, self.zoo_model, self.settings = resolved.keypoints, resolved.zoo_entry, resolved.settings
        backend = resolve_backend(config.backend, resolve_device(config.device), config.precision)
        self.engine = InferenceEngine(resolved.net, self.keypoints, config, checkpoint_sha256=resolved.sha256_for(backend))

    @classmethod
    def from_network(
        cls, net: AENet, keypoints: KeypointSet, config: InferenceConfig, *,
        zoo_model: ZooModel | None = None, checkpoint_sha256: str | None = None,
    ) -> PoseEstimator:
        """An estimator around a network already built (a worker that got the checkpoint's
        bytes from elsewhere); `keypoints` must be the network's, `config` resolved for it
        (`ResolvedModel.configured`)."""
        estimator = cls.__new__(cls)
        estimator.config = estimator.requested_config = config
        estimator.keypoints = keypoints
        estimator.zoo_model = zoo_model
        estimator.settings = None
        estimator.engine = InferenceEngine(net, keypoints, config, checkpoint_sha256=checkpoint_sha256)
        return estimator

    # -- stages ----------------------------------------------------------------------------
    def maps(self, image: np.ndarray | str | Path) -> AggregatedMaps:
        """Aggregated heatmaps `[K, H, W]` and tags `[K, H, W, L]` for one image (on the base
        canvas; with UDP at the network's heatmap resolution)."""
        return self.engine.infer([_as_bgr(image, self.config.max_pixels)])[0]

    def poses_from_maps(self, maps: AggregatedMaps) -> list[Pose]:
        """Group aggregated maps into people (original-image pixels), then pose NMS if on."""
        return poses_from_maps(maps, self.keypoints, self.config)

    # -- whole images ----------------------------------------------------------------------
    def predict(self, image: np.ndarray | str | Path) -> list[Pose]:
        """People in one image (a BGR array as OpenCV gives it, or a file path)."""
        return self.predict_batch([image])[0].poses

    def predict_batch(self, images: Sequence[np.ndarray | str | Path], first_index: int = 0) -> list[FrameResult]:
        """Results for several images; images of equal size share network batches."""
        arrays = [_as_bgr(img, self.config.max_pixels) for img in images]
        t0 = time.perf_counter()
        prepared = [self.engine.prepare(a) for a in arrays]
        t1 = time.perf_counter()
        all_maps = self.engine.infer_prepared(prepared)
        _synchronize(self.engine.device)
        t2 = time.perf_counter()
        results = []
        n = max(len(arrays), 1)
        for i, maps in enumerate(all_maps):
            source = str(images[i]) if not isinstance(images[i], np.ndarray) else ""
            result = self.result_from_maps(maps, first_index + i, source=source)
            result.timings.update(preprocess=(t1 - t0) / n, network=(t2 - t1) / n)
            results.append(result)
        return results

    def result_from_maps(
        self, maps: AggregatedMaps, index: int, *, source: str = "", timestamp: float | None = None
    ) -> FrameResult:
        """One frame's result from its aggregated maps, with the grouping time."""
        return result_from_maps(maps, self.keypoints, self.config, index, source=source, timestamp=timestamp)


# -- the grouping stage alone (no network): what a worker without the model runs --------------
def poses_from_maps(maps: AggregatedMaps, keypoints: KeypointSet, config: InferenceConfig) -> list[Pose]:
    """Group aggregated maps into people (original-image pixels), then pose NMS if on."""
    map_size_wh = (int(maps.heatmaps.shape[2]), int(maps.heatmaps.shape[1]))
    poses = poses_from(group(maps, keypoints, config), maps.geometry, map_size_wh)
    if config.pose_nms is None or len(poses) < 2:
        return poses
    stacked = np.stack([p.keypoints for p in poses])
    scores = np.array([p.score for p in poses], dtype=np.float32)
    areas = np.array([p.area for p in poses], dtype=np.float32)
    keep = oks_nms(stacked, scores, areas, keypoints.sigmas, config.pose_nms)
    return [poses[i] for i in keep]


def result_from_maps(
    maps: AggregatedMaps, keypoints: KeypointSet, config: InferenceConfig, index: int, *,
    source: str = "", timestamp: float | None = None,
) -> FrameResult:
    """One frame's result from its aggregated maps, with the grouping time."""
    t0 = time.perf_counter()
    poses = poses_from_maps(maps, keypoints, config)
    return FrameResult(
        index, maps.geometry.image_wh, poses, source=source, timestamp=timestamp,
        timings={"grouping": time.perf_counter() - t0},
    )


def _as_bgr(image: np.ndarray | str | Path, max_pixels: int | None) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        return image
    return read_image(image, max_pixels)


def _synchronize(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)

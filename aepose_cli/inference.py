"""Batched forward passes, flip test and aggregation across scales, as mmpose 0.29's
`AssociativeEmbedding.forward_test` (mmpose/models/detectors/associative_embedding.py).

Output: for every image, the aggregated heatmaps `[K, H, W]` and tags `[K, H, W, L]` that
grouping consumes: on the base canvas, or at the network's heatmap resolution with UDP. The
network's raw outputs are a list (`AENet.raw_outputs`: HigherHRNet two resolutions, Hourglass-AE
four stacks); only the outputs the published test config reads travel on (`HeadPlan`). One
output of heatmaps and tags projected to the base canvas (HRNet, ResNet, MobileNetV2,
Hourglass-AE) takes `aggregate_outputs`; the others `aggregation.aggregate_image`. The order of
operations follows the reference so that results agree to float rounding: flip and channel
re-index at heatmap resolution, then a bilinear resize of original and flipped maps separately,
then the average; scales are summed in descending order and divided by their count; tags come
from the scale-1 pass only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .aggregation import HeadPlan, aggregate_image
from .backends import NetworkBackend, create_backend, resolve_backend
from .config import InferenceConfig
from .keypoints import KeypointSet
from .model import AENet
from .preprocess import ImageGeometry, bgr_to_rgb, image_geometry, to_normalised_tensor, warp_image
from .types import AggregatedMaps
from .udp import udp_image_geometry


@dataclass
class RawOutputs:
    """Network outputs of every pass at heatmap resolution (for parity tests and debugging).

    `outputs` / `outputs_flip`: per scale (descending) the tuple of raw head outputs aggregation
    read, `[C, h, w]` each (the flipped pass's as the network returned them, not flipped back).
    The other four fields split a one-output head's into heatmaps and tags."""

    heatmaps: list[torch.Tensor]  # per scale (descending), [K, h, w]
    tags: list[torch.Tensor]
    heatmaps_flip: list[torch.Tensor]  # raw output of the flipped pass (not flipped back)
    tags_flip: list[torch.Tensor]
    outputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    outputs_flip: list[tuple[torch.Tensor, ...]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


class InferenceEngine:
    """Runs the network on batches of same-size images and aggregates its outputs.

    The network call itself belongs to a backend (`aepose_cli.backends`, chosen by
    `config.backend`); `checkpoint_sha256` names the weights for the ONNX cache of the
    ONNX Runtime / OpenVINO backends (without it their graph is exported and not kept).
    An already built `backend` of the same model may be passed to share one session between
    engines of different settings (it must be the one `config.backend` resolves to).
    """

    def __init__(
        self,
        model: AENet,
        keypoints: KeypointSet,
        config: InferenceConfig,
        *,
        checkpoint_sha256: str | None = None,
        backend: NetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.keypoints = keypoints
        self.device = resolve_device(config.device)
        self.model = model.eval()
        self.backend_name = resolve_backend(config.backend, self.device, config.precision)
        if backend is not None and backend.name != self.backend_name:
            raise ValueError(f"backend {backend.name!r} given, but config.backend resolves to {self.backend_name!r}")
        self.backend = backend if backend is not None else create_backend(
            self.backend_name, self.model, device=self.device, precision=config.precision,
            threads=config.threads, checkpoint_sha256=checkpoint_sha256,
        )
        self.flip_index = torch.tensor(keypoints.flip_index, dtype=torch.long, device=self.device)
        self.plan = HeadPlan.of(model.spec, config.udp)

    # -- network -------------------------------------------------------------------------
    @torch.inference_mode()
    def network(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Forward `[N, 3, H, W]` in one pass (by the backend): the raw outputs aggregation
        reads (`plan.selected`), float32 `[N, C, h, w]` each (HRNet: one, `[N, 2K, H/4, W/4]`)."""
        multiple = self.model.spec.input_multiple
        if batch.shape[2] % multiple or batch.shape[3] % multiple:
            from .errors import ConfigError

            raise ConfigError(
                f"a {batch.shape[3]}x{batch.shape[2]} network canvas: this network needs multiples of {multiple}; "
                "choose --scales whose ratios to the smallest are whole numbers (such as 2,1,0.5)"
            )
        outputs = self.backend(batch)
        return [outputs[i] for i in self.plan.selected]

    # -- whole images --------------------------------------------------------------------
    def prepare(self, image_bgr: np.ndarray) -> tuple[ImageGeometry, list[torch.Tensor]]:
        """Geometry and normalised inputs `[3, H, W]` for every scale (descending)."""
        return prepare_image(image_bgr, self.config)

    @torch.inference_mode()
    def infer(self, images_bgr: list[np.ndarray], keep_raw: bool = False) -> list[AggregatedMaps] | tuple[list[AggregatedMaps], list[RawOutputs]]:
        """Aggregated maps for a list of BGR images; equal sizes share network batches."""
        prepared = [self.prepare(img) for img in images_bgr]
        return self.infer_prepared(prepared, keep_raw=keep_raw)

    @torch.inference_mode()
    def infer_prepared(self, prepared: list[tuple[ImageGeometry, list[torch.Tensor]]], keep_raw: bool = False):
        results: list[AggregatedMaps | None] = [None] * len(prepared)
        raws: list[RawOutputs | None] = [None] * len(prepared)
        for i, (outs, outs_flip) in enumerate(self.forward_prepared(prepared)):
            results[i], raws[i] = aggregate_network_outputs(prepared[i][0], outs, outs_flip, self.flip_index, self.plan)
        return (results, raws) if keep_raw else results

    @torch.inference_mode()
    def forward_prepared(
        self, prepared: list[tuple[ImageGeometry, list[torch.Tensor]]]
    ) -> list[tuple[list[tuple[torch.Tensor, ...]], list[tuple[torch.Tensor, ...]] | None]]:
        """The network's raw outputs of every image: `(outs, outs_flip)`, each a list over the
        scales (descending) of the tuple of outputs aggregation reads, `[C, h, w]` each at its
        resolution (`outs_flip` None without flip test), ready for `aggregate_network_outputs`.

        Images of equal input sizes share passes, in chunks of `batch_size` in list order, so
        the same list always gives the same batches (a batched convolution rounds differently
        from another composition). The tensors are views of their batch's output.
        """
        outputs: list = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for i, (geometry, _) in enumerate(prepared):
            groups.setdefault(tuple(si.size_wh for si in geometry.inputs), []).append(i)
        chunks = [
            members[i:i + self.config.batch_size]
            for members in groups.values()
            for i in range(0, len(members), self.config.batch_size)
        ]
        for members in chunks:
            per_scale_outputs = []
            for s_idx in range(len(prepared[members[0]][1])):
                batch = torch.stack([prepared[i][1][s_idx] for i in members])
                if self.config.flip:
                    batch = torch.cat([batch, torch.flip(batch, [3])])
                per_scale_outputs.append(self.network(batch))
            n = len(members)
            for pos, i in enumerate(members):
                outs = [tuple(o[pos] for o in scale) for scale in per_scale_outputs]
                outs_flip = [tuple(o[n + pos] for o in scale) for scale in per_scale_outputs] if self.config.flip else None
                outputs[i] = (outs, outs_flip)
        return outputs


def prepare_image(image_bgr: np.ndarray, config: InferenceConfig) -> tuple[ImageGeometry, list[torch.Tensor]]:
    """Geometry and normalised inputs `[3, H, W]` for every scale (descending); needs no model,
    so a worker without one can do it. With UDP (`config.udp`) the geometry is a `UdpGeometry`."""
    h, w = image_bgr.shape[:2]
    if config.udp:
        geometry = udp_image_geometry(w, h, config.scales, config.canvas_input_size, config.size_divisor)
    else:
        geometry = image_geometry(w, h, config.scales, config.canvas_input_size, config.size_divisor)
    check_canvas(geometry)
    rgb = bgr_to_rgb(image_bgr)
    return geometry, [to_normalised_tensor(warp_image(rgb, si)) for si in geometry.inputs]


def check_canvas(geometry: ImageGeometry) -> None:
    """Refuse (InputError) an image whose network canvas would exceed MAX_CANVAS_SIDE.

    Computed from the geometry alone, before any warp or tensor is allocated.
    """
    from .config import MAX_CANVAS_SIDE
    from .errors import UnnamedInputError

    cw, ch = geometry.inputs[0].size_wh  # the largest scale comes first
    if max(cw, ch) > MAX_CANVAS_SIDE:
        w, h = geometry.image_wh
        raise UnnamedInputError(
            f"{w}x{h} image: its aspect ratio needs a {cw}x{ch} network canvas "
            f"(at most {MAX_CANVAS_SIDE} pixels a side); crop it or lower --scales"
        )


def aggregate_network_outputs(
    geometry: ImageGeometry,
    outs: list[tuple[torch.Tensor, ...]],
    outs_flip: list[tuple[torch.Tensor, ...]] | None,
    flip_index: torch.Tensor,
    plan: HeadPlan,
) -> tuple[AggregatedMaps, RawOutputs]:
    """The maps grouping reads, from the outputs `forward_prepared` gave for one image (per
    scale, descending, the tuple of outputs `plan` selects; `outs_flip` None without flip test)."""
    if plan.projected_single_map:
        maps, raw = aggregate_outputs(
            geometry, [o[0] for o in outs], None if outs_flip is None else [o[0] for o in outs_flip], flip_index,
            align_corners=plan.settings.align_corners,
        )
    else:
        image = aggregate_image(
            [[t[None] for t in scale] for scale in outs],
            None if outs_flip is None else [[t[None] for t in scale] for scale in outs_flip],
            [si.scale for si in geometry.inputs], geometry.base_size_wh, plan.num_joints, flip_index,
            plan.outputs, range(len(plan.outputs)), plan.settings,
        )
        maps, raw = AggregatedMaps(image.heatmaps, image.tags, geometry, image.tags_lowres), RawOutputs([], [], [], [])
    raw.outputs = list(outs)
    raw.outputs_flip = list(outs_flip or [])
    return maps, raw


def aggregate_outputs(
    geometry: ImageGeometry,
    outs: list[torch.Tensor],
    outs_flip: list[torch.Tensor] | None,
    flip_index: torch.Tensor,
    *,
    align_corners: bool = False,
) -> tuple[AggregatedMaps, RawOutputs]:
    """Combine the raw `[2K, h, w]` outputs of every scale (descending) into base-canvas maps
    (one output of heatmaps then tags, projected with `align_corners` as the family's config
    says: Hourglass-AE's True, the others' False).

    `outs_flip` are the raw outputs of the mirrored inputs (None without flip test). Public so
    that maps from elsewhere (tests, another runtime) go through the reference's exact steps.
    """
    k = len(flip_index)
    wb, hb = geometry.base_size_wh
    scales = [si.scale for si in geometry.inputs]
    single = len(scales) == 1
    total = None
    tag_list: list[torch.Tensor] = []
    tags_lowres = None
    raw = RawOutputs([], [], [], [])
    for s, out, out_f in zip(scales, outs, outs_flip or [None] * len(outs)):
        maps_hm = [out[:k]]
        maps_tg = [out[k:]]
        raw.heatmaps.append(out[:k])
        raw.tags.append(out[k:])
        if out_f is not None:
            flipped = torch.flip(out_f, [2])
            maps_hm.append(flipped[:k][flip_index])
            maps_tg.append(flipped[k:][flip_index])
            raw.heatmaps_flip.append(out_f[:k])
            raw.tags_flip.append(out_f[k:])
        hms = _project(torch.stack(maps_hm), hb, wb, align_corners)
        heat = (hms[0] + hms[1]) / 2.0 if out_f is not None else hms[0]
        if s == 1 or single:
            low = torch.stack(maps_tg)
            # Only an align_corners=False upsampling by 4 has the structure grouping's bound uses.
            tags_lowres = low.permute(1, 2, 3, 0) if not align_corners else None
            tag_list.extend(_project(low, hb, wb, align_corners).unbind(0))
        total = heat if total is None else total + heat
    heatmaps = total / float(len(scales))
    tags = torch.stack(tag_list, dim=-1)
    return AggregatedMaps(heatmaps, tags, geometry, tags_lowres), raw


def _project(maps: torch.Tensor, hb: int, wb: int, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of `[M, K, h, w]` to the base canvas."""
    if maps.shape[-2:] == (hb, wb):
        return maps
    return F.interpolate(maps, size=(hb, wb), mode="bilinear", align_corners=align_corners)

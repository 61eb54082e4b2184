"""From the raw outputs of any AE head to the maps grouping reads, as mmpose 0.29's
`AssociativeEmbedding.forward_test` does it (mmpose/models/detectors/associative_embedding.py
with `split_ae_outputs`, `flip_feature_maps`, `aggregate_stage_flip` and `aggregate_scale` of
mmpose/core/evaluation/bottom_up_eval.py).

This is the general path for every family (HRNet, HigherHRNet, ResNet, MobileNetV2, Hourglass-AE;
with or without UDP); the HRNet-only path in the inference module is a special case of it. Per
scale, in descending scale order:

1. split each selected output into heatmaps (first K channels, when the output has heatmaps)
   and tags (the channels after them, when it has tags);
2. with flip test, the mirrored input's outputs are flipped back along x and their channels
   re-indexed by the flip permutation (tags too: the published models have a tag per joint);
3. heatmaps of every stage are bilinearly resized (`align_corners` as configured) to the base
   canvas (`project2image`) or, without projection, to the LAST stage's size, and averaged; then
   original and flipped are averaged;
4. tags are resized the same way but kept apart: original then flipped, as tag dimensions;
5. tags are kept from the scale-1 pass only (or the only scale).

Then the scales' heatmaps are resized to the FIRST (largest) scale's size and averaged, the tags
stacked on a last axis, and, when the tags' size still differs from the heatmaps' (UDP
HigherHRNet: tags at 1/4, heatmaps at 1/2), each tag dimension is resized to the heatmaps' size.

The order of float operations is the reference's, so maps agree to float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .model.heads import OutputSpec

if TYPE_CHECKING:
    from .model import AENetSpec


@dataclass(frozen=True)
class AggregationSettings:
    """The test_cfg keys that shape aggregation.

    project2image: resize to the base canvas (`base_size`) rather than to the network's own
      heatmap size (UDP configs set it False: they group at heatmap resolution).
    align_corners: of every bilinear resize (and of nothing else).
    """

    project2image: bool = True
    align_corners: bool = False

    @classmethod
    def reference(cls, family: str, use_udp: bool) -> AggregationSettings:
        """What the published configs use. UDP configs: no projection, align_corners True.
        Non-UDP: projection, align_corners False, except Hourglass-AE, whose config has no
        `align_corners` key, so forward_test's default applies: True."""
        if use_udp:
            return cls(project2image=False, align_corners=True)
        return cls(project2image=True, align_corners=family == "hourglass")


@dataclass(frozen=True)
class HeadPlan:
    """What aggregation needs of a network, without the network (a worker that only groups
    holds this): which raw outputs it reads (`selected`, indices into the head's outputs, and
    their `outputs` specs, in order), the keypoint count, and the settings of the published
    test config for the family and UDP flag.

    `projected_single_map`: one selected output of K heatmaps + K tags at 1/4 resolution,
    projected to the base canvas (HRNet, ResNet, MobileNetV2 and Hourglass-AE without UDP):
    `inference.aggregate_outputs`' path, which is this module's arithmetic for that case.
    """

    family: str
    num_joints: int
    selected: tuple[int, ...]
    outputs: tuple[OutputSpec, ...]
    settings: AggregationSettings
    use_udp: bool

    @classmethod
    def of(cls, spec: AENetSpec, use_udp: bool) -> HeadPlan:
        selected = tuple(spec.test_outputs)
        return cls(
            spec.family, spec.num_joints, selected, tuple(spec.outputs[i] for i in selected),
            AggregationSettings.reference(spec.family, use_udp), use_udp,
        )

    @property
    def projected_single_map(self) -> bool:
        (first, *rest) = self.outputs
        return not rest and first.heatmaps and first.tags and first.stride == 4 and self.settings.project2image


def split_outputs(
    outputs: Sequence[torch.Tensor], num_joints: int, specs: Sequence[OutputSpec], selected: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Heatmaps and tags of the selected outputs (`split_ae_outputs`), each `[N, C, h, w]`."""
    heatmaps, tags = [], []
    for i, (out, spec) in enumerate(zip(outputs, specs)):
        if i not in selected:
            continue
        offset = num_joints if spec.heatmaps else 0
        if spec.heatmaps:
            heatmaps.append(out[:, :num_joints])
        if spec.tags:
            tags.append(out[:, offset:])
    return heatmaps, tags


def flip_back(maps: Sequence[torch.Tensor], flip_index: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
    """Mirror along x and swap left/right channels (`flip_feature_maps`)."""
    index = torch.as_tensor(flip_index, dtype=torch.long)
    return [torch.flip(m, [3])[:, index.to(m.device)] for m in maps]


def _resize_all(maps: Sequence[torch.Tensor], size_hw: tuple[int, int], align_corners: bool) -> list[torch.Tensor]:
    return [
        m if tuple(m.shape[2:]) == tuple(size_hw)
        else F.interpolate(m, size=size_hw, mode="bilinear", align_corners=align_corners)
        for m in maps
    ]


def _average(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum in list order, then divide by the count (the reference's `+=` then `/=`)."""
    total = maps[0]
    for m in maps[1:]:
        total = total + m
    return total / len(maps)


def aggregate_stages(
    maps: Sequence[torch.Tensor], size_hw: tuple[int, int] | None, align_corners: bool
) -> torch.Tensor:
    """Average of the stages' maps, each resized to `size_hw` or, if None, to the last stage's
    size (`_resize_average` with index -1)."""
    target = tuple(size_hw) if size_hw is not None else tuple(maps[-1].shape[2:])
    return _average(_resize_all(maps, target, align_corners))


@dataclass
class ImageMaps:
    """Aggregated maps of one image: heatmaps `[K, H, W]`, tags `[K, H, W, L]` (L = number of
    passes kept: 2 with flip test, original first). `tags_lowres`: the tags before their
    projection, `[K, H/4, W/4, L]`, when the projection was an align_corners=False upsampling by
    exactly 4 (what lets grouping bound tags per region cheaply); else None."""

    heatmaps: torch.Tensor
    tags: torch.Tensor
    tags_lowres: torch.Tensor | None = None


def aggregate_image(
    outputs: Sequence[Sequence[torch.Tensor]],
    outputs_flip: Sequence[Sequence[torch.Tensor]] | None,
    scales: Sequence[float],
    base_size_wh: tuple[int, int],
    num_joints: int,
    flip_index: Sequence[int],
    specs: Sequence[OutputSpec],
    selected: Sequence[int],
    settings: AggregationSettings,
) -> ImageMaps:
    """`forward_test`'s aggregation of one image.

    outputs[i]: the raw head outputs (`AENet.raw_outputs`, each `[1, C, h, w]`) of the pass at
    scales[i]; scales in descending order, as the inputs were made. outputs_flip: the same for
    the mirrored inputs, or None without flip test.
    """
    align = settings.align_corners
    base_hw = (base_size_wh[1], base_size_wh[0])
    project = base_hw if settings.project2image else None
    scale_heatmaps: list[torch.Tensor] = []
    scale_tags: list[torch.Tensor] = []
    tags_lowres = None
    for i, s in enumerate(scales):
        heatmaps, tags = split_outputs(outputs[i], num_joints, specs, selected)
        combined = aggregate_stages(heatmaps, project, align)
        unprojected = list(tags)
        if project is None:
            tag_maps = _resize_all(tags, tuple(tags[-1].shape[2:]), align)
        else:
            tag_maps = _resize_all(tags, project, align)
        if outputs_flip is not None:
            heatmaps_f, tags_f = split_outputs(outputs_flip[i], num_joints, specs, selected)
            heatmaps_f = flip_back(heatmaps_f, flip_index)
            tags_f = flip_back(tags_f, flip_index)
            unprojected += tags_f
            combined = (combined + aggregate_stages(heatmaps_f, project, align)) / 2.0
            if project is None:
                tag_maps += _resize_all(tags_f, tuple(tags_f[-1].shape[2:]), align)
            else:
                tag_maps += _resize_all(tags_f, project, align)
        if len(tag_maps) != (2 if outputs_flip is not None else 1):
            # The reference unpacks one tag map per pass (`append(*maps)`); several tag stages fail there.
            raise ValueError(f"{len(tags)} tag outputs selected; the reference aggregates exactly one")
        if s == 1 or len(scales) == 1:
            scale_tags.extend(tag_maps)
            if project is not None and not align and all(4 * t.shape[2] == base_hw[0] and 4 * t.shape[3] == base_hw[1] for t in unprojected):
                tags_lowres = torch.stack([t[0] for t in unprojected], dim=-1)
        scale_heatmaps.append(combined)
    first_hw = tuple(scale_heatmaps[0].shape[2:])
    heatmaps = _average(_resize_all(scale_heatmaps, first_hw, align))
    tags_hw = tuple(scale_tags[0].shape[2:])
    tags = torch.stack(_resize_all(scale_tags, tags_hw, align), dim=-1)
    if tuple(heatmaps.shape[2:]) != tags_hw:
        tags = torch.stack(
            [
                F.interpolate(tags[..., d], size=heatmaps.shape[2:], mode="bilinear", align_corners=align)
                for d in range(tags.shape[-1])
            ],
            dim=-1,
        )
    return ImageMaps(heatmaps[0], tags[0], tags_lowres)

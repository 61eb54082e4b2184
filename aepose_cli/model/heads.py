"""The three associative-embedding heads of mmpose 0.29, with the module names of its
checkpoints, each returning a list of outputs exactly as the reference head returns it.

* `AESimpleHead` (mmpose/models/heads/ae_simple_head.py, on `DeconvHead`): optional transposed
  convolutions (`deconv_layers`: ConvTranspose2d without bias, BN, ReLU; ResNet and MobileNetV2
  use three, HRNet none), then one conv with bias (`final_layer`) to K heatmaps + K tags.
  One output.
* `AEHigherResolutionHead` (ae_higher_resolution_head.py, HigherHRNet): `final_layers.0` gives
  the 1/4-resolution K heatmaps + K tags; each deconvolution stage (`deconv_layers.i`: the
  previous features, concatenated with the previous output when `cat_output`, through a
  ConvTranspose2d + BN + ReLU and BasicBlocks) doubles the resolution and `final_layers.i+1`
  maps it to heatmaps (plus tags when that stage has them). One output per resolution.
* `AEMultiStageHead` (ae_multi_stage_head.py, Hourglass-AE): per stage an optional deconvolution
  stack and final conv; the published config has neither (identity), so the head has no tensors
  and passes the backbone's stage outputs through. One output per stage.

Each spec records the layout read from the tensors; `outputs` says what every output holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hrnet import BasicBlock, _bn
from .state_keys import child_indices, shape

# ConvTranspose2d (padding, output_padding) per kernel size, as mmpose's heads choose them; with
# stride 2 each doubles the resolution.
DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


@dataclass(frozen=True)
class OutputSpec:
    """What one raw head output holds: its stride w.r.t. the input, and whether its channels are
    K heatmaps, followed by K tag maps when `tags` (mmpose's `with_heatmaps` / `with_ae`)."""

    stride: int
    channels: int
    heatmaps: bool = True
    tags: bool = True


def _deconv_stack(c_in: int, filters: tuple[int, ...], kernels: tuple[int, ...]) -> nn.Module:
    """`DeconvHead._make_deconv_layer`: a flat Sequential (deconv, BN, ReLU) x n, or Identity."""
    if not filters:
        return nn.Identity()
    layers: list[nn.Module] = []
    for planes, kernel in zip(filters, kernels):
        padding, output_padding = DECONV_PADDING[kernel]
        layers += [
            nn.ConvTranspose2d(c_in, planes, kernel, stride=2, padding=padding, output_padding=output_padding, bias=False),
            _bn(planes),
            nn.ReLU(inplace=True),
        ]
        c_in = planes
    return nn.Sequential(*layers)


def _final_conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=(kernel - 1) // 2, bias=True)


def _read_deconv_stack(state: dict[str, torch.Tensor], prefix: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(filters, kernels) of a flat deconvolution Sequential: entries 0, 3, 6, ... are the
    transposed convolutions."""
    ids = child_indices(state, prefix)
    convs = [i for i in ids if f"{prefix}{i}.weight" in state and state[f"{prefix}{i}.weight"].dim() == 4]
    if convs != list(range(0, 3 * len(convs), 3)):
        raise ValueError(f"{prefix}*: not a (deconv, BN, ReLU) sequence")
    filters = tuple(shape(state, f"{prefix}{i}.weight")[1] for i in convs)
    kernels = tuple(shape(state, f"{prefix}{i}.weight")[2] for i in convs)
    for k in kernels:
        if k not in DECONV_PADDING:
            raise ValueError(f"{prefix}*: deconvolution kernel {k} (mmpose supports 2, 3, 4)")
    return filters, kernels


# --------------------------------------------------------------------------- AESimpleHead
@dataclass(frozen=True)
class SimpleHeadSpec:
    in_channels: int
    out_channels: int  # 2K (tag per joint)
    deconv_filters: tuple[int, ...] = ()
    deconv_kernels: tuple[int, ...] = ()
    final_kernel: int = 1

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "keypoint_head.") -> SimpleHeadSpec:
        filters, kernels = _read_deconv_stack(state, prefix + "deconv_layers.")
        out, c_in, k, _ = shape(state, prefix + "final_layer.weight")
        if k not in (1, 3):
            raise ValueError(f"{prefix}final_layer: kernel {k} (mmpose allows 1 or 3)")
        first_in = shape(state, prefix + "deconv_layers.0.weight")[0] if filters else c_in
        return cls(first_in, out, filters, kernels, k)

    def outputs(self, backbone_stride: int) -> tuple[OutputSpec, ...]:
        return (OutputSpec(backbone_stride // 2 ** len(self.deconv_filters), self.out_channels),)


class AESimpleHead(nn.Module):
    def __init__(self, spec: SimpleHeadSpec) -> None:
        super().__init__()
        self.deconv_layers = _deconv_stack(spec.in_channels, spec.deconv_filters, spec.deconv_kernels)
        c = spec.deconv_filters[-1] if spec.deconv_filters else spec.in_channels
        self.final_layer = _final_conv(c, spec.out_channels, spec.final_kernel)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(x, (list, tuple)):
            x = x[0]
        return [self.final_layer(self.deconv_layers(x))]


# --------------------------------------------------------------------------- AEHigherResolutionHead
@dataclass(frozen=True)
class HigherResolutionHeadSpec:
    in_channels: int
    final_channels: tuple[int, ...]  # per output: 2K (heatmaps + tags) or K (heatmaps only)
    deconv_filters: tuple[int, ...]
    deconv_kernels: tuple[int, ...]
    basic_blocks: int
    cat_output: tuple[bool, ...]
    final_kernel: int = 1

    @classmethod
    def official(cls, width: int, num_joints: int) -> HigherResolutionHeadSpec:
        """The published HigherHRNet head: one deconvolution stage of `width` filters, kernel 4,
        4 BasicBlocks, the 1/4 output concatenated in; tags at 1/4 only."""
        return cls(width, (2 * num_joints, num_joints), (width,), (4,), 4, (True,), 1)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "keypoint_head.") -> HigherResolutionHeadSpec:
        finals = child_indices(state, prefix + "final_layers.")
        if not finals or finals != list(range(len(finals))):
            raise ValueError(f"{prefix}final_layers: not numbered 0..n-1")
        final_channels = tuple(shape(state, f"{prefix}final_layers.{i}.weight")[0] for i in finals)
        c_in, kernel = shape(state, f"{prefix}final_layers.0.weight")[1:3]
        deconvs = child_indices(state, prefix + "deconv_layers.")
        if deconvs != list(range(len(finals) - 1)):
            raise ValueError(f"{len(finals)} final layers need {len(finals) - 1} deconvolution stages, found {len(deconvs)}")
        filters, kernels, cats, blocks = [], [], [], set()
        previous = c_in
        for i in deconvs:
            p = f"{prefix}deconv_layers.{i}."
            deconv_in, planes, k, _ = shape(state, p + "0.0.weight")
            if deconv_in == previous + final_channels[i]:
                cats.append(True)
            elif deconv_in == previous:
                cats.append(False)
            else:
                raise ValueError(f"{p}0.0.weight takes {deconv_in} channels; expected {previous} or {previous + final_channels[i]}")
            if k not in DECONV_PADDING:
                raise ValueError(f"{p}0.0: deconvolution kernel {k} (mmpose supports 2, 3, 4)")
            filters.append(planes)
            kernels.append(k)
            blocks.add(len(child_indices(state, p)) - 1)
            previous = planes
        if len(blocks) > 1:
            raise ValueError(f"deconvolution stages have different BasicBlock counts {sorted(blocks)}")
        return cls(c_in, final_channels, tuple(filters), tuple(kernels), blocks.pop() if blocks else 0, tuple(cats), kernel)

    def outputs(self, backbone_stride: int, num_joints: int) -> tuple[OutputSpec, ...]:
        return tuple(
            OutputSpec(backbone_stride // 2**i, c, heatmaps=True, tags=c > num_joints)
            for i, c in enumerate(self.final_channels)
        )


class AEHigherResolutionHead(nn.Module):
    def __init__(self, spec: HigherResolutionHeadSpec) -> None:
        super().__init__()
        self.spec = spec
        finals = [_final_conv(spec.in_channels, spec.final_channels[0], spec.final_kernel)]
        finals += [
            _final_conv(planes, spec.final_channels[i + 1], spec.final_kernel)
            for i, planes in enumerate(spec.deconv_filters)
        ]
        self.final_layers = nn.ModuleList(finals)
        stages = []
        c_in = spec.in_channels
        for i, (planes, kernel) in enumerate(zip(spec.deconv_filters, spec.deconv_kernels)):
            if spec.cat_output[i]:
                c_in += spec.final_channels[i]
            padding, output_padding = DECONV_PADDING[kernel]
            layers: list[nn.Module] = [
                nn.Sequential(
                    nn.ConvTranspose2d(c_in, planes, kernel, stride=2, padding=padding, output_padding=output_padding, bias=False),
                    _bn(planes),
                    nn.ReLU(inplace=True),
                )
            ]
            layers += [nn.Sequential(BasicBlock(planes, planes)) for _ in range(spec.basic_blocks)]
            stages.append(nn.Sequential(*layers))
            c_in = planes
        self.deconv_layers = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(x, (list, tuple)):
            x = x[0]
        y = self.final_layers[0](x)
        outputs = [y]
        for i, stage in enumerate(self.deconv_layers):
            if self.spec.cat_output[i]:
                x = torch.cat((x, y), 1)
            x = stage(x)
            y = self.final_layers[i + 1](x)
            outputs.append(y)
        return outputs


# --------------------------------------------------------------------------- AEMultiStageHead
@dataclass(frozen=True)
class MultiStageHeadSpec:
    """Per stage the same deconvolution stack and final conv; none of either (identity) in
    the published Hourglass-AE config."""

    num_stages: int
    in_channels: int
    out_channels: int
    deconv_filters: tuple[int, ...] = ()
    deconv_kernels: tuple[int, ...] = ()
    final_kernel: int = 0  # 0: identity

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], num_stages: int, in_channels: int, prefix: str = "keypoint_head."
    ) -> MultiStageHeadSpec:
        """`num_stages` and `in_channels` come from the backbone: an identity head has no tensors."""
        filters, kernels = _read_deconv_stack(state, prefix + "multi_deconv_layers.0.")
        for s in range(1, num_stages):
            if _read_deconv_stack(state, f"{prefix}multi_deconv_layers.{s}.") != (filters, kernels):
                raise ValueError(f"{prefix}multi_deconv_layers.{s} differs from stage 0")
        key = prefix + "multi_final_layers.0.weight"
        if key in state:
            out, _, kernel, _ = shape(state, key)
        else:
            out, kernel = (filters[-1] if filters else in_channels), 0
        return cls(num_stages, in_channels, out, filters, kernels, kernel)

    def outputs(self, backbone_stride: int) -> tuple[OutputSpec, ...]:
        stride = backbone_stride // 2 ** len(self.deconv_filters)
        return tuple(OutputSpec(stride, self.out_channels) for _ in range(self.num_stages))


class AEMultiStageHead(nn.Module):
    def __init__(self, spec: MultiStageHeadSpec) -> None:
        super().__init__()
        self.multi_deconv_layers = nn.ModuleList(
            _deconv_stack(spec.in_channels, spec.deconv_filters, spec.deconv_kernels) for _ in range(spec.num_stages)
        )
        c = spec.deconv_filters[-1] if spec.deconv_filters else spec.in_channels
        self.multi_final_layers = nn.ModuleList(
            nn.Identity() if spec.final_kernel == 0 else _final_conv(c, spec.out_channels, spec.final_kernel)
            for _ in range(spec.num_stages)
        )

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return [final(deconv(x[i])) for i, (deconv, final) in enumerate(zip(self.multi_deconv_layers, self.multi_final_layers))]

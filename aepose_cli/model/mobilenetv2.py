"""MobileNetV2 backbone with the module names of mmpose 0.29's `MobileNetV2`
(mmpose/models/backbones/mobilenet_v2.py), as `mobilenetv2_coco_512x512` stores it.

`conv1` (3x3/2, ReLU6), seven `layer<i>` of inverted residual blocks and `conv2` (1x1 to 1280,
ReLU6), every layer an mmcv `ConvModule`. A block is `conv.0` (1x1 expansion, absent when the
expand ratio is 1), a 3x3 depthwise `ConvModule` and a linear 1x1 projection; it adds its input
when the stride is 1 and the widths agree. The backbone returns `conv2`'s output (stride 32),
which `AESimpleHead` reads (`out_indices=(7,)` in every published config).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .conv_module import ConvModule
from .state_keys import child_indices, shape

# (expand ratio, channels, blocks, stride of the first block) of each layer: mmpose's
# MobileNetV2.arch_settings. Strides are not in the tensors; they come from here.
ARCH = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """mmcv/mmpose's channel rounding for width multipliers."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * value else new


@dataclass(frozen=True)
class InvertedResidualSpec:
    in_channels: int
    hidden_channels: int
    out_channels: int
    stride: int
    expand: bool  # False: no 1x1 expansion (expand ratio 1)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class MobileNetV2Spec:
    stem_channels: int
    layers: tuple[tuple[InvertedResidualSpec, ...], ...]
    out_channels: int

    @classmethod
    def official(cls, widen_factor: float = 1.0) -> MobileNetV2Spec:
        c_in = stem = make_divisible(32 * widen_factor, 8)
        layers = []
        for expand, channels, blocks, stride in ARCH:
            c_out = make_divisible(channels * widen_factor, 8)
            layer = []
            for b in range(blocks):
                layer.append(InvertedResidualSpec(c_in, int(round(c_in * expand)), c_out, stride if b == 0 else 1, expand != 1))
                c_in = c_out
            layers.append(tuple(layer))
        out = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        return cls(stem, tuple(layers), out)

    @property
    def stride(self) -> int:
        return 32

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "backbone.") -> MobileNetV2Spec:
        """Widths and block counts from the tensors; KeyError/ValueError when they are no
        MobileNetV2 of mmpose's seven-layer arrangement."""
        stem = shape(state, prefix + "conv1.conv.weight")[0]
        layers = []
        c_in = stem
        for i, (_, _, _, stride) in enumerate(ARCH, start=1):
            p = f"{prefix}layer{i}"
            blocks = child_indices(state, p + ".")
            if not blocks or blocks != list(range(len(blocks))):
                raise ValueError(f"{p}: no inverted residual blocks numbered 0..n-1")
            layer = []
            for b in blocks:
                convs = child_indices(state, f"{p}.{b}.conv.")
                if convs not in ([0, 1], [0, 1, 2]):
                    raise ValueError(f"{p}.{b}: expected 2 or 3 ConvModules, found {convs}")
                expand = len(convs) == 3
                hidden = shape(state, f"{p}.{b}.conv.0.conv.weight")[0]
                out = shape(state, f"{p}.{b}.conv.{convs[-1]}.conv.weight")[0]
                layer.append(InvertedResidualSpec(c_in, hidden, out, stride if b == 0 else 1, expand))
                c_in = out
            layers.append(tuple(layer))
        if f"{prefix}layer{len(ARCH) + 1}.0.conv.0.conv.weight" in state:
            raise ValueError(f"more than {len(ARCH)} layers")
        out = shape(state, prefix + "conv2.conv.weight")[0]
        return cls(stem, tuple(layers), out)


class InvertedResidual(nn.Module):
    def __init__(self, spec: InvertedResidualSpec) -> None:
        super().__init__()
        self.use_residual = spec.residual
        hidden = spec.hidden_channels
        layers: list[nn.Module] = []
        if spec.expand:
            layers.append(ConvModule(spec.in_channels, hidden, 1, activation="relu6"))
        layers.append(
            ConvModule(hidden, hidden, 3, stride=spec.stride, padding=1, groups=hidden, activation="relu6")
        )
        layers.append(ConvModule(hidden, spec.out_channels, 1, activation=None))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Returns `conv2`'s features, `[N, 1280, H/32, W/32]` for the published widths."""

    def __init__(self, spec: MobileNetV2Spec) -> None:
        super().__init__()
        self.spec = spec
        self.conv1 = ConvModule(3, spec.stem_channels, 3, stride=2, padding=1, activation="relu6")
        for i, layer in enumerate(spec.layers, start=1):
            setattr(self, f"layer{i}", nn.Sequential(*(InvertedResidual(b) for b in layer)))
        last = spec.layers[-1][-1].out_channels
        self.conv2 = ConvModule(last, spec.out_channels, 1, activation="relu6")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for i in range(1, len(self.spec.layers) + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.conv2(x)

"""Hourglass-AE backbone with the module names of mmpose 0.29's `HourglassAENet`
(mmpose/models/backbones/hourglass_ae.py), as `hourglass_ae_coco_512x512` stores it.

A stem (7x7/2 conv, 3x3 conv, 2x2 max-pool, two 3x3 convs; stride 4), then `num_stacks`
hourglasses. Each hourglass level keeps a 3x3 branch at its resolution (`up1`) and recurses on a
max-pooled copy (`low1`, `low2`, `low3`), adding the nearest-upsampled result back. After each
stack two 3x3 convs, a 1x1 output conv with bias (`out_convs`, the stack's 2K maps), and, before
the next stack, the input is updated with 1x1 re-mappings of the output and the features.
The backbone returns every stack's output (a list); `AEMultiStageHead` passes them through.
Every layer is an mmcv `ConvModule` (conv, BN, ReLU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .conv_module import ConvModule
from .state_keys import child_indices, shape


@dataclass(frozen=True)
class HourglassSpec:
    """`stem_channels`: the stem's four conv widths (64, 128, 128, feat); `stage_channels`: the
    widths of each hourglass level from the outside in (len = downsample times + 1)."""

    stem_channels: tuple[int, int, int, int]
    stage_channels: tuple[int, ...]
    num_stacks: int
    out_channels: int

    @classmethod
    def official(cls, num_stacks: int = 4, out_channels: int = 34) -> HourglassSpec:
        return cls((64, 128, 128, 256), (256, 384, 512, 640, 768), num_stacks, out_channels)

    @property
    def feat_channels(self) -> int:
        return self.stem_channels[-1]

    @property
    def stride(self) -> int:
        return 4

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "backbone.") -> HourglassSpec:
        stem = tuple(shape(state, f"{prefix}stem.{i}.conv.weight")[0] for i in (0, 1, 3, 4))
        stacks = child_indices(state, prefix + "hourglass_modules.")
        if not stacks or stacks != list(range(len(stacks))):
            raise ValueError("no hourglass modules numbered 0..n-1")
        level = f"{prefix}hourglass_modules.0.0."
        channels = [shape(state, level + "up1.conv.weight")[0]]
        while f"{level}low2.up1.conv.weight" in state:
            channels.append(shape(state, level + "low1.conv.weight")[0])
            level += "low2."
        channels.append(shape(state, level + "low1.conv.weight")[0])
        if f"{level}low2.conv.weight" not in state:
            raise ValueError(f"{level}low2 is neither a level nor a ConvModule")
        out = shape(state, f"{prefix}out_convs.0.conv.weight")[0]
        return cls(stem, tuple(channels), len(stacks), out)  # type: ignore[arg-type]


class HourglassLevel(nn.Module):
    """One level of `HourglassAEModule`: `up1` at this resolution plus the pooled recursion."""

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        cur, nxt = channels[0], channels[1]
        self.up1 = ConvModule(cur, cur, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.low1 = ConvModule(cur, nxt, 3, padding=1)
        self.low2 = HourglassLevel(channels[1:]) if len(channels) > 2 else ConvModule(nxt, nxt, 3, padding=1)
        self.low3 = ConvModule(nxt, cur, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(self.pool1(x))))
        return up1 + F.interpolate(low, scale_factor=2, mode="nearest")


class HourglassAENet(nn.Module):
    """Returns the `[N, out_channels, H/4, W/4]` output of every stack, in order."""

    def __init__(self, spec: HourglassSpec) -> None:
        super().__init__()
        self.spec = spec
        s0, s1, s2, feat = spec.stem_channels
        self.stem = nn.Sequential(
            ConvModule(3, s0, 7, stride=2, padding=3),
            ConvModule(s0, s1, 3, padding=1),
            nn.MaxPool2d(2, 2),
            ConvModule(s1, s2, 3, padding=1),
            ConvModule(s2, feat, 3, padding=1),
        )
        cur = spec.stage_channels[0]
        self.hourglass_modules = nn.ModuleList(
            nn.Sequential(
                HourglassLevel(spec.stage_channels),
                ConvModule(feat, feat, 3, padding=1),
                ConvModule(feat, feat, 3, padding=1),
            )
            for _ in range(spec.num_stacks)
        )
        self.out_convs = nn.ModuleList(
            ConvModule(cur, spec.out_channels, 1, norm=False, activation=None) for _ in range(spec.num_stacks)
        )
        self.remap_out_convs = nn.ModuleList(
            ConvModule(spec.out_channels, feat, 1, activation=None) for _ in range(spec.num_stacks - 1)
        )
        self.remap_feature_convs = nn.ModuleList(
            ConvModule(feat, feat, 1, activation=None) for _ in range(spec.num_stacks - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.stem(x)
        outputs = []
        for i in range(self.spec.num_stacks):
            hourglass = self.hourglass_modules[i](features)
            out = self.out_convs[i](hourglass)
            outputs.append(out)
            if i < self.spec.num_stacks - 1:
                # Summed in the reference's order: features + remapped output + remapped features.
                features = features + self.remap_out_convs[i](out) + self.remap_feature_convs[i](hourglass)
        return outputs

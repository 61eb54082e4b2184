"""ResNet backbone with the module names of mmpose 0.29's `ResNet`
(mmpose/models/backbones/resnet.py), as the ResNet-AE checkpoints (res50/101/152) store it.

The layout is the "pytorch" style ResNet: a 7x7/2 stem convolution (`conv1`, `bn1`), a 3x3/2
max-pool, then `layer1` .. `layer4` whose first block carries the stride (on the 3x3 convolution
of a Bottleneck) and a 1x1 projection (`downsample.0` conv, `downsample.1` BN). The backbone
returns the last stage (stride 32), which is what `AESimpleHead` reads. `ResNetSpec` holds the
widths and depths; `from_state_dict` reads them back from a checkpoint's tensor shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .hrnet import BasicBlock, Bottleneck, _bn
from .state_keys import child_indices, shape

# Blocks per stage of the published depths (mmpose's ResNet.arch_settings).
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
STAGE_STRIDES = (1, 2, 2, 2)


@dataclass(frozen=True)
class ResStageSpec:
    blocks: int
    mid_channels: int  # width of the 3x3 convolutions
    out_channels: int
    stride: int


@dataclass(frozen=True)
class ResNetSpec:
    """The hyper-parameters that fix a ResNet's tensors."""

    stem_channels: int
    block: str  # "bottleneck" (depth >= 50) or "basic"
    stages: tuple[ResStageSpec, ...]

    @classmethod
    def official(cls, depth: int, stem_channels: int = 64, base_channels: int = 64) -> ResNetSpec:
        block, blocks = DEPTHS[depth]
        expansion = 4 if block == "bottleneck" else 1
        stages = tuple(
            ResStageSpec(n, base_channels * 2**i, base_channels * 2**i * expansion, STAGE_STRIDES[i])
            for i, n in enumerate(blocks)
        )
        return cls(stem_channels, block, stages)

    @property
    def out_channels(self) -> int:
        return self.stages[-1].out_channels

    @property
    def stride(self) -> int:
        """Output stride: 4 from the stem and pool, times every stage's stride."""
        out = 4
        for stage in self.stages:
            out *= stage.stride
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "backbone.") -> ResNetSpec:
        """Read the widths and depths back; KeyError/ValueError when the tensors are no ResNet.

        Strides are not in the tensors: they are the published ones (1, 2, 2, 2)."""
        stem_out, stem_in, kh, _ = shape(state, prefix + "conv1.weight")
        if (stem_in, kh) != (3, 7):
            raise ValueError(f"{prefix}conv1 is not a 7x7 RGB stem")
        block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in state else "basic"
        stages = []
        s = 1
        while f"{prefix}layer{s}.0.conv1.weight" in state:
            p = f"{prefix}layer{s}"
            blocks = child_indices(state, p + ".")
            if blocks != list(range(len(blocks))):
                raise ValueError(f"{p}: blocks {blocks} are not numbered 0..n-1")
            mid = shape(state, f"{p}.0.conv1.weight")[0]
            last = "conv3" if block == "bottleneck" else "conv2"
            out = shape(state, f"{p}.0.{last}.weight")[0]
            if s > len(STAGE_STRIDES):
                raise ValueError(f"{p}: more than {len(STAGE_STRIDES)} stages")
            stages.append(ResStageSpec(len(blocks), mid, out, STAGE_STRIDES[s - 1]))
            s += 1
        if not stages:
            raise ValueError("no ResNet stages")
        return cls(stem_out, block, tuple(stages))


class ResNet(nn.Module):
    """Returns the last stage's features, `[N, C, H/32, W/32]`."""

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv1 = nn.Conv2d(3, spec.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(spec.stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        block = Bottleneck if spec.block == "bottleneck" else BasicBlock
        c_in = spec.stem_channels
        for i, stage in enumerate(spec.stages, start=1):
            blocks = []
            for b in range(stage.blocks):
                blocks.append(block(c_in, stage.out_channels, stride=stage.stride if b == 0 else 1, mid=stage.mid_channels))
                c_in = stage.out_channels
            setattr(self, f"layer{i}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, len(self.spec.stages) + 1):
            x = getattr(self, f"layer{i}")(x)
        return x

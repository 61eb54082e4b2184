"""HRNet backbone with the exact module names of the official mmpose checkpoints
(mmpose 0.29, mmpose/models/backbones/hrnet.py).

The architecture is a plain literal (`HRNetSpec`); `HRNetSpec.from_state_dict` reads it back from
a checkpoint's tensor shapes so any HRNet checkpoint in the mmpose layout loads without naming an
architecture (w32, w48, the tiny test networks...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


def _projection(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential | None:
    """A residual block's shortcut (`downsample`: 1x1 conv + BN) where its input and output
    differ in channels or resolution; None (identity) otherwise."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _bn(c_out))


class BasicBlock(nn.Module):
    """3x3 -> 3x3, plus identity or projection. HRNet's branches and heads use it at stride 1
    with `mid = c_out`; ResNet-18/34 put a stage's stride on the first 3x3 (`stride`, `mid`: the
    first convolution's width)."""

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, mid: int | None = None) -> None:
        super().__init__()
        mid = c_out if mid is None else mid
        self.conv1 = _conv3x3(c_in, mid, stride)
        self.bn1 = _bn(mid)
        self.conv2 = _conv3x3(mid, c_out)
        self.bn2 = _bn(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1, plus identity or projection. HRNet's stage 1 uses it at stride 1 with
    `mid = c_out // 4`; ResNet-50/101/152 put a stage's stride on the 3x3 ("pytorch" style)."""

    expansion = 4

    def __init__(self, c_in: int, c_out: int, stride: int = 1, mid: int | None = None) -> None:
        super().__init__()
        mid = c_out // self.expansion if mid is None else mid
        self.conv1 = _conv1x1(c_in, mid)
        self.bn1 = _bn(mid)
        self.conv2 = _conv3x3(mid, mid, stride)
        self.bn2 = _bn(mid)
        self.conv3 = _conv1x1(mid, c_out)
        self.bn3 = _bn(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage: `modules` HR modules over `len(channels)` branches."""

    modules: int
    blocks: int
    channels: tuple[int, ...]
    block: str = "basic"
    # Whether the last module fuses every branch (False for the final stage: branch 0 only).
    multiscale_output: bool = True


@dataclass(frozen=True)
class HRNetSpec:
    """The hyper-parameters that fix an HRNet's tensors."""

    stem_channels: int
    layer1_blocks: int
    layer1_channels: int  # Bottleneck output channels of stage 1 (256 in the official nets)
    stages: tuple[StageSpec, ...]  # stages 2, 3, 4

    @classmethod
    def official(cls, width: int) -> HRNetSpec:
        """The published w32/w48 layout: widths [W, 2W, 4W, 8W], 1/4/3 modules, 4 blocks."""
        c = (width, 2 * width, 4 * width, 8 * width)
        return cls(
            stem_channels=64,
            layer1_blocks=4,
            layer1_channels=256,
            stages=(
                StageSpec(1, 4, c[:2]),
                StageSpec(4, 4, c[:3]),
                StageSpec(3, 4, c[:4], multiscale_output=False),
            ),
        )

    @property
    def out_channels(self) -> int:
        return self.stages[-1].channels[0]

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], prefix: str = "backbone.") -> HRNetSpec:
        """Read the architecture back from tensor names and shapes.

        Raises KeyError/ValueError when the tensors do not form an HRNet; the caller turns that
        into a user-facing checkpoint error.
        """
        stem = state[prefix + "conv1.weight"].shape[0]
        layer1_ids = _indices(state, re.escape(prefix + "layer1.") + r"(\d+)\.")
        if not layer1_ids:
            raise ValueError("no layer1 blocks")
        last = max(layer1_ids)
        layer1_out = state[f"{prefix}layer1.{last}.conv3.weight"].shape[0]
        stages = []
        s = 2
        while f"{prefix}stage{s}.0.branches.0.0.conv1.weight" in state:
            p = f"{prefix}stage{s}"
            modules = max(_indices(state, re.escape(p + ".") + r"(\d+)\.")) + 1
            branches = max(_indices(state, re.escape(p + ".0.branches.") + r"(\d+)\.")) + 1
            blocks = max(_indices(state, re.escape(p + ".0.branches.0.") + r"(\d+)\.")) + 1
            block = "bottleneck" if f"{p}.0.branches.0.0.conv3.weight" in state else "basic"
            channels = tuple(
                state[f"{p}.0.branches.{b}.0.{'conv3' if block == 'bottleneck' else 'conv2'}.weight"].shape[0]
                for b in range(branches)
            )
            last_fused = _indices(state, re.escape(f"{p}.{modules - 1}.fuse_layers.") + r"(\d+)\.")
            multiscale = branches == 1 or len(last_fused) == branches
            stages.append(StageSpec(modules, blocks, channels, block, multiscale))
            s += 1
        if not stages:
            raise ValueError("no HRNet stages")
        return cls(stem, len(layer1_ids), layer1_out, tuple(stages))


def _indices(state: dict, pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in state if (m := rx.match(k))}


class HRModule(nn.Module):
    """Parallel branches followed by all-to-all fusion (`HRModule` of mmpose/models/backbones/hrnet.py)."""

    def __init__(self, stage: StageSpec, multiscale_output: bool) -> None:
        super().__init__()
        block = BLOCKS[stage.block]
        channels = stage.channels
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*(block(c, c) for _ in range(stage.blocks))) for c in channels
        )
        n_out = self.num_branches if multiscale_output else 1
        self.fuse_layers = None
        if self.num_branches > 1:
            self.fuse_layers = nn.ModuleList(
                nn.ModuleList(self._fuse(channels, i, j) for j in range(self.num_branches))
                for i in range(n_out)
            )
        self.relu = nn.ReLU(inplace=False)

    @staticmethod
    def _fuse(channels: tuple[int, ...], i: int, j: int) -> nn.Module | None:
        if j == i:
            return None
        if j > i:
            return nn.Sequential(
                _conv1x1(channels[j], channels[i]),
                _bn(channels[i]),
                nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
            )
        steps = []
        for k in range(i - j):
            if k == i - j - 1:
                steps.append(nn.Sequential(_conv3x3(channels[j], channels[i], 2), _bn(channels[i])))
            else:
                steps.append(
                    nn.Sequential(
                        _conv3x3(channels[j], channels[j], 2), _bn(channels[j]), nn.ReLU(inplace=False)
                    )
                )
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        outs = []
        for i, fuse in enumerate(self.fuse_layers):
            # Sum in increasing j, starting from branch 0, exactly as the reference adds them.
            y = xs[0] if i == 0 else fuse[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else fuse[j](xs[j]))
            outs.append(self.relu(y))
        return outs


class HRNet(nn.Module):
    """HRNet returning the highest-resolution branch, stride 4 (what the AE head consumes)."""

    def __init__(self, spec: HRNetSpec) -> None:
        super().__init__()
        self.spec = spec
        c = spec.stem_channels
        self.conv1 = _conv3x3(3, c, 2)
        self.bn1 = _bn(c)
        self.conv2 = _conv3x3(c, c, 2)
        self.bn2 = _bn(c)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(
            *(
                Bottleneck(c if b == 0 else spec.layer1_channels, spec.layer1_channels)
                for b in range(spec.layer1_blocks)
            )
        )
        previous = (spec.layer1_channels,)
        for s, stage in enumerate(spec.stages, start=1):
            setattr(self, f"transition{s}", self._transition(previous, stage.channels))
            modules = [
                HRModule(stage, stage.multiscale_output or m < stage.modules - 1)
                for m in range(stage.modules)
            ]
            setattr(self, f"stage{s + 1}", nn.Sequential(*modules))
            previous = stage.channels

    @staticmethod
    def _transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
        layers: list[nn.Module | None] = []
        for i, c in enumerate(current):
            if i < len(previous):
                layers.append(
                    None
                    if previous[i] == c
                    else nn.Sequential(_conv3x3(previous[i], c), _bn(c), nn.ReLU(inplace=True))
                )
                continue
            steps = []
            for k in range(i + 1 - len(previous)):
                c_in = previous[-1]
                c_out = c if k == i - len(previous) else c_in
                steps.append(nn.Sequential(_conv3x3(c_in, c_out, 2), _bn(c_out), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in range(1, len(self.spec.stages) + 1):
            transition = getattr(self, f"transition{s}")
            # As in the reference, a transition layer always reads the last (lowest-resolution)
            # output of the previous stage; branches without one pass through unchanged.
            xs = [xs[i] if t is None else t(xs[-1]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{s + 1}")(xs)
        return xs[0]

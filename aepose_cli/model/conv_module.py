"""Convolution + BatchNorm + activation with the parameter names of mmcv 1.x's `ConvModule`.

MobileNetV2 and Hourglass-AE build every layer from `ConvModule`, so their checkpoints name a
layer's tensors `<layer>.conv.weight` (plus `.conv.bias` when the layer has no norm) and
`<layer>.bn.*`. The activation holds no tensors. Order: conv, norm, activation.
"""
from __future__ import annotations

import torch
from torch import nn

from .hrnet import BN_EPS, BN_MOMENTUM

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class ConvModule(nn.Module):
    """`conv` (bias only when there is no norm, as mmcv's `bias='auto'`), optional `bn`,
    optional activation ('relu', 'relu6' or None)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        norm: bool = True,
        activation: str | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups, bias=not norm)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM) if norm else None
        self.activate = ACTIVATIONS[activation](inplace=True) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x

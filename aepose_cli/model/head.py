"""Associative-embedding head: one 1x1 conv with bias to K heatmaps followed by K tag maps."""
from __future__ import annotations

import torch
from torch import nn


class AEHead(nn.Module):
    """mmpose 0.29's `AESimpleHead` (mmpose/models/heads/ae_simple_head.py) with no deconvolutions."""

    def __init__(self, in_channels: int, num_joints: int) -> None:
        super().__init__()
        self.final_layer = nn.Conv2d(in_channels, 2 * num_joints, kernel_size=1, bias=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.final_layer(features)

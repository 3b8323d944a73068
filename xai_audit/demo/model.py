"""The demo CNN: small enough to train on two CPU cores in seconds."""

from __future__ import annotations

import torch
from torch import nn

EMOTIONS = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]


class DemoCNN(nn.Module):
    """Three conv blocks, global average pooling, a linear head. Input: (N, in_channels, H, W).

    Only the first two blocks pool, so the last conv sees a quarter of the input's side
    (16x16 at 64 px): Grad-CAM, taken there, can tell a brow from an eye.
    """

    classes = EMOTIONS

    def __init__(self, n_classes: int = len(EMOTIONS), width: int = 16, in_channels: int = 3, pools: int = 2):
        super().__init__()

        def block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=False)]
            return nn.Sequential(*layers, nn.MaxPool2d(2) if pool else nn.Identity())

        self.features = nn.Sequential(block(in_channels, width, pools > 0), block(width, 2 * width, pools > 1),
                                      block(2 * width, 4 * width, pools > 2))
        self.conv_last = nn.Conv2d(4 * width, 4 * width, 3, padding=1)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv_last(self.features(x)))
        return self.head(torch.flatten(self.pool(x), 1))

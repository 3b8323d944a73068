"""The network of the example: two conv blocks and an MLP head, small enough to train in seconds on a CPU.

Every step is its own named module, so a plan can read any of them: the conv outputs after their ReLU
(``relu1``, ``relu2``) and the MLP's hidden layer after its ReLU (``relu3``) are the activations the study
summarises; ``fc2`` gives the logits.
"""

from __future__ import annotations

import torch
from torch import nn

DIGITS = [str(d) for d in range(10)]


class TinyNet(nn.Module):
    classes = DIGITS

    def __init__(self, n_classes: int = 10, in_channels: int = 1, width: int = 8, hidden: int = 64, size: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * (size // 4) ** 2, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))

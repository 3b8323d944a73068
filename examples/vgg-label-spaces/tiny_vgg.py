"""The example's one architecture: a VGG in miniature, small enough to train in seconds on a CPU.

Three blocks of two 3x3 convolutions (8, 16, 32 channels) with a max-pool after each, then a two-layer
classifier, as VGG-16 is five blocks (64 ... 512 channels) and three fully connected layers; batch
normalisation after each convolution (as torchvision's ``vgg*_bn``) lets it train in a few epochs. Every
step is its own named module, so a plan can read any of them: ``conv1_1`` (the filters that read the
image) … ``conv3_2``, each followed by ``bn<b>_<i>`` and ``relu<b>_<i>``; ``fc1``/``relu_fc1`` (the classifier's hidden layer) and
``fc2`` (the logits). Only ``n_classes`` differs between the example's three networks.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyVGG(nn.Module):
    def __init__(self, n_classes: int = 10, width: int = 8, size: int = 32, hidden: int = 64):
        super().__init__()
        channels = [3, width, 2 * width, 4 * width]
        for block in (1, 2, 3):
            c_in, c_out = channels[block - 1], channels[block]
            for i, c in ((1, c_in), (2, c_out)):
                setattr(self, f"conv{block}_{i}", nn.Conv2d(c, c_out, 3, padding=1))
                setattr(self, f"bn{block}_{i}", nn.BatchNorm2d(c_out))
                setattr(self, f"relu{block}_{i}", nn.ReLU())
            setattr(self, f"pool{block}", nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels[3] * (size // 8) ** 2, hidden)
        self.relu_fc1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in (1, 2, 3):
            for i in (1, 2):
                x = getattr(self, f"conv{block}_{i}")(x)
                x = getattr(self, f"relu{block}_{i}")(getattr(self, f"bn{block}_{i}")(x))
            x = getattr(self, f"pool{block}")(x)
        return self.fc2(self.relu_fc1(self.fc1(self.flatten(x))))

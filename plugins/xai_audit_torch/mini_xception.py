"""mini-Xception (Arriaga, Valdenegro-Toro & Plöger 2017), the FER2013 emotion classifier, in torch.

A plan names it like any factory the ``torch`` adapter imports, with a state dict of its weights::

    model:
      adapter: torch
      module: xai_audit_torch.mini_xception:mini_xception
      weights: mini_xception.safetensors
      input: {size: 48, channels: 1, mean: [0.5], std: [0.5]}

The architecture, as published: two 3x3 conv layers (8 filters, batch norm, ReLU); four residual
modules of depthwise-separable 3x3 convolutions (16, 32, 64, 128 filters: separable conv, batch
norm, ReLU, separable conv, batch norm, 3x3 max-pool of stride 2), each added to a strided 1x1
conv of its input; then a 3x3 conv with one output channel per class, globally average-pooled into
the class scores (the softmax is the audit's). About 57 000 parameters at the defaults.

The original is a Keras model; its weights are not loaded here (no Keras layer-name mapping): train
this module, or convert your weights into its state dict (``state_dict()`` names its layers).
``channels`` and ``base`` make a smaller copy for tests.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: FER2013's labels, in their standard order (emotion 0..6)
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


class SeparableConv2d(nn.Module):
    """A depthwise 3x3 convolution followed by a pointwise 1x1 one (Keras' SeparableConv2D, no bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualModule(nn.Module):
    """Two separable convolutions and a max-pool, added to a strided 1x1 conv of the input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.residual(x)  # (N, cout, ceil(h/2), ceil(w/2))
        x = torch.relu(self.bn1(self.sep1(x)))
        x = self.pool(self.bn2(self.sep2(x)))  # the same size as the shortcut
        return x + shortcut


class MiniXception(nn.Module):
    def __init__(self, n_classes: int = 7, in_channels: int = 1, base: int = 8,
                 channels: Sequence[int] = (16, 32, 64, 128), classes: Sequence[str] | None = None):
        super().__init__()
        if classes is not None and len(classes) != n_classes:
            raise ValueError(f"{len(classes)} class names for {n_classes} classes")
        self.classes = list(classes) if classes is not None else (list(FER_CLASSES) if n_classes == 7 else [])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(),
            nn.Conv2d(base, base, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(),
        )
        widths = [base, *channels]
        self.blocks = nn.Sequential(*[ResidualModule(a, b) for a, b in zip(widths, widths[1:])])
        self.head = nn.Conv2d(widths[-1], n_classes, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, in_channels, H, W), as the adapter's input step gives them -> logits (N, n_classes)."""
        return torch.flatten(self.gap(self.head(self.blocks(self.stem(x)))), 1)


def mini_xception(n_classes: int = 7, in_channels: int = 1, base: int = 8,
                  channels: Sequence[int] = (16, 32, 64, 128), classes: Sequence[str] | None = None) -> MiniXception:
    """The factory a plan names: ``module: xai_audit_torch.mini_xception:mini_xception``
    (``factory_kwargs`` set ``n_classes``, ``channels``, ...)."""
    return MiniXception(n_classes, in_channels, base, tuple(channels), classes)

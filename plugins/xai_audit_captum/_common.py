"""Helpers the captum explainers share: tensors from samples (layer helpers live in xai_audit.contract.layers)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from xai_audit.api import Sample


def images_tensor(samples: Sequence[Sample], device: str) -> torch.Tensor:
    """Display-space images (N, 3, H, W), float32 on ``device``."""
    if not samples:
        raise ValueError("no samples to explain")
    shapes = {s.image.shape for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples differ in shape ({sorted(shapes)}); explain images of one size at a time")
    return torch.as_tensor(np.stack([s.image for s in samples]), dtype=torch.float32, device=device)


def targets_tensor(targets: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(targets).reshape(-1), dtype=torch.long, device=device)

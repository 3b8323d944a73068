"""The input spec: how display-space images become a model's input.

Display space is RGB float in [0, 1], (N, 3, H, W). A model without a
processor of its own (torch, TorchScript, ONNX) declares its input in the
plan: size, resize mode and crop, channels (1 for a grayscale model), mean
and std. The mapping is a torch function, differentiable end to end, so
gradients reach the display pixels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

LUMA = (0.299, 0.587, 0.114)


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int | tuple[int, int] | None = Field(None, description="resize target: N (square) or [height, width]")
    resize: Literal["stretch", "shorter-side"] = Field(
        "stretch", description="stretch to size, or scale the shorter side to size keeping the aspect ratio"
    )
    crop: int | tuple[int, int] | None = Field(None, description="centre crop after resizing")
    channels: Literal[1, 3] = 3
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    @model_validator(mode="after")
    def _check(self) -> "InputSpec":
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values for {self.channels} channel(s)")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        return self

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the model input for a display image of (height, width)."""
        h, w = height, width
        if self.size is not None:
            h, w = _resized(self.size, self.resize, h, w)
        if self.crop is not None:
            h, w = _pair(self.crop)
        return h, w

    def describe(self) -> str:
        parts = [f"{self.channels} channel(s)"]
        if self.size is not None:
            parts.append(f"resized ({self.resize}) to {self.size}")
        if self.crop is not None:
            parts.append(f"centre-cropped to {self.crop}")
        if self.mean is not None or self.std is not None:
            parts.append(f"normalised with mean {self.mean or [0.0]} and std {self.std or [1.0]}")
        return ", ".join(parts)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _resized(size: int | tuple[int, int], mode: str, h: int, w: int) -> tuple[int, int]:
    if mode == "shorter-side":
        target = size if isinstance(size, int) else min(size)
        scale = target / min(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))
    return _pair(size)


class Preprocess(torch.nn.Module):
    """Display space -> model input, as a differentiable torch step."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.spec = spec
        c = spec.channels
        mean = spec.mean or [0.0]
        std = spec.std or [1.0]
        self.register_buffer("mean", torch.tensor(mean * (c if len(mean) == 1 else 1)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std * (c if len(std) == 1 else 1)).view(1, -1, 1, 1))
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        spec = self.spec
        if spec.size is not None:
            h, w = _resized(spec.size, spec.resize, x.shape[-2], x.shape[-1])
            if (h, w) != tuple(x.shape[-2:]):
                kwargs = {} if spec.interpolation == "nearest" else {"align_corners": False}
                x = F.interpolate(x, size=(h, w), mode=spec.interpolation, **kwargs)
        if spec.crop is not None:
            ch, cw = _pair(spec.crop)
            top = max(0, (x.shape[-2] - ch) // 2)
            left = max(0, (x.shape[-1] - cw) // 2)
            x = x[..., top : top + ch, left : left + cw]
        if spec.channels == 1:
            x = (x * self.luma.to(x.dtype)).sum(dim=1, keepdim=True)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

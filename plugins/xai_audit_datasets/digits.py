"""scikit-learn's bundled handwritten digits: real data, no download.

1,797 images of 8×8 pixels (values 0–16), upscaled to ``size`` for display.
A seeded, stratified split gives ``train`` and ``test``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from xai_audit.api import Dataset, DatasetPlugin, LoadContext, Options, Sample

DIGIT_CLASSES = [str(d) for d in range(10)]


class DigitsOptions(Options):
    split: Literal["train", "test", "all"] = "test"
    test_fraction: float = Field(0.3, gt=0, lt=1)
    size: int = Field(32, ge=8, le=256, description="display size (the originals are 8x8)")
    seed: int = Field(0, ge=0, description="seed of the train/test split")


class DigitsPlugin(DatasetPlugin):
    name = "digits"
    description = "scikit-learn's bundled 8x8 handwritten digits (1,797 images), upscaled; no download."
    Options = DigitsOptions

    def load(self, context: LoadContext) -> Dataset:
        return DigitsDataset(self.options)


class DigitsDataset(Dataset):
    classes = list(DIGIT_CLASSES)
    group_names: list[str] = []
    region_names: list[str] = []

    def __init__(self, options: DigitsOptions):
        from sklearn.datasets import load_digits

        self.options = options
        bunch = load_digits()
        self._images = bunch.images.astype(np.float32) / 16.0  # (1797, 8, 8), ink is bright
        self._labels = bunch.target.astype(np.int64)
        rng = np.random.default_rng(options.seed)
        test = np.zeros(len(self._labels), bool)
        for digit in range(10):  # stratified: the same fraction of each digit in test
            members = np.flatnonzero(self._labels == digit)
            test[rng.choice(members, size=round(len(members) * options.test_fraction), replace=False)] = True
        chosen = {"train": ~test, "test": test, "all": np.ones_like(test)}[options.split]
        self._indices = np.flatnonzero(chosen)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        k = int(self._indices[index])
        small = torch.from_numpy(self._images[k])[None, None]
        big = F.interpolate(small, size=(self.options.size,) * 2, mode="bilinear", align_corners=False)[0, 0]
        gray = big.clamp(0, 1).numpy()
        return Sample(id=f"digit-{k:04d}", image=np.repeat(gray[None], 3, axis=0), label=int(self._labels[k]))

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"digits/1")
        h.update(self._images.tobytes())
        h.update(self.options.model_dump_json().encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "source": "scikit-learn load_digits (bundled with the package)",
            "split": self.options.split,
            "n_samples": len(self),
            "size": f"8x8 upscaled to {self.options.size}x{self.options.size}",
        }

"""The batch size explainers run the model at: measured, capped by memory, overridable."""

from __future__ import annotations

import torch

from xai_audit import batching
from xai_audit.types import ModelAdapter


class Conv(ModelAdapter):
    def __init__(self) -> None:
        self.module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
                                          torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
        self.classes = ["a", "b"]

    def forward(self, images):
        return self.module(images)

    def fingerprint(self) -> str:
        return "conv"


def test_best_batch_size_is_measured_once_and_within_bounds(monkeypatch):
    batching._probed.clear()
    model = Conv()
    size = batching.best_batch_size(model, (3, 16, 16), backward=True, max_batch=64)
    assert 1 <= size <= 64
    calls = []
    monkeypatch.setattr(batching, "_probe", lambda *a, **k: calls.append(a) or 1)
    assert batching.best_batch_size(model, (3, 16, 16), backward=True, max_batch=64) == size
    assert calls == []  # cached per architecture, shape and mode
    batching.best_batch_size(Conv(), (3, 16, 16), backward=False, max_batch=64)
    assert len(calls) == 1  # another mode is probed again


def test_free_memory_caps_the_batch(monkeypatch):
    batching._probed.clear()
    model = Conv()
    per_sample = batching.bytes_per_sample(model, (3, 32, 32), backward=True)
    assert per_sample > 3 * 8 * 32 * 32 * 4  # at least the conv's output, kept for the backward pass
    monkeypatch.setattr(batching, "free_memory_bytes", lambda device: 6 * per_sample)
    assert batching.memory_cap(model, (3, 32, 32), backward=True) == 3
    assert batching.best_batch_size(model, (3, 32, 32), backward=True) <= 3


def test_the_environment_overrides_the_probe(monkeypatch):
    monkeypatch.setenv(batching.ENV_BATCH, "7")
    assert batching.best_batch_size(Conv(), (3, 8, 8), backward=False) == 7


def test_chunks_cover_everything_once():
    assert [(c.start, c.stop) for c in batching.chunks(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert batching.chunks(0, 4) == []

"""The batch size explainers run the model at: measured, capped by memory, overridable."""

from __future__ import annotations

import torch

from xai_audit.contract import batching
from xai_audit.contract.types import ModelAdapter


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
    monkeypatch.setattr(batching, "_probe", lambda *a, **k: calls.append(a) or (1, False))
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
    # as few slices as the size allows, their sizes differing by at most one: never one image alone
    assert [(c.start, c.stop) for c in batching.chunks(7, 3)] == [(0, 3), (3, 5), (5, 7)]
    assert [c.stop - c.start for c in batching.chunks(13, 12)] == [7, 6]
    assert [c.stop - c.start for c in batching.chunks(5, 1)] == [1] * 5
    assert [c.stop - c.start for c in batching.chunks(5, 2)] == [3, 2]
    for n in range(2, 40):
        for size in range(2, 12):
            assert min(c.stop - c.start for c in batching.chunks(n, size)) >= 2, (n, size)
    assert batching.chunks(0, 4) == []


def _fake_passes(monkeypatch, seconds_per_pass, channels_last=None):
    """The probe's timings replaced: a pass of ``batch`` images takes ``seconds_per_pass(batch)``
    (``channels_last(batch)`` when the images are stored channels-last, if given)."""
    def timed(model, x, backward):
        if channels_last is not None and x.is_contiguous(memory_format=torch.channels_last):
            return channels_last(len(x))
        return seconds_per_pass(len(x))

    monkeypatch.setattr(batching, "_timed", timed)


def test_a_slow_pass_does_not_stop_the_probe_while_doubling_pays(monkeypatch):
    # a ViT-base on two CPU cores: one image 0.7 s, two 1.0 s (a third faster per image), four 2.0 s
    _fake_passes(monkeypatch, lambda b: {1: 0.7, 2: 1.0}.get(b, 0.5 * b))
    assert batching._probe(Conv(), (3, 8, 8), True, cap=64)[0] == 2


def test_the_probe_stops_at_its_time_budget_and_at_a_plateau(monkeypatch):
    # slow passes that keep paying: the budget stops the probe (about 6 s of passes)
    _fake_passes(monkeypatch, lambda b: 0.4 * b ** 0.5)
    assert batching._probe(Conv(), (3, 8, 8), True, cap=256)[0] == 2
    # fast passes, a third slower per image past 16
    _fake_passes(monkeypatch, lambda b: 0.016 if b <= 16 else 0.0015 * b)
    assert batching._probe(Conv(), (3, 8, 8), False, cap=256) == (16, False)
    # memory caps the probe
    assert batching._probe(Conv(), (3, 8, 8), False, cap=4)[0] == 4


def test_the_probe_picks_the_layout_and_its_own_best_batch(monkeypatch):
    # channels-last: twice as fast, but only up to 32 images a pass (a small CNN on a CPU)
    _fake_passes(monkeypatch, lambda b: 0.002 * b, channels_last=lambda b: 0.001 * b if b <= 32 else 0.003 * b)
    assert batching._probe(Conv(), (3, 8, 8), False, cap=256) == (32, True)
    # barely faster channels-last (a transformer): the standard layout
    _fake_passes(monkeypatch, lambda b: 0.002 * b, channels_last=lambda b: 0.00195 * b)
    assert batching._probe(Conv(), (3, 8, 8), False, cap=16)[1] is False


def test_the_probe_ranks_its_front_runners_by_their_mean_pass(monkeypatch):
    # batching pays up to 64 images a pass, but at 64 every other pass is twice as slow (buffers mapped
    # afresh): its fastest pass beats 32's by 6 %, its mean pass loses by a third
    calls = {"n": 0}

    def seconds(b):
        if b != 64:
            return 0.004 + 0.001 * b if b <= 32 else 0.002 * b
        calls["n"] += 1
        return 0.068 * (2 if calls["n"] % 2 else 1)

    _fake_passes(monkeypatch, seconds)
    assert batching._probe(Conv(), (3, 8, 8), False, cap=256) == (32, False)


def test_the_probe_first_frees_one_large_forward_pass_untimed(monkeypatch):
    # a fresh process's malloc state slows every pass until a large block is freed: one forward pass
    # at as large a batch as ~0.15 s allows comes before any timed pass, even for a backward probe
    seen = []

    def timed(model, x, backward):
        seen.append((len(x), backward))
        return 0.001 * len(x)

    monkeypatch.setattr(batching, "_timed", timed)
    batching._probe(Conv(), (3, 8, 8), True, cap=256, start=2)
    assert seen[0] == (2, False) and seen[1] == (150, False) and seen[2][1] is True
    seen.clear()
    batching._probe(Conv(), (3, 8, 8), True, cap=64, start=2)
    assert seen[1] == (64, False)  # never past the memory cap

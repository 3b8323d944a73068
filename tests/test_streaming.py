"""Streaming: the runner reads images when a step needs them and never holds them all."""

from __future__ import annotations

import json
import pickle
import resource
import subprocess
import sys
import weakref

import numpy as np
import pytest

from conftest import plan_text
from xai_audit.run.cache import Cache
from xai_audit.plan import load_plan
from xai_audit.audit import run_audit
from xai_audit.load.samples import LazySample, SampleCache, read_metadata
from xai_audit.contract.types import LoadContext, Sample


def _faces(registry, n: int = 20, size: int = 16):
    plugin = registry.get("dataset", "synthetic-faces").cls
    return plugin(plugin.Options(n=n, size=size, split="test")).load(LoadContext(base_dir=".", seed=0))


def test_the_cache_stays_within_its_bound_and_serves_what_the_data_set_gives(registry):
    data = _faces(registry)
    one = data[0].image.nbytes + sum(m.nbytes for m in data[0].regions.values())
    cache = SampleCache(data, max_bytes=3 * one)
    samples = read_metadata(data, range(len(data)), cache, lambda i, e: None)
    assert cache.reads == 0  # generated faces tell their id, label and tone without an image (sample_info)
    for i in (0, 7, 19):
        s = samples[i]
        assert isinstance(s, LazySample) and s.id == data[i].id and s.label == data[i].label
        np.testing.assert_array_equal(s.image, data[i].image)
        assert set(s.regions) == set(data[i].regions)
    assert cache.bytes <= 3 * one and cache.reads == 3
    relabelled = samples[3].with_label(5)
    assert relabelled.label == 5 and relabelled.id == samples[3].id
    plain = pickle.loads(pickle.dumps(samples[2]))  # a worker gets the plain sample
    assert type(plain) is Sample and plain.id == samples[2].id
    np.testing.assert_array_equal(plain.image, data[2].image)


def test_a_bad_sample_goes_to_the_error_handler(registry):
    data = _faces(registry, n=5)

    class Broken:
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            if i == 2:
                raise ValueError("broken")
            return data[i]

    bad = []
    samples = read_metadata(Broken(), range(5), SampleCache(Broken()), lambda i, e: bad.append((i, str(e))))
    assert [s.id for s in samples] == [data[i].id for i in (0, 1, 3, 4)] and bad == [(2, "broken")]


def test_metadata_read_without_images_matches_the_samples(registry):
    """A data set's sample_info must tell what its samples hold; one without it (None) is read in full."""
    data = _faces(registry, n=30)
    for i in range(len(data)):
        info, sample = data.sample_info(i), data[i]
        assert (info.id, info.label, dict(info.groups), info.has_regions) == (
            sample.id, sample.label, dict(sample.groups), bool(sample.regions))

    class Reads(type(data)):  # the default: the host reads each sample once
        def sample_info(self, index):
            return None

    plain = Reads(data.options)
    cache = SampleCache(plain)
    samples = read_metadata(plain, range(len(plain)), cache, lambda i, e: None)
    assert cache.reads == len(plain)
    told = read_metadata(data, range(len(data)), SampleCache(data), lambda i, e: None)
    assert [(s.id, s.label, dict(s.groups), s.has_own_regions) for s in samples] == [
        (s.id, s.label, dict(s.groups), s.has_own_regions) for s in told]


@pytest.fixture
def live_images(monkeypatch):
    """Count the images the synthetic-faces data set has handed out that are still alive."""
    from xai_audit_datasets.synthetic_faces import SyntheticFacesDataset

    state = {"live": 0, "peak": 0, "made": 0}
    original = SyntheticFacesDataset.__getitem__

    def tracked(self, index):
        sample = original(self, index)
        state["live"] += 1
        state["made"] += 1
        state["peak"] = max(state["peak"], state["live"])
        weakref.finalize(sample.image, lambda: state.__setitem__("live", state["live"] - 1))
        return sample

    monkeypatch.setattr(SyntheticFacesDataset, "__getitem__", tracked)
    return state


STREAM_STEPS = dict(
    explainers="  - integrated-gradients: {steps: 4}\n  - gradcam: {}\n",
    hypotheses="  - luminance: {factor: 0.2}\n  - grayscale: {}\n  - group-accuracy: {by: [skin_tone]}\n"
               "  - occlude-regions: {regions: [mouth]}\n",
)


def _run(write_plan, registry, tmp_path, cache_mb: int, n: int):
    text = plan_text(n=n, **STREAM_STEPS).replace("size: 32", "size: 24")
    text += f"runtime: {{batch_size: 16, image_cache_mb: {cache_mb}}}\n"
    plan = load_plan(write_plan(text, f"plan-{cache_mb}.yaml"), registry)
    return run_audit(plan, registry, cache=Cache(tmp_path / f"cache-{cache_mb}"))


def test_without_a_cache_the_audit_streams_and_gives_the_same_results(write_plan, registry, tmp_path, live_images):
    n = 600
    streamed = _run(write_plan, registry, tmp_path, cache_mb=0, n=n)
    peak_streamed, made = live_images["peak"], live_images["made"]
    # every step walks the data chunk by chunk: at most a chunk of images alive at once (the
    # runner's 64 here, the interventions' 256), plus the handful explained, whatever N is
    assert peak_streamed <= 256 + 16 < n, peak_streamed
    assert made > 2 * n  # the images were read again for each pass, not kept

    live_images.update(live=0, peak=0, made=0)
    held = _run(write_plan, registry, tmp_path, cache_mb=256, n=n)
    assert live_images["made"] <= n + 1  # small enough to keep: each read once (one more checks the model)
    a, b = streamed.results, held.results
    for key in ("accuracy", "confusion_matrix", "per_sample"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key
    for name in a["hypotheses"]:
        assert a["hypotheses"][name]["after"] == b["hypotheses"][name]["after"], name
    assert a["explainers"]["gradcam"]["sample_ids"] == b["explainers"]["gradcam"]["sample_ids"]


MEMORY_SCRIPT = """
import resource, sys
from pathlib import Path
from xai_audit.run.cache import Cache
from xai_audit.plan import load_plan
from xai_audit.registry import make_plugin_manager
from xai_audit.audit import run_audit
registry = make_plugin_manager()
out = run_audit(load_plan(Path(sys.argv[1]), registry), registry, cache=Cache(Path(sys.argv[2])))
assert out.results["failures"] == [], out.results["failures"]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_ten_thousand_images_at_224_px_stay_under_4_gib(write_plan, tmp_path):
    """The issue's bound: 10,000 images at 224 px with IG, Grad-CAM and the hypotheses, under 4 GiB resident."""
    text = (
        plan_text(n=10_000, explainers="  - integrated-gradients: {steps: 8}\n  - gradcam: {}\n",
                  hypotheses="  - luminance: {factor: 0.2}\n  - grayscale: {}\n  - group-accuracy: {by: [skin_tone]}\n")
        .replace("size: 32", "size: 224")
        .replace("explain: {samples: 4}", "explain: {samples: 8, trust: {enabled: false}}")
    )
    plan = write_plan(text + "runtime: {batch_size: 64}\n", "big.yaml")
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(plan), str(tmp_path / "cache")],
                         capture_output=True, text=True, cwd=plan.parent, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    peak_kib = int(run.stdout.split()[-1])
    # holding the images alone would take 10,000 x 3 x 224 x 224 x 4 bytes = 5.6 GiB
    assert peak_kib < 4 * 2**20, f"peak resident memory {peak_kib / 2**20:.2f} GiB"

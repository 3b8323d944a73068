"""Region masks from the plan's region source, for the samples whose data set has none (one cached step)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xai_audit.load.loading import AuditInputs
from xai_audit.load.samples import LazySample
from xai_audit.plan import Plan
from xai_audit.run.cache import Cache, content_key


def with_regions(inputs: AuditInputs, plan: Plan, cache: Cache) -> AuditInputs:
    """``inputs`` with region masks added; the data part of the cache key then covers the region source."""
    if inputs.region_source is None or plan.regions is None:
        return inputs
    data_fp = inputs.base_key["data"]
    samples = add_regions(inputs.samples, inputs.region_source, plan, cache, {"data": data_fp, "ids": inputs.ids_sha})
    data_fp = content_key(data_fp, inputs.region_source.fingerprint(), plan.regions.options_dict())
    return dataclasses.replace(inputs, samples=samples, base_key={**inputs.base_key, "data": data_fp})


def add_regions(samples: list[LazySample], source: Any, plan: Plan, cache: Cache, data_key: dict) -> list[LazySample]:
    """Give region masks from the plan's region source to the samples whose data set has none."""
    todo = [i for i, s in enumerate(samples) if not s.has_own_regions]  # known from the first read
    if not todo:
        return samples
    key = content_key("regions", plan.regions.name, plan.regions.options_dict(), source.fingerprint(), data_key, todo)
    with cache.claim(key):  # another run on this cache waits, then reads this step's entry
        hit = cache.get(key)
        if hit is not None:
            names, arrays = hit[0]["names"], hit[1]
            masks = [{n: arrays[n][k] for n in names} for k in range(len(todo))]
        else:
            masks = []
            for start in range(0, len(todo), plan.runtime.batch_size):
                chunk = todo[start : start + plan.runtime.batch_size]
                images = np.stack([samples[i].image for i in chunk]).astype(np.float32)
                masks.extend(source.regions_for(images, [samples[i].id for i in chunk]))
            names = sorted({n for m in masks for n in m})
            shape = samples[todo[0]].image.shape[-2:]
            arrays = {n: np.stack([m.get(n, np.zeros(shape, bool)) for m in masks]) for n in names}
            cache.put(key, {"names": names}, arrays)
            masks = [{n: arrays[n][k] for n in names} for k in range(len(todo))]
        out = list(samples)
        for i, m in zip(todo, masks):
            out[i] = samples[i].with_regions(m)
        return out



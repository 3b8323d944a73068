"""The audited samples, streamed: ids, labels and groups in memory, images read on demand.

An audit of 100,000 images must not hold 100,000 images. The runner reads each
sample once to check it can be read and to keep its id, label and groups; after
that a :class:`LazySample` reads its image (and the data set's region masks)
from the data set whenever a step asks for it, through a small cache bounded in
bytes. Small audits fit the cache whole and read each image once; large ones
stream, and their peak memory does not grow with the number of images.

Plugins see ordinary :class:`~xai_audit.contract.types.Sample` objects: ``sample.image``
works as before. What they must not do is stack every image at once; they walk
the samples in chunks (``HypothesisContext.batches``, or slices of ``samples``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xai_audit.contract.types import Dataset, Sample, SampleInfo
from xai_audit.files import shown

#: default bound of the image cache (bytes); the plan's ``runtime.image_cache_mb`` overrides it
DEFAULT_CACHE_BYTES = 256 * 2**20


class SampleCache:
    """Least-recently-used samples read from a data set, bounded by their image bytes."""

    def __init__(self, dataset: Dataset, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.dataset = dataset
        self.max_bytes = max(0, int(max_bytes))
        self._items: OrderedDict[int, Sample] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reads = 0  # reads from the data set, for tests and the benchmark

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, index: int) -> Sample:
        with self._lock:
            hit = self._items.get(index)
            if hit is not None:
                self._items.move_to_end(index)
                return hit
        sample = self.dataset[index]
        self.reads += 1
        self.put(index, sample)
        return sample

    def put(self, index: int, sample: Sample) -> None:
        size = _nbytes(sample)
        if size > self.max_bytes:
            return
        with self._lock:
            if index in self._items:
                return
            self._items[index] = sample
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= _nbytes(old)


def _nbytes(sample: Sample) -> int:
    size = int(np.asarray(sample.image).nbytes)
    for mask in (sample.regions or {}).values():
        size += int(np.asarray(mask).nbytes)
    return size


class LazySample(Sample):
    """A :class:`Sample` whose image (and data-set regions) are read when asked for.

    ``id``, ``label`` and ``groups`` are held; ``image`` and ``regions`` come from
    the data set through a :class:`SampleCache`. Region masks given by a region
    source (not the data set) are held in ``extra_regions``.
    """

    __slots__ = ("_cache", "_index", "_extra_regions", "has_own_regions")

    def __init__(self, cache: SampleCache, index: int, id: str, label: int | None, groups: Mapping[str, str],
                 extra_regions: Mapping[str, np.ndarray] | None = None, has_own_regions: bool = False):
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_index", int(index))
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "_extra_regions", extra_regions)
        #: whether the data set gives this sample region masks (read once, so checking it reads nothing)
        object.__setattr__(self, "has_own_regions", bool(has_own_regions))

    @property  # type: ignore[override]
    def image(self) -> np.ndarray:
        return self._cache.get(self._index).image

    @property  # type: ignore[override]
    def regions(self) -> Mapping[str, np.ndarray] | None:
        own = self._cache.get(self._index).regions
        if self._extra_regions is None:
            return own
        return {**self._extra_regions, **(own or {})}

    @property
    def index(self) -> int:
        """The sample's index in its data set."""
        return self._index

    def with_regions(self, regions: Mapping[str, np.ndarray]) -> "LazySample":
        return LazySample(self._cache, self._index, self.id, self.label, self.groups, regions, self.has_own_regions)

    def with_label(self, label: int | None) -> "LazySample":
        return LazySample(self._cache, self._index, self.id, label, self.groups, self._extra_regions,
                          self.has_own_regions)

    def materialise(self) -> Sample:
        """A plain :class:`Sample` holding its image."""
        return Sample(id=self.id, image=self.image, label=self.label, groups=self.groups, regions=self.regions)

    def __repr__(self) -> str:
        return f"LazySample(id={self.id!r}, index={self._index}, label={self.label!r})"

    def __reduce__(self) -> tuple[Callable[..., Sample], tuple[Any, ...]]:
        # pickled (e.g. to a worker process) as the plain sample it stands for
        return (Sample, (self.id, self.image, self.label, dict(self.groups), self.regions))


def read_metadata(dataset: Dataset, indices: Sequence[int], cache: SampleCache,
                  on_error: Callable[[int, Exception], None]) -> list[LazySample]:
    """Read each sample once (a bad one goes to ``on_error``); keep what is small, drop the image. A data set
    that tells a sample's facts without its image (``Dataset.sample_info``, generated data) is not read."""
    out: list[LazySample] = []
    for index in indices:
        index = int(index)
        try:
            tell = getattr(cache.dataset, "sample_info", None)  # a duck-typed data set may not have it
            info = tell(index) if tell is not None else None
            if info is None:
                sample = cache.get(index)
                info = SampleInfo(sample.id, sample.label, sample.groups, bool(sample.regions))
        except Exception as exc:  # the caller decides: stop, or skip and list it
            on_error(index, exc)
            continue
        # an id made from a file name that is not UTF-8 is shown with its odd bytes escaped (it is written out)
        out.append(LazySample(cache, index, shown(info.id) if isinstance(info.id, str) else info.id, info.label,
                              dict(info.groups), has_own_regions=info.has_regions))
    return out

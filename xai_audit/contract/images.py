"""Images of a sequence of samples, read as they are needed: the chunks every stage and plugin walks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # types.py imports this module
    from xai_audit.contract.types import Sample


def stack(samples: Sequence[Sample]) -> np.ndarray:
    """The images of ``samples`` as one float32 array (N, C, H, W)."""
    return np.stack([s.image for s in samples]).astype(np.float32, copy=False)


def chunks(samples: Sequence[Sample], size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, images)`` for consecutive chunks of at most ``size`` samples."""
    size = max(1, int(size))
    for start in range(0, len(samples), size):
        rows = slice(start, min(start + size, len(samples)))
        yield rows, stack(samples[rows])


class ImageView:
    """The images of ``samples`` as a read-on-demand array (N, C, H, W).

    Indexing with an int, a slice or a list of indices reads only those images
    (float32), so a plugin can hand "all the images" to code that walks them in
    batches without holding them all.
    """

    def __init__(self, samples: Sequence[Sample]):
        self._samples = samples

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def shape(self) -> tuple[int, ...]:
        first = np.asarray(self._samples[0].image) if len(self._samples) else np.zeros((3, 0, 0), np.float32)
        return (len(self._samples),) + tuple(first.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self._samples[int(key)].image, dtype=np.float32)
        rows = np.arange(len(self._samples))[key]
        if not len(rows):
            return np.zeros((0,) + self.shape[1:], np.float32)
        return np.stack([self._samples[int(i)].image for i in rows]).astype(np.float32, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:  # np.asarray(view): every image
        out = self[:]
        return out if dtype is None else out.astype(dtype)

"""Hand-built hypothesis contexts with fake models whose behaviour is known exactly.

An image is (3, 8, 8) on a grey background. Its class k is written as one bright
pixel at row 0, column k of the red channel (the "mouth" row, so occluding the
mouth hides the class); the other rows are the face ("skin", "eyes", "brows",
"nose"), the hair (rows 6-7) and the background (column 7). Channel 1 holds
per-image noise, so a model that has to guess guesses differently per image.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from xai_audit.contract.types import HypothesisContext, ModelAdapter, Sample

CLASSES = ["calm", "sad", "glad", "cross"]
SAD = 1
K = len(CLASSES)
SIZE = 8


class NoModel(ModelAdapter):
    classes = CLASSES

    def forward(self, images):  # pragma: no cover - the fakes predict directly
        raise NotImplementedError

    def fingerprint(self) -> str:
        return "fake"


def regions() -> dict[str, np.ndarray]:
    def rows(*r):
        m = np.zeros((SIZE, SIZE), bool)
        m[list(r), :7] = True
        return m

    background = np.zeros((SIZE, SIZE), bool)
    background[:, 7] = True
    return {
        "mouth": rows(0), "brows": rows(1), "eyes": rows(2), "nose": rows(3), "skin": rows(4, 5),
        "hair": rows(6, 7), "background": background,
    }


def make_samples(
    n: int, *, seed: int = 0, labelled: bool = True, with_regions: bool = True,
    groups: Callable[[int], dict[str, str]] | None = None,
) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    masks = regions()
    for i in range(n):
        label = i % K
        image = np.full((3, SIZE, SIZE), 0.6, np.float32)
        image[0, 0, :K] = 0.2
        image[0, 0, label] = 1.0
        image[1] = rng.uniform(0.4, 0.8, (SIZE, SIZE))
        image[1, 0, 7] = 0.6
        out.append(Sample(
            id=f"s{i:04d}", image=image, label=label if labelled else None,
            groups=groups(i) if groups else {}, regions=dict(masks) if with_regions else None,
        ))
    return out


def one_hot(preds: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    probs = np.full((len(preds), K), (1 - confidence) / (K - 1), np.float32)
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def read_code(images: np.ndarray) -> np.ndarray:
    """The class written in the mouth row: brightness-invariant."""
    return images[:, 0, 0, :K].argmax(axis=1)


def guess(images: np.ndarray) -> np.ndarray:
    return (images[:, 1, 4, 4] * 1000).astype(int) % K


def robust(images: np.ndarray) -> np.ndarray:
    return one_hot(read_code(images))


def shortcut(images: np.ndarray) -> np.ndarray:
    """Reads the class, but a dark image is "sad" whatever it shows."""
    dark = images.mean(axis=(1, 2, 3)) < 0.3
    return one_hot(np.where(dark, SAD, read_code(images)))


def fragile(images: np.ndarray) -> np.ndarray:
    """Reads the class, but in the dark it guesses, spreading its answers over every class."""
    dark = images.mean(axis=(1, 2, 3)) < 0.3
    return one_hot(np.where(dark, guess(images), read_code(images)), confidence=0.4)


def context(samples: list[Sample], predict: Callable[[np.ndarray], np.ndarray], *, seed: int = 0,
            probs: np.ndarray | None = None, load_dataset=None) -> HypothesisContext:
    images = np.stack([s.image for s in samples])
    return HypothesisContext(
        model=NoModel(), samples=samples, probs=predict(images) if probs is None else probs, classes=list(CLASSES),
        seed=seed, predict=predict, load_dataset=load_dataset,
    )


class NullModel:
    """A model with no real effect anywhere: each call answers afresh, right with probability ``accuracy``.

    Whatever an intervention does, the answers after it are drawn exactly like
    the answers before: every test of an intervention, of a class's share and
    of a group gap is under its null hypothesis.
    """

    def __init__(self, seed: int, accuracy: float = 0.8):
        self.rng = np.random.default_rng(seed)
        self.accuracy = accuracy
        self.labels: dict[bytes, int] = {}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        truth = self.truth(images)
        right = self.rng.random(len(truth)) < self.accuracy
        other = (truth + self.rng.integers(1, K, len(truth))) % K
        return one_hot(np.where(right, truth, other), confidence=0.7)

    def truth(self, images: np.ndarray) -> np.ndarray:
        # the sample's identity survives every intervention used here: its noise pattern's rank order in rows 4-5
        keys = [np.argsort(im[1, 4:6, :7].ravel()).tobytes() for im in images]
        return np.array([self.labels[k] for k in keys])

    def register(self, samples: list[Sample]) -> None:
        for s in samples:
            self.labels[np.argsort(s.image[1, 4:6, :7].ravel()).tobytes()] = s.label

"""Destroy a feature and keep the images: gradient steps on pixels that lower its persistence.

The persistence of a feature is the length of the edge that destroys it
minus the length of the edge that creates it (giotto-ph names both). Each
step recomputes the diagram of the landmark cloud, finds the feature again
(the point nearest its last birth and death), and moves the pixels of the
images at the ends of those two edges along the gradient of

    loss = |p_c - p_d| - |p_a - p_b|        (H0: |p_a - p_b|, the merge edge)

backpropagated through the PCA projection and the model's layer. A step
moves each image by at most ``step_size`` per pixel, in proportion to its
gradient, so the change lands where the model is sensitive; pixels stay in
[0, 1]. For a model that takes one channel (``one_channel``), each step moves
the three display channels alike: the change lives in the model's own channel
(brightness), not in the luminance weights of R, G and B.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from xai_audit.api import ModelAdapter
from xai_audit_topology.activations import differentiable_points
from xai_audit_topology.cloud import Reduction
from xai_audit_topology.persistence import rips


@dataclass
class CollapseResult:
    dim: int
    #: persistence (death - birth, in PCA units) before each step, then after the last
    persistence: list[float] = field(default_factory=list)
    #: image index (into the cloud's images) -> the modified image (3, H, W)
    modified: dict[int, np.ndarray] = field(default_factory=dict)
    steps: int = 0

    @property
    def drop(self) -> float:
        """The share of the feature's persistence the steps removed."""
        if not self.persistence or self.persistence[0] <= 0:
            return 0.0
        return 1.0 - self.persistence[-1] / self.persistence[0]


def collapse_feature(
    model: ModelAdapter,
    images: np.ndarray,
    landmark_points: np.ndarray,
    landmark_owner: np.ndarray,
    landmark_rows: Sequence[np.ndarray],
    reduction: Reduction,
    layer: str,
    dim: int,
    feature: tuple[float, float],
    *,
    cloud: str = "images",
    pool: str = "mean",
    steps: int = 20,
    step_size: float = 0.02,
    n_threads: int = 2,
    one_channel: bool = False,
    tokens: str = "class",
) -> CollapseResult:
    """Lower the persistence of the dimension-``dim`` feature born and dead at ``feature``.

    ``landmark_points`` (m, k) are the reduced landmark coordinates,
    ``landmark_owner[j]`` the image of landmark j, and ``landmark_rows[j]``
    the row of landmark j among its image's points (0 for image clouds).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of a few images: extra threads only add overhead (50x slower seen)
    try:
        return _collapse(model, images, landmark_points, landmark_owner, landmark_rows, reduction, layer, dim, feature,
                         cloud, pool, steps, step_size, n_threads, one_channel, tokens)
    finally:
        torch.set_num_threads(threads)


def _collapse(model, images, landmark_points, landmark_owner, landmark_rows, reduction, layer, dim, feature,
              cloud, pool, steps, step_size, n_threads, one_channel=False, tokens="class") -> CollapseResult:
    device = model.device
    mean = torch.as_tensor(reduction.mean, device=device)
    components = torch.as_tensor(reduction.components, device=device)
    current = np.array(landmark_points, dtype=np.float64)
    pixels: dict[int, torch.Tensor] = {}
    result = CollapseResult(dim=dim)
    target = np.asarray(feature, dtype=np.float64)

    def reduced(batch: torch.Tensor) -> torch.Tensor:  # (n images, points per image, k)
        points = differentiable_points(model, batch, layer, cloud=cloud, pool=pool, tokens=tokens)
        return ((points - mean) @ components.T).reshape(len(batch), -1, components.shape[0])

    for step in range(steps + 1):
        found = _find(current, dim, target, n_threads)
        if found is None:  # the feature is gone: persistence 0
            result.persistence.append(0.0)
            break
        (birth, death), vertices = found
        target = np.array([birth, death])
        result.persistence.append(float(death - birth))
        if step == steps:
            break
        involved = list(dict.fromkeys(int(landmark_owner[v]) for v in vertices))
        for image in involved:
            if image not in pixels:
                pixels[image] = torch.as_tensor(images[image], dtype=torch.float32, device=device).clone()
        batch = torch.stack([pixels[i] for i in involved]).requires_grad_(True)
        coords = reduced(batch)
        slot = {image: n for n, image in enumerate(involved)}

        def point(v: int) -> torch.Tensor:
            return coords[slot[int(landmark_owner[v])], int(landmark_rows[v])]

        if dim == 0:
            loss = torch.linalg.vector_norm(point(vertices[1]) - point(vertices[2]))
        else:
            loss = torch.linalg.vector_norm(point(vertices[2]) - point(vertices[3])) - torch.linalg.vector_norm(
                point(vertices[0]) - point(vertices[1])
            )
        (grad,) = torch.autograd.grad(loss, [batch])
        if one_channel:  # the gradient of a grey step: the same change in R, G and B
            grad = grad.sum(dim=1, keepdim=True).expand_as(grad)
        with torch.no_grad():
            scale = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            moved = (batch - step_size * grad / scale).clamp(0.0, 1.0)
            for image, n in slot.items():
                pixels[image] = moved[n]
            after = reduced(moved).cpu().numpy()
        for image, n in slot.items():
            for j in np.flatnonzero(landmark_owner == image):
                current[j] = after[n, int(landmark_rows[j])]
        result.steps = step + 1

    result.modified = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in pixels.items()}
    return result


def _find(points: np.ndarray, dim: int, target: np.ndarray, n_threads: int):
    """The finite dimension-``dim`` feature nearest ``target`` (birth, death), and its generator."""
    dgms = rips(points, range(dim + 1), n_threads=n_threads)
    finite = dgms.finite(dim)
    if len(finite) == 0:
        return None
    nearest = int(np.argmax(-np.abs(finite - target).max(axis=1)))
    return (float(finite[nearest, 0]), float(finite[nearest, 1])), dgms.generators[dim][nearest]

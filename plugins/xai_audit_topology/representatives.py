"""Which points (and so which images) carry a persistence feature.

giotto-ph names, for each finite feature, the edge whose length created it
and the edge whose length destroyed it. From those:

* a component (H0) by the points of the smaller side of the merge that
  ends it: the smaller connected component at the ends of its death edge;
* a loop (H1) by a representative cycle: the birth edge closed by the
  shortest path between its ends through the edges present at birth;
* a void (H2) by the points around it: within half the death edge (which
  spans the void) plus the birth scale of that edge's midpoint.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial.distance import cdist, pdist, squareform


def carriers(points: np.ndarray, dim: int, generator: np.ndarray, birth: float, death: float) -> np.ndarray:
    """Indices into ``points`` of the points that carry one feature."""
    generator = np.asarray(generator, dtype=np.int64)
    if dim == 0:
        return _component(points, int(generator[1]), int(generator[2]), death)
    if dim == 1:
        return _cycle(points, int(generator[0]), int(generator[1]), birth)
    return _shell(points, generator, birth, death)


def _component(points: np.ndarray, a: int, b: int, death: float) -> np.ndarray:
    """The smaller of the two components the death edge (a, b) merges."""
    dist = squareform(pdist(points))
    adjacency = csr_matrix(dist < death * (1 - 1e-6))
    _, labels = connected_components(adjacency, directed=False)
    side_a, side_b = np.flatnonzero(labels == labels[a]), np.flatnonzero(labels == labels[b])
    return side_a if len(side_a) <= len(side_b) else side_b


def _cycle(points: np.ndarray, a: int, b: int, birth: float) -> np.ndarray:
    dist = squareform(pdist(points))
    weights = np.where(dist <= birth + 1e-12, dist, 0.0)
    weights[a, b] = weights[b, a] = 0.0  # the path must go around, not along the birth edge
    lengths, previous = dijkstra(csr_matrix(weights), directed=False, indices=a, return_predecessors=True)
    if not np.isfinite(lengths[b]):
        return np.array(sorted({a, b}))
    path = [b]
    while path[-1] != a:
        path.append(int(previous[path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def _shell(points: np.ndarray, generator: np.ndarray, birth: float, death: float) -> np.ndarray:
    c, d = int(generator[2]), int(generator[3])
    middle = (points[c] + points[d]) / 2.0
    reach = cdist(points, middle[None, :])[:, 0]
    near = np.flatnonzero(reach <= death / 2.0 + birth)
    return np.unique(np.concatenate([near, generator]))

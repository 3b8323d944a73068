"""A Mapper graph of a point cloud (TopoAct): the shape of a layer's activations.

Lens: the first two principal components. Cover: an ``intervals`` ×
``intervals`` grid of overlapping rectangles over the lens. Clustering: in
each rectangle, single linkage cut at ``eps`` (a distance in the cloud's own
coordinates, by default twice the median nearest-neighbour distance), so two
points share a node when a chain of near neighbours joins them. Nodes that
share points are joined by an edge. Laid out at the mean lens position of
their members, the graph sits over the PCA view of the same points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree


@dataclass
class MapperGraph:
    nodes: list[np.ndarray]  # member indices per node
    edges: list[tuple[int, int]]
    position: np.ndarray  # (n_nodes, 2) mean lens coordinates
    eps: float


def mapper_graph(points: np.ndarray, lens: np.ndarray, *, intervals: int = 8, overlap: float = 0.3,
                 eps: float | None = None, min_size: int = 2) -> MapperGraph:
    points = np.asarray(points, dtype=np.float64)
    lens = np.asarray(lens, dtype=np.float64)
    if eps is None:
        nn = cKDTree(points).query(points, k=2)[0][:, 1]
        eps = 2.0 * float(np.median(nn)) if len(nn) else 1.0
    lo, hi = lens.min(axis=0), lens.max(axis=0)
    width = np.maximum((hi - lo) / (intervals - (intervals - 1) * overlap), 1e-12)
    step = width * (1.0 - overlap)
    nodes: list[np.ndarray] = []
    for i in range(intervals):
        for j in range(intervals):
            start = lo + step * np.array([i, j])
            inside = np.flatnonzero(np.all((lens >= start - 1e-12) & (lens <= start + width + 1e-12), axis=1))
            if len(inside) < min_size:
                continue
            if len(inside) == 1:
                labels = np.array([1])
            else:
                labels = fcluster(linkage(points[inside], method="single"), t=eps, criterion="distance")
            for label in np.unique(labels):
                members = inside[labels == label]
                if len(members) >= min_size:
                    nodes.append(members)
    edges = []
    sets = [set(m.tolist()) for m in nodes]
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            if sets[a] & sets[b]:
                edges.append((a, b))
    position = np.array([lens[m].mean(axis=0) for m in nodes]) if nodes else np.zeros((0, 2))
    return MapperGraph(nodes, edges, position, float(eps))

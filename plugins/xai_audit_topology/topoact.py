"""What activates each node of a Mapper graph (TopoAct, Rathore et al. 2021).

TopoAct shows a Mapper node by what activates it. Here a node is shown by the mean of its images and by the
few images whose activations lie nearest the node's centre, and every node is listed with its size, its
majority predicted class and how pure it is, so a reader can tell a node of one class from a node where
classes meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from xai_audit_topology.mapper import MapperGraph

#: at most this many of a node's images are read for its mean image
MEAN_OF = 256


@dataclass
class NodeViews:
    rows: list[dict[str, Any]]  # one per node, for results.json
    shown: list[int]  # the nodes drawn, largest first
    tiles: np.ndarray  # (len(shown) * (1 + examples), C, H, W): per node its mean image, then its examples
    titles: list[str]


def node_images(graph: MapperGraph, points: np.ndarray, owner: np.ndarray) -> list[np.ndarray]:
    """Each node's images (indices of ``owner``'s images), nearest the node's centre first."""
    out = []
    for members in graph.nodes:
        centre = points[members].mean(axis=0)
        order = members[np.argsort(np.linalg.norm(points[members] - centre, axis=1), kind="stable")]
        out.append(np.asarray(list(dict.fromkeys(int(i) for i in owner[order])), dtype=np.int64))
    return out


def node_views(graph: MapperGraph, points: np.ndarray, owner: np.ndarray, images: Any, predicted: np.ndarray,
               classes: Sequence[str], ids: Sequence[str], *, shown: int = 8, examples: int = 3) -> NodeViews:
    """The table of every node, and the mean and nearest-centre images of the ``shown`` largest.

    ``points`` and ``owner`` are the Mapper input and the image of each point; ``images`` is indexable by image
    (an ``ImageView``); ``predicted`` and ``ids`` are per image."""
    per_node = node_images(graph, points, owner)
    predicted = np.asarray(predicted)
    rows = []
    for i, imgs in enumerate(per_node):
        counts = np.bincount(predicted[imgs], minlength=len(classes))
        top = int(counts.argmax())
        rows.append({
            "node": i, "points": int(len(graph.nodes[i])), "images": int(len(imgs)),
            "majority predicted class": classes[top], "share of the majority": round(float(counts[top] / len(imgs)), 3),
            "nearest the centre": [ids[j] for j in imgs[:max(examples, 1)]],
        })
    order, seen = [], set()
    for i in sorted(range(len(per_node)), key=lambda i: (-len(per_node[i]), i)):
        members = frozenset(per_node[i].tolist())
        if members in seen:  # overlapping cover cells often cut the same cluster twice: show it once
            continue
        seen.add(members)
        order.append(i)
        if len(order) == shown:
            break
    tiles, titles = [], []
    for i in order:
        imgs = per_node[i]
        tiles.append(np.asarray(images[imgs[:MEAN_OF]], dtype=np.float32).mean(axis=0))
        titles.append(f"node {i} mean ({len(imgs)})")
        picked = imgs[:examples]
        for j in picked:
            tiles.append(np.asarray(images[int(j)], dtype=np.float32))
            titles.append(f"{ids[j]} ({classes[int(predicted[j])]})")
        for _ in range(examples - len(picked)):  # a node of fewer images: blank tiles keep the rows aligned
            tiles.append(np.ones_like(tiles[-1]))
            titles.append("")
    stacked = np.stack(tiles).astype(np.float32) if tiles else np.zeros((0, 3, 1, 1), np.float32)
    return NodeViews(rows, order, stacked, titles)

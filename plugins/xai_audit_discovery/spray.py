"""attribution-clusters: SpRAy, spectral relevance analysis (Lapuschkin et al. 2019, "Unmasking Clever Hans
predictors and assessing what machines really learn"), as CoRelAy / ViRelAy do it, kept cheap.

    discoverers:
      - attribution-clusters: {max_images: 300}

1. At most ``max_images`` discovery images (a seeded subset), each explained for the class the model predicts:
   gradient x input through the model's forward pass (one backward pass per image, batched), |summed over the
   colour channels|, mean-pooled to a ``grid`` x ``grid`` map and normalised to sum 1.
2. Per predicted class: a symmetric ``neighbors``-nearest-neighbour graph of the maps, the eigenvalues of its
   normalised Laplacian, and the number of clusters (at most ``max_clusters``) where the gap between
   consecutive eigenvalues is largest (the eigengap); then spectral clustering of the graph into that many
   clusters (deterministic ``cluster_qr`` labels).
3. A cluster of at least ``min_cluster_size`` images looks at one fixed place, a box of grid cells covering at
   most ``max_box_fraction`` of the image, in one of two ways:

   * *concentrated*: at most ``max_cells`` cells of its mean map hold ``min_share`` of the attribution, and their
     bounding box holds ``min_share`` of the members' attribution on average and at least half that for three
     members in four (the 25th percentile); or
   * *lifted* (a model that looks at the face and at a mark too): cells that hold more than a uniform share of
     the cluster's mean map and at least ``min_lift`` times the share that the images predicted other classes
     give them (the reference), grown from the cell of largest excess to at most ``max_cells`` adjacent cells;
     the box holds ``min_lift`` times the reference's share, and at least half the members put more attribution
     there than nine reference images in ten do.

   Either way, where the data set names the regions that define the class (``class_regions``) and the samples
   carry their masks, at most ``max_inside_share`` of the attribution in the box may fall on grid cells those
   regions touch (a place inside the class's own regions is what the class should look at, not a cue).
4. Such a cluster is a candidate: the box, in words and pixels, tied to the class; its intervention paints the
   box in the mean colour that the discovery images outside the cluster have there (the data's own
   statistics). Clusters of one class in the same place are merged; the most concentrated come first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from xai_audit.api import (
    Candidate,
    DiscovererPlugin,
    DiscoveryContext,
    ModelError,
    Options,
    Sample,
    array_ref,
    batch_slices,
    best_batch_size,
    sample_chunks,
    stack_images,
)
from xai_audit_discovery._common import place_words, seeded_subset, slug, transform_for, unique_name

#: member maps shown next to a cluster's mean map
_SHOWN = 3
#: salt of the seeded subset of images
_SALT = 161


class AttributionClustersOptions(Options):
    max_images: int = Field(300, ge=2, le=100_000, description="explain at most this many discovery images "
                                                               "(a seeded subset)")
    grid: int = Field(8, ge=2, le=64, description="attribution maps are pooled to grid x grid cells")
    max_clusters: int = Field(4, ge=1, le=10, description="most clusters per predicted class (eigengap chooses)")
    neighbors: int = Field(10, ge=2, le=100, description="neighbours of each map in the affinity graph")
    min_cluster_size: int = Field(8, ge=2, description="fewest images in a cluster that can be a candidate")
    min_share: float = Field(0.5, gt=0.0, le=1.0, description="share of the attribution the place must hold")
    max_cells: int = Field(4, ge=1, description="a place is at most this many grid cells (their bounding box)")
    min_lift: float = Field(4.0, ge=1.0, description="a place that is not concentrated: how many times the "
                                                     "reference's share of attribution the cluster gives it")
    max_box_fraction: float = Field(0.125, gt=0.0, le=1.0, description="largest share of the image the place's "
                                                                       "box may cover")
    max_inside_share: float = Field(0.5, ge=0.0, le=1.0, description="largest share of the box's attribution on "
                                                                     "cells the class's own regions touch")
    max_candidates: int = Field(4, ge=1, le=50, description="propose at most this many candidates")
    batch_size: int | None = Field(None, ge=1, description="images per backward pass; default: automatic")


class AttributionClustersDiscoverer(DiscovererPlugin):
    name = "attribution-clusters"
    description = ("SpRAy: gradient x input maps of the predicted class, clustered per class (spectral clustering, "
                   "eigengap); a cluster whose attribution sits in one fixed place outside the class's own regions "
                   "is proposed, with an intervention that paints that place in the data's own colour.")
    Options = AttributionClustersOptions
    needs_gradients = True

    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        o = self.options
        if context.model.module is None:
            raise ModelError(f"{self.name} needs gradients, and this model is a black box")
        samples = list(context.samples)
        if not samples:
            return []
        chosen = seeded_subset(len(samples), o.max_images, context.seed, _SALT)
        used = [samples[i] for i in chosen]
        preds = np.asarray(context.preds)[chosen]
        maps = self._maps(context.model, used, preds)
        total = maps.reshape(len(maps), -1).sum(axis=1)
        valid = np.isfinite(total) & (total > 0)
        maps[valid] /= total[valid, None, None]
        height, width = used[0].image.shape[1:]

        found: list[dict[str, Any]] = []
        for c in range(len(context.classes)):
            rows = np.flatnonzero((preds == c) & valid)
            if len(rows) < o.min_cluster_size:
                continue
            reference = np.flatnonzero((preds != c) & valid)  # what the images predicted otherwise look at
            reference = reference if len(reference) >= o.min_cluster_size else None
            ref_map = maps[reference].mean(axis=0) if reference is not None else None
            labels, k, gap = _cluster(maps[rows].reshape(len(rows), -1), o.max_clusters, o.neighbors, context.seed)
            places: list[dict[str, Any]] = []
            for label in _by_size(labels):
                members = rows[labels == label]
                if len(members) < o.min_cluster_size:
                    continue
                box, how = self._place(maps[members].mean(axis=0), ref_map)
                if box is None:
                    continue
                same = next((p for p in places if _iou(p["cells"], box) >= 0.5), None)
                if same is not None:  # the same place again: one candidate
                    same["members"] = np.sort(np.concatenate([same["members"], members]))
                    same["clusters"] += 1
                    continue
                places.append({"class": c, "cells": box, "how": how, "members": members, "class_rows": rows,
                               "reference": reference, "k": k, "gap": gap, "clusters": 1})
            for place in places:
                judged = self._judge(context, used, maps, place, height, width)
                if judged is not None:
                    found.append(judged)
        found.sort(key=lambda f: (-f["share"], f["class"]))
        taken: set[str] = set()
        return [self._candidate(context, used, maps, f, height, width, taken) for f in found[: o.max_candidates]]

    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        return transform_for(spec)

    # ------------------------------------------------------------------ steps

    def _maps(self, model: Any, samples: Sequence[Sample], targets: np.ndarray) -> np.ndarray:
        """|sum over channels of gradient x input| of each target logit, pooled to (N, grid, grid)."""
        import torch
        import torch.nn.functional as F

        shape = tuple(np.asarray(samples[0].image).shape)
        size = self.options.batch_size or best_batch_size(model, shape, backward=True)
        out = []
        with torch.enable_grad():
            for part in batch_slices(len(samples), size):
                x = torch.as_tensor(stack_images(samples[part]), device=model.device).requires_grad_(True)
                target = torch.as_tensor(np.asarray(targets[part], np.int64), device=model.device)
                score = model.forward(x).gather(1, target[:, None]).sum()
                (grad,) = torch.autograd.grad(score, x)
                attribution = (grad * x).sum(dim=1).abs().detach()
                out.append(F.adaptive_avg_pool2d(attribution[:, None].float(), self.options.grid)[:, 0].cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _place(self, mean_map: np.ndarray, ref_map: np.ndarray | None) -> tuple[tuple[int, int, int, int] | None, str]:
        """The cells ``(r0, c0, r1, c1)`` of the place the map looks at, and how ("concentrated", "lifted"); or
        ``(None, "")``."""
        o = self.options
        g = o.grid

        def small(box: tuple[int, int, int, int]) -> bool:
            return (box[2] - box[0]) * (box[3] - box[1]) <= o.max_box_fraction * g**2 + 1e-9

        flat = mean_map.ravel()
        order = np.argsort(-flat, kind="stable")
        needed = int(np.searchsorted(np.cumsum(flat[order]), o.min_share * flat.sum() - 1e-12)) + 1
        if needed <= o.max_cells and small(_bounding(order[:needed], g)):
            return _bounding(order[:needed], g), "concentrated"
        if ref_map is None:
            return None, ""
        lift = mean_map / np.maximum(ref_map, 0.1 / g**2)
        eligible = (lift >= o.min_lift) & (mean_map >= 1.0 / g**2)
        if not eligible.any():
            return None, ""
        excess = np.where(eligible, mean_map - ref_map, -np.inf)
        cells = [int(np.argmax(excess))]
        while len(cells) < o.max_cells:  # grow to the adjacent eligible cell of largest excess
            around = {n for cell in cells for n in _neighbours(cell, g) if eligible.flat[n]} - set(cells)
            if not around:
                break
            cells.append(max(sorted(around), key=lambda n: excess.flat[n]))
        box = _bounding(np.asarray(cells), g)
        return (box, "lifted") if small(box) else (None, "")

    def _judge(self, context: DiscoveryContext, used: Sequence[Sample], maps: np.ndarray, place: dict[str, Any],
               height: int, width: int) -> dict[str, Any] | None:
        """The place's numbers; None when it is not consistent across members or lies in the class's regions."""
        o = self.options
        r0, c0, r1, c1 = place["cells"]
        members, reference = place["members"], place["reference"]
        shares = maps[members][:, r0:r1, c0:c1].reshape(len(members), -1).sum(axis=1)
        share, q25 = float(shares.mean()), float(np.quantile(shares, 0.25))
        ref_shares = maps[reference][:, r0:r1, c0:c1].reshape(len(reference), -1).sum(axis=1) \
            if reference is not None else None
        ref_share = float(ref_shares.mean()) if ref_shares is not None else None
        above = float((shares > np.quantile(ref_shares, 0.9)).mean()) if ref_shares is not None else None
        if place["how"] == "concentrated" and (share < o.min_share or q25 < o.min_share / 2):
            return None
        if place["how"] == "lifted" and (share < o.min_lift * ref_share or above < 0.5):
            return None
        label = context.classes[place["class"]]
        names = list(context.class_regions.get(label, []))
        inside = None
        if names and all(s.regions and any(n in s.regions for n in names) for s in (used[i] for i in members)):
            fractions = []
            for i, share_i in zip(members, shares):
                regions = used[i].regions
                mask = np.zeros((height, width), bool)
                for n in names:
                    if n in regions:
                        mask |= np.asarray(regions[n], bool)
                touched = _pooled(mask.astype(np.float64), o.grid) > 0
                fractions.append(float(maps[i][r0:r1, c0:c1][touched[r0:r1, c0:c1]].sum() / max(share_i, 1e-12)))
            inside = float(np.mean(fractions))
            if inside > o.max_inside_share:
                return None
        return {**place, "share": share, "q25": q25, "inside": inside, "regions": names if inside is not None else [],
                "ref_share": ref_share, "above": above}

    def _candidate(self, context: DiscoveryContext, used: Sequence[Sample], maps: np.ndarray, f: dict[str, Any],
                   height: int, width: int, taken: set[str]) -> Candidate:
        o = self.options
        label = context.classes[f["class"]]
        r0, c0, r1, c1 = f["cells"]
        ys, xs = _bins(height, o.grid), _bins(width, o.grid)
        box = [ys[r0][0], xs[c0][0], ys[r1 - 1][1], xs[c1 - 1][1]]
        members = f["members"]
        in_cluster = np.zeros(len(used), bool)
        in_cluster[members] = True
        outside = [s for s, m in zip(used, in_cluster) if not m] or list(used)
        fill = np.zeros(3)
        for _, images in sample_chunks(outside, 256):
            fill += images[:, :, box[0]:box[2], box[1]:box[3]].mean(axis=(2, 3)).sum(axis=0)
        fill = (fill / len(outside)).tolist()
        place = place_words(box, height, width)
        size = f"{width}" if height == width else f"{height}x{width}"
        description = (f"for '{label}', the model looks at {place} (rows {box[0]}-{box[2] - 1}, columns "
                       f"{box[1]}-{box[3] - 1} of {size}): {f['share']:.0%} of the attribution of {len(members)} of "
                       f"the {len(f['class_rows'])} images predicted '{label}' lies there")
        if f["ref_share"] is not None and f["ref_share"] > 0:
            description += f", {f['share'] / f['ref_share']:.1f} times the share the other images give it"
        cells = (r1 - r0) * (c1 - c0)
        evidence = {
            "box": box, "place": f["how"], "box_share": f["share"], "box_share_q25": f["q25"],
            "chance_share": cells / o.grid**2, "reference_share": f["ref_share"],
            "members_above_reference_q90": f["above"],
            "cluster_size": len(members), "class_images": len(f["class_rows"]),
            "clusters_in_class": int(f["k"]), "clusters_merged": int(f["clusters"]), "eigengap": f["gap"],
            "inside_class_regions": f["inside"], "class_regions": f["regions"], "grid": o.grid,
            "images_used": len(used),
            "attribution": "gradient x input of the predicted class, |summed over channels|, mean-pooled to the "
                           "grid, normalised per image",
        }
        shown = list(members[:_SHOWN])
        mean_image = np.zeros_like(np.asarray(used[0].image, np.float64))
        for _, images in sample_chunks([used[i] for i in members], 256):
            mean_image += images.sum(axis=0)
        mean_image /= len(members)
        arrays = {
            "maps": np.stack([maps[members].mean(axis=0)] + [maps[i] for i in shown]).astype(np.float32),
            "images": np.concatenate([mean_image[None], stack_images([used[i] for i in shown])]).astype(np.float32),
        }
        figure = {
            "kind": "heatmaps", "maps": array_ref("maps"), "images": array_ref("images"),
            "titles": [f"mean of {len(members)}"] + [used[i].id for i in shown], "signed": False,
            "normalise": "each", "colorbar": "share of the attribution", "columns": 1 + len(shown),
            "title": f"Where the model looks for '{label}': {place}",
            "caption": (f"The mean attribution map of the cluster (over the mean of its images), then "
                        f"{len(shown)} of its members."),
            "alt": f"attribution maps of {len(members)} images predicted '{label}', concentrated at {place}",
        }
        spec = {"op": "fill-box", "box": box, "size": [height, width], "fill": fill}
        name = unique_name(slug(f"{label} {place.removeprefix('the ')}"), taken)
        return Candidate(name=name, description=description, cue="region", members=[used[i].id for i in members],
                         intervention=spec, target_class=int(f["class"]), evidence=evidence, figures=[figure],
                         arrays=arrays)


def _bins(n: int, grid: int) -> list[tuple[int, int]]:
    """The pixel ranges ``[start, end)`` adaptive average pooling gives each of ``grid`` cells of ``n`` pixels."""
    return [((i * n) // grid, -(-((i + 1) * n) // grid)) for i in range(grid)]


def _bounding(cells: np.ndarray, grid: int) -> tuple[int, int, int, int]:
    r, c = np.divmod(np.asarray(cells), grid)
    return int(r.min()), int(c.min()), int(r.max()) + 1, int(c.max()) + 1


def _neighbours(cell: int, grid: int) -> list[int]:
    r, c = divmod(cell, grid)
    return [rr * grid + cc for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
            if 0 <= rr < grid and 0 <= cc < grid]


def _pooled(mask: np.ndarray, grid: int) -> np.ndarray:
    ys, xs = _bins(mask.shape[0], grid), _bins(mask.shape[1], grid)
    return np.array([[mask[a:b, c:d].mean() for c, d in xs] for a, b in ys])


def _cluster(x: np.ndarray, max_k: int, neighbors: int, seed: int) -> tuple[np.ndarray, int, float]:
    """Cluster labels of the rows of ``x``, how many clusters (eigengap), and that gap."""
    from scipy.sparse import csgraph
    from sklearn.cluster import SpectralClustering
    from sklearn.neighbors import kneighbors_graph

    n = len(x)
    if n < 3:
        return np.zeros(n, np.int64), 1, 0.0
    graph = kneighbors_graph(x, min(neighbors, n - 1), mode="connectivity", include_self=False)
    affinity = (0.5 * (graph + graph.T)).toarray()
    eigenvalues = np.linalg.eigvalsh(csgraph.laplacian(affinity, normed=True))
    gaps = np.diff(eigenvalues[: min(max_k, n - 1) + 1])
    if not len(gaps):
        return np.zeros(n, np.int64), 1, 0.0
    k = int(np.argmax(gaps)) + 1
    if k == 1:
        return np.zeros(n, np.int64), 1, float(gaps[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a graph not fully connected is what several clusters look like
        labels = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr",
                                    random_state=seed % (2**32)).fit_predict(affinity)
    return np.asarray(labels, np.int64), k, float(gaps[k - 1])


def _by_size(labels: np.ndarray) -> list[int]:
    """Cluster labels, largest cluster first (ties: the one whose first member comes first)."""
    values = sorted(set(labels.tolist()), key=lambda v: (-int((labels == v).sum()), int(np.argmax(labels == v))))
    return values


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area else 0.0

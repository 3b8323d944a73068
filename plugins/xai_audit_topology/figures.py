"""The topology step's figures, described as data (see ``xai_audit.report.specs``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from xai_audit_topology.cloud import Reduction
from xai_audit_topology.collapse import CollapseResult
from xai_audit_topology.mapper import MapperGraph
from xai_audit_topology.persistence import Diagrams, Significance


def diagram(dgms: Diagrams, sig: Significance | None, layer: str) -> dict[str, Any]:
    dims = []
    for k in dgms.dims:
        dgm = dgms.diagrams[k]
        finite = dgms.finite(k)
        entry: dict[str, Any] = {"dim": k, "birth": dgm[:, 0].tolist(), "death": dgm[:, 1].tolist()}
        if sig is not None and k in sig.threshold and len(finite):
            flags = list(sig.significant(k, sig.statistic(k, finite))) + [False] * (len(dgm) - len(finite))
            entry["significant"] = [bool(f) for f in flags]
            entry["level" if k == 0 else "ratio"] = sig.line(k, finite)
        dims.append(entry)
    line = (
        " Dashed lines: the significance thresholds (death = threshold × birth for loops and voids; a level for "
        "components); circled points are significant."
        if sig is not None else ""
    )
    return {
        "kind": "diagram",
        "title": f"Persistence diagram, layer {layer}",
        "dims": dims,
        "xlabel": "birth (distance in PCA units)",
        "ylabel": "death",
        "caption": (
            f"Persistence diagram of the landmark cloud of layer {layer}: each point is a feature (component, loop or "
            f"void) born and dead at those distances; far above the diagonal = long-lived.{line} Points on the top "
            "edge never die."
        ),
        "alt": f"Persistence diagram of layer {layer} in dimensions {', '.join('H%d' % k for k in dgms.dims)}.",
    }


def before_after(arrays: dict[str, np.ndarray], ids: Sequence[str], one_channel: bool = False) -> dict[str, Any]:
    before, after = arrays["before"], arrays["after"]
    diff = np.abs(after - before)
    scale = float(np.percentile(diff, 99.5)) or 1.0
    arrays["change"] = np.clip(diff / scale, 0.0, 1.0).astype(np.float32)
    arrays["tiles"] = np.concatenate([before, after, arrays["change"]]).astype(np.float32)
    n = len(before)
    titles = [f"before\n{sid}" for sid in ids] + ["after"] * n + ["|change|"] * n
    return {
        "kind": "images",
        "title": "The images the collapse changed most: before and after",
        "images": {"array": "tiles"},
        "titles": titles,
        "columns": n,
        "caption": (
            "Top row: the images whose pixels the collapse changed most (they sat at the ends of the feature's birth "
            "and death edges); middle: after the gradient steps; "
            + (f"bottom: the absolute change, scaled so that {scale:.3g} is full brightness; the model takes one "
               "channel (luminance), so the change is the same in R, G and B and colour is not applicable."
               if one_channel else
               f"bottom: the absolute change per colour channel shown as RGB, scaled so that {scale:.3g} is full "
               "brightness (a red pixel lost or gained red).")
        ),
        "alt": f"{n} images before and after the collapse, and their pixel changes.",
    }


def collapse_curve(result: CollapseResult, feature: dict) -> dict[str, Any]:
    k = feature["dim"]
    return {
        "kind": "lines",
        "title": f"Persistence of the collapsed H{k} feature per step",
        "x": list(range(len(result.persistence))),
        "series": [{"label": f"H{k} persistence", "y": list(result.persistence)}],
        "xlabel": "gradient step",
        "ylabel": "death − birth",
        "caption": "The feature's persistence (death − birth in PCA units) recomputed before each gradient step and after the last.",
        "alt": "Line chart of the feature's persistence falling over the gradient steps.",
        "height": 2.4,
    }


def layer_summaries(names: list[str], grid: np.ndarray, curves: dict, scapes: dict, dims: Sequence[int],
                    scape_dim: int) -> list[dict[str, Any]]:
    specs = []
    for k in dims:
        specs.append({
            "kind": "lines",
            "title": f"Betti curves, H{k}, per layer",
            "x": grid.tolist(),
            "series": [{"label": name, "y": curves[name][k].tolist()} for name in names],
            "xlabel": "filtration value / median distance of the layer's landmarks",
            "ylabel": f"number of H{k} features alive",
            "caption": (
                f"Betti curves of H{k} for each layer: how many {['components', 'loops', 'voids', 'H3 features'][k]} "
                "exist at each scale. Scales are divided by each layer's median landmark distance so layers compare."
            ),
            "alt": f"Betti curves of H{k} for layers {', '.join(names)}.",
            "height": 2.6,
        })
    specs.append({
        "kind": "lines",
        "title": f"First persistence landscape, H{scape_dim}, per layer",
        "x": grid.tolist(),
        "series": [{"label": name, "y": scapes[name].tolist()} for name in names if name in scapes],
        "xlabel": "filtration value / median distance",
        "ylabel": "λ1",
        "caption": (
            f"First persistence landscape of H{scape_dim} per layer: the height of the most persistent feature alive "
            "at each scale. A higher, wider tent is a larger feature."
        ),
        "alt": f"First persistence landscape of H{scape_dim} for each layer.",
        "height": 2.6,
    })
    return specs


def class_entropy(names: list[str], classes: list[str], per_class: dict, k: int) -> dict[str, Any]:
    shown = [c for c in classes if any(c in per_class[n] for n in names)]
    return {
        "kind": "bars",
        "title": f"Persistence entropy of H{k} per predicted class and layer",
        "labels": shown,
        "series": [{"label": name, "values": [per_class[name].get(c, 0.0) for c in shown]} for name in names],
        "ylabel": "entropy (bits)",
        "caption": (
            f"Persistence entropy (base 2) of H{k} for the images predicted as each class, per layer: higher means "
            "more features of similar size (more complex), lower means a few dominant ones."
        ),
        "alt": f"Bar chart of H{k} persistence entropy per class and layer.",
    }


def pca_scatter(lens: np.ndarray, groups: list[str], reduction: Reduction, layer: str) -> dict[str, Any]:
    return {
        "kind": "scatter",
        "title": f"PCA of layer {layer}, by predicted class",
        "x": lens[:, 0].tolist(),
        "y": lens[:, 1].tolist(),
        "groups": groups,
        "xlabel": "PC 1",
        "ylabel": "PC 2",
        "caption": f"The first two principal components of layer {layer}'s activations, one point per cloud point, "
                   "coloured by the predicted class. The Mapper graphs below sit over the same plane.",
        "alt": f"Scatter plot of the first two principal components of layer {layer}.",
    }


def mapper(graph: MapperGraph, predicted: np.ndarray, labels: np.ndarray, classes: list[str], layer: str) -> list[dict[str, Any]]:
    nodes_class, nodes_error = [], []
    has_labels = bool(np.all(labels >= 0))
    for members, (x, y) in zip(graph.nodes, graph.position):
        size = float(np.log2(1 + len(members)))
        majority = int(np.bincount(predicted[members], minlength=len(classes)).argmax())
        nodes_class.append({"x": float(x), "y": float(y), "size": size, "group": classes[majority]})
        error = float(np.mean(predicted[members] != labels[members])) if has_labels else 0.0
        nodes_error.append({"x": float(x), "y": float(y), "size": size, "color": error})
    edges = [list(e) for e in graph.edges]
    common = (
        f"Mapper graph of layer {layer} ({len(graph.nodes)} nodes, {len(edges)} edges): the lens is the first two "
        "principal components, cut into overlapping rectangles; each node is a cluster of points in one rectangle "
        f"(single linkage at {graph.eps:.3g}), its size the log of its count; an edge joins nodes sharing points."
    )
    specs = [{
        "kind": "graph", "title": f"Mapper graph of layer {layer}, by majority predicted class",
        "nodes": nodes_class, "edges": edges, "color_label": "predicted class",
        "caption": common + " Colour: the class most of its images are predicted as.",
        "alt": f"Mapper graph of layer {layer} coloured by predicted class.",
    }]
    if has_labels:
        specs.append({
            "kind": "graph", "title": f"Mapper graph of layer {layer}, by prediction error",
            "nodes": nodes_error, "edges": edges, "color_label": "share of wrong predictions",
            "caption": common + " Colour: the share of its images the model gets wrong.",
            "alt": f"Mapper graph of layer {layer} coloured by error rate.",
        })
    return specs

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
            line = sig.line(k, finite)
            if line is not None:
                entry["level" if k == 0 else "ratio"] = line
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
        "caption": f"The first two principal components of layer {layer}'s activations (together "
                   f"{100 * reduction.variance_kept:.0f} % of their variance), one point per cloud point, coloured by "
                   "the predicted class. The Mapper graphs below sit over the same plane.",
        "alt": f"Scatter plot of the first two principal components of layer {layer}.",
    }


def mapper(graph: MapperGraph, predicted: np.ndarray, labels: np.ndarray, classes: list[str], layer: str,
           labelled: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The Mapper graph by majority class and by error; the nodes in ``labelled`` carry their number."""
    nodes_class, nodes_error = [], []
    has_labels = bool(np.all(labels >= 0))
    for i, (members, (x, y)) in enumerate(zip(graph.nodes, graph.position)):
        size = float(np.log2(1 + len(members)))
        majority = int(np.bincount(predicted[members], minlength=len(classes)).argmax())
        named = {"label": str(i)} if i in labelled else {}
        nodes_class.append({"x": float(x), "y": float(y), "size": size, "group": classes[majority], **named})
        error = float(np.mean(predicted[members] != labels[members])) if has_labels else 0.0
        nodes_error.append({"x": float(x), "y": float(y), "size": size, "color": error, **named})
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


# -- activation and latent landscapes (Wheeler et al.) --------------------------------------------------------------


def landscape_levels(sampled: tuple[np.ndarray, np.ndarray], layer: str, k: int, networks: int, images: str,
                     kind: str) -> dict[str, Any]:
    grid, levels = sampled
    what = ("activation vectors of " + images if kind == "activation"
            else "channel vectors (one point per position of each image)")
    mean = f"the mean of {networks} networks' landscapes" if networks > 1 else "the model's landscape"
    return {
        "kind": "lines",
        "title": f"{'Activation' if kind == 'activation' else 'Latent'} landscape, every level, H{k}, layer {layer}",
        "x": grid.tolist(),
        "series": [{"label": f"λ{i + 1}" if i < 3 else "", "y": level.tolist()} for i, level in enumerate(levels)],
        "xlabel": "filtration value (distance between activation vectors)",
        "ylabel": f"λk (H{k})",
        "caption": (
            f"Persistence landscape of the {what} at layer {layer}, H{k}: all {len(levels)} levels, {mean}. "
            "λ1 is the highest tent alive at each scale, λ2 the second, and so on; unlabelled lines are the levels "
            "below λ3."
        ),
        "alt": f"{len(levels)} landscape levels of H{k} at layer {layer}.",
        "height": 2.6,
    }


def landscape_norms_per_class(rows: list[dict[str, Any]], layers: list[str], groups: list[str], k: int) -> dict[str, Any]:
    norm = {(r["layer"], r["images"]): r["norm of the mean landscape"] for r in rows if r["dim"] == f"H{k}"}
    return {
        "kind": "matrix",
        "title": f"Norm of the mean activation landscape, H{k}, per layer and class",
        "values": [[float(norm.get((layer, g), float("nan"))) for g in groups] for layer in layers],
        "rows": layers, "cols": groups, "row_label": "layer", "col_label": "images", "format": "{:.3g}",
        "caption": (
            f"L² norm of the H{k} activation landscape (every level) per layer, for all images and for the images "
            "of each class: how much topological structure the class's activations have at that layer."
        ),
        "alt": f"Table of H{k} landscape norms per layer and class.",
    }


def landscape_norms_across_networks(rows: list[dict[str, Any]], layers: list[str], dims, networks: int) -> dict[str, Any]:
    series = []
    for k in dims:
        chosen = {r["layer"]: r for r in rows if r["dim"] == f"H{k}" and r["images"] == "all images"}
        series.append({"label": f"H{k}", "values": [chosen[layer]["norm per network: mean"] for layer in layers],
                       "low": [chosen[layer]["norm per network: min"] for layer in layers],
                       "high": [chosen[layer]["norm per network: max"] for layer in layers]})
    return {
        "kind": "bars",
        "title": "Activation landscape norm per layer" + (f", over {networks} networks" if networks > 1 else ""),
        "labels": layers,
        "series": series,
        "ylabel": "‖λ‖₂ (all images)",
        "caption": (
            "L² norm of each layer's activation landscape (all images, every level): "
            + (f"the mean over {networks} networks trained from different seeds, the whiskers their smallest and "
               "largest." if networks > 1 else "the model alone.")
        ),
        "alt": "Bar chart of activation landscape norms per layer.",
    }


def landscape_norm_along_training(rows: list[dict[str, Any]], layers: list[str], dims, files: list[str]) -> list[dict[str, Any]]:
    specs = []
    x = list(range(1, len(files) + 1))
    for k in dims:
        norm = {(r["checkpoint"], r["layer"]): r["norm"] for r in rows if r["dim"] == f"H{k}"}
        specs.append({
            "kind": "lines",
            "title": f"Activation landscape norm per layer along training, H{k}",
            "x": x,
            "series": [{"label": layer, "y": [norm[(i, layer)] for i in x]} for layer in layers],
            "xlabel": "checkpoint (in the order listed)",
            "ylabel": f"‖λ‖₂ (H{k}, all images)",
            "caption": (
                f"L² norm of each layer's H{k} activation landscape (all images, every level) at each training "
                f"checkpoint: {', '.join(files)}."
            ),
            "alt": f"Line chart of H{k} landscape norms per layer over {len(files)} checkpoints.",
            "height": 2.6,
        })
    return specs


# -- what activates each Mapper node (TopoAct) -------------------------------------------------------------------


def mapper_node_images(tiles_array: str, titles: list[str], columns: int, layer: str, shown: int,
                       examples: int) -> dict[str, Any]:
    return {
        "kind": "images",
        "title": f"What activates the largest Mapper nodes of layer {layer}",
        "images": {"array": tiles_array},
        "titles": titles,
        "columns": columns,
        "caption": (
            f"The {shown} largest nodes of the Mapper graph of layer {layer}, one per row, numbered as in the graph: "
            f"first the mean of the node's images (their number in brackets), then the {examples} images whose activations lie nearest the "
            "node's centre (TopoAct shows a node by what activates it)."
        ),
        "alt": f"Mean and example images of {shown} Mapper nodes of layer {layer}.",
    }

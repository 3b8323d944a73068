"""The ``topology`` explainer: persistent homology of a layer's activations, and the pixels that carry it.

The steps, each with its output in the Explanation:

1. the activations of a layer for the audited images, as a point cloud;
2. Vietoris–Rips persistence in the chosen dimensions (giotto-ph);
3. significance against Gaussian clouds of the same size and scale;
4. the images that carry each significant feature;
5. gradient steps on those images' pixels that collapse one feature;
6. what changed, by region and colour, in numbers and words;
7. hypotheses suggested from it, as plan lines;

plus Betti curves, landscapes and entropy per layer and per class, a Mapper
graph and a PCA view of the same points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xai_audit.api import ExplainerPlugin, Explanation, ImageView, ModelAdapter, Sample
from xai_audit_topology import figures
from xai_audit_topology.activations import Cloud, activation_clouds, resolve_layer
from xai_audit_topology.bottleneck import bottleneck
from xai_audit_topology.change import change_size, summarise
from xai_audit_topology.cloud import Reduction, fit_reduction, landmarks
from xai_audit_topology.collapse import CollapseResult, collapse_feature
from xai_audit_topology.landscapes import LandscapeStudy
from xai_audit_topology.landscapes import study as landscape_study
from xai_audit_topology.mapper import mapper_graph
from xai_audit_topology.options import TopologyOptions
from xai_audit_topology.persistence import Diagrams, Significance, assess, rips, statistic
from xai_audit_topology.representatives import carriers
from xai_audit_topology.suggest import suggest
from xai_audit_topology.summaries import betti_curve, entropy, landscape, total_persistence
from xai_audit_topology.topoact import node_views

KINDS = {0: "component", 1: "loop", 2: "void", 3: "3-cavity"}
#: features listed per dimension in the features table (significant ones always are)
LISTED = 4
#: at most this many points go into the Mapper graph and the PCA view
VIEW_POINTS = 2000


@dataclass
class LayerCloud:
    """One layer's cloud after reduction and landmark selection."""

    cloud: Cloud
    reduction: Reduction
    reduced: np.ndarray  # (P, k) every kept point, reduced
    kept: np.ndarray  # indices into cloud.points of the kept points
    landmarks: np.ndarray  # indices into ``reduced``

    @property
    def landmark_points(self) -> np.ndarray:
        return self.reduced[self.landmarks]

    def landmark_images(self) -> np.ndarray:
        """Cloud-image index of each landmark."""
        return self.cloud.owner[self.kept[self.landmarks]]


class TopologyExplainer(ExplainerPlugin):
    name = "topology"
    description = (
        "Persistent homology of a layer's activations (giotto-ph): significant loops and voids, the images "
        "that carry them, and the pixel changes that collapse them."
    )
    Options = TopologyOptions
    needs_gradients = True
    needs_layer_hooks = True
    wants_all_samples = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        opts: TopologyOptions = self.options
        started = time.perf_counter()
        layer = resolve_layer(model, opts.layer)
        rng = np.random.default_rng(seed)
        chosen = np.arange(len(samples))
        if opts.cloud_samples is not None and opts.cloud_samples < len(samples):
            chosen = np.sort(rng.choice(len(samples), opts.cloud_samples, replace=False))
        images = ImageView([samples[i] for i in chosen])  # read batch by batch, never all held at once
        predicted = np.asarray(targets)[chosen]
        labels = [samples[i].label for i in chosen]
        ids = [samples[i].id for i in chosen]

        summary_layers = self._summary_layers(model, layer)
        clouds = activation_clouds(model, images, [layer, *summary_layers], cloud=opts.cloud, pool=opts.pool,
                                   tokens=opts.tokens)
        main = self._layer_cloud(clouds[layer], seed)
        found = assess(main.reduced, opts.dims, self._selector(), null_clouds=opts.null_clouds, alpha=opts.alpha,
                       seed=seed, n_threads=opts.n_threads, method=opts.significance)
        dgms, sig = found.diagrams, found.significance
        features, significant = self._features(main, dgms, sig, ids)

        notes = [self._found_note(dgms, sig, significant), self._cloud_note(main, len(images), dgms),
                 self._significance_note(dgms, sig)]
        reason = getattr(model, "default_layer_reason", "")
        if opts.layer in (None, "default", "final") and reason:
            notes.insert(1, f"Layer: the model's default layer, {reason}.")
        tables: dict[str, list[dict[str, Any]]] = {"features": features, "cloud": [{
            "layer": layer, "activation shape": " × ".join(str(d) for d in main.cloud.shape),
            "point from": main.cloud.point_from(opts.cloud, opts.pool, opts.tokens),
            "points": int(len(main.cloud.points)), "values per point": int(main.cloud.points.shape[1]),
        }]}
        arrays: dict[str, np.ndarray] = {}
        specs: list[dict[str, Any]] = [figures.diagram(dgms, sig, layer)]

        collapsed = self._collapse(model, images, main, dgms, sig, significant, layer)
        suggested: list[dict[str, Any]] = []
        if collapsed is not None:
            sample_ids, explained, maps = self._report_collapse(
                model, collapsed, images, predicted, [samples[i] for i in chosen], notes, tables, arrays, specs,
                suggested,
            )
        else:
            sample_ids, explained = [], np.zeros(0, dtype=np.int64)
            maps = np.zeros((0,) + images.shape[2:], dtype=np.float32)
            notes.insert(1, self._no_collapse_note(significant))

        layer_rows, layer_specs = self._per_layer(summary_layers, clouds, layer, main, dgms, predicted,
                                                  list(model.classes), seed)
        tables["summary per layer"] = layer_rows
        specs.extend(layer_specs)
        if opts.mapper:
            specs.extend(self._views(main, predicted, labels, list(model.classes), seed, images, ids, tables, arrays))
        scalars = self._scalars(main, dgms, sig, significant, collapsed)
        if opts.landscapes:
            found_landscapes = self._landscapes(model, images, predicted, labels, layer, seed)
            tables.update(found_landscapes.tables)
            specs.extend(found_landscapes.figures)
            notes.extend(found_landscapes.notes)
            scalars.update(found_landscapes.scalars)
        return Explanation(
            method=self.name,
            sample_ids=sample_ids,
            targets=explained,
            maps=maps,
            signed=False,
            scalars=scalars,
            maps_caption=("the size of the change the collapse made in the model's one channel (|Δluminance|)"
                          if model.input_channels == 1 else
                          "the size of the pixel change the collapse made (|ΔR| + |ΔG| + |ΔB|)"),
            arrays=arrays,
            tables=tables,
            notes=notes,
            figures=specs,
            suggested_hypotheses=suggested,
            # times are how the run went, not what it found: results.json's run.steps, never a note
            run={"seconds": round(time.perf_counter() - started, 3), "persistence_seconds": round(dgms.seconds, 3),
                 "significance_seconds": round(sig.seconds, 3) if sig is not None else None},
        )

    # -- the cloud ---------------------------------------------------------------

    def _selector(self):
        opts: TopologyOptions = self.options
        return lambda cloud, s: landmarks(cloud, opts.landmarks, opts.landmark_method, s)

    def _layer_cloud(self, cloud: Cloud, seed: int) -> LayerCloud:
        opts: TopologyOptions = self.options
        kept = np.arange(len(cloud.points))
        if len(kept) > opts.points:
            kept = np.sort(np.random.default_rng(seed).choice(len(kept), opts.points, replace=False))
        reduction = fit_reduction(cloud.points[kept], opts.pca_dims, seed)
        reduced = reduction.project(cloud.points[kept])
        chosen = self._selector()(reduced, seed)
        return LayerCloud(cloud, reduction, reduced, kept, chosen)

    def _found_note(self, dgms: Diagrams, sig: Significance | None, significant: list[dict[str, Any]]) -> str:
        if sig is None:
            return "No significance test was run (null_clouds: 0): the features table lists the largest features."
        parts = []
        for k in dgms.dims:
            found = [f for f in significant if f["dim"] == k]
            name = KINDS.get(k, "feature")
            if k not in sig.threshold:
                parts.append(f"{name}s (H{k}) not tested")
                continue
            if not found:
                parts.append(f"no significant {name} (H{k})")
                continue
            sizes = ", ".join(str(len(f["images"])) for f in found[:6]) + (", …" if len(found) > 6 else "")
            plural = "s" if len(found) > 1 else ""
            parts.append(f"{len(found)} significant {name}{plural} (H{k}; carried by {sizes} image(s))")
        text = "Found: " + "; ".join(parts) + f", at α = {sig.alpha:g}."
        if any(f["dim"] == 0 and len(f["images"]) <= 2 for f in significant):
            text += " A component carried by one or two images is an isolated image: far from all others in this layer."
        return text

    def _cloud_note(self, main: LayerCloud, n_images: int, dgms: Diagrams) -> str:
        opts: TopologyOptions = self.options
        cloud = main.cloud
        d = cloud.points.shape[1]
        if opts.cloud == "latent":
            what = f"{len(cloud.points):,} channel vectors ({d} channels at each of {cloud.grid[0]}×{cloud.grid[1]} positions) of {n_images} images"
        else:
            how = cloud.point_from(opts.cloud, opts.pool, opts.tokens)
            what = f"{n_images} images, one point each ({d} values, {how})"
        sub = f", a seeded random {len(main.kept):,} of them" if len(main.kept) < len(cloud.points) else ""
        if main.reduction.dims < d:
            pca = f"PCA to {main.reduction.dims} dimensions keeps {100 * main.reduction.variance_kept:.1f} % of the variance"
        else:
            pca = "No PCA (the points have no more than pca_dims values)"
        method = "farthest-point" if opts.landmark_method == "farthest" else "random"
        text = (
            f"Cloud: layer {cloud.layer}, {what}{sub}. {pca}; persistence on {len(main.landmarks)} {method} landmarks, "
            f"Vietoris–Rips in H{', H'.join(str(k) for k in dgms.dims)} with giotto-ph on {opts.n_threads} thread(s)."
        )
        return text

    def _significance_note(self, dgms: Diagrams, sig: Significance | None) -> str:
        """How significance was tested and what it found, a note of its own (with the cloud's, it ran past the
        600 characters the report shows of one string, and its results were cut off)."""
        opts: TopologyOptions = self.options
        if sig is not None and sig.method == "bootstrap":
            return (
                f"Significance: a bootstrap confidence set of the diagram (Fasy et al. 2014): the landmarks resampled "
                f"with replacement {sig.null_clouds} times; a feature is significant when its half-persistence exceeds "
                f"the {100 * (1 - sig.alpha / len(sig.threshold)):.1f} % quantile of the bottleneck distances between "
                f"the resamples' diagrams and the data's (α = {sig.alpha:g}/{len(sig.threshold)}): "
                + "; ".join(sig.describe(k) for k in sorted(sig.threshold)) + "."
            )
        if sig is not None and sig.method == "universal":
            untested = [k for k in dgms.dims if k not in sig.threshold]
            return (
                "Significance: Bobrowski and Skraba's universal law, no simulation: each loop's or void's ℓ "
                "(½·log log(death/birth), centred on its diagram's mean) against the left Gumbel law, for the largest "
                f"of its diagram's features, at α = {sig.alpha:g}/{len(opts.dims)}"
                + (f"; components against {sig.null_clouds} Gaussian clouds" if 0 in sig.threshold else "")
                + ": " + "; ".join(sig.describe(k) for k in sorted(sig.threshold))
                + (f"; H{', H'.join(map(str, untested))} not tested (the law covers loops and voids only)"
                   if untested else "") + "."
            )
        if sig is not None:
            return (
                f"Significance: each loop's or void's ℓ (½·log log(death/birth), centred on its diagram's mean; a "
                f"component's log(death/median death)) against the largest such value in {sig.null_clouds} Gaussian clouds "
                f"with the same number of points and per-axis variance, through the same landmarks; "
                f"significant when its p-value under a Gumbel fit to those maxima is below α = {sig.alpha:g}/"
                f"{len(sig.threshold)} and it beats every null maximum: "
                + "; ".join(sig.describe(k) for k in sorted(sig.threshold)) + "."
            )
        return "No significance test was run (null_clouds: 0)."

    # -- features and their images -------------------------------------------------

    def _features(self, main: LayerCloud, dgms: Diagrams, sig: Significance | None, ids: list[str]):
        rows: list[dict[str, Any]] = []
        significant: list[dict[str, Any]] = []
        owner = main.landmark_images()
        for k in dgms.dims:
            finite = dgms.finite(k)
            if len(finite) == 0:
                continue
            stats = sig.statistic(k, finite) if sig is not None else statistic(finite, k)
            p = sig.p_values(k, stats) if sig is not None else np.full(len(stats), np.nan)
            is_sig = sig.significant(k, stats) if sig is not None else np.zeros(len(stats), bool)
            order = np.argsort(-stats)
            listed = [i for i in order if is_sig[i]] + [i for i in order[:LISTED] if not is_sig[i]]
            for rank, i in enumerate(listed[: max(LISTED, int(is_sig.sum()))]):
                members = carriers(main.landmark_points, k, dgms.generators[k][i], finite[i, 0], finite[i, 1])
                images = list(dict.fromkeys(int(owner[j]) for j in members))
                row = {
                    "feature": f"H{k} {KINDS.get(k, 'feature')}",
                    "birth": round(float(finite[i, 0]), 3),
                    "death": round(float(finite[i, 1]), 3),
                    "death/birth": round(float(finite[i, 1] / finite[i, 0]), 3) if k and finite[i, 0] > 0 else None,
                    "statistic": round(float(stats[i]), 3),
                    "p": float(p[i]) if sig is not None else None,
                    "significant": bool(is_sig[i]),
                    "images": len(images),
                    "carried by": ", ".join(ids[j] for j in images[:3]) + (" …" if len(images) > 3 else ""),
                }
                rows.append(row)
                if is_sig[i]:
                    significant.append({"dim": k, "index": int(i), "stat": float(stats[i]),
                                        "strength": float(stats[i] - sig.threshold[k]),
                                        "birth": float(finite[i, 0]), "death": float(finite[i, 1]),
                                        "images": images})
        return rows, significant

    # -- collapse --------------------------------------------------------------------

    def _collapse(self, model, images, main: LayerCloud, dgms: Diagrams, sig, significant, layer):
        opts: TopologyOptions = self.options
        if opts.collapse_steps == 0:
            return None
        candidates = [f for f in significant if opts.collapse_dim == "auto" or f["dim"] == opts.collapse_dim]
        if opts.collapse_dim == "auto":
            higher = [f for f in candidates if f["dim"] >= 1]
            candidates = higher or [f for f in candidates if not _isolated(f)]
            if not candidates and significant:
                return None  # only isolated images are significant: said so, not collapsed (see _no_collapse_note)
        if candidates:
            feature = max(candidates, key=lambda f: f["strength"])
        else:  # nothing significant: collapse the largest feature of the wanted dimension, and say so
            k = 1 if opts.collapse_dim == "auto" else int(opts.collapse_dim)
            if k not in dgms.dims or len(dgms.finite(k)) == 0:
                return None
            finite = dgms.finite(k)
            i = int(np.argmax(statistic(finite, k)))
            feature = {"dim": k, "index": i, "birth": float(finite[i, 0]), "death": float(finite[i, 1]), "stat": None}
        rows = np.zeros(len(main.landmarks), dtype=np.int64)
        if main.cloud.position is not None:
            pos = main.cloud.position[main.kept[main.landmarks]]
            rows = pos[:, 0] * main.cloud.grid[1] + pos[:, 1]
        result = collapse_feature(
            model, images, main.landmark_points, main.landmark_images(), rows, main.reduction, layer,
            feature["dim"], (feature["birth"], feature["death"]), cloud=opts.cloud, pool=opts.pool,
            steps=opts.collapse_steps, step_size=opts.step_size, n_threads=opts.n_threads,
            one_channel=model.input_channels == 1, tokens=opts.tokens,
        )
        if not result.modified:
            return None
        return result, feature

    def _no_collapse_note(self, significant: list[dict[str, Any]]) -> str:
        opts: TopologyOptions = self.options
        if opts.collapse_steps and opts.collapse_dim == "auto" and significant and all(map(_isolated, significant)):
            n = len({i for f in significant for i in f["images"]})
            return (f"No feature was collapsed: no loop or void is significant, and the only significant components "
                    f"are {n} isolated image(s), each far from all the others in this layer (outliers, listed in the "
                    "features table), not a structure of the data; collapsing them would only move those images.")
        return "No feature was collapsed (collapse_steps is 0, or the diagram has no feature to collapse)."

    def _report_collapse(self, model, collapsed, images, predicted, cloud_samples, notes, tables, arrays, specs,
                         suggested):
        """Steps 6 and 7 into the Explanation; returns the modified images' ids, targets and |change| maps."""
        opts: TopologyOptions = self.options
        result, feature = collapsed
        order = sorted(result.modified, key=lambda i: -float(np.abs(result.modified[i] - images[i]).sum()))
        ids = [cloud_samples[i].id for i in order]
        before = images[order]
        after = np.stack([result.modified[i] for i in order])
        one_channel = model.input_channels == 1
        change = summarise(before, after, [cloud_samples[i].regions for i in order], one_channel=one_channel)
        notes.insert(1, self._collapse_note(result, feature, change.words))
        tables["change by region (Δ in 8-bit levels)"] = change.regions
        if one_channel:  # colour and hue are not applicable: the model sees one channel
            tables["change of the model's one channel (8-bit levels)"] = change.colours
        else:
            tables["change by colour (8-bit levels)"] = change.colours
            tables["change by hue of the original pixel"] = change.hues
        tables["modified images (the 12 changed most; change in 8-bit levels)"] = self._prediction_rows(
            model, before[:12], after[:12], ids[:12]
        )
        hypotheses = suggest(change)
        suggested += [{"plugin": h["plugin"], "options": h["options"], "why": h["why"]} for h in hypotheses]
        tables["suggested hypotheses"] = [{"hypothesis": h["hypothesis"], "why": h["why"]} for h in hypotheses] or [
            {"hypothesis": "(none)", "why": "the change has no region, colour or brightness pattern to test"}
        ]
        if hypotheses:
            notes.append("Suggested hypotheses, to paste under `hypotheses:` in the plan: "
                         + "; ".join(h["hypothesis"].lstrip("- ") for h in hypotheses) + ".")
        arrays["before"], arrays["after"] = before[: opts.show], after[: opts.show]
        specs.append(figures.before_after(arrays, ids[: opts.show], one_channel))
        specs.append(figures.collapse_curve(result, feature))
        maps = change_size(after - before, one_channel).astype(np.float32)
        return ids, np.asarray(predicted)[order], maps

    def _collapse_note(self, result: CollapseResult, feature: dict, words: str) -> str:
        k = feature["dim"]
        kind = {0: "component", 1: "loop", 2: "void"}.get(k, f"H{k} feature")
        chosen = "the most significant" if feature.get("stat") is not None else "the largest (not significant)"
        return (
            f"Collapse: {chosen} {kind} (H{k}, born {feature['birth']:.3g}, dies {feature['death']:.3g}) lost "
            f"{100 * result.drop:.0f} % of its persistence ({result.persistence[0]:.3g} → {result.persistence[-1]:.3g}) "
            f"in {result.steps} gradient steps that changed {len(result.modified)} image(s). {words}"
        )

    def _prediction_rows(self, model: ModelAdapter, before: np.ndarray, after: np.ndarray, ids: list[str]):
        p0, p1 = model.predict_proba(before), model.predict_proba(after)
        classes = list(model.classes)
        return [
            {
                "sample": sid,
                "predicted before": f"{classes[int(a.argmax())]} ({float(a.max()):.2f})",
                "predicted after": f"{classes[int(b.argmax())]} ({float(b.max()):.2f})",
                "mean |change|": round(255.0 * float(np.abs(y - x).mean()), 2),
                "largest |change|": round(255.0 * float(np.abs(y - x).max()), 2),
            }
            for sid, a, b, x, y in zip(ids, p0, p1, before, after)
        ]

    # -- summaries per layer and per class ------------------------------------------

    def _summary_layers(self, model: ModelAdapter, layer: str) -> list[str]:
        opts: TopologyOptions = self.options
        if opts.layers is not None:
            return [resolve_layer(model, name) for name in opts.layers]
        import torch

        convs = [n for n, m in model.layers().items() if isinstance(m, torch.nn.Conv2d)]
        if len(convs) > 4:
            convs = [convs[int(round(i))] for i in np.linspace(0, len(convs) - 1, 4)]
        return list(dict.fromkeys(convs + [layer])) if layer not in convs else convs

    def _per_layer(self, names, clouds, layer, main: LayerCloud, main_dgms: Diagrams, predicted, classes, seed):
        opts: TopologyOptions = self.options
        if not names:
            return [], []
        rows: list[dict[str, Any]] = []
        curves: dict[str, dict[int, np.ndarray]] = {}
        scapes: dict[str, np.ndarray] = {}
        per_class: dict[str, dict[str, float]] = {}
        grid = np.linspace(0.0, 2.0, 101)
        summary_dims = [k for k in opts.dims if k <= 1] or opts.dims[:1]
        previous: dict[int, np.ndarray] = {}
        for name in names:
            lc = main if name == layer else self._layer_cloud(clouds[name], seed)
            dgms = main_dgms if name == layer else rips(lc.landmark_points, opts.dims, n_threads=opts.n_threads,
                                                        generators=False)
            scale = _median_distance(lc.landmark_points)
            curves[name] = {}
            for k in opts.dims:
                dgm = dgms.finite(k) / scale
                curves[name][k] = betti_curve(dgm, grid)
                rows.append({
                    "layer": name, "values per point": int(lc.cloud.points.shape[1]),
                    "PCA variance kept": round(lc.reduction.variance_kept, 3), "dim": f"H{k}", "features": int(len(dgm)),
                    "total persistence (scaled)": round(total_persistence(dgm), 3), "entropy (bits)": round(entropy(dgm), 3),
                    "bottleneck to the layer before": (
                        round(bottleneck(previous[k], dgm), 3) if k in previous and k > 0 else None
                    ),
                })
                previous[k] = dgm
                if k == _landscape_dim(opts.dims):
                    scapes[name] = landscape(dgm, grid, 1)[0]
            if opts.per_class:
                per_class[name] = self._class_entropy(lc, predicted, classes, summary_dims[-1], scale)
        specs = figures.layer_summaries(names, grid, curves, scapes, opts.dims, _landscape_dim(opts.dims))
        if per_class:
            specs.append(figures.class_entropy(names, classes, per_class, summary_dims[-1]))
        return rows, specs

    def _class_entropy(self, lc: LayerCloud, predicted, classes, k: int, scale: float) -> dict[str, float]:
        opts: TopologyOptions = self.options
        owner = lc.cloud.owner[lc.kept]
        out = {}
        for c, name in enumerate(classes):
            rows = np.flatnonzero(np.asarray(predicted)[owner] == c)
            if len(rows) < 8:
                continue
            pts = lc.reduced[rows]
            pick = landmarks(pts, min(len(pts), max(20, opts.landmarks // 2)), opts.landmark_method, 0)
            dgm = rips(pts[pick], [k], n_threads=opts.n_threads, generators=False).finite(k) / scale
            out[name] = entropy(dgm)
        return out

    def _views(self, main: LayerCloud, predicted, labels, classes, seed, images, ids, tables, arrays) -> list[dict[str, Any]]:
        opts: TopologyOptions = self.options
        rows = np.arange(len(main.reduced))
        if len(rows) > VIEW_POINTS:
            rows = np.sort(np.random.default_rng(seed).choice(len(rows), VIEW_POINTS, replace=False))
        points = main.reduced[rows]
        # the first two principal components of the points themselves: ``reduced`` is no rotation when the layer
        # has no more than pca_dims values (then its first two columns are just two units of the layer)
        plane = fit_reduction(points, 2, seed)
        lens = plane.project(points) if points.shape[1] >= 2 else np.c_[points[:, 0], np.zeros(len(points))]
        owner = main.cloud.owner[main.kept[rows]]
        pred = np.asarray(predicted)[owner]
        label = np.array([-1 if labels[i] is None else labels[i] for i in owner])
        graph = mapper_graph(points, lens, intervals=opts.mapper_intervals, overlap=opts.mapper_overlap)
        views = node_views(graph, points, owner, images, predicted, classes, ids, shown=opts.mapper_nodes,
                           examples=opts.mapper_examples)
        tables["mapper nodes"] = views.rows
        specs = [
            figures.pca_scatter(lens, [classes[int(c)] for c in pred], plane, main.cloud.layer),
            *figures.mapper(graph, pred, label, classes, main.cloud.layer, labelled=views.shown),
        ]
        if views.shown:
            arrays["mapper nodes"] = views.tiles
            specs.append(figures.mapper_node_images("mapper nodes", views.titles, 1 + opts.mapper_examples,
                                                    main.cloud.layer, len(views.shown), opts.mapper_examples))
        return specs

    def _landscapes(self, model: ModelAdapter, images, predicted, labels, layer: str, seed: int) -> LandscapeStudy:
        """Activation landscapes per layer and class over the model and the plan's other networks (Wheeler et al.)."""
        opts: TopologyOptions = self.options
        if opts.layers is not None:
            layers = [resolve_layer(model, name) for name in opts.layers]
        else:
            import torch

            layers = [n for n, m in model.layers().items() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
            if len(layers) > 6:
                layers = [layers[int(round(i))] for i in np.linspace(0, len(layers) - 1, 6)]
            layers = layers or [layer]
        labelled = all(label is not None for label in labels)
        by = np.asarray(labels if labelled else predicted, dtype=np.int64)
        return landscape_study(
            model, images, layers, by, list(model.classes), "by label" if labelled else "by predicted class",
            opts.dims, networks=[Path(p) for p in opts.networks], checkpoints=[Path(p) for p in opts.checkpoints],
            pool=opts.pool, latent=opts.latent_landscapes, n_landmarks=opts.landmarks, method=opts.landmark_method,
            pca_dims=opts.pca_dims, points=opts.points, seed=seed, n_threads=opts.n_threads,
        )

    def _scalars(self, main: LayerCloud, dgms: Diagrams, sig, significant, collapsed) -> dict[str, float]:
        out: dict[str, float] = {"points in the cloud": float(len(main.reduced)), "landmarks": float(len(main.landmarks))}
        for k in dgms.dims:
            out[f"significant H{k}"] = float(sum(1 for f in significant if f["dim"] == k)) if sig is not None else float("nan")
        if collapsed is not None:
            out["collapse: persistence drop"] = float(collapsed[0].drop)
            out["collapse: images changed"] = float(len(collapsed[0].modified))
        return out


def _landscape_dim(dims: Sequence[int]) -> int:
    """Landscapes are drawn for loops (H1) when computed, else for the lowest dimension."""
    return 1 if 1 in dims else min(dims)


def _median_distance(points: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    d = pdist(points[:400]) if len(points) > 1 else np.ones(1)
    scale = float(np.median(d))
    return scale if scale > 0 else 1.0


def _isolated(feature: dict[str, Any]) -> bool:
    """A significant component carried by one or two images: an outlier, not a structure."""
    return feature["dim"] == 0 and len(feature["images"]) <= 2

"""error-slices: slices of the data where the model is worse, over image properties, metadata and its embedding.

    discoverers:
      - error-slices: {min_size: 20, min_gap: 0.05}

In the spirit of Deepchecks' weak-segment search and Domino. On the discovery split, every image gets its
brightness, contrast, saturation, colourfulness, sharpness, hue (``_common.MEANING``), the skin-tone estimate
(the ITA angle, ``xai_audit.api.skin_tone_angle``), its size, and each column of ``sample.groups``. The slices
tried:

* per property (and numeric metadata column), its ``bins`` quantile bins ("darker images: brightness below 0.31");
* per categorical metadata column, each of its values ("skin_tone = VI");
* with ``pairs``, every pair of properties, each cut in ``pair_bins`` quantile bins (Deepchecks' pairs): a cell
  is kept only if it is worse than both of its single-property bins by ``min_gap``;
* with ``embedding``, the model's penultimate layer (the input of its classifier head, one forward pass per image
  over at most ``max_images`` discovery images, and once over the held-back images when a cluster is confirmed):
  standardised, projected on its leading principal components and clustered by k-means, k from 2 to
  ``max_clusters`` by the best silhouette; each cluster is a slice, described by the properties and metadata values
  that tell it from the other images and by the classes it is predicted as (a reviewer reads words, not "cluster 3").

The metric is the model's accuracy with labels, and its confidence (the largest probability) without: a slice is
a candidate when the metric is lower inside it than outside (one-sided Fisher exact test for accuracy, one-sided
Mann-Whitney for confidence) after Holm's correction over every slice tried, by at least ``min_gap``, with at
least ``min_size`` images inside and outside, and at most ``max_share`` of them inside (a weak slice is a
minority: when most images are worse, it is the rest that is easy). Overlapping slices are one: the strongest is
kept. Each candidate is a *rule* (property ranges, a metadata value, or the nearest of the embedding's
centroids), confirmed by the host on the held-back images: is the model worse on the images the rule picks there?
A confirmed slice is a finding of kind ``bias`` (the model fails a segment of the data), and its recommended data
is more labelled images like the slice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field
from scipy import stats

from xai_audit.api import (
    DEFAULT_TARGET_WIDTH,
    Candidate,
    DiscovererPlugin,
    DiscoveryContext,
    HypothesisContext,
    ModelAdapter,
    Options,
    Sample,
    array_ref,
    head_layer,
    holm,
    penultimate_activations,
    recommendation,
    sample_chunks,
    samples_for_ci_width,
    skin_tone_angle,
    stack_images,
)
from xai_audit_discovery._common import MEANING, WORDS, seeded_subset, slug, unique_name

#: the image properties tried, in the order ties are broken
PROPERTIES = ("brightness", "contrast", "saturation", "colourfulness", "sharpness", "hue", "skin_tone", "size")
#: computed by ``_common.property_values`` from the pixels
_PIXEL = ("brightness", "contrast", "saturation", "colourfulness", "sharpness", "hue")
_MEANING = {**MEANING, "skin_tone": "individual typology angle (ITA) of the skin pixels, in degrees: an estimate "
                                    "from image colour, higher is lighter (xai_audit.api.skin_tone_angle)",
            "size": "the image's side in pixels (square root of height x width)"}
_WORDS = {**WORDS, "skin_tone": ("darker-skinned", "lighter-skinned"),
          "size": ("smaller", "larger")}
#: hue sectors (upper bound in degrees, name) of a CIELAB hue angle
_HUES = ((20, "magenta-red"), (70, "orange"), (105, "yellow"), (190, "green"), (250, "cyan"), (310, "blue"),
         (345, "purple"), (360, "magenta-red"))
#: two slices are one when this share of the smaller lies in the larger
_OVERLAP = 0.5
#: a cluster is described by a property whose AUC against the other images is this far from 0.5, and by a
#: metadata value or a class that holds this share of it
_DESCRIBES = 0.2
_MOSTLY = 0.5
#: principal components the embedding is clustered on
_COMPONENTS = 16
#: images shown in a candidate's member strip
_STRIP = 8
#: a metadata column with more distinct values than this, all numbers, is binned like a property
_CATEGORICAL = 12
_SALT = 23


class ErrorSlicesOptions(Options):
    bins: int = Field(4, ge=2, le=10, description="quantile bins per property (and numeric metadata column)")
    pairs: bool = Field(True, description="also try every pair of properties, each cut in pair_bins quantile bins")
    pair_bins: int = Field(3, ge=2, le=5, description="quantile bins of each property of a pair")
    metadata: bool = Field(True, description="also try each column of the samples' groups (sample.groups)")
    embedding: bool = Field(True, description="also cluster the model's penultimate layer (the input of its "
                                              "classifier head; skipped for a black box or a model without one)")
    max_clusters: int = Field(6, ge=2, le=12, description="k-means tries 2 to this many clusters (silhouette)")
    max_images: int = Field(1000, ge=20, description="the embedding is read for at most this many discovery "
                                                      "images (a seeded subset): one forward pass each")
    min_size: int = Field(20, ge=5, description="a slice needs this many discovery images inside and outside")
    max_share: float = Field(0.5, gt=0.0, lt=1.0, description="a slice holds at most this share of the images: a weak "
                                                              "slice is a minority (when most images are worse, it is "
                                                              "the rest that is easy)")
    min_gap: float = Field(0.05, gt=0.0, lt=1.0, description="smallest difference of the metric (accuracy, or "
                                                             "confidence without labels) between outside and inside")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="significance level, Holm-corrected over every slice "
                                                           "tried")
    max_candidates: int = Field(3, ge=1, le=20, description="propose at most this many slices")
    batch_size: int = Field(64, ge=1, description="images per forward pass when reading the embedding")


@dataclass
class _Slice:
    """One slice tried on the discovery split: its rule, its words, which images it holds."""

    rule: dict[str, Any]
    words: str
    cue: str
    mask: np.ndarray
    #: the images the comparison is made among (an embedding read on a subset compares within it)
    scope: np.ndarray
    #: single-property rules a pair cell must beat
    parts: list[np.ndarray] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    p: float = 1.0
    gap: float = 0.0
    inside: float = 0.0
    outside: float = 0.0


class ErrorSlicesDiscoverer(DiscovererPlugin):
    name = "error-slices"
    description = ("Slices of the data where the model is worse (accuracy, or confidence without labels): "
                   "quantile bins of image properties and their pairs, metadata values, clusters of the model's "
                   "penultimate layer; Holm over every slice tried; each confirmed on the held-back images by its "
                   "rule.")
    Options = ErrorSlicesOptions
    needs_gradients = False

    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        o = self.options
        samples = list(context.samples)
        n = len(samples)
        if n < 2 * o.min_size:
            return []
        probs = np.asarray(context.probs)
        labels = context.labels
        labelled = labels is not None
        value = (probs.argmax(axis=1) == labels).astype(float) if labelled else probs.max(axis=1).astype(float)
        everywhere = np.ones(n, bool)
        values = image_properties(samples, PROPERTIES)
        slices = [s for name in PROPERTIES for s in _binned(name, values[name], o.bins, everywhere)]
        if o.metadata:
            slices += _metadata_slices(samples, o.bins, everywhere)
        if o.pairs:
            slices += _pair_slices(values, o.pair_bins, everywhere)
        if o.embedding:
            slices += self._clusters(context, samples, values)
        tried = [s for s in slices if min(int((s.mask & s.scope).sum()), int((~s.mask & s.scope).sum())) >= o.min_size
                 and (s.mask & s.scope).sum() <= o.max_share * s.scope.sum()]
        for s in tried:
            s.p, s.gap, s.inside, s.outside = _worse(value[s.mask & s.scope], value[~s.mask & s.scope], labelled)
        adjusted = holm([s.p for s in tried]) if tried else []
        kept = []
        for s, p_adj in zip(tried, adjusted):
            if p_adj is None or p_adj >= o.alpha or s.gap < o.min_gap:
                continue
            if s.parts and s.gap < max(_gap(value, part, s.scope) for part in s.parts) + o.min_gap:
                continue  # a pair cell no worse than one of its own properties' bins says nothing new
            kept.append((float(p_adj), s))
        kept.sort(key=lambda k: (k[0], -round(k[1].gap, 3)))
        chosen: list[tuple[float, _Slice]] = []
        for p_adj, s in kept:
            if len(chosen) == o.max_candidates:
                break
            if any(_overlap(s.mask & s.scope, t.mask & t.scope) >= _OVERLAP for _, t in chosen):
                continue
            chosen.append((p_adj, s))
        taken: set[str] = set()
        return [self._candidate(context, samples, s, p_adj, len(tried), value, labelled, taken) for p_adj, s in chosen]

    def _clusters(self, context: DiscoveryContext, samples: Sequence[Sample],
                  values: Mapping[str, np.ndarray]) -> list[_Slice]:
        """The clusters of the model's embedding on (a seeded subset of) the discovery images, as slices."""
        o = self.options
        try:
            layer, _ = head_layer(context.model)
        except ValueError:  # a black box, or no linear head: no embedding to cluster
            return []
        subset = seeded_subset(len(samples), o.max_images, context.seed, _SALT)
        chosen = [samples[int(i)] for i in subset]
        embedding = embed(context.model, chosen, o.batch_size)
        mean, scale, components = _projection(embedding)
        points = (embedding - mean) / scale @ components.T
        k, labels, centroids = _kmeans(points, o.max_clusters, context.seed)
        if k < 2:
            return []
        scope = np.zeros(len(samples), bool)
        scope[subset] = True
        preds = np.asarray(context.preds)
        out = []
        for j in range(k):
            mask = np.zeros(len(samples), bool)
            mask[subset[labels == j]] = True
            words, described = _cluster_words(samples, values, mask, scope, preds, context.classes, layer, k)
            out.append(_Slice(
                rule={"op": "embedding-cluster", "layer": f"input of {layer}", "cluster": j, "clusters": k},
                words=words, cue="embedding", mask=mask, scope=scope,
                arrays={"embedding_mean": mean, "embedding_scale": scale, "embedding_components": components,
                        "embedding_centroids": centroids},
                evidence={"described_by": described, "embedded_images": int(len(subset))}))
        return out

    def _candidate(self, context: DiscoveryContext, samples: Sequence[Sample], s: _Slice, p_adj: float,
                   n_tests: int, value: np.ndarray, labelled: bool, taken: set[str]) -> Candidate:
        n_in, n_out = int((s.mask & s.scope).sum()), int((~s.mask & s.scope).sum())
        if labelled:
            numbers = (f"accuracy {100 * s.inside:.0f} % there against {100 * s.outside:.0f} % on the other "
                       f"discovery images ({n_in} and {n_out} images)")
        else:
            numbers = (f"the model's confidence (mean largest probability) {s.inside:.2f} there against "
                       f"{s.outside:.2f} on the other discovery images ({n_in} and {n_out} images; no labels)")
        evidence = {"slice": s.words, "metric": "accuracy" if labelled else "confidence", "inside": s.inside,
                    "outside": s.outside, "gap": s.gap, "p_value": s.p, "p_holm": p_adj, "slices_tried": n_tests,
                    "in_slice": n_in, "outside_slice": n_out, **s.evidence}
        figures, arrays = _strip(context, samples, s.mask & s.scope, value, labelled)
        return Candidate(name=unique_name(slug(s.words)[:60] or "slice", taken), description=f"{s.words}; {numbers}",
                         cue=s.cue, members=[x.id for x, m in zip(samples, s.mask & s.scope) if m],
                         intervention=s.rule, target_class=None, evidence=evidence, figures=figures,
                         arrays={**arrays, **s.arrays}, confirmation="slice")

    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        raise ValueError("an error slice has no intervention: it is confirmed by its rule (slice_members)")

    def augmentation(self, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        return None

    def slice_members(self, candidate: Candidate, context: HypothesisContext) -> np.ndarray:
        rule = candidate.intervention
        samples = list(context.samples)
        if rule.get("op") == "embedding-cluster":
            a = candidate.arrays
            points = (self._embedded(context.model, samples) - a["embedding_mean"]) \
                / a["embedding_scale"] @ a["embedding_components"].T
            nearest = ((points[:, None, :] - a["embedding_centroids"][None]) ** 2).sum(axis=2).argmin(axis=1)
            return nearest == int(rule["cluster"])
        if rule.get("op") == "slice":
            return rule_members(rule, samples)
        raise ValueError(f"unknown slice rule {rule.get('op')!r}; known: slice, embedding-cluster")

    def _embedded(self, model: ModelAdapter, samples: Sequence[Sample]) -> np.ndarray:
        """The held-back images' embedding, read once for every embedding slice of this discoverer."""
        key = (id(model), tuple(s.id for s in samples))
        kept = getattr(self, "_embedding", None)
        if kept is None or kept[0] != key:
            kept = self._embedding = (key, embed(model, samples, self.options.batch_size))
        return kept[1]

    def recommend(self, finding: Mapping[str, Any], candidate: Candidate) -> list[dict[str, Any]]:
        words = str(candidate.evidence.get("slice") or candidate.description)
        inside = candidate.evidence.get("inside")
        labelled = candidate.evidence.get("metric") == "accuracy"
        needed = samples_for_ci_width(float(inside) if labelled and inside is not None else 0.5,
                                      DEFAULT_TARGET_WIDTH)
        why = (f"Weak slice: {words}. Add labelled images like these, of every class, so the model learns them"
               + (" (its accuracy is lower there)" if labelled else
                  " (no labels: the model is less confident there; label such images to see whether it is wrong)")
               + f"; about {needed} in the slice pin its {'accuracy' if labelled else 'behaviour'} to "
                 f"{100 * DEFAULT_TARGET_WIDTH:.0f} points.")
        return [recommendation("add-data", kind=str(finding.get("kind", "bias")), group=f"slice: {words}",
                               count=needed, reason=why, finding=str(finding.get("source", "")))]


# --------------------------------------------------------------------------- properties and rules


def image_properties(samples: Sequence[Sample], names: Sequence[str], chunk: int = 256) -> dict[str, np.ndarray]:
    """Each property of ``names`` (see :data:`PROPERTIES`) for every sample: (N,) float64, NaN where the skin-tone
    estimate finds too few skin pixels."""
    from xai_audit_discovery._common import property_values

    out = {name: np.full(len(samples), np.nan) for name in names}
    for rows, images in sample_chunks(samples, chunk):
        for name in names:
            if name in _PIXEL:
                out[name][rows] = property_values(images, name)
            elif name == "size":
                out[name][rows] = float(np.sqrt(images.shape[2] * images.shape[3]))
    if "skin_tone" in names:
        out["skin_tone"] = np.array([np.nan if a is None else a for a, _ in map(skin_tone_angle, samples)], float)
    return out


def rule_members(rule: Mapping[str, Any], samples: Sequence[Sample]) -> np.ndarray:
    """Which ``samples`` a ``{"op": "slice", "where": [...]}`` rule picks: every condition holds (a property or a
    numeric group column in ``[lo, hi)``, either end open when None; a group column equal to ``value``)."""
    where = list(rule.get("where") or [])
    wanted = [c["property"] for c in where if "property" in c]
    unknown = [w for w in wanted if w not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown slice property {unknown[0]!r}; known: {', '.join(PROPERTIES)}")
    values = image_properties(samples, wanted) if wanted else {}
    mask = np.ones(len(samples), bool)
    for c in where:
        if "property" in c:
            x = values[c["property"]]
        elif "value" in c:
            mask &= np.array([str(s.groups.get(c["group"], "")) == str(c["value"]) for s in samples], bool)
            continue
        else:
            x = _numbers([s.groups.get(c["group"]) for s in samples])
        mask &= _in_range(x, c.get("lo"), c.get("hi"))
    return mask


def _in_range(x: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    inside = ~np.isnan(x)
    if lo is not None:
        inside &= x >= lo
    if hi is not None:
        inside &= x < hi
    return inside


def _numbers(raw: Sequence[Any]) -> np.ndarray:
    out = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def _edges(x: np.ndarray, bins: int) -> list[float]:
    """Inner quantile edges of ``x`` (NaN left out), distinct."""
    known = x[~np.isnan(x)]
    if len(known) < 2 or np.ptp(known) == 0:
        return []
    inner = np.quantile(known, np.arange(1, bins) / bins)
    return sorted({round(float(e), 6) for e in inner if known.min() < e <= known.max()})


def _ranges(x: np.ndarray, bins: int) -> list[tuple[float | None, float | None]]:
    edges = _edges(x, bins)
    if not edges:
        return []
    bounds = [None, *edges, None]
    return list(zip(bounds[:-1], bounds[1:]))


def _range_phrase(name: str, lo: float | None, hi: float | None) -> str:
    """A property range as a phrase: "darker (brightness below 0.31)", "of middling contrast (0.1 to 0.2)"."""
    if name == "hue":
        a = 0.0 if lo is None else lo
        b = 360.0 if hi is None else hi
        return f"leaning {_hue_name(a)} to {_hue_name(b)} in colour (hue {a:.0f} to {b:.0f} degrees)"
    shown = "ITA skin-tone estimate" if name == "skin_tone" else name
    low, high = _WORDS[name]
    if lo is None:
        return f"{low} ({shown} below {hi:.3g})"
    if hi is None:
        return f"{high} ({shown} {lo:.3g} or more)"
    return f"of middling {shown} ({lo:.3g} to {hi:.3g})"


def _range_words(name: str, lo: float | None, hi: float | None) -> str:
    """A property range as a slice in words: "darker images (brightness below 0.31)"."""
    phrase = _range_phrase(name, lo, hi)
    if name != "hue" and (lo is None or hi is None):
        adjective, rest = phrase.split(" (", 1)
        return f"{adjective} images ({rest}"
    return f"images {phrase}"


def _hue_name(angle: float) -> str:
    for bound, name in _HUES:
        if angle <= bound:
            return name
    return _HUES[-1][1]


def _binned(name: str, x: np.ndarray, bins: int, scope: np.ndarray) -> list[_Slice]:
    cue = "colour" if name in ("saturation", "colourfulness", "hue") else "property"
    return [_Slice(rule={"op": "slice", "where": [{"property": name, "lo": lo, "hi": hi}]},
                   words=_range_words(name, lo, hi), cue=cue, mask=_in_range(x, lo, hi), scope=scope,
                   evidence={"properties": {name: _MEANING[name]}})
            for lo, hi in _ranges(x, bins)]


def _metadata_slices(samples: Sequence[Sample], bins: int, scope: np.ndarray) -> list[_Slice]:
    out = []
    for column in sorted({key for s in samples for key in s.groups}):
        raw = [s.groups.get(column) for s in samples]
        numbers = _numbers(raw)
        distinct = sorted({str(v) for v in raw if v is not None})
        if len(distinct) > _CATEGORICAL and not np.isnan(numbers).any():
            for lo, hi in _ranges(numbers, bins):
                words = (f"images with {column} below {hi:.3g}" if lo is None else
                         f"images with {column} {lo:.3g} or more" if hi is None else
                         f"images with {column} {lo:.3g} to {hi:.3g}")
                out.append(_Slice(rule={"op": "slice", "where": [{"group": column, "lo": lo, "hi": hi}]},
                                  words=words, cue="metadata", mask=_in_range(numbers, lo, hi), scope=scope))
        elif 2 <= len(distinct) <= _CATEGORICAL:
            for v in distinct:
                out.append(_Slice(rule={"op": "slice", "where": [{"group": column, "value": v}]},
                                  words=f"images with {column} = {v}", cue="metadata",
                                  mask=np.array([str(r) == v for r in raw], bool), scope=scope))
    return out


def _pair_slices(values: Mapping[str, np.ndarray], bins: int, scope: np.ndarray) -> list[_Slice]:
    names = [n for n in PROPERTIES if _ranges(values[n], bins)]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for lo_a, hi_a in _ranges(values[a], bins):
                in_a = _in_range(values[a], lo_a, hi_a)
                for lo_b, hi_b in _ranges(values[b], bins):
                    in_b = _in_range(values[b], lo_b, hi_b)
                    out.append(_Slice(
                        rule={"op": "slice", "where": [{"property": a, "lo": lo_a, "hi": hi_a},
                                                       {"property": b, "lo": lo_b, "hi": hi_b}]},
                        words=f"{_range_words(a, lo_a, hi_a)} that are also {_range_phrase(b, lo_b, hi_b)}",
                        cue="property", mask=in_a & in_b, scope=scope, parts=[in_a, in_b],
                        evidence={"properties": {a: _MEANING[a], b: _MEANING[b]}}))
    return out


# --------------------------------------------------------------------------- the test


def _worse(inside: np.ndarray, outside: np.ndarray, labelled: bool) -> tuple[float, float, float, float]:
    """(one-sided p that the metric is lower inside, outside - inside, mean inside, mean outside)."""
    a, b = float(inside.mean()), float(outside.mean())
    if labelled:
        k_in, k_out = int(inside.sum()), int(outside.sum())
        table = [[k_in, len(inside) - k_in], [k_out, len(outside) - k_out]]
        p = float(stats.fisher_exact(table, alternative="less").pvalue)
    elif np.ptp(np.concatenate([inside, outside])) > 0:
        p = float(stats.mannwhitneyu(inside, outside, alternative="less").pvalue)
    else:
        p = 1.0
    return p, b - a, a, b


def _gap(value: np.ndarray, mask: np.ndarray, scope: np.ndarray) -> float:
    inside, outside = value[mask & scope], value[~mask & scope]
    if not len(inside) or not len(outside):
        return 0.0
    return float(outside.mean() - inside.mean())


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    smaller = min(int(a.sum()), int(b.sum()))
    return int((a & b).sum()) / smaller if smaller else 0.0


# --------------------------------------------------------------------------- the embedding


def embed(model: ModelAdapter, samples: Sequence[Sample], batch_size: int, chunk: int = 256) -> np.ndarray:
    """The model's penultimate layer (the input of its classifier head) for ``samples``: (N, D) float64."""
    parts = [penultimate_activations(model, images, batch_size=batch_size)
             for _, images in sample_chunks(samples, chunk)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))


def _projection(embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, components): the embedding standardised per unit (a constant unit keeps scale 1) and its
    leading principal components (rows)."""
    mean = embedding.mean(axis=0)
    scale = embedding.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (embedding - mean) / scale
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    components = vt[:min(_COMPONENTS, len(vt))]
    # the sign of a component is arbitrary: fix it so the same embedding always gives the same rule
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return mean, scale, components * signs[:, None]


def _kmeans(points: np.ndarray, max_clusters: int, seed: int) -> tuple[int, np.ndarray, np.ndarray]:
    """k-means for k = 2 .. max_clusters, the k of the best silhouette: (k, labels, centroids). Plain numpy (Lloyd
    from k-means++ seeds, the best of a few), seeded: no thread pool to wait on, the same answer every time."""
    rng = np.random.default_rng([seed, _SALT])
    check = np.sort(rng.choice(len(points), size=min(1000, len(points)), replace=False))
    distances = np.sqrt(np.maximum(_square_distances(points[check], points[check]), 0.0))
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    for k in range(2, min(max_clusters, len(points) - 1) + 1):
        labels, centroids = _lloyd(points, k, rng)
        if len(np.unique(labels)) < 2:
            continue
        score = _silhouette(distances, labels[check])
        if best is None or score > best[0] + 1e-9:
            best = (score, k, labels, centroids)
    if best is None:
        return 0, np.zeros(len(points), int), np.zeros((0, points.shape[1]))
    return best[1], best[2], best[3]


def _square_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a ** 2).sum(axis=1)[:, None] + (b ** 2).sum(axis=1)[None, :] - 2.0 * a @ b.T


def _lloyd(points: np.ndarray, k: int, rng: np.random.Generator, starts: int = 4,
           steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The best (least inertia) of ``starts`` runs of Lloyd's algorithm from k-means++ seeds."""
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(starts):
        centroids = points[[int(rng.integers(len(points)))]]
        for _ in range(1, k):  # k-means++: the next seed drawn in proportion to its squared distance
            d2 = np.maximum(_square_distances(points, centroids).min(axis=1), 0.0)
            total = float(d2.sum())
            pick = int(rng.choice(len(points), p=d2 / total)) if total > 0 else int(rng.integers(len(points)))
            centroids = np.vstack([centroids, points[pick]])
        labels = np.full(len(points), -1)
        for _ in range(steps):
            new = _square_distances(points, centroids).argmin(axis=1)
            if (new == labels).all():
                break
            labels = new
            centroids = np.stack([points[labels == j].mean(axis=0) if (labels == j).any() else centroids[j]
                                  for j in range(k)])
        inertia = float(np.maximum(_square_distances(points, centroids).min(axis=1), 0.0).sum())
        if best is None or inertia < best[0] - 1e-9:
            best = (inertia, labels.copy(), centroids.copy())
    return best[1], best[2]


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """The mean silhouette of points whose pairwise ``distances`` are given (a point alone in its cluster: 0)."""
    present = np.unique(labels)
    if len(present) < 2:
        return -1.0
    mean_to = np.stack([distances[:, labels == j].mean(axis=1) for j in present], axis=1)
    own = np.searchsorted(present, labels)
    sizes = np.array([(labels == j).sum() for j in present])[own]
    a = np.where(sizes > 1, mean_to[np.arange(len(labels)), own] * sizes / np.maximum(sizes - 1, 1), 0.0)
    mean_to[np.arange(len(labels)), own] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(sizes > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _cluster_words(samples: Sequence[Sample], values: Mapping[str, np.ndarray], mask: np.ndarray, scope: np.ndarray,
                   preds: np.ndarray, classes: Sequence[str], layer: str, k: int) -> tuple[str, list[str]]:
    """A cluster in words: the properties and metadata values that tell it from the other embedded images, and
    the class it is mostly predicted as."""
    inside, outside = mask & scope, ~mask & scope
    said: list[tuple[float, str, str]] = []
    for name in PROPERTIES:
        x = values[name]
        a, b = x[inside & ~np.isnan(x)], x[outside & ~np.isnan(x)]
        if len(a) < 2 or len(b) < 2 or np.ptp(np.concatenate([a, b])) == 0:
            continue
        auc = float(stats.mannwhitneyu(a, b).statistic) / (len(a) * len(b))
        if abs(auc - 0.5) >= _DESCRIBES:
            word = ("leaning " + _hue_name(float(np.median(a)))) if name == "hue" else _WORDS[name][int(auc > 0.5)]
            said.append((abs(auc - 0.5), name, f"{word} ({name} {np.median(a):.3g} against {np.median(b):.3g})"))
    for column in sorted({key for s in samples for key in s.groups}):
        raw = np.array([str(s.groups.get(column, "")) for s in samples])
        for v in sorted(set(raw[inside])):
            share_in, share_out = float((raw[inside] == v).mean()), float((raw[outside] == v).mean())
            if share_in >= _MOSTLY and share_in - share_out >= _DESCRIBES:
                said.append((share_in - share_out, f"{column}={v}",
                             f"mostly {column} = {v} ({100 * share_in:.0f} % against {100 * share_out:.0f} %)"))
    said.sort(key=lambda t: -t[0])
    parts = [t[2] for t in said[:2]]
    top = np.bincount(preds[inside], minlength=len(classes))
    share = float(top.max() / max(1, inside.sum()))
    predicted = f"mostly predicted '{classes[int(top.argmax())]}' ({100 * share:.0f} %)" if share >= _MOSTLY else ""
    where = f"images the model's embedding groups together (one of {k} clusters of the input of '{layer}')"
    if parts:
        text = f"{where} that are " + " and ".join(parts) + (f", {predicted}" if predicted else "")
    else:
        text = f"{where} that no measured property tells apart" + (f", {predicted}" if predicted else "")
    return text, [t[1] for t in said[:2]]


# --------------------------------------------------------------------------- the member strip


def _strip(context: DiscoveryContext, samples: Sequence[Sample], mask: np.ndarray, value: np.ndarray,
           labelled: bool) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """An ``images`` figure of a few of the slice's images, its worst first (wrong, or least confident)."""
    members = np.flatnonzero(mask)
    shown = members[np.argsort(value[members], kind="stable")][:_STRIP]
    if not len(shown):
        return [], {}
    probs, classes = np.asarray(context.probs), list(context.classes)
    preds = probs.argmax(axis=1)
    labels = context.labels
    if labelled:
        titles = [f"'{classes[int(labels[i])]}' as '{classes[int(preds[i])]}'" for i in shown]
    else:
        titles = [f"'{classes[int(preds[i])]}' {probs[i].max():.2f}" for i in shown]
    figure = {
        "kind": "images", "images": array_ref("members"), "titles": titles, "columns": min(_STRIP, len(shown)),
        "title": "Images of the slice (discovery half)",
        "caption": ("Images in the slice, the ones the model gets wrong first: label, then prediction." if labelled
                    else "Images in the slice, the ones the model is least confident on first: prediction and its "
                         "probability (no labels)."),
        "alt": f"{len(shown)} images of the slice",
    }
    return [figure], {"members": stack_images([samples[int(i)] for i in shown])}

"""data-checks: label errors, duplicates, leakage, drift and outliers in the audited data.

    hypotheses:
      - data-checks:
          reference: {loader: image-folder, path: data/train}   # optional: e.g. the training data
          reference_sample: 2000

* Likely label errors, by confident learning (Northcutt, Jiang & Chuang 2021) on the model's probabilities for
  the audited images: per class the threshold is the mean probability of that class over the images labelled
  with it; an image labelled i whose probability of another class j reaches j's threshold (the largest such j)
  sits off the diagonal of the confident joint and is listed, least confident in its label first. The rule is
  implemented here in a few lines: cleanlab needs packages this host does not install (termcolor). The
  probabilities should come from a model that did not train on these images, or the errors are under-counted.
* Exact duplicates (the same pixels at 8 bits) and near duplicates (a 64-bit DCT perceptual hash within
  ``near_duplicate_bits`` bits, confirmed by a mean absolute difference of 32x32 grey thumbnails of at most
  ``near_duplicate_difference``), within the audited images and, with a ``reference``, between the reference
  and the audited images: an audited image found in the reference is leakage (its accuracy is not a test).
* Image-property drift against the reference (brightness, contrast, saturation, sharpness): a two-sample
  Kolmogorov-Smirnov test per property with a bootstrap interval of the KS distance, each a further test in the
  audit's Holm correction; property outliers among the audited images by a robust z-score (median and MAD).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from pydantic import Field, field_validator
from scipy import fft, stats

from xai_audit.api import (
    ALPHA,
    DEFAULT_TARGET_WIDTH,
    DataError,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    Options,
    chi2_independence,
    layer_activations,
    recommendation,
    samples_for_ci_width,
    sample_chunks,
)
from xai_audit_robustness._common import seeded_subset, wilson

PROPERTIES = ("brightness", "contrast", "saturation", "sharpness")
LUMA = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
THUMB = 32
#: candidate pairs (hash within the threshold) checked at most, so near-identical data sets stay cheap
MAX_CANDIDATES = 200_000


class DataChecksOptions(Options):
    reference: dict[str, Any] | None = Field(
        None, description="a reference data set (e.g. the training data), as the plan's dataset entry (loader: ...)"
    )
    reference_sample: int | None = Field(2000, ge=1, description="use at most this many reference images")
    label_errors: bool = Field(True, description="look for likely label errors (needs labels)")
    max_listed: int = Field(50, ge=1, description="list at most this many label errors, duplicates and outliers")
    near_duplicate_bits: int = Field(4, ge=0, le=32, description="perceptual-hash distance (of 64 bits) of a near duplicate")
    near_duplicate_difference: float = Field(
        0.03, ge=0, le=1, description="largest mean absolute difference of 32x32 grey thumbnails of a near duplicate"
    )
    outlier_z: float = Field(5.0, gt=0, description="robust z-score beyond which an image property is an outlier")
    min_drift: float = Field(0.1, ge=0, le=1, description="smallest KS distance worth reporting as drift")
    n_boot: int = Field(1000, ge=100, le=20000, description="bootstrap resamples of each drift interval")
    embedding_sample: int = Field(
        400, ge=20, le=5000,
        description="images of each side (a seeded subset) in the embedding drift test (MMD between the model's "
        "pooled default-layer activations, or its probabilities for a black box)",
    )
    n_permutations: int = Field(999, ge=99, le=20000, description="permutations of the embedding drift test")
    min_mmd: float = Field(0.0, ge=0, description="smallest MMD^2 worth reporting as embedding drift")
    min_imbalance: float = Field(
        0.1, ge=0, le=1, description="smallest total-variation distance between the reference's and the audited "
        "data's class or group mix worth reporting"
    )
    min_association: float = Field(
        0.3, ge=0, le=1, description="smallest rank-biserial correlation between an image property and one class "
        "(against the others) worth reporting as a cue the data tie to that class"
    )
    rare_share: float = Field(
        0.5, gt=0, le=1, description="a class or group is rare in the reference when its share is below this "
        "fraction of an even share (1 / number of values)"
    )

    @field_validator("reference")
    @classmethod
    def _has_loader(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("loader"), str):
            raise ValueError("needs 'loader': the data set plugin to read it with")
        return value


# --------------------------------------------------------------------------- features of images


def features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: perceptual hash (uint64), exact-content digest, grey thumbnail (32x32) and properties."""
    import torch

    images = np.asarray(images, np.float32)
    grey = (images * LUMA).sum(axis=1)  # (n, H, W)
    thumb = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(grey[:, None]), THUMB)[:, 0].numpy()
    dct = fft.dctn(thumb.astype(np.float64), axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(images), 64)
    bits = dct > np.median(dct, axis=1, keepdims=True)
    phash = np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)
    quantised = np.clip(np.round(images * 255), 0, 255).astype(np.uint8)
    digest = np.array([hashlib.sha1(q.tobytes() + str(q.shape).encode()).hexdigest() for q in quantised])
    mx, mn = images.max(axis=1), images.min(axis=1)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-8), 0.0).mean(axis=(1, 2))
    if grey.shape[1] >= 3 and grey.shape[2] >= 3:
        lap = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:]
               - 4 * grey[:, 1:-1, 1:-1])
        sharpness = lap.reshape(len(images), -1).var(axis=1)
    else:
        sharpness = np.zeros(len(images))
    return {
        "phash": phash, "digest": digest, "thumb": thumb.astype(np.float32),
        "brightness": grey.mean(axis=(1, 2)), "contrast": grey.reshape(len(images), -1).std(axis=1),
        "saturation": saturation, "sharpness": sharpness,
        "size": np.array([f"{images.shape[2]}x{images.shape[3]}"] * len(images)),
    }


def _gather(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _pairs(a: dict[str, np.ndarray], b: dict[str, np.ndarray] | None, bits: int, difference: float
           ) -> list[tuple[int, int, str, int, float]]:
    """(i, j, exact|near, hash distance, thumbnail difference) of duplicate pairs: within ``a`` (i < j) when ``b``
    is None, else between ``a`` and ``b``."""
    other = a if b is None else b
    out: list[tuple[int, int, str, int, float]] = []
    # exact: the same digest
    where: dict[str, list[int]] = {}
    for j, d in enumerate(other["digest"]):
        where.setdefault(str(d), []).append(j)
    exact = set()
    for i, d in enumerate(a["digest"]):
        for j in where.get(str(d), []):
            if b is None and j <= i:
                continue
            exact.add((i, j))
            out.append((i, j, "exact", 0, 0.0))
    # near: hash within ``bits``, thumbnails close
    candidates = 0
    for start in range(0, len(a["phash"]), 512):
        rows = a["phash"][start : start + 512]
        dist = np.bitwise_count(rows[:, None] ^ other["phash"][None, :])
        ii, jj = np.nonzero(dist <= bits)
        ii = ii + start
        if b is None:
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
        candidates += len(ii)
        if candidates > MAX_CANDIDATES:
            raise DataError(f"data-checks: more than {MAX_CANDIDATES} image pairs have near-identical perceptual "
                            "hashes; lower near_duplicate_bits")
        for i, j in zip(ii.tolist(), jj.tolist()):
            if (i, j) in exact:
                continue
            diff = float(np.abs(a["thumb"][i] - other["thumb"][j]).mean())
            if diff <= difference:
                out.append((i, j, "near", int(dist[i - start, j]), diff))
    return out


# --------------------------------------------------------------------------- confident learning


def confident_joint_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images off the diagonal of the confident joint: (indices ranked least confident in their label first,
    the suggested class of each, the confident joint (C, C) with rows = given label, columns = suggested)."""
    n, k = probs.shape
    thresholds = np.array([probs[labels == j, j].mean() if np.any(labels == j) else np.inf for j in range(k)])
    above = probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, probs, -np.inf)
    suggested = masked.argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((k, k), np.int64)
    np.add.at(joint, (labels[confident], suggested[confident]), 1)
    flagged = np.flatnonzero(confident & (suggested != labels))
    order = flagged[np.argsort(probs[flagged, labels[flagged]], kind="stable")]
    return order, suggested[order], joint


# --------------------------------------------------------------------------- the hypothesis


class DataChecksHypothesis(HypothesisPlugin):
    name = "data-checks"
    description = (
        "Likely label errors (confident learning), exact and near duplicates, leakage into a reference set, "
        "image-property drift against it, and property outliers."
    )
    Options = DataChecksOptions

    def recommend(self, finding, result):
        """Label errors: check each listed label. Drift: images like the audited ones for training.
        Duplicates and leakage: no manifest action fits (remove them from one of the sets)."""
        if finding is None:
            return []
        test = finding.get("test")
        breakdown = result.get("breakdown") or {}
        if test == "label errors":
            return [recommendation(
                "relabel-or-add", kind="label error", sample_id=str(row["id"]), count=1,
                reason=(f"Likely label error (confident learning): labelled '{row['given label']}', the model gives "
                        f"'{row['suggested label']}' {100 * float(row['suggested probability']):.0f} % and its label "
                        f"{100 * float(row['given label probability']):.0f} %. Check the label; if it is right, add "
                        "similar images."),
                finding=finding.get("source", ""),
            ) for row in breakdown.get("label errors", [])]
        if finding.get("kind") == "shift" and str(test).startswith("drift: "):
            prop = str(test)[len("drift: "):]
            return [recommendation(
                "add-data", kind="shift", group=f"audited data ({prop})", count=samples_for_ci_width(0.5, DEFAULT_TARGET_WIDTH),
                reason=(f"Data drift: {finding.get('title')} Add labelled images like the audited ones (their "
                        f"{prop}) to the fine-tuning data."),
                finding=finding.get("source", ""),
            )]
        return []

    def test(self, context: HypothesisContext) -> HypothesisResult:
        o: DataChecksOptions = self.options
        n = len(context.samples)
        if n == 0:
            raise DataError("data-checks: no samples")
        ids = [s.id for s in context.samples]
        audit = _gather([features(images) for _, images in context.batches(256)])
        breakdown: dict[str, list[dict[str, Any]]] = {}
        tests: list[dict[str, Any]] = []
        warnings: list[str] = []
        details: dict[str, Any] = {}

        # duplicates within the audited images: the hypothesis's own result
        pairs = _pairs(audit, None, o.near_duplicate_bits, o.near_duplicate_difference)
        redundant = _redundant(n, pairs)
        breakdown["duplicates"] = [
            {"id": ids[i], "duplicate of": ids[j], "kind": kind, "hash distance": d, "thumbnail difference": diff}
            for i, j, kind, d, diff in pairs[: o.max_listed]
        ]
        details.update({
            "n_duplicate_pairs": len(pairs), "n_exact_duplicate_pairs": sum(p[2] == "exact" for p in pairs),
            "n_near_duplicate_pairs": sum(p[2] == "near" for p in pairs), "n_redundant": redundant,
            "duplicate_share": redundant / n,
        })

        # label errors
        labels = context.labels
        if o.label_errors and labels is not None:
            tests.append(self._label_errors(context, labels, ids, breakdown, details))
            accuracy = float(np.mean(np.asarray(context.probs).argmax(axis=1) == labels))
            if details["label_error_share"] > 0.2:
                warnings.append(
                    f"{100 * details['label_error_share']:.0f} % of the images are flagged as likely label errors: "
                    f"confident learning trusts the model, and with an accuracy of {100 * accuracy:.0f} % the list "
                    "is mostly the model's own errors"
                )
        elif o.label_errors:
            warnings.append("no labels: label errors were not looked for")

        # the reference: leakage, drift, outliers against it
        reference = None
        if o.reference is not None:
            reference, ref_samples, ref_name = self._reference(context)
            ref_ids = [s.id for s in ref_samples]
            leaks = _pairs(audit, reference, o.near_duplicate_bits, o.near_duplicate_difference)
            tests.append(_leakage(leaks, ids, ref_ids, ref_name, n, o, breakdown, details))
            tests += _drift(audit, reference, ref_name, o, context.seed, breakdown, details)
            tests.append(_embedding_drift(context, ref_samples, ref_name, o, breakdown, details, warnings))
            tests += _imbalance(context.samples, ref_samples, list(context.classes), ref_name, o, context.seed,
                                breakdown, details, warnings)
            ref_labels = np.array([-1 if s.label is None else int(s.label) for s in ref_samples])
            if np.all(ref_labels >= 0):
                tests += _association(reference, ref_labels, list(context.classes), f"the reference ({ref_name})",
                                      o, context.seed, breakdown, details)
            if set(audit["size"].tolist()) != set(reference["size"].tolist()):
                warnings.append(f"the audited images ({', '.join(sorted(set(audit['size'].tolist())))} px) and the "
                                f"reference ({', '.join(sorted(set(reference['size'].tolist())))} px) differ in size: "
                                "sharpness depends on it")
        elif labels is not None:
            tests += _association(audit, labels, list(context.classes), "the audited data", o, context.seed,
                                  breakdown, details)
        outliers = _outliers(audit, ids, o)
        breakdown["outliers"] = outliers[: o.max_listed]
        details["n_outliers"] = len({r["id"] for r in outliers})
        details["outlier_ids"] = list(dict.fromkeys(r["id"] for r in outliers))[: o.max_listed]
        breakdown["image properties"] = breakdown.get("image properties") or [
            {"property": p, "audited mean": float(audit[p].mean()), "audited sd": float(audit[p].std())}
            for p in PROPERTIES
        ]
        ci = wilson(redundant, n)
        summary = [{"check": "duplicates within the audited data", "result": f"{redundant} of {n} images repeat another",
                    "effect": redundant / n, "95 % CI": ci, "p (unadjusted)": None}]
        summary += [{"check": t["name"], "result": t["claim"], "effect": t["effect"], "95 % CI": t["ci"],
                     "p (unadjusted)": t["p_value"]} for t in tests]
        summary.append({"check": "outliers", "result": f"{details['n_outliers']} audited images beyond "
                        f"{o.outlier_z:g} robust z-scores in some property", "effect": details["n_outliers"] / n,
                        "95 % CI": wilson(details["n_outliers"], n), "p (unadjusted)": None})
        breakdown = {"summary": summary, **breakdown}
        return HypothesisResult(
            claim=f"The audited data contain duplicate images ({redundant} of {n} repeat another image).",
            metric="share of audited images that repeat another (exact or near duplicate)",
            before=0.0, after=redundant / n, effect=redundant / n, ci=tuple(ci) if ci else None, p_value=None,
            verdict="supported" if redundant > 0 else "not supported", n=n,
            test=(f"exact: equal 8-bit pixels; near: 64-bit DCT perceptual hash within {o.near_duplicate_bits} bits "
                  f"and 32x32 grey thumbnails within {o.near_duplicate_difference} mean absolute difference; "
                  "95 % Wilson interval (a count, not a test)"),
            breakdown=breakdown, examples=[r["id"] for r in breakdown["duplicates"][:8]], details=details,
            figures=_figures(audit, reference), kind="", tests=tests, warnings=warnings, key_tables=["summary"],
        )

    def _label_errors(self, context, labels, ids, breakdown, details) -> dict[str, Any]:
        o: DataChecksOptions = self.options
        probs = np.asarray(context.probs, float)
        order, suggested, joint = confident_joint_issues(labels, probs)
        classes = list(context.classes)
        n = len(labels)
        breakdown["label errors"] = [
            {"id": ids[i], "given label": classes[labels[i]], "suggested label": classes[s],
             "given label probability": float(probs[i, labels[i]]), "suggested probability": float(probs[i, s])}
            for i, s in zip(order[: o.max_listed].tolist(), suggested[: o.max_listed].tolist())
        ]
        breakdown["confident joint"] = [{"given label": classes[i], **{c: int(joint[i, j]) for j, c in enumerate(classes)}}
                                        for i in range(len(classes))]
        k = len(order)
        details.update({
            "n_label_errors": k, "label_error_share": k / n, "label_error_ids": [ids[i] for i in order[: o.max_listed]],
            "label_error_method": ("confident learning, off-diagonal of the confident joint (Northcutt et al. 2021), "
                                   "implemented here: cleanlab needs termcolor, which this host does not install"),
        })
        return {
            "name": "label errors", "kind": "", "explains": "",
            "claim": f"{k} of the {n} audited images are likely mislabelled (confident learning).",
            "metric": "share of audited images with a likely label error",
            "before": 0.0, "after": k / n, "effect": k / n, "ci": wilson(k, n), "p_value": None,
            "verdict": "supported" if k > 0 else "not supported", "n": n,
            "test": ("confident learning: per-class thresholds = mean probability of the class over the images "
                     "labelled with it; an image above another class's threshold is listed; 95 % Wilson interval "
                     "(a count, not a test)"),
            "details": {"ids": [ids[i] for i in order[: o.max_listed]]},
        }

    def _reference(self, context) -> tuple[dict[str, np.ndarray], list[Any], str]:
        o: DataChecksOptions = self.options
        if context.load_dataset is None:
            raise DataError("data-checks: this host cannot load a reference data set")
        other = context.load_dataset(dict(o.reference))
        name = str(o.reference.get("path") or o.reference["loader"])
        if o.reference.get("split"):
            name += f" ({o.reference['split']} split)"
        index = seeded_subset(len(other), o.reference_sample, context.seed)
        if not len(index):
            raise DataError(f"data-checks: the reference data set {name!r} has no samples")
        samples = [other[int(i)] for i in index]
        parts = [features(images) for _, images in sample_chunks(samples, 256)]
        return _gather(parts), samples, name


def _redundant(n: int, pairs: list[tuple]) -> int:
    """Images that repeat another: images in duplicate groups minus one per group (union-find)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        parent[find(i)] = find(j)
    members = {}
    for i in {x for p in pairs for x in p[:2]}:
        members.setdefault(find(i), []).append(i)
    return sum(len(m) - 1 for m in members.values())


def _leakage(leaks, ids, ref_ids, ref_name, n, o, breakdown, details) -> dict[str, Any]:
    leaked = sorted({i for i, *_ in leaks})
    breakdown["leakage"] = [
        {"id": ids[i], "reference id": ref_ids[j], "kind": kind, "hash distance": d, "thumbnail difference": diff}
        for i, j, kind, d, diff in leaks[: o.max_listed]
    ]
    details.update({"reference": ref_name, "n_reference": len(ref_ids), "n_leaked": len(leaked),
                    "leakage_share": len(leaked) / n, "leaked_ids": [ids[i] for i in leaked[: o.max_listed]]})
    return {
        "name": "leakage", "kind": "", "explains": "",
        "claim": f"{len(leaked)} of the {n} audited images also appear in the reference data ({ref_name}).",
        "metric": "share of audited images found in the reference (exact or near duplicate)",
        "before": 0.0, "after": len(leaked) / n, "effect": len(leaked) / n, "ci": wilson(len(leaked), n),
        "p_value": None, "verdict": "supported" if leaked else "not supported", "n": n,
        "test": "exact and near duplicates between the reference and the audited images; 95 % Wilson interval "
                "(a count, not a test)",
        "details": {"reference": ref_name, "n_reference": len(ref_ids), "ids": [ids[i] for i in leaked[: o.max_listed]]},
    }


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                               - np.searchsorted(b, grid, side="right") / len(b))))


def _drift(audit, reference, ref_name, o: DataChecksOptions, seed: int, breakdown, details) -> list[dict[str, Any]]:
    tests, rows, summary = [], [], {}
    rng = np.random.default_rng(seed)
    for prop in PROPERTIES:
        a, r = np.asarray(audit[prop], float), np.asarray(reference[prop], float)
        result = stats.ks_2samp(a, r)
        d, p = float(result.statistic), float(result.pvalue)
        boots = np.array([_ks_distance(a[rng.integers(0, len(a), len(a))], r[rng.integers(0, len(r), len(r))])
                          for _ in range(o.n_boot)])
        # basic bootstrap: the KS distance of resamples is biased upward, the pivot corrects it
        lo, hi = max(0.0, 2 * d - float(np.percentile(boots, 97.5))), min(1.0, 2 * d - float(np.percentile(boots, 2.5)))
        lo, hi = min(lo, d), max(hi, d)
        supported = p < ALPHA and lo > o.min_drift
        direction = "higher" if np.median(a) > np.median(r) else "lower"
        rows.append({"property": prop, "audited mean": float(a.mean()), "audited sd": float(a.std()),
                     "reference mean": float(r.mean()), "reference sd": float(r.std()), "KS distance": d,
                     "ci": [lo, hi], "p (unadjusted)": p})
        summary[prop] = {"ks": d, "ci": [lo, hi], "p_value": p}
        tests.append({
            "name": f"drift: {prop}", "kind": "shift", "explains": "",
            "claim": f"The audited images' {prop} is distributed differently from the reference's ({direction}).",
            "metric": f"Kolmogorov-Smirnov distance of {prop}",
            "before": float(np.median(r)), "after": float(np.median(a)), "effect": d, "ci": [lo, hi], "p_value": p,
            "verdict": "supported" if supported else "not supported", "n": int(len(a) + len(r)),
            "test": "two-sample Kolmogorov-Smirnov test; 95 % basic bootstrap interval of the distance, each data set "
                    "resampled alone",
            "details": {"property": prop, "reference": ref_name, "audited_mean": float(a.mean()),
                        "reference_mean": float(r.mean()), "min_drift": o.min_drift},
        })
    breakdown["image properties"] = rows
    details["drift"] = summary
    details["max_drift"] = max(v["ks"] for v in summary.values())
    return tests


def _embeddings(context, samples, index: np.ndarray) -> tuple[np.ndarray, str]:
    """The model's default-layer activations, averaged over space, of ``samples[index]`` (or its probabilities for
    a model without layers), and what they are."""
    chosen = [samples[int(i)] for i in index]
    layers = {}
    try:
        layers = context.model.layers() or {}
    except Exception:  # an adapter without layers() support is a black box here
        layers = {}
    name = getattr(context.model, "default_layer", None)
    out = []
    for _, images in sample_chunks(chosen, 128):
        if name and name in layers:
            maps = layer_activations(context.model, images, name)
            out.append(maps.reshape(len(maps), maps.shape[1], -1).mean(axis=2))
        else:
            out.append(np.asarray(context.predict(images), np.float32))
    what = f"the model's layer {name} (channel means)" if name and name in layers else "the model's probabilities"
    return np.concatenate(out).astype(np.float64), what


def mmd_test(a: np.ndarray, b: np.ndarray, *, seed: int, permutations: int, n_boot: int
             ) -> tuple[float, float, list[float], float]:
    """Unbiased MMD^2 between samples ``a`` and ``b`` (Gaussian kernel, bandwidth the median distance of the pooled
    standardised points), the permutation p-value, a basic bootstrap interval (each side resampled alone), and
    the bandwidth."""
    pooled = np.concatenate([a, b])
    mu, sd = pooled.mean(axis=0), pooled.std(axis=0)
    keep = sd > 1e-12
    z = (pooled[:, keep] - mu[keep]) / sd[keep] if keep.any() else np.zeros((len(pooled), 1))
    sq = np.sum(z**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(off)) if np.median(off) > 0 else 1.0
    k = np.exp(-d2 / bandwidth2)
    na = len(a)

    def stat(ia: np.ndarray, ib: np.ndarray) -> float:
        kaa, kbb, kab = k[np.ix_(ia, ia)], k[np.ix_(ib, ib)], k[np.ix_(ia, ib)]
        m, n = len(ia), len(ib)
        return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                     - 2 * kab.mean())

    all_a, all_b = np.arange(na), np.arange(na, len(z))
    observed = stat(all_a, all_b)
    rng = np.random.default_rng(seed)
    total, m, n = len(z), na, len(z) - na
    k0 = k - np.diag(np.diag(k))  # the unbiased statistic leaves out each point's pair with itself
    exceed = 0
    for start in range(0, permutations, 200):
        rows = min(200, permutations - start)
        member = np.zeros((rows, total))
        member[np.arange(rows)[:, None], np.argsort(rng.random((rows, total)), axis=1)[:, :m]] = 1.0
        kv = member @ k0  # (rows, total)
        s_aa = np.sum(kv * member, axis=1)
        s_ab = np.sum(kv * (1 - member), axis=1)
        s_bb = k0.sum() - s_aa - 2 * s_ab
        null = s_aa / (m * (m - 1)) + s_bb / (n * (n - 1)) - 2 * s_ab / (m * n)
        exceed += int(np.sum(null >= observed - 1e-12))
    p = (exceed + 1) / (permutations + 1)
    boots = []
    for _ in range(n_boot):
        ia = rng.choice(all_a, size=na)
        ib = rng.choice(all_b, size=len(all_b))
        # a point drawn twice would count as its own neighbour: the distinct draws only (about 63 % of each side,
        # an m-out-of-n bootstrap whose interval is, if anything, too wide)
        boots.append(stat(np.unique(ia), np.unique(ib)))
    boots = np.asarray(boots)
    lo, hi = 2 * observed - float(np.percentile(boots, 97.5)), 2 * observed - float(np.percentile(boots, 2.5))
    return observed, float(p), [min(lo, observed), max(hi, observed)], float(np.sqrt(bandwidth2))


def _embedding_drift(context, ref_samples, ref_name, o: DataChecksOptions, breakdown, details, warnings
                     ) -> dict[str, Any]:
    ia = seeded_subset(len(context.samples), o.embedding_sample, context.seed)
    ib = seeded_subset(len(ref_samples), o.embedding_sample, context.seed + 1)
    a, what = _embeddings(context, context.samples, ia)
    b, _ = _embeddings(context, ref_samples, ib)
    # the bootstrap of the interval re-evaluates the statistic: fewer rounds than the KS intervals
    mmd, p, ci, bandwidth = mmd_test(a, b, seed=context.seed, permutations=o.n_permutations,
                                     n_boot=min(o.n_boot, 200))
    supported = p < ALPHA and ci[0] > o.min_mmd
    details["embedding_drift"] = {"mmd2": mmd, "ci": ci, "p_value": p, "embedding": what, "n_audited": len(ia),
                                  "n_reference": len(ib), "bandwidth": bandwidth}
    return {
        "name": "drift: embedding", "kind": "shift", "explains": "",
        "claim": f"The audited images look different to the model from the reference's ({what}).",
        "metric": "maximum mean discrepancy (MMD^2, Gaussian kernel) of the embeddings",
        "before": 0.0, "after": mmd, "effect": mmd, "ci": ci, "p_value": p,
        "verdict": "supported" if supported else "not supported", "n": int(len(ia) + len(ib)),
        "test": (f"permutation test of the unbiased MMD^2 ({o.n_permutations} permutations; kernel bandwidth the "
                 "median distance of the standardised embeddings); 95 % basic bootstrap interval, each side "
                 "resampled alone"),
        "details": {"embedding": what, "reference": ref_name, "n_audited": len(ia), "n_reference": len(ib),
                    "min_mmd": o.min_mmd},
    }


def _tv(a_codes: np.ndarray, b_codes: np.ndarray, k: int) -> float:
    pa = np.bincount(a_codes, minlength=k) / max(len(a_codes), 1)
    pb = np.bincount(b_codes, minlength=k) / max(len(b_codes), 1)
    return float(0.5 * np.abs(pa - pb).sum())


def _imbalance(audit_samples, ref_samples, classes, ref_name, o: DataChecksOptions, seed: int, breakdown, details,
               warnings) -> list[dict[str, Any]]:
    """The class mix and each group column's mix, reference against audited: a chi-square test of independence
    of (data set, value), the total-variation distance with a basic bootstrap interval; rare values named."""
    columns: dict[str, tuple[list[str], list[str]]] = {}
    if all(s.label is not None for s in audit_samples) and all(s.label is not None for s in ref_samples):
        columns["class"] = ([classes[int(s.label)] for s in audit_samples], [classes[int(s.label)] for s in ref_samples])
    shared = sorted(set.intersection(*(set(s.groups) for s in audit_samples)) & set.intersection(
        *(set(s.groups) for s in ref_samples))) if audit_samples and ref_samples else []
    for column in shared:
        columns[column] = ([str(s.groups[column]) for s in audit_samples], [str(s.groups[column]) for s in ref_samples])
    tests, rows, summary = [], [], {}
    rng = np.random.default_rng(seed)
    for column, (a, r) in columns.items():
        values = sorted(set(a) | set(r), key=lambda v: (classes.index(v) if column == "class" and v in classes else 0, v))
        code = {v: i for i, v in enumerate(values)}
        ac, rc = np.array([code[v] for v in a]), np.array([code[v] for v in r])
        k = len(values)
        tv = _tv(ac, rc, k)
        p = chi2_independence(np.r_[np.zeros(len(ac), int), np.ones(len(rc), int)], np.r_[ac, rc])
        boots = np.array([_tv(ac[rng.integers(0, len(ac), len(ac))], rc[rng.integers(0, len(rc), len(rc))], k)
                          for _ in range(o.n_boot)])
        lo = max(0.0, 2 * tv - float(np.percentile(boots, 97.5)))
        hi = min(1.0, 2 * tv - float(np.percentile(boots, 2.5)))
        lo, hi = min(lo, tv), max(hi, tv)
        pa, pr = np.bincount(ac, minlength=k) / len(ac), np.bincount(rc, minlength=k) / len(rc)
        rare = [v for v in values if pr[code[v]] < o.rare_share / k]
        for v in values:
            rows.append({"column": column, "value": v, "reference n": int(np.sum(rc == code[v])),
                         "reference share": float(pr[code[v]]), "audited n": int(np.sum(ac == code[v])),
                         "audited share": float(pa[code[v]]), "rare in reference": v in rare})
        most = values[int(np.argmax(np.abs(pa - pr)))]
        summary[column] = {"tv": tv, "ci": [lo, hi], "p_value": p, "rare_in_reference": rare,
                           "most_changed": most}
        if rare:
            warnings.append(f"{column}: " + ", ".join(f"{v} is {100 * pr[code[v]]:.1f} % of the reference "
                                                      f"(n = {int(np.sum(rc == code[v]))})" for v in rare)
                            + f", under {100 * o.rare_share:.0f} % of an even share: a model trained on it has seen "
                            "few such images")
        supported = p < ALPHA and lo > o.min_imbalance
        tests.append({
            "name": f"imbalance: {column}", "kind": "shift", "explains": "",
            "claim": (f"The {column} mix of the audited data differs from the reference's ({most}: "
                      f"{100 * pr[code[most]]:.1f} % of the reference, {100 * pa[code[most]]:.1f} % of the audited)"
                      + (f"; rare in the reference: {', '.join(rare)}." if rare else ".")),
            "metric": f"total-variation distance between the {column} shares",
            "before": 0.0, "after": tv, "effect": tv, "ci": [lo, hi], "p_value": p,
            "verdict": "supported" if supported else "not supported", "n": int(len(ac) + len(rc)),
            "test": "chi-square test of independence of data set and value; 95 % basic bootstrap interval of the "
                    "total-variation distance, each data set resampled alone",
            "details": {"column": column, "reference": ref_name, "rare_in_reference": rare, "most_changed": most,
                        "min_imbalance": o.min_imbalance},
        })
    if rows:
        breakdown["class and group mix"] = rows
    details["imbalance"] = summary
    return tests


def _association(feats, labels: np.ndarray, classes, where: str, o: DataChecksOptions, seed: int, breakdown,
                 details) -> list[dict[str, Any]]:
    """Image properties the data tie to one class (a cue a model can learn instead of the content): per property,
    a Kruskal-Wallis test across the classes; the class that stands out most against the others, by its
    rank-biserial correlation, with a bootstrap interval."""
    tests, rows, summary = [], [], {}
    rng = np.random.default_rng(seed)
    present = [j for j in range(len(classes)) if np.sum(labels == j) >= 2]
    if len(present) < 2:
        return []
    for prop in PROPERTIES:
        x = np.asarray(feats[prop], float)
        if np.ptp(x) <= 1e-12:
            continue
        p = float(stats.kruskal(*[x[labels == j] for j in present]).pvalue)
        best, best_r = present[0], 0.0
        for j in present:
            u = stats.mannwhitneyu(x[labels == j], x[labels != j]).statistic
            r = 2 * u / (np.sum(labels == j) * np.sum(labels != j)) - 1  # > 0: the class's values are higher
            if abs(r) > abs(best_r):
                best, best_r = j, float(r)
        inside, outside = x[labels == best], x[labels != best]
        boots = []
        for _ in range(min(o.n_boot, 400)):
            bi, bo = inside[rng.integers(0, len(inside), len(inside))], outside[rng.integers(0, len(outside), len(outside))]
            boots.append(2 * stats.mannwhitneyu(bi, bo).statistic / (len(bi) * len(bo)) - 1)
        lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
        sign = 1 if best_r >= 0 else -1
        ci = sorted([sign * lo, sign * hi])
        direction = "higher" if best_r > 0 else "lower"
        supported = p < ALPHA and ci[0] > o.min_association
        rows.append({"property": prop, "class": classes[best], "class median": float(np.median(inside)),
                     "others median": float(np.median(outside)), "rank-biserial": best_r, "ci": [lo, hi],
                     "p (unadjusted)": p})
        summary[prop] = {"class": classes[best], "rank_biserial": best_r, "ci": [lo, hi], "p_value": p}
        tests.append({
            "name": f"cue: {prop}", "kind": "", "explains": "",
            "claim": f"In {where}, '{classes[best]}' images have a {direction} {prop} than the others: a cue a model "
                     "can learn in place of the content.",
            "metric": f"rank-biserial correlation of {prop} with '{classes[best]}' (absolute)",
            "before": float(np.median(outside)), "after": float(np.median(inside)), "effect": abs(best_r), "ci": ci,
            "p_value": p, "verdict": "supported" if supported else "not supported", "n": int(len(x)),
            "test": "Kruskal-Wallis test across the classes; the class that stands out most against the others by "
                    "its rank-biserial correlation, 95 % bootstrap interval",
            "details": {"property": prop, "class": classes[best], "where": where, "min_association": o.min_association},
        })
    breakdown["property by class"] = rows
    details["association"] = summary
    return tests


def _outliers(audit, ids, o: DataChecksOptions) -> list[dict[str, Any]]:
    """Images whose property lies beyond ``outlier_z`` robust z-scores of the audited images' median (the most
    extreme first). Against the audited images themselves: a reference that differs as a whole is drift."""
    rows = []
    for prop in PROPERTIES:
        values = np.asarray(audit[prop], float)
        med = float(np.median(values))
        mad = float(np.median(np.abs(values - med))) * 1.4826
        if mad <= 1e-12:
            continue
        z = (values - med) / mad
        for i in np.flatnonzero(np.abs(z) > o.outlier_z):
            rows.append({"id": ids[int(i)], "property": prop, "value": float(values[i]), "robust z": float(z[i])})
    return sorted(rows, key=lambda r: -abs(r["robust z"]))


def _figures(audit, reference) -> list[dict[str, Any]]:
    figures = []
    for prop in PROPERTIES:
        a = np.asarray(audit[prop], float)
        r = np.asarray(reference[prop], float) if reference is not None else None
        pooled = a if r is None else np.concatenate([a, r])
        grid = np.linspace(float(pooled.min()), float(pooled.max()) or 1.0, 50)
        series = [{"label": "audited", "y": (np.searchsorted(np.sort(a), grid, side="right") / len(a)).tolist()}]
        if r is not None:
            series.append({"label": "reference", "y": (np.searchsorted(np.sort(r), grid, side="right") / len(r)).tolist(),
                           "style": "dashed"})
        figures.append({
            "kind": "lines", "title": f"Distribution of {prop}", "x": grid.tolist(), "series": series,
            "xlabel": prop, "ylabel": "share of images at or below",
            "caption": f"Cumulative distribution of each image's {prop}"
                       + (" in the audited and the reference data: the KS distance is the largest vertical gap."
                          if r is not None else " in the audited data."),
            "alt": f"Cumulative distribution curves of image {prop}.",
        })
    return figures


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
            reference, ref_ids, ref_name = self._reference(context)
            leaks = _pairs(audit, reference, o.near_duplicate_bits, o.near_duplicate_difference)
            tests.append(_leakage(leaks, ids, ref_ids, ref_name, n, o, breakdown, details))
            tests += _drift(audit, reference, ref_name, o, context.seed, breakdown, details)
            if set(audit["size"].tolist()) != set(reference["size"].tolist()):
                warnings.append(f"the audited images ({', '.join(sorted(set(audit['size'].tolist())))} px) and the "
                                f"reference ({', '.join(sorted(set(reference['size'].tolist())))} px) differ in size: "
                                "sharpness depends on it")
        outliers = _outliers(audit, ids, o)
        breakdown["outliers"] = outliers[: o.max_listed]
        details["n_outliers"] = len({r["id"] for r in outliers})
        details["outlier_ids"] = list(dict.fromkeys(r["id"] for r in outliers))[: o.max_listed]
        breakdown["image properties"] = breakdown.get("image properties") or [
            {"property": p, "audited mean": float(audit[p].mean()), "audited sd": float(audit[p].std())}
            for p in PROPERTIES
        ]
        ci = wilson(redundant, n)
        return HypothesisResult(
            claim=f"The audited data contain duplicate images ({redundant} of {n} repeat another image).",
            metric="share of audited images that repeat another (exact or near duplicate)",
            before=0.0, after=redundant / n, effect=redundant / n, ci=tuple(ci) if ci else None, p_value=None,
            verdict="supported" if redundant > 0 else "not supported", n=n,
            test=(f"exact: equal 8-bit pixels; near: 64-bit DCT perceptual hash within {o.near_duplicate_bits} bits "
                  f"and 32x32 grey thumbnails within {o.near_duplicate_difference} mean absolute difference; "
                  "95 % Wilson interval (a count, not a test)"),
            breakdown=breakdown, examples=[r["id"] for r in breakdown["duplicates"][:8]], details=details,
            figures=_figures(audit, reference), kind="", tests=tests, warnings=warnings,
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

    def _reference(self, context) -> tuple[dict[str, np.ndarray], list[str], str]:
        o: DataChecksOptions = self.options
        if context.load_dataset is None:
            raise DataError("data-checks: this host cannot load a reference data set")
        other = context.load_dataset(dict(o.reference))
        name = str(o.reference.get("path") or o.reference["loader"])
        index = seeded_subset(len(other), o.reference_sample, context.seed)
        if not len(index):
            raise DataError(f"data-checks: the reference data set {name!r} has no samples")
        samples = [other[int(i)] for i in index]
        parts = [features(images) for _, images in sample_chunks(samples, 256)]
        return _gather(parts), [s.id for s in samples], name


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


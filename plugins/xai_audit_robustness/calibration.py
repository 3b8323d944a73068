"""calibration: does the model's confidence mean what it says, overall, per class and per group?

    hypotheses:
      - calibration: {bins: 15, by: [skin_tone]}

Confidence is the top-class probability; an image is right when its top class is its label. Per confidence bin
(``bins`` of equal width) the accuracy is compared with the mean confidence.

* ``ece``: the expected calibration error as usually reported (binned, L1), with a percentile bootstrap
  interval. It is biased upward: even a perfectly calibrated model shows a positive ECE on a finite sample,
  the more so the fewer images per bin; ``ece_if_calibrated`` says how much (the mean ECE of labels drawn from
  the model's own probabilities).
* the hypothesis's own effect, ``calibration_error``: the debiased root-mean-square calibration error
  (Kumar, Liang & Ma 2019: per bin the squared gap minus its sampling variance, an unbiased estimate of the
  squared error, then a signed square root: it can be slightly negative for a calibrated model), with a
  bootstrap interval centred on that bias (conservative). The test is the consistency-resampling test of
  Bröcker & Smith (2007): labels are drawn from the model's own confidences (what a calibrated model would
  see) and the observed ECE is ranked among theirs.
* per group column: the gap in debiased calibration error between the worst and the best calibrated group,
  a permutation test (group membership shuffled) and a bootstrap interval (each group resampled alone); a
  ``bias`` finding when significant. Every test enters the audit's Holm correction.
* the temperature that minimises the negative log-likelihood (temperature scaling, Guo et al. 2017), fitted on
  the audited images, and the ECE after it, in-sample and 2-fold cross-fitted (the honest one).

Labels are needed: without them the step fails with a message saying so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field
from scipy import optimize

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
)
from xai_audit_robustness._common import group_columns


class CalibrationOptions(Options):
    bins: int = Field(15, ge=2, le=100, description="confidence bins of equal width")
    by: list[str] | None = Field(None, description="group columns to compare; default: every group column")
    min_error: float = Field(
        0.01, ge=0, le=1, description="smallest calibration error worth reporting: the interval must clear it"
    )
    min_gap: float = Field(0.02, ge=0, le=1, description="smallest calibration gap between groups worth reporting")
    min_group_size: int = Field(30, ge=2, description="groups smaller than this are shown but not judged")
    n_resamples: int = Field(
        4999, ge=99, le=100000, description="label draws of the consistency test (and permutations of the group test)"
    )
    n_boot: int = Field(1000, ge=100, le=20000, description="bootstrap resamples of each interval")


# --------------------------------------------------------------------------- binned statistics, vectorised


def _sums(bins: np.ndarray, correct: np.ndarray, conf: np.ndarray, n_bins: int, rows: int = 1):
    """Per (row, bin): count, sum of correct, sum of confidence; inputs (rows, n) or (n,)."""
    bins, correct, conf = (np.atleast_2d(a) for a in (bins, correct, conf))
    flat = (bins + np.arange(bins.shape[0])[:, None] * n_bins).ravel()
    size = bins.shape[0] * n_bins
    shape = (bins.shape[0], n_bins)
    nb = np.bincount(flat, minlength=size).reshape(shape).astype(float)
    sy = np.bincount(flat, weights=correct.ravel().astype(float), minlength=size).reshape(shape)
    sc = np.bincount(flat, weights=conf.ravel().astype(float), minlength=size).reshape(shape)
    return nb, sy, sc


def _ece(nb, sy, sc) -> np.ndarray:
    n = nb.sum(axis=-1)
    return np.abs(sy - sc).sum(axis=-1) / np.maximum(n, 1)


def _squared(nb, sy, sc) -> tuple[np.ndarray, np.ndarray]:
    """(unbiased squared calibration error, plug-in squared error) per row; bins with one image left out."""
    n = nb.sum(axis=-1, keepdims=True)
    ok = nb > 1
    safe = np.maximum(nb, 1)
    y, c = sy / safe, sc / safe
    d2 = np.where(ok, (y - c) ** 2, 0.0)
    v = np.where(ok, y * (1 - y) / np.maximum(nb - 1, 1), 0.0)
    w = nb / np.maximum(n, 1)
    return (w * (d2 - v)).sum(axis=-1), (w * d2).sum(axis=-1)


def _root(x):
    return np.sign(x) * np.sqrt(np.abs(x))


def _bin_of(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((np.asarray(conf) * n_bins).astype(int), n_bins - 1)


def calibration_stats(conf: np.ndarray, correct: np.ndarray, n_bins: int, *, seed: int, n_boot: int = 1000
                      ) -> dict[str, Any]:
    """ECE with a percentile interval, the debiased RMS calibration error with a centred bootstrap interval."""
    n = len(conf)
    b = _bin_of(conf, n_bins)
    nb, sy, sc = _sums(b, correct, conf, n_bins)
    ece = float(_ece(nb, sy, sc)[0])
    t, plug = (float(v[0]) for v in _squared(nb, sy, sc))
    if n < 2:
        return {"n": n, "ece": ece, "ece_ci": None, "calibration_error": float(_root(t)), "calibration_error_ci": None}
    rng = np.random.default_rng(seed)
    eces, ts = [], []
    for start in range(0, n_boot, 250):
        idx = rng.integers(0, n, size=(min(250, n_boot - start), n))
        bnb, bsy, bsc = _sums(b[idx], correct[idx], conf[idx], n_bins)
        eces.append(_ece(bnb, bsy, bsc))
        ts.append(_squared(bnb, bsy, bsc)[0])
    eces, ts = np.concatenate(eces), np.concatenate(ts)
    lo_q, hi_q = np.percentile(ts, [2.5, 97.5])
    # the bootstrap world's true squared error is the plug-in one: centre the bootstrap there (a pivot)
    lo, hi = t - (hi_q - plug), t - (lo_q - plug)
    return {
        "n": n, "ece": ece, "ece_ci": [float(np.percentile(eces, 2.5)), float(np.percentile(eces, 97.5))],
        "calibration_error": float(_root(t)), "calibration_error_ci": [float(_root(lo)), float(_root(hi))],
        "squared_error": t, "accuracy": float(np.mean(correct)), "mean_confidence": float(np.mean(conf)),
    }


def consistency_test(conf: np.ndarray, correct: np.ndarray, n_bins: int, *, seed: int, draws: int
                     ) -> tuple[float, float, list[float]]:
    """p-value that the model is calibrated (labels drawn from its own confidences), the mean ECE of such draws,
    and the 95 % range of their ECE."""
    b = _bin_of(conf, n_bins)
    observed = float(_ece(*_sums(b, correct, conf, n_bins))[0])
    rng = np.random.default_rng(seed)
    null = []
    for start in range(0, draws, 500):
        m = min(500, draws - start)
        drawn = rng.random((m, len(conf))) < conf[None, :]
        null.append(_ece(*_sums(np.broadcast_to(b, drawn.shape), drawn, np.broadcast_to(conf, drawn.shape), n_bins)))
    null = np.concatenate(null)
    p = (1 + int(np.sum(null >= observed - 1e-12))) / (draws + 1)
    return float(p), float(null.mean()), [float(np.percentile(null, 2.5)), float(np.percentile(null, 97.5))]


# --------------------------------------------------------------------------- temperature


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(log p / T) (temperature scaling on log-probabilities)."""
    logp = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(z)), labels] - np.log(np.exp(z).sum(axis=1))).mean())

    res = optimize.minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
    return float(np.exp(res.x))


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- the hypothesis


class CalibrationHypothesis(HypothesisPlugin):
    name = "calibration"
    description = (
        "Expected calibration error with intervals and a consistency test, reliability diagrams overall, per class "
        "and per group, the calibration gap between groups, and the temperature that would fix it."
    )
    Options = CalibrationOptions

    def recommend(self, finding, result):
        """A calibration gap between groups: more labelled images of the worst-calibrated group. The temperature
        itself is no fine-tuning data (no manifest action fits): it is in ``details.temperature``."""
        if finding is None or finding.get("kind") != "bias":
            return []
        group = finding.get("group") or {}
        column, worst = group.get("column"), group.get("worst")
        rows = {str(r.get("group")): r for r in (result.get("breakdown") or {}).get(f"per group: {column}", [])}
        row = rows.get(str(worst))
        if row is None:
            return []
        needed = samples_for_ci_width(row.get("accuracy") or 0.5, DEFAULT_TARGET_WIDTH)
        count = max(needed - int(row.get("n", 0)), 0)
        return [recommendation(
            "add-group", kind="bias", group=f"{column}={worst}", count=count,
            reason=(f"Calibration gap: {finding.get('title')} Add labelled images of this group to the fine-tuning "
                    "data, and check its calibration again (a temperature fitted on all images does not close a "
                    "gap between groups)."),
            finding=finding.get("source", ""),
        )]

    def test(self, context: HypothesisContext) -> HypothesisResult:
        o: CalibrationOptions = self.options
        labels = context.labels
        if labels is None:
            raise DataError("calibration needs labels: every audited sample must have one (this data set is "
                            "unlabelled, or some samples have no label)")
        probs = np.asarray(context.probs, float)
        n = len(labels)
        if n < 2:
            raise DataError("calibration needs at least two labelled samples")
        conf = probs.max(axis=1)
        pred = probs.argmax(axis=1)
        correct = (pred == labels).astype(float)
        overall = calibration_stats(conf, correct, o.bins, seed=context.seed, n_boot=o.n_boot)
        p_value, ece0, ece0_range = consistency_test(conf, correct, o.bins, seed=context.seed, draws=o.n_resamples)
        ci = overall["calibration_error_ci"]
        effect = overall["calibration_error"]
        supported = p_value < ALPHA and ci is not None and ci[0] > o.min_error
        temperature = fit_temperature(probs, labels)
        after = scaled(probs, temperature)
        ece_after = float(_ece(*_sums(_bin_of(after.max(axis=1), o.bins), (after.argmax(axis=1) == labels),
                                      after.max(axis=1), o.bins))[0])
        cross = _cross_fitted(probs, labels, o.bins, context.seed)

        classes = list(context.classes)
        per_class = []
        for k, name in enumerate(classes):
            mask = pred == k
            if mask.sum() >= 2:
                s = calibration_stats(conf[mask], correct[mask], o.bins, seed=context.seed, n_boot=o.n_boot)
                per_class.append({"class": name, **_row(s)})
        breakdown: dict[str, list[dict[str, Any]]] = {"summary": _summary_rows(overall, ece0, ece0_range, temperature,
                                                                               ece_after, cross, n, o.bins),
                                                      "per class (predicted)": per_class}
        tests, warnings = [], []
        columns = group_columns(context.samples)
        wanted = o.by if o.by is not None else list(columns)
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(f"calibration: no group column {missing[0]!r}; the data set has {sorted(columns) or 'none'}")
        group_stats: dict[str, dict[str, dict[str, Any]]] = {}
        for column in wanted:
            values = columns[column]
            stats_by_group = {}
            rows = []
            for g in sorted(set(values.tolist())):
                mask = values == g
                s = calibration_stats(conf[mask], correct[mask], o.bins, seed=context.seed, n_boot=o.n_boot)
                stats_by_group[g] = s
                rows.append({"group": g, **_row(s), "too small": int(mask.sum()) < o.min_group_size})
            breakdown[f"per group: {column}"] = rows
            group_stats[column] = stats_by_group
            small = [(g, int(np.sum(values == g))) for g in stats_by_group if np.sum(values == g) < o.min_group_size]
            if small:
                warnings.append(f"{column}: {', '.join(f'{g} (n = {m})' for g, m in small)} below {o.min_group_size} "
                                "images: shown, but too small to judge")
            test = _gap_test(column, values, conf, correct, stats_by_group, o, context.seed)
            if test is not None:
                tests.append(test)
        details = {
            "bins": o.bins, "ece": overall["ece"], "ece_ci": overall["ece_ci"], "ece_if_calibrated": ece0,
            "ece_if_calibrated_range": ece0_range, "calibration_error": effect, "calibration_error_ci": ci,
            "accuracy": overall["accuracy"], "mean_confidence": overall["mean_confidence"],
            "overconfidence": overall["mean_confidence"] - overall["accuracy"],
            "temperature": temperature, "ece_after_temperature": ece_after,
            "ece_after_temperature_cross_fitted": cross,
            "temperature_note": ("divide the model's logits by this temperature (temperature scaling); fitted on the "
                                 "audited images, so the in-sample ECE after it is optimistic: the cross-fitted one "
                                 "(fitted on one half, measured on the other) is the honest estimate. No fine-tuning "
                                 "data follows from it: the manifest has no row for it"),
            "min_error": o.min_error, "min_gap": o.min_gap,
        }
        if ece0 > 0.5 * overall["ece"]:
            warnings.append(f"a perfectly calibrated model would show an ECE of about {ece0:.3f} on {n} images with "
                            f"{o.bins} bins: read the debiased calibration error, not the ECE")
        figures = _figures(conf, correct, pred, o.bins, classes, columns, wanted, overall, temperature, after, labels)
        direction = "overconfident" if details["overconfidence"] > 0 else "underconfident"
        return HypothesisResult(
            claim=(f"The model is miscalibrated: its confidence does not match its accuracy (ECE {overall['ece']:.3f}; "
                   f"on average {direction} by {abs(details['overconfidence']):.3f})."),
            metric="calibration error (debiased, root mean square over confidence bins)",
            before=0.0, after=effect, effect=effect, ci=tuple(ci) if ci else None, p_value=p_value,
            verdict="supported" if supported else "not supported", n=n,
            test=(f"consistency-resampling test of the ECE ({o.n_resamples} label draws from the model's own "
                  "confidences); debiased calibration error (Kumar et al. 2019) with a 95 % bootstrap interval "
                  "centred on the plug-in bias"),
            breakdown=breakdown, details=details, figures=figures, kind="", tests=tests, warnings=warnings,
            key_tables=["summary"],
        )


def _summary_rows(overall, ece0, ece0_range, temperature, ece_after, cross, n, bins) -> list[dict[str, Any]]:
    """The calibration numbers a reader looks for first, one per row, each with its interval where it has one."""
    return [
        {"measure": "expected calibration error (ECE)", "value": overall["ece"], "95 % CI": overall.get("ece_ci"),
         "note": f"{bins} equal-width bins, {n} images; biased upward on a finite sample"},
        {"measure": "ECE a calibrated model would show", "value": ece0, "95 % CI": ece0_range,
         "note": "labels drawn from the model's own confidences: the ECE's floor at this n"},
        {"measure": "debiased calibration error", "value": overall["calibration_error"],
         "95 % CI": overall.get("calibration_error_ci"), "note": "Kumar et al. 2019, root mean square; 0 = calibrated"},
        {"measure": "mean confidence - accuracy", "value": overall["mean_confidence"] - overall["accuracy"],
         "95 % CI": None, "note": "positive: overconfident"},
        {"measure": "temperature that would fix it", "value": temperature, "95 % CI": None,
         "note": "divide the logits by it (fitted by likelihood on these images)"},
        {"measure": "ECE after that temperature (cross-fitted)", "value": cross if cross is not None else ece_after,
         "95 % CI": None, "note": ("fitted on one half, measured on the other" if cross is not None else
                                   "in-sample: optimistic")},
    ]


def _row(s: dict[str, Any]) -> dict[str, Any]:
    return {"n": s["n"], "accuracy": s.get("accuracy"), "mean confidence": s.get("mean_confidence"),
            "ece": s["ece"], "ece ci": s["ece_ci"], "calibration error": s["calibration_error"],
            "calibration error ci": s["calibration_error_ci"]}


def _cross_fitted(probs: np.ndarray, labels: np.ndarray, n_bins: int, seed: int) -> float | None:
    """ECE after temperature scaling, each half scaled with the temperature fitted on the other half."""
    n = len(labels)
    if n < 20:
        return None
    order = np.random.default_rng(seed).permutation(n)
    halves = [order[: n // 2], order[n // 2 :]]
    out = np.zeros_like(probs)
    for a, b in ((0, 1), (1, 0)):
        out[halves[b]] = scaled(probs[halves[b]], fit_temperature(probs[halves[a]], labels[halves[a]]))
    conf = out.max(axis=1)
    return float(_ece(*_sums(_bin_of(conf, n_bins), out.argmax(axis=1) == labels, conf, n_bins))[0])


def _gap_test(column, values, conf, correct, stats_by_group, o: CalibrationOptions, seed: int):
    judged = [g for g, s in stats_by_group.items() if s["n"] >= o.min_group_size]
    if len(judged) < 2:
        return None
    mask = np.isin(values, judged)
    v, cf, cr = values[mask], conf[mask], correct[mask]
    codes = np.searchsorted(np.array(sorted(judged)), v)
    n_groups = len(judged)
    b = _bin_of(cf, o.bins)

    def gaps(code_rows: np.ndarray) -> np.ndarray:  # (P, n) group codes -> (P,) max - min debiased squared error
        combined = code_rows * o.bins + b[None, :]
        nb, sy, sc = _sums(combined, np.broadcast_to(cr, combined.shape), np.broadcast_to(cf, combined.shape),
                           n_groups * o.bins)
        shape = (code_rows.shape[0], n_groups, o.bins)
        t, _ = _squared(nb.reshape(shape), sy.reshape(shape), sc.reshape(shape))
        r = _root(t)
        return r.max(axis=1) - r.min(axis=1)

    observed = float(gaps(codes[None, :])[0])
    rng = np.random.default_rng(seed)
    exceed = 0
    perms = o.n_resamples
    for start in range(0, perms, 250):
        m = min(250, perms - start)
        shuffled = rng.permuted(np.broadcast_to(codes, (m, len(codes))), axis=1)
        exceed += int(np.sum(gaps(shuffled) >= observed - 1e-12))
    p_value = (exceed + 1) / (perms + 1)
    err = {g: stats_by_group[g]["calibration_error"] for g in judged}
    worst = max(judged, key=lambda g: err[g])
    best = min(judged, key=lambda g: err[g])
    ci = _gap_ci(conf, correct, values, worst, best, o, seed)
    supported = p_value < ALPHA and ci[0] > o.min_gap
    return {
        "name": f"calibration gap by {column}", "kind": "bias", "explains": "",
        "claim": (f"The model is worse calibrated for {column} {worst} (calibration error {err[worst]:.3f}) than for "
                  f"{best} ({err[best]:.3f})."),
        "metric": "gap in debiased calibration error between groups (worst - best)",
        "before": err[best], "after": err[worst], "effect": float(err[worst] - err[best]), "ci": ci,
        "p_value": p_value, "verdict": "supported" if supported else "not supported", "n": int(mask.sum()),
        "test": ("permutation test of the gap between the largest and the smallest debiased calibration error "
                 "(group membership shuffled); 95 % bootstrap interval of the gap, each group resampled alone"),
        "details": {"column": column, "best": best, "worst": worst, "n_best": stats_by_group[best]["n"],
                    "n_worst": stats_by_group[worst]["n"], "ece_best": stats_by_group[best]["ece"],
                    "ece_worst": stats_by_group[worst]["ece"], "judged_groups": len(judged),
                    "min_gap": o.min_gap, "permutation_statistic": observed},
    }


def _gap_ci(conf, correct, values, worst, best, o: CalibrationOptions, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    draws = []
    for g in (worst, best):
        m = values == g
        cf, cr = conf[m], correct[m]
        idx = rng.integers(0, len(cf), size=(o.n_boot, len(cf)))
        nb, sy, sc = _sums(_bin_of(cf, o.bins)[idx], cr[idx], cf[idx], o.bins)
        draws.append(_root(_squared(nb, sy, sc)[0]))
    diff = draws[0] - draws[1]
    return [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]


def _reliability(conf, correct, n_bins):
    b = _bin_of(conf, n_bins)
    nb, sy, sc = (a[0] for a in _sums(b, correct, conf, n_bins))
    ok = nb > 0
    return sc[ok] / nb[ok], sy[ok] / nb[ok], nb[ok]


def _figures(conf, correct, pred, n_bins, classes, columns, wanted, overall, temperature, after, labels):
    centres = ((np.arange(n_bins) + 0.5) / n_bins).tolist()
    b = _bin_of(conf, n_bins)
    nb, sy, sc = (a[0] for a in _sums(b, correct, conf, n_bins))
    acc = [float(sy[i] / nb[i]) if nb[i] else None for i in range(n_bins)]
    conf_after = after.max(axis=1)
    nb2, sy2, _ = (a[0] for a in _sums(_bin_of(conf_after, n_bins), after.argmax(axis=1) == labels, conf_after, n_bins))
    acc2 = [float(sy2[i] / nb2[i]) if nb2[i] else None for i in range(n_bins)]
    figures: list[dict[str, Any]] = [{
        "kind": "lines", "title": "Reliability diagram",
        "x": centres,
        "series": [{"label": "accuracy", "y": acc, "marker": "o"},
                   {"label": f"after temperature {temperature:.2f}", "y": acc2, "style": "dashed", "marker": "o"},
                   {"label": "perfect calibration", "y": centres, "style": "dashed", "color": "#9aa5b1"}],
        "xlabel": "confidence (bin centre)", "ylabel": "accuracy", "key": True,
        "caption": (f"Accuracy per confidence bin ({n_bins} bins) against confidence; a calibrated model follows the "
                    f"diagonal. ECE {overall['ece']:.3f} (95 % CI {overall['ece_ci'][0]:.3f} to "
                    f"{overall['ece_ci'][1]:.3f}); the dashed line is the same after temperature scaling."
                    if overall.get("ece_ci") else "Accuracy per confidence bin against confidence."),
        "alt": "Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.",
    }]
    xs, ys, gs = [], [], []
    for k, name in enumerate(classes):
        mask = pred == k
        if mask.any():
            x, y, _ = _reliability(conf[mask], correct[mask], n_bins)
            xs += x.tolist()
            ys += y.tolist()
            gs += [name] * len(x)
    figures.append({
        "kind": "scatter", "title": "Reliability per predicted class", "x": xs, "y": ys, "groups": gs,
        "xlabel": "mean confidence in the bin", "ylabel": "accuracy in the bin", "diagonal": True,
        "caption": "Each point is one confidence bin of the images predicted as one class; the diagonal is perfect "
                   "calibration.",
        "alt": "Scatter of accuracy against confidence per bin, coloured by predicted class.",
    })
    for column in wanted:
        values = columns[column]
        xs, ys, gs = [], [], []
        for g in sorted(set(values.tolist())):
            x, y, _ = _reliability(conf[values == g], correct[values == g], n_bins)
            xs += x.tolist()
            ys += y.tolist()
            gs += [g] * len(x)
        figures.append({
            "kind": "scatter", "title": f"Reliability per {column}", "x": xs, "y": ys, "groups": gs,
            "xlabel": "mean confidence in the bin", "ylabel": "accuracy in the bin", "diagonal": True,
            "caption": f"Each point is one confidence bin of one {column} group; the diagonal is perfect calibration.",
            "alt": f"Scatter of accuracy against confidence per bin, coloured by {column}.",
        })
    return figures

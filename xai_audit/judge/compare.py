"""Several models side by side: accuracy, group gaps, hypothesis effects, paired tests.

Works from results alone (``xai-audit compare A/results.json B/results.json``)
or straight after a several-model plan. Paired tests compare the models on
the images both audited (matched by sample id): exact McNemar on
correct/incorrect pairs, a paired bootstrap interval of the accuracy
difference, Holm correction across the pairs.

Each model keeps its own classes (``models[i].classes``): models of different label spaces (a digit model
beside an emotion model, on shared images) are compared side by side, each prediction named by its own
model. Right or wrong is then not one question for both, so such a pair has no paired accuracy test, and
an intervention's effect is paired as the share of predictions it changes (flip rate), which needs no label.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np

from xai_audit import __version__
from xai_audit.contract.stats import ALPHA, bootstrap_paired_diff_ci, holm, mcnemar_exact
from xai_audit.errors import DataError
from xai_audit.run.serialize import to_jsonable

COMPARISON_SCHEMA_VERSION = "1.0"
#: results.json MAJOR versions a comparison reads: 2.0 only moved run facts (times, cache, batch sizes) under
#: ``run``, and a comparison reads none of them
READABLE_MAJORS = ("1", "2")


def compare_results(named: Sequence[tuple[str, dict[str, Any]]], *, seed: int = 0) -> dict[str, Any]:
    """The comparison of several audits' results, as plain data (``comparison.json``)."""
    if len(named) < 2:
        raise DataError("a comparison needs at least two audits")
    for name, results in named:
        major = str(results.get("schema_version", "0")).split(".")[0]
        if major not in READABLE_MAJORS:
            raise DataError(f"{name}: results.json schema {results.get('schema_version')} is not readable by this version")
    models = [_model_row(name, r) for name, r in named]
    same_classes = all(_same_classes(r, named[0][1]) for _, r in named)
    pairs = [_paired(a, ra, b, rb, seed) for (a, ra), (b, rb) in combinations(named, 2)]
    effect_pairs = _effect_pairs(named, seed)
    # one Holm correction over every test of the comparison: accuracy pairs and hypothesis-effect pairs
    every = pairs + effect_pairs
    adjusted = holm([p["p_value"] for p in every])
    for pair, p_adj in zip(every, adjusted):
        pair["p_value_adjusted"] = p_adj
        pair["verdict"] = ("not tested" if pair["p_value"] is None else
                           "different" if p_adj is not None and p_adj < ALPHA else "no significant difference")
    return to_jsonable(
        {
            "schema_version": COMPARISON_SCHEMA_VERSION,
            "tool": {"name": "xai-audit", "version": __version__},
            "title": "Model comparison: " + " vs ".join(name for name, _ in named),
            "models": models,
            # the classes every model shares; each model's own are in its row
            "classes": (named[0][1].get("classes") or []) if same_classes else [],
            "same_classes": same_classes,
            "pairs": pairs,
            "groups": _groups(named),
            "hypotheses": _hypotheses(named),
            "effect_pairs": effect_pairs,
            "corruption_reference": corruption_reference(named, seed),
            "explainers": sorted({e for _, r in named for e in r.get("explainers", {})}),
            "same_data": len({r["provenance"]["dataset"]["fingerprint"] for _, r in named}) == 1,
        }
    )


def _model_row(name: str, results: dict[str, Any]) -> dict[str, Any]:
    acc = results.get("accuracy") or {}
    return {
        "name": name,
        "title": results.get("title"),
        "adapter": results["provenance"]["model"]["adapter"],
        "fingerprint": results["provenance"]["model"]["fingerprint"],
        "n": results["samples"]["n"],
        "classes": [str(c) for c in results.get("classes") or []],
        "accuracy": acc.get("value"),
        "ci": acc.get("ci"),
        "findings": len(results.get("findings", [])),
        "failures": len(results.get("failures", [])),
    }


def _correct_by_id(results: dict[str, Any]) -> dict[str, bool]:
    per = results.get("per_sample")
    if not per:
        return {}
    return {
        sid: (label is not None and label == pred)
        for sid, label, pred in zip(per["ids"], per["labels"], per["predictions"])
        if label is not None
    }


def _same_classes(ra: dict, rb: dict) -> bool:
    """Whether two audits' models name the same classes in the same order (unknown counts as the same)."""
    a, b = ra.get("classes"), rb.get("classes")
    return not a or not b or [str(c) for c in a] == [str(c) for c in b]


def _paired(a: str, ra: dict, b: str, rb: dict, seed: int) -> dict[str, Any]:
    ca, cb = _correct_by_id(ra), _correct_by_id(rb)
    common = sorted(set(ca) & set(cb))
    row: dict[str, Any] = {"a": a, "b": b, "n_common": len(common)}
    if not _same_classes(ra, rb):
        row.update(difference=None, ci=None, p_value=None,
                   test="not tested: the models name different classes, so one label cannot say whether both are right")
        return row
    if not common:
        row.update(difference=None, ci=None, p_value=None, test="no labelled sample audited by both models")
        return row
    xa = np.array([ca[i] for i in common])
    xb = np.array([cb[i] for i in common])
    p_value, only_a, only_b = mcnemar_exact(xa, xb)
    row.update(
        accuracy_a=float(xa.mean()),
        accuracy_b=float(xb.mean()),
        difference=float(xa.mean() - xb.mean()),
        ci=list(bootstrap_paired_diff_ci(xa, xb, seed=seed)),
        p_value=p_value,
        only_a_correct=only_a,
        only_b_correct=only_b,
        test="exact McNemar test on the images both models saw; 95 % paired bootstrap interval",
    )
    return row


def _groups(named: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, results in named:
        for step, entry in results.get("hypotheses", {}).items():
            if entry.get("plugin") != "group-accuracy" or entry.get("status") != "ok":
                continue
            rows.append(
                {"model": name, "step": step, "column": (entry.get("details") or {}).get("column"),
                 "gap": entry.get("effect"), "ci": entry.get("ci"), "p_value_adjusted": entry.get("p_value_adjusted"),
                 "verdict": entry.get("verdict"), "claim": entry.get("claim")}
            )
    return rows


def _hypotheses(named: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    steps: list[str] = []
    for _, results in named:
        for step, entry in results.get("hypotheses", {}).items():
            if entry.get("plugin") != "group-accuracy" and step not in steps:
                steps.append(step)
    rows = []
    for step in steps:
        cells = []
        for name, results in named:
            entry = results.get("hypotheses", {}).get(step)
            if entry is None or entry.get("status") != "ok":
                cells.append({"model": name, "status": "not run" if entry is None else "failed"})
                continue
            cells.append(
                {"model": name, "status": "ok", "metric": entry.get("metric"), "before": entry.get("before"),
                 "after": entry.get("after"), "effect": entry.get("effect"), "ci": entry.get("ci"),
                 "p_value_adjusted": entry.get("p_value_adjusted"), "verdict": entry.get("verdict")}
            )
        rows.append({"step": step, "models": cells})
    return rows


def _effect_pairs(named: Sequence[tuple[str, dict[str, Any]]], seed: int) -> list[dict[str, Any]]:
    """Does an intervention hurt one model more than another, on the same images?

    For each hypothesis both audits ran with per-image predictions, each image's
    effect is its harm under the intervention: correct before and wrong after is 1,
    the reverse -1, else 0 (accuracy drop); without labels, 1 when the prediction
    changes (flip rate). The models' effects are paired image by image: the
    difference of the mean effects with a paired bootstrap interval, and a
    paired sign-flip permutation test (scipy) of the mean difference.
    """
    from scipy.stats import permutation_test

    rows = []
    for (a, ra), (b, rb) in combinations(named, 2):
        for step, ea in (ra.get("hypotheses") or {}).items():
            eb = (rb.get("hypotheses") or {}).get(step)
            if not eb or ea.get("status") != "ok" or eb.get("status") != "ok":
                continue
            own = not _same_classes(ra, rb)  # different label spaces: the flip rate, which needs no label
            da, db = _harm_by_id(ra, ea, flips=own), _harm_by_id(rb, eb, flips=own)
            if da is None or db is None or da[1] != db[1]:
                continue
            common = sorted(set(da[0]) & set(db[0]))
            row: dict[str, Any] = {"step": step, "a": a, "b": b, "n_common": len(common), "metric": da[1]}
            if len(common) < 2:
                row.update(difference=None, ci=None, p_value=None, test="fewer than two images in common")
                rows.append(row)
                continue
            xa = np.array([da[0][i] for i in common], float)
            xb = np.array([db[0][i] for i in common], float)
            if np.array_equal(xa, xb):
                p_value = 1.0
            else:
                p_value = float(permutation_test(
                    (xa, xb), lambda x, y, axis=-1: np.mean(x - y, axis=axis), permutation_type="samples",
                    vectorized=True, n_resamples=9999, random_state=seed,
                ).pvalue)
            row.update(
                effect_a=float(xa.mean()), effect_b=float(xb.mean()), difference=float(xa.mean() - xb.mean()),
                ci=list(bootstrap_paired_diff_ci(xa, xb, seed=seed)), p_value=p_value,
                test="the models' effects paired image by image: paired sign-flip permutation test "
                     "(9,999 resamples) and 95 % paired bootstrap interval of the difference",
            )
            rows.append(row)
    return rows


def _harm_by_id(results: dict[str, Any], entry: dict[str, Any], *,
                flips: bool = False) -> tuple[dict[str, float], str] | None:
    """Each image's harm under the intervention, by sample id, and what the harm measures (``flips``: the
    flip rate even on labelled images)."""
    per = entry.get("per_sample") or {}
    base = results.get("per_sample") or {}
    if not per.get("ids") or not base.get("ids") or "predictions_after" not in per:
        return None
    clean = {sid: (label, pred) for sid, label, pred in zip(base["ids"], base["labels"], base["predictions"])}
    harm: dict[str, float] = {}
    labelled = not flips and all(clean.get(sid, (None, None))[0] is not None for sid in per["ids"])
    for sid, after in zip(per["ids"], per["predictions_after"]):
        if sid not in clean:
            continue
        label, before = clean[sid]
        if labelled:
            harm[sid] = float(before == label) - float(after == label)
        else:
            harm[sid] = float(after != before)
    return harm, ("accuracy drop" if labelled else "flip rate")


def corruption_reference(named: Sequence[tuple[str, dict[str, Any]]], seed: int, n_boot: int = 2000
                         ) -> list[dict[str, Any]]:
    """The corruption error of each model relative to a reference model's, as Hendrycks & Dietterich define it,
    for every corruptions step that several audits ran with the same corruptions and severities.

    The reference is the model the step's ``reference_model`` option names, else the first. For each corruption
    c, CE_c = the model's error summed over the severities ÷ the reference's (``mce``: the mean over the
    corruptions), and the relative CE_c = the same for the error above each model's clean error (``relative_mce``;
    None where the reference's corrupted error does not exceed its clean error). Errors are counted on the images
    both models saw (by sample id); without labels an error is a prediction the corruption changed. 95 %
    intervals: the images resampled together for both models (a paired bootstrap).
    """
    rows: list[dict[str, Any]] = []
    steps: list[str] = []
    for _, results in named:
        for step, entry in (results.get("hypotheses") or {}).items():
            if entry.get("plugin") == "corruptions" and entry.get("status") == "ok" and step not in steps:
                steps.append(step)
    for step in steps:
        have = [(name, (r.get("hypotheses") or {}).get(step) or {}) for name, r in named]
        have = [(name, e) for name, e in have if e.get("status") == "ok" and (e.get("per_sample") or {}).get("ids")]
        if len(have) < 2:
            continue
        wanted = ((have[0][1].get("options") or {}).get("reference_model"))
        names = [name for name, _ in have]
        reference = wanted if wanted in names else names[0]
        note = (f"the plan names {wanted!r} as the reference, and it is not among the compared models: the first is "
                "used" if wanted and wanted not in names else "")
        ref = dict(have)[reference]
        for name, entry in have:
            row: dict[str, Any] = {"step": step, "model": name, "reference": reference, "note": note}
            row.update(_relative_to(entry, ref, seed, n_boot, same=name == reference))
            rows.append(row)
    return rows


def _relative_to(entry: dict[str, Any], ref: dict[str, Any], seed: int, n_boot: int, *, same: bool
                 ) -> dict[str, Any]:
    details, ref_details = entry.get("details") or {}, ref.get("details") or {}
    corruptions = list(details.get("corruptions") or [])
    if corruptions != list(ref_details.get("corruptions") or []) or \
            details.get("severities") != ref_details.get("severities") or \
            details.get("labelled") != ref_details.get("labelled"):
        return {"n_common": 0, "mce": None, "mce_ci": None, "relative_mce": None, "relative_mce_ci": None,
                "test": "not compared: the steps ran other corruptions, severities or metrics"}
    mine, theirs = _errors_by_id(entry), _errors_by_id(ref)
    common = sorted(set(mine) & set(theirs))
    if len(common) < 2:
        return {"n_common": len(common), "mce": None, "mce_ci": None, "relative_mce": None, "relative_mce_ci": None,
                "test": "fewer than two images in common"}
    clean = np.array([mine[i][0] for i in common], float)
    err = np.array([mine[i][1] for i in common], float)  # (n, corruptions): mean error over the severities
    ref_clean = np.array([theirs[i][0] for i in common], float)
    ref_err = np.array([theirs[i][1] for i in common], float)

    # a corruption the reference gets no error on (or, relative, no error above its clean error) has no ratio:
    # it is left out of the mean, and named
    ref_ce, ref_clean_err = ref_err.mean(axis=0), ref_clean.mean()
    kept = ref_ce > 0
    kept_rel = ref_ce - ref_clean_err > 0

    def scores(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mCE, relative mCE) over resamples ``idx`` (B, n) of the images, NaN where a ratio is undefined."""
        e, r = err[idx].mean(axis=1), ref_err[idx].mean(axis=1)  # (B, corruptions)
        e0, r0 = clean[idx].mean(axis=1)[:, None], ref_clean[idx].mean(axis=1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            ce = np.where(r > 0, e / r, np.nan)[:, kept]
            rel = np.where(r - r0 > 0, (e - e0) / (r - r0), np.nan)[:, kept_rel]
        return (ce.mean(axis=1) if kept.any() else np.full(len(idx), np.nan),
                rel.mean(axis=1) if kept_rel.any() else np.full(len(idx), np.nan))

    n = len(common)
    mce, rel = (float(v[0]) for v in scores(np.arange(n)[None, :]))
    boot_mce, boot_rel = scores(np.random.default_rng(seed).integers(0, n, size=(n_boot, n)))

    def interval(point: float, boot: np.ndarray) -> list[float] | None:
        if not np.isfinite(point):
            return None
        if same:
            return [point, point]
        ok = boot[np.isfinite(boot)]
        return [float(np.percentile(ok, 2.5)), float(np.percentile(ok, 97.5))] if len(ok) >= 0.95 * n_boot else None

    return {"n_common": n, "corruptions": corruptions,
            "left_out": [c for c, k in zip(corruptions, kept) if not k],
            "relative_left_out": [c for c, k in zip(corruptions, kept_rel) if not k],
            "mce": mce if np.isfinite(mce) else None, "mce_ci": interval(mce, boot_mce),
            "relative_mce": rel if np.isfinite(rel) else None, "relative_mce_ci": interval(rel, boot_rel),
            "test": "Hendrycks & Dietterich's mCE and relative mCE with this model as the baseline: each "
                    "corruption's error summed over the severities over the reference's, averaged over the "
                    "corruptions; 95 % paired bootstrap interval over the images both models saw"}


def _errors_by_id(entry: dict[str, Any]) -> dict[str, tuple[float, list[float]]]:
    per = entry.get("per_sample") or {}
    return {sid: (float(c), [float(x) for x in e])
            for sid, c, e in zip(per.get("ids") or [], per.get("clean_error") or [], per.get("corruption_error") or [])}

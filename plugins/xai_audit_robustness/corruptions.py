"""corruptions: the common corruptions of Hendrycks & Dietterich (ImageNet-C), each at five severities.

    hypotheses:
      - corruptions: {corruptions: [gaussian_noise, defocus_blur, jpeg_compression], severities: [1, 3, 5]}

The corruptions come from the ``imagecorruptions`` package (the maintained ``imagecorruptions-imaug`` fork of
the reference implementation; the original 1.1.2 no longer runs on current scikit-image and SciPy), and one
more: ImageNet-C has no under-exposure (its ``brightness`` only brightens), so ``darken`` lowers the HSV value
by the same steps (hue and saturation kept). Each image
is corrupted with a seed of its own (the plan's seed, the corruption, the severity and the sample's id), so a
run is repeatable and a subset sees the same corrupted images. The library needs images of at least 32 px:
smaller images are enlarged by an integer factor (nearest neighbour), corrupted, and sampled back (a warning
says so: blurs are then milder than at full size).

Every corrupted copy goes through ``context.predict``, one chunk of images at a time, at the audit's batch size.

Statistics, with labels (accuracy) or without (agreement with the model's own clean predictions):

* the hypothesis's own test: accuracy over every corruption and severity against the clean images, per image
  (the exact sign test on each image's clean correctness minus its mean correctness under corruption, which
  is McNemar's test when there is one corrupted copy), with a paired bootstrap interval of the drop;
* one test per corruption, the same over its severities, and its shortcut test at the most severe level
  (does one class gain the changed predictions? :func:`xai_audit.api.compare`): all of them enter the
  audit's Holm correction;
* per severity: accuracy with its Wilson interval and the paired McNemar test against the clean images (from
  :func:`xai_audit.api.compare`), shown in a table with unadjusted p-values; with ``test_each_severity`` they
  also enter the Holm correction;
* the corruption error (mean error over the severities) and the same relative to the clean error, and their
  mean over the corruptions (mCE), with bootstrap intervals; per class and per group breakdowns.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from xai_audit.api import (
    ALPHA,
    DataError,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    InterventionOptions,
    InterventionRun,
    bootstrap_paired_diff_ci,
    compare,
    shrink_for_report,
    subsample,
)
from xai_audit_robustness._common import as_list, group_columns, sign_test, wilson

#: every corruption of the library, in its order (checked without importing it: it loads numba)
LIBRARY_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
#: ImageNet-C has no under-exposure (its ``brightness`` only brightens); ``darken`` is that corruption with its
#: shifts negated: the HSV value lowered by 0.1 to 0.5, as the library raises it
EXTRA_CORRUPTIONS = ("darken",)
ALL_CORRUPTIONS = LIBRARY_CORRUPTIONS + EXTRA_CORRUPTIONS
#: a representative set that runs fast: noise, two blurs, weather, digital
DEFAULT_CORRUPTIONS = (
    "gaussian_noise", "defocus_blur", "gaussian_blur", "brightness", "contrast", "jpeg_compression", "pixelate",
    "fog", "frost",
)
#: the library refuses smaller images
MIN_SIDE = 32
#: images per chunk: read once, corrupted every way, predicted
CHUNK = 256


class CorruptionsOptions(InterventionOptions):
    corruptions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CORRUPTIONS),
        description=f"which corruptions (of {', '.join(ALL_CORRUPTIONS)})",
    )
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="severities, each 1 to 5")
    reference_model: str | None = Field(
        None,
        description="in a plan of several models, the one whose corruption errors the others' are divided by (the "
        "mCE relative to a reference model, on the comparison page); default: the first model",
    )
    test_each_severity: bool = Field(
        False,
        description="also enter each severity's paired test into the audit's Holm correction (default: one test "
        "per corruption over its severities; the per-severity p-values are shown unadjusted)",
    )

    @field_validator("corruptions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [c for c in value if c not in ALL_CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruption {unknown[0]!r}; known: {', '.join(ALL_CORRUPTIONS)}")
        if not value:
            raise ValueError("name at least one corruption")
        return list(dict.fromkeys(value))

    @field_validator("severities")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if not value or any(s not in (1, 2, 3, 4, 5) for s in value):
            raise ValueError("severities are 1, 2, 3, 4 or 5")
        return sorted(set(value))


def label(name: str) -> str:
    return name.replace("_", " ")


class _TextureCache:
    """Stands in for the library's ``cv2`` module: ``frost`` reads one of six texture files from disk and resizes
    it on every call (about 25 ms an image); this keeps each texture, and each resized copy, after the first read.
    Everything else is the real cv2, and the results are the same."""

    def __init__(self, cv2: Any):
        self._cv2 = cv2
        self._read: dict[tuple, np.ndarray] = {}
        self._resized: dict[tuple, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cv2, name)

    def imread(self, path: Any, *args: Any) -> np.ndarray:
        key = (str(path), *args)
        if key not in self._read:
            self._read[key] = self._cv2.imread(str(path), *args)
        return self._read[key]

    def resize(self, src: np.ndarray, dsize: Any = None, *args: Any, **kwargs: Any) -> np.ndarray:
        if not any(src is texture for texture in self._read.values()):
            return self._cv2.resize(src, dsize, *args, **kwargs)
        key = (id(src), tuple(dsize) if dsize is not None else None, args, tuple(sorted(kwargs.items())))
        if key not in self._resized:
            self._resized[key] = self._cv2.resize(src, dsize, *args, **kwargs)
        return self._resized[key]


def _library():
    import imagecorruptions
    import imagecorruptions.corruptions as implementation

    if not isinstance(implementation.cv2, _TextureCache):
        implementation.cv2 = _TextureCache(implementation.cv2)
    return imagecorruptions.corrupt


def darken(images: np.ndarray, severity: int) -> np.ndarray:
    """ImageNet-C's ``brightness`` turned around: the HSV value lowered by 0.1 to 0.5 (severity 1 to 5). With hue
    and saturation kept, that is each pixel's RGB scaled by (V - shift) / V, V its largest channel."""
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    value = images.max(axis=1, keepdims=True)
    scale = np.where(value > 0, np.clip(value - shift, 0, 1) / np.maximum(value, 1e-12), 0.0)
    return np.clip(images * scale, 0, 1).astype(np.float32)


def corrupt(images: np.ndarray, ids: list[str], name: str, severity: int, seed: int) -> np.ndarray:
    """``images`` (N, 3, H, W) in [0, 1] under corruption ``name`` at ``severity``, each with its own seed."""
    if name == "darken":  # deterministic: no seed
        quantised = np.clip(np.round(np.asarray(images, np.float32) * 255), 0, 255) / 255.0
        return np.round(darken(quantised, severity) * 255) / 255.0
    library_corrupt = _library()

    n, _, h, w = images.shape
    factor = int(np.ceil(MIN_SIDE / min(h, w))) if min(h, w) < MIN_SIDE else 1
    hwc = np.clip(np.round(images.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    if factor > 1:
        hwc = hwc.repeat(factor, axis=1).repeat(factor, axis=2)
    out = np.empty((n, h, w, 3), np.float32)
    state = np.random.get_state()  # the library draws from numpy's global generator: seed it per image, restore
    try:
        for i in range(n):
            np.random.seed(zlib.crc32(f"{seed}:{name}:{severity}:{ids[i]}".encode()))
            changed = np.asarray(library_corrupt(hwc[i], corruption_name=name, severity=severity), np.float32)
            if factor > 1:
                changed = changed[factor // 2 :: factor, factor // 2 :: factor][:h, :w]
            out[i] = changed / 255.0
    finally:
        np.random.set_state(state)
    return np.clip(out.transpose(0, 3, 1, 2), 0.0, 1.0)


class CorruptionsHypothesis(HypothesisPlugin):
    name = "corruptions"
    description = (
        "Common corruptions (Hendrycks & Dietterich) at five severities: accuracy against severity, paired tests "
        "against the clean images, shortcut or fragility, corruption error (mCE)."
    )
    Options = CorruptionsOptions

    def augmentation(self, finding, result):
        """Train on the corruptions the finding names, at the severities tested."""
        details = result.get("details") or {}
        test = str(finding.get("test", ""))
        name = test.split(": ", 1)[-1]
        names = [name] if name in ALL_CORRUPTIONS else list(details.get("corruptions") or self.options.corruptions)
        levels = list(details.get("severities") or self.options.severities)
        return {"transform": "corruption", "library": "imagecorruptions", "names": names,
                "severity": [min(levels), max(levels)]}

    def test(self, context: HypothesisContext) -> HypothesisResult:
        opts: CorruptionsOptions = self.options
        ctx = subsample(context, opts.sample)
        n = len(ctx.samples)
        if n == 0:
            raise DataError("corruptions: no samples to corrupt")
        names, levels = list(opts.corruptions), list(opts.severities)
        ids = [s.id for s in ctx.samples]
        k = len(ctx.classes)
        # each corruption and severity is a part of its own in the step's cache: a plan that adds one computes
        # only that one (its key: the corruption, the severity and the images corrupted)
        images_key = hashlib.sha256("\n".join(ids).encode()).hexdigest()

        def part(c: str, s: int) -> dict[str, Any]:
            return {"corruption": c, "severity": s, "images": images_key, "seed": ctx.seed}

        after: dict[tuple[str, int], np.ndarray] = {}
        example: dict[tuple[str, int], np.ndarray] = {}
        for c in names:
            for s in levels:
                hit = ctx.parts.get(part(c, s)) if ctx.parts is not None else None
                if hit is not None and hit.get("probs") is not None and hit["probs"].shape == (n, k):
                    after[(c, s)], example[(c, s)] = hit["probs"], hit["example"]
        missing = [(c, s) for c in names for s in levels if (c, s) not in after]
        after.update({key: np.zeros((n, k), np.float32) for key in missing})
        first = np.asarray(ctx.samples[0].image, np.float32)
        first_image, shape = shrink_for_report(first), (n, *first.shape)
        if missing:
            for rows, images in ctx.batches(CHUNK):
                for c, s in missing:
                    changed = corrupt(images, ids[rows], c, s, ctx.seed)
                    after[(c, s)][rows] = ctx.predict(changed)
                    if rows.start == 0:
                        example[(c, s)] = shrink_for_report(changed[0])
            if ctx.parts is not None:
                for c, s in missing:
                    ctx.parts.put(part(c, s), {"probs": after[(c, s)], "example": example[(c, s)]})
        return _result(ctx, opts, after, example, first_image, shape)


def _result(ctx: HypothesisContext, opts: CorruptionsOptions, after: dict, example: dict, first_image, shape
            ) -> HypothesisResult:
    names, levels = list(opts.corruptions), list(opts.severities)
    n = len(ctx.samples)
    labels = ctx.labels
    labelled = labels is not None
    pred0 = ctx.probs.argmax(axis=1)
    truth = labels if labelled else pred0  # without labels: agreement with the model's own clean predictions
    ok0 = pred0 == truth
    word = "accuracy" if labelled else "agreement with the clean predictions"
    ok = {key: probs.argmax(axis=1) == truth for key, probs in after.items()}

    severity_rows, tests, severity_tests = [], [], []
    per_corruption: dict[str, dict[str, Any]] = {}
    top = levels[-1]
    for c in names:
        for s in levels:
            run = InterventionRun(before=ctx.probs, after=after[(c, s)], example_index=np.zeros(0, int),
                                  example_after=np.zeros((0, 3, 1, 1), np.float32))
            what = f"{label(c)} corrupts the images at severity {s}"
            r = compare(ctx, run, what=what, options=opts)
            shortcut = r.tests[0] if r.tests else None
            acc = float(ok[(c, s)].mean())
            severity_rows.append({
                "corruption": c, "severity": s, "n": n, word: acc, "ci": wilson(int(ok[(c, s)].sum()), n),
                "drop": float(ok0.mean() - acc),
                "drop ci": as_list(r.ci),  # the paired bootstrap interval of the drop (of the flip rate: Wilson)
                "p (unadjusted)": r.p_value,
                "flip rate": r.details.get("flip_rate"),
                "gaining class": (shortcut or {}).get("details", {}).get("class"),
                "gain": (shortcut or {}).get("effect"),
                "shortcut p (unadjusted)": (shortcut or {}).get("p_value"),
            })
            if opts.test_each_severity:
                severity_tests.append(_as_test(f"{c} @ {s}", r, "fragility"))
            if s == top and shortcut is not None:
                per_corruption.setdefault(c, {})["shortcut"] = shortcut
        per_corruption.setdefault(c, {}).update(_corruption_test(c, ok0, [ok[(c, s)] for s in levels], ctx, opts,
                                                                   labelled, word))
    for c in names:
        entry = per_corruption[c]
        tests.append(entry["test"])
        shortcut = entry.get("shortcut")
        if shortcut is not None:
            shortcut = dict(shortcut)
            shortcut.update(name=f"shortcut: {c}", explains=c,
                            claim=shortcut["claim"].replace(f"at severity {top}.", f"at severity {top} (the most "
                                                                                   "severe tested)."))
            tests.append(shortcut)
    tests += severity_tests

    # the hypothesis's own test: every corruption and severity together
    all_ok = np.stack([ok[key] for key in ok]).mean(axis=0)
    diff = ok0.astype(float) - all_ok
    effect = float(diff.mean())
    ci = bootstrap_paired_diff_ci(ok0, all_ok, seed=ctx.seed)
    p_value = sign_test(diff)
    supported = p_value < ALPHA and effect > 0 and ci[0] > opts.min_effect
    mce = _mce(ok0, {c: np.stack([ok[(c, s)] for s in levels]) for c in names}, ctx.seed)
    details: dict[str, Any] = {
        "corruptions": names, "severities": levels, "labelled": labelled,
        "implementation": _implementation(),
        "clean": float(ok0.mean()), "clean_ci": wilson(int(ok0.sum()), n),
        "by_severity": {c: [float(ok[(c, s)].mean()) for s in levels] for c in names},
        "corruption_error": {c: per_corruption[c]["ce"] for c in names},
        "relative_corruption_error": {c: per_corruption[c]["relative_ce"] for c in names},
        **mce,
        "worst_corruption": max(names, key=lambda c: per_corruption[c]["test"]["effect"]),
        "min_effect": opts.min_effect, "test_each_severity": opts.test_each_severity,
    }
    gaining = {r["corruption"]: r for r in severity_rows if r["severity"] == top}
    worst_rows = sorted(
        ({"corruption": c, f"mean {word}": float(np.stack([ok[(c, s)] for s in levels]).mean()),
          "drop": per_corruption[c]["test"]["effect"], "drop ci": per_corruption[c]["test"]["ci"],
          f"{word} at severity {top}": float(ok[(c, top)].mean()),
          f"class gaining at severity {top}": gaining[c]["gaining class"],
          "its gain": gaining[c]["gain"],
          "relative corruption error": per_corruption[c]["relative_ce"],
          "p (unadjusted)": per_corruption[c]["test"]["p_value"]} for c in names),
        key=lambda row: -row["drop"],
    )
    breakdown = {"worst corruptions": worst_rows, "per severity": severity_rows,
                 "per class": _per_class(ctx, ok0, ok, names, labelled, word)}
    breakdown.update(_per_group(ctx, ok0, ok, names, word))
    warnings = []
    if shape is not None and min(shape[-2:]) < MIN_SIDE:
        warnings.append(
            f"the images are {shape[-2]}x{shape[-1]} px, smaller than the {MIN_SIDE} px the corruption library "
            "needs: they were enlarged, corrupted and sampled back, so blurs are milder than at full size"
        )
    figures, arrays = _figures(ctx, names, levels, ok0, ok, word, worst_rows, example, first_image)
    flips_any = np.zeros(n, bool)
    for probs in after.values():
        flips_any |= probs.argmax(axis=1) != pred0
    examples = [ctx.samples[i].id for i in np.flatnonzero(flips_any)[:8]]
    return HypothesisResult(
        claim=(f"The model's {word} drops when the images are corrupted (mean over {len(names)} corruptions at "
               f"severities {', '.join(map(str, levels))})."),
        metric="accuracy" if labelled else "flip rate (share of predictions that change)",
        before=float(ok0.mean()) if labelled else 0.0,
        after=float(all_ok.mean()) if labelled else effect,
        effect=effect, ci=ci, p_value=p_value,
        verdict="supported" if supported else "not supported", n=n,
        test=("exact sign test on each image's clean correctness minus its mean correctness over every corrupted "
              "copy (McNemar's test for one copy); 95 % paired bootstrap interval of the drop"
              if labelled else
              "no labels: exact sign test on each image's share of corrupted copies whose prediction changes; "
              "95 % paired bootstrap interval of the mean share"),
        breakdown=breakdown, examples=examples, details=details, figures=figures, arrays=arrays,
        kind="fragility", tests=tests, warnings=warnings, key_tables=["worst corruptions"],
        # each image's error (wrong, or without labels changed) clean and under each corruption (mean over the
        # severities, in the order of details.corruptions): a comparison of several models pairs them image by
        # image for the corruption error relative to a reference model
        per_sample={"ids": [s.id for s in ctx.samples], "clean_error": (~ok0).astype(int).tolist(),
                    "corruption_error": np.stack([1 - np.stack([ok[(c, s)] for s in levels]).mean(axis=0)
                                                  for c in names], axis=1).round(6).tolist()},
    )


def _corruption_test(c: str, ok0: np.ndarray, oks: list[np.ndarray], ctx: HypothesisContext,
                     opts: CorruptionsOptions, labelled: bool, word: str) -> dict[str, Any]:
    mean_ok = np.stack(oks).mean(axis=0)
    diff = ok0.astype(float) - mean_ok
    effect = float(diff.mean())
    ci = bootstrap_paired_diff_ci(ok0, mean_ok, seed=ctx.seed)
    p_value = sign_test(diff)
    supported = p_value < ALPHA and effect > 0 and ci[0] > opts.min_effect
    err0 = 1 - float(ok0.mean())
    ce = 1 - float(mean_ok.mean())
    levels = ", ".join(map(str, opts.severities))
    test = {
        "name": c, "kind": "fragility", "explains": "",
        "claim": f"The model's {word} drops when {label(c)} corrupts the images (severities {levels}).",
        "metric": "accuracy" if labelled else "flip rate (share of predictions that change)",
        "before": float(ok0.mean()) if labelled else 0.0,
        "after": float(mean_ok.mean()) if labelled else effect,
        "effect": effect, "ci": as_list(ci), "p_value": p_value,
        "verdict": "supported" if supported else "not supported", "n": len(ok0),
        "test": ("exact sign test on each image's clean correctness minus its mean correctness over the severities; "
                 "95 % paired bootstrap interval of the drop" if labelled else
                 "no labels: exact sign test on each image's share of severities whose prediction changes; "
                 "95 % paired bootstrap interval of the mean share"),
        "details": {"corruption": c, "by_severity": [float(o.mean()) for o in oks], "severities": list(opts.severities),
                    "corruption_error": ce, "relative_corruption_error": ce / err0 if err0 > 0 else None,
                    "min_effect": opts.min_effect},
    }
    return {"test": test, "ce": ce, "relative_ce": ce / err0 if err0 > 0 else None}


def _mce(ok0: np.ndarray, oks: dict[str, np.ndarray], seed: int, n_boot: int = 2000) -> dict[str, Any]:
    """Mean corruption error over the corruptions, and relative to the clean error, with bootstrap intervals."""
    n = len(ok0)
    per_image = np.stack([o.mean(axis=0) for o in oks.values()]).mean(axis=0)  # mean correctness, (n,)
    err0 = 1 - float(ok0.mean())
    mce = 1 - float(per_image.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot_mce = 1 - per_image[idx].mean(axis=1)
    boot_err0 = 1 - ok0.astype(float)[idx].mean(axis=1)
    out: dict[str, Any] = {"mce": mce, "mce_ci": [float(np.percentile(boot_mce, 2.5)), float(np.percentile(boot_mce, 97.5))],
                           "relative_mce": mce / err0 if err0 > 0 else None, "relative_mce_ci": None}
    ratio = boot_mce[boot_err0 > 0] / boot_err0[boot_err0 > 0]
    if err0 > 0 and len(ratio) >= 0.95 * n_boot:
        out["relative_mce_ci"] = [float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))]
    return out


def _per_class(ctx, ok0, ok, names, labelled, word) -> list[dict[str, Any]]:
    """Per class (true class with labels, clean prediction without): clean and mean corrupted, with the drop."""
    key = ctx.labels if labelled else ctx.probs.argmax(axis=1)
    rows = []
    for c in names:
        mean_ok = np.stack([ok[(c, s)] for s in sorted({s for (cc, s) in ok if cc == c})]).mean(axis=0)
        for j, cls in enumerate(ctx.classes):
            mask = key == j
            if not mask.any():
                continue
            rows.append({"corruption": c, "class": cls, "n": int(mask.sum()), "clean": float(ok0[mask].mean()),
                         f"mean {word}": float(mean_ok[mask].mean()),
                         "drop": float(ok0[mask].mean() - mean_ok[mask].mean()),
                         "drop ci": as_list(bootstrap_paired_diff_ci(ok0[mask], mean_ok[mask], seed=ctx.seed))})
    return rows


def _per_group(ctx, ok0, ok, names, word) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for column, values in group_columns(ctx.samples).items():
        rows = []
        for c in names:
            mean_ok = np.stack([ok[(c, s)] for s in sorted({s for (cc, s) in ok if cc == c})]).mean(axis=0)
            for g in sorted(set(values.tolist())):
                mask = values == g
                rows.append({"corruption": c, "group": g, "n": int(mask.sum()), "clean": float(ok0[mask].mean()),
                             f"mean {word}": float(mean_ok[mask].mean()),
                             "drop": float(ok0[mask].mean() - mean_ok[mask].mean()),
                             "drop ci": as_list(bootstrap_paired_diff_ci(ok0[mask], mean_ok[mask], seed=ctx.seed))})
        out[f"per group: {column}"] = rows
    return out


def _figures(ctx, names, levels, ok0, ok, word, worst_rows, example, first_image):
    n = len(ok0)
    clean_ci = wilson(int(ok0.sum()), n) or [float(ok0.mean())] * 2
    cis = {(c, s): wilson(int(ok[(c, s)].sum()), n) or [float(ok[(c, s)].mean())] * 2 for c in names for s in levels}
    figures: list[dict[str, Any]] = [{
        "kind": "lines",
        "title": f"{word.capitalize()} against severity",
        "x": [0] + list(levels),
        "series": [{"label": label(c), "y": [float(ok0.mean())] + [float(ok[(c, s)].mean()) for s in levels],
                    "low": [clean_ci[0]] + [cis[(c, s)][0] for s in levels],
                    "high": [clean_ci[1]] + [cis[(c, s)][1] for s in levels], "marker": "o"}
                   for c in names],
        "xlabel": "severity (0 = clean)",
        "ylabel": word, "key": True, "height": 3.4,
        "caption": (f"Degradation curves: the model's {word} on the clean images (severity 0) and under each "
                    f"corruption at each severity, n = {n}, with 95 % Wilson bands (numbers in the table "
                    "'per severity')."),
        "alt": f"Line plot of {word} against corruption severity, one line per corruption.",
    }]
    worst = worst_rows[: min(10, len(worst_rows))]
    figures.append({
        "kind": "bars",
        "title": "Drop per corruption (mean over the severities)",
        "labels": [label(r["corruption"]) for r in worst],
        "series": [{"label": "drop", "values": [r["drop"] for r in worst],
                    "low": [r["drop ci"][0] for r in worst], "high": [r["drop ci"][1] for r in worst]}],
        "ylabel": f"{word} drop",
        "caption": "The worst corruptions first, each with the 95 % paired bootstrap interval of its drop.",
        "alt": "Bar chart of the drop per corruption with intervals.",
    })
    arrays: dict[str, np.ndarray] = {}
    if first_image is not None and example:
        tiles, titles = [], []
        for c in names:
            tiles.append(first_image)
            titles.append(f"{label(c)}\nclean")
            for s in levels:
                tiles.append(example[(c, s)])
                titles.append(f"severity {s}")
        arrays["corrupted"] = np.stack(tiles).astype(np.float32)
        figures.append({
            "kind": "images", "title": "", "images": {"array": "corrupted"}, "titles": titles,
            "columns": 1 + len(levels),
            "caption": f"One audited image ({ctx.samples[0].id}) clean and under each corruption at each severity.",
            "alt": "Grid of one image under each corruption, one row per corruption, severities left to right.",
        })
    return figures, arrays


def _as_test(name: str, r: HypothesisResult, kind: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "explains": "", "claim": r.claim, "metric": r.metric, "before": r.before,
            "after": r.after, "effect": r.effect, "ci": as_list(r.ci), "p_value": r.p_value, "verdict": r.verdict,
            "n": r.n, "test": r.test, "details": {k: r.details.get(k) for k in ("flip_rate", "flip_rate_ci",
                                                                                "min_effect")}}


def _implementation() -> str:
    from importlib import metadata

    for dist in ("imagecorruptions-imaug", "imagecorruptions"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "imagecorruptions"


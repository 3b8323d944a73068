"""The runner: baseline predictions, then explainers, then hypotheses.

Each step reads only what the step before produced, and each step's output is
cached by a content hash of model weights, data and options. A plugin that
raises is recorded in ``failures``; the rest of the audit completes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from xai_audit import __version__
from xai_audit.cache import Cache, content_key
from xai_audit.errors import DataError, ModelError, XaiAuditError
from xai_audit.plan import Plan, Step
from xai_audit.plugins import Registry
from xai_audit.checks import evaluate_checks
from xai_audit.examples import choose_examples, describe_chosen
from xai_audit.executors import make_executor
from xai_audit.findings import derive_findings
from xai_audit.limits import time_limit, with_halving_batch
from xai_audit.provenance import build_provenance
from xai_audit.recommend import recommend
from xai_audit.samples import DEFAULT_CACHE_BYTES, LazySample, SampleCache, read_metadata
from xai_audit.samples import chunks as sample_chunks
from xai_audit.serialize import (
    explanation_from_cache,
    explanation_to_cache,
    hypothesis_from_cache,
    hypothesis_to_cache,
    to_jsonable,
)
from xai_audit.stats import ALPHA, holm, wilson_ci
from xai_audit import trust as trust_metrics
from xai_audit.types import Dataset, Explanation, HypothesisContext, HypothesisResult, LoadContext, ModelAdapter, Sample

SCHEMA_VERSION = "1.0"
log = logging.getLogger("xai_audit")


@dataclass
class AuditOutcome:
    """What the runner hands the report stage: plain results and the arrays for figures."""

    results: dict[str, Any]
    images: dict[str, np.ndarray]
    explanations: dict[str, Explanation]
    hypotheses: dict[str, HypothesisResult]
    predictions: dict[str, tuple[int, float]]
    labels: dict[str, int | None]
    #: the samples chosen for the explainers (a several-model plan reuses them for every model)
    explained_ids: list[str] = dataclasses.field(default_factory=list)


class _Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool, total: int):
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description:<34}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), transient=False,
            )
            self._task = self._progress.add_task("audit", total=total)

    def __enter__(self) -> "_Progress":
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        if self._progress is not None:
            self._progress.update(self._task, description=description)
        try:
            yield
        finally:
            if self._progress is not None:
                self._progress.advance(self._task)


def run_audit(
    plan: Plan, registry: Registry, *, cache: Cache, progress: bool = False, explain_ids: list[str] | None = None
) -> AuditOutcome:
    """Audit ``plan.model``. ``explain_ids`` fixes which samples the explainers explain
    (a several-model plan explains the same images with every model)."""
    started = _now()
    seed = plan.seed
    model, dataset = load_model_and_data(plan)
    skipped: list[dict[str, Any]] = []
    samples = _select_samples(dataset, plan.sample, seed, plan.on_bad_sample, skipped,
                              cache_bytes=plan.runtime.image_cache_mb * 2**20)
    samples = _align_labels(samples, dataset, model, plan)
    ids = [s.id for s in samples]
    ids_sha = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    model_fp, data_fp = model.fingerprint(), dataset.fingerprint()
    region_source = None
    if plan.regions is not None:
        region_source = _load(plan.regions, LoadContext(plan.base_dir, seed, plan.runtime.device), DataError, "region source")
        samples = _add_regions(samples, region_source, plan, cache, {"data": data_fp, "ids": ids_sha})
        data_fp = content_key(data_fp, region_source.fingerprint(), plan.regions.options_dict())
    base_key = {"model": model_fp, "data": data_fp, "ids": ids_sha, "seed": seed}
    failures: list[dict[str, str]] = []
    n_steps = 1 + len(plan.explainers) + len(plan.hypotheses)

    # predictions and explainers run in this process or on Ray workers (runtime.executor)
    with _Progress(progress, n_steps) as bar, make_executor(plan, model) as executor:
        with bar.step("baseline predictions"):
            probs = _baseline(model, samples, plan, cache, base_key, executor)
        labels = np.array([-1 if s.label is None else s.label for s in samples])
        labelled = bool(len(samples)) and all(s.label is not None for s in samples)
        preds = probs.argmax(axis=1)

        if explain_ids is not None:
            index_of = {s.id: i for i, s in enumerate(samples)}
            chosen = np.array(sorted(index_of[i] for i in explain_ids if i in index_of), dtype=np.int64)
            selection = describe_chosen(samples, chosen, probs, labels if labelled else None, list(model.classes))
        else:
            selection = choose_examples(samples, probs, labels if labelled else None, plan.explain.samples,
                                        list(model.classes))
            chosen = selection.indices
        chosen_samples = [samples[i].materialise() for i in chosen]  # few: held, not re-read by every explainer
        targets = preds[chosen]
        trust_session = _trust_session(plan, model, dataset, chosen_samples, targets, seed)
        explanations: dict[str, Explanation] = {}
        explainer_results: dict[str, Any] = {}
        for step in plan.explainers:
            with bar.step(f"explainer {step.name}"):
                entry = {"status": "ok", "plugin": step.plugin.name, "options": step.options_dict()}
                try:
                    if getattr(step.plugin.cls, "wants_all_samples", False):
                        exp = _explain(step, model, samples, preds, seed, cache, base_key)
                    else:
                        exp = _explain(step, model, chosen_samples, targets, seed, cache, base_key, executor)
                        _trust(step, exp, entry, trust_session, cache, base_key, failures)
                    explanations[step.name] = exp
                    entry.update(
                        n_samples=len(exp.sample_ids), sample_ids=exp.sample_ids, targets=exp.targets.tolist(),
                        scalars=exp.scalars, tables=exp.tables, notes=exp.notes,
                    )
                except Exception as exc:  # a failing plugin is recorded, not fatal
                    entry["status"] = "failed"
                    failures.append(_failure(f"explainer {step.name}", step, exc))
                explainer_results[step.name] = entry
        _agreement(explainer_results, explanations, [s.id for s in chosen_samples])

        hyp_context = HypothesisContext(
            model=model, samples=samples, probs=probs, classes=list(model.classes), seed=seed,
            predict=lambda images: executor.predict(images, "a hypothesis' predictions"),
            load_dataset=functools.partial(_load_other_dataset, registry, plan),
        )
        hypothesis_results: dict[str, Any] = {}
        hypothesis_objects: dict[str, HypothesisResult] = {}
        suggested: dict[str, dict[str, str]] = {}
        steps = list(plan.hypotheses)
        if plan.explain.test_suggestions:
            steps += _suggested_steps(registry, steps, explanations, explainer_results, suggested, failures)
        for step in steps:
            with bar.step(f"hypothesis {step.name}"):
                entry = {"status": "ok", "plugin": step.plugin.name, "options": step.options_dict(),
                         **suggested.get(step.name, {})}
                try:
                    result = _hypothesis(step, hyp_context, cache, base_key)
                    hypothesis_objects[step.name] = result
                    entry.update(_result_dict(result))
                except Exception as exc:
                    entry["status"] = "failed"
                    failures.append(_failure(f"hypothesis {step.name}", step, exc))
                hypothesis_results[step.name] = entry
    n_tests = _correct_for_multiple_tests(hypothesis_results)

    accuracy, confusion, per_class = _accuracy_tables(labels, preds, list(model.classes), labelled)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xai-audit", "version": __version__},
        "title": plan.report.title,
        "started": started,
        "finished": None,
        "seed": seed,
        "plan": plan.as_run(),
        "provenance": build_provenance(plan, registry, model, dataset, region_source),
        "classes": list(model.classes),
        "samples": {"n": len(samples), "ids_sha256": ids_sha, "labelled": labelled},
        "per_sample": {
            "ids": ids,
            "labels": [s.label for s in samples],
            "predictions": preds.tolist(),
            "confidence": probs.max(axis=1).round(6).tolist(),
        },
        "accuracy": accuracy,
        "confusion_matrix": confusion,
        "per_class": per_class,
        "prediction_share": {c: float(np.mean(preds == k)) if len(preds) else 0.0 for k, c in enumerate(model.classes)},
        "examples": selection.summary,
        "explainers": explainer_results,
        "hypotheses": hypothesis_results,
        "findings": [],
        "failures": failures,
        "skipped_samples": skipped,
        "cache": {"hits": cache.hits, "misses": cache.misses},
    }
    results["findings"] = derive_findings(results)
    results["multiple_testing"] = {"method": "holm", "alpha": ALPHA, "n_tests": n_tests}
    results["recommendations"] = recommend(results, samples)
    results["finished"] = _now()
    results = to_jsonable(results)
    results["checks"] = to_jsonable(evaluate_checks(plan.checks, results))

    shown = set(chosen.tolist())
    explained_ids = {sid for exp in explanations.values() for sid in exp.sample_ids}
    shown.update(i for i, s in enumerate(samples) if s.id in explained_ids)
    for entry in hypothesis_results.values():
        shown.update(i for i, s in enumerate(samples) if s.id in set(entry.get("examples", [])))
    return AuditOutcome(
        results=results,
        images={samples[i].id: samples[i].image for i in sorted(shown)},
        explanations=explanations,
        hypotheses=hypothesis_objects,
        predictions={samples[i].id: (int(preds[i]), float(probs[i, preds[i]])) for i in sorted(shown)},
        labels={samples[i].id: samples[i].label for i in sorted(shown)},
        explained_ids=[samples[i].id for i in chosen],
    )


# --------------------------------------------------------------------------- loading


def load_model_and_data(plan: Plan) -> tuple[ModelAdapter, Dataset]:
    """Load the model and the data set, and check that the data's images go through the model."""
    context = LoadContext(base_dir=plan.base_dir, seed=plan.seed, device=plan.runtime.device)
    _seed_everything(plan.seed)  # a model built without a weights file is then the same every time
    model = _load(plan.model, context, ModelError, "model")
    dataset = _load(plan.dataset, context, DataError, "data set")
    if len(dataset) == 0:
        raise DataError("the data set has no samples")
    first = _first_readable(dataset, plan.on_bad_sample)
    model.check(*first.image.shape[-2:])
    return model, dataset


def _load_other_dataset(registry: Registry, plan: Plan, options: dict[str, Any]) -> Dataset:
    """A second data set from plan-style options ``{"loader": name, ...}`` (for dataset-shift)."""
    options = dict(options)
    name = options.pop("loader", None)
    if name not in registry.names("dataset"):
        raise DataError(f"unknown dataset loader {name!r}; known: {', '.join(registry.names('dataset'))}")
    info = registry.get("dataset", name)
    try:
        validated = info.cls.Options(**options)
    except Exception as exc:
        raise DataError(f"bad options for dataset loader {name!r}: {exc}") from exc
    context = LoadContext(base_dir=plan.base_dir, seed=plan.seed, device=plan.runtime.device)
    return _load(Step("dataset", name, info, validated), context, DataError, "second data set")


def _first_readable(dataset: Dataset, on_bad_sample: str) -> Sample:
    tries = min(len(dataset), 100 if on_bad_sample == "skip" else 1)
    for i in range(tries):
        try:
            return dataset[i]
        except DataError:
            if i == tries - 1:
                raise
    raise DataError("the data set has no readable sample")  # pragma: no cover


def _load(step: Step, context: LoadContext, error: type[XaiAuditError], what: str) -> Any:
    try:
        return step.instantiate().load(context)
    except XaiAuditError:
        raise
    except Exception as exc:
        raise error(f"cannot load the {what} with plugin '{step.name}': {type(exc).__name__}: {exc}") from exc


def _add_regions(samples: list[LazySample], source: Any, plan: Plan, cache: Cache, data_key: dict) -> list[LazySample]:
    """Give region masks from the plan's region source to the samples whose data set has none."""
    todo = [i for i, s in enumerate(samples) if not s.has_own_regions]  # known from the first read
    if not todo:
        return samples
    key = content_key("regions", plan.regions.name, plan.regions.options_dict(), source.fingerprint(), data_key, todo)
    hit = cache.get(key)
    if hit is not None:
        names, arrays = hit[0]["names"], hit[1]
        masks = [{n: arrays[n][k] for n in names} for k in range(len(todo))]
    else:
        masks = []
        for start in range(0, len(todo), plan.runtime.batch_size):
            chunk = todo[start : start + plan.runtime.batch_size]
            masks.extend(source.regions(np.stack([samples[i].image for i in chunk]).astype(np.float32)))
        names = sorted({n for m in masks for n in m})
        shape = samples[todo[0]].image.shape[-2:]
        arrays = {n: np.stack([m.get(n, np.zeros(shape, bool)) for m in masks]) for n in names}
        cache.put(key, {"names": names}, arrays)
        masks = [{n: arrays[n][k] for n in names} for k in range(len(todo))]
    out = list(samples)
    for i, m in zip(todo, masks):
        out[i] = samples[i].with_regions(m)
    return out


def _select_samples(
    dataset: Dataset, sample: int | None, seed: int, on_bad_sample: str = "fail", skipped: list | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> list[LazySample]:
    """The audited samples; an unreadable one stops the audit, or with ``skip`` is listed in ``skipped``.

    Each is read once here; afterwards its image is read again when a step asks for it,
    through a cache of ``cache_bytes`` (xai_audit.samples), so memory does not grow with N.
    """
    n = len(dataset)
    if n == 0:
        raise DataError("the data set has no samples")
    if sample is not None and sample < n:
        indices = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    else:
        indices = np.arange(n)

    def bad(index: int, exc: Exception) -> None:
        if not isinstance(exc, DataError):
            raise exc
        if on_bad_sample != "skip":
            raise DataError(f"{exc} (sample {index}; set dataset.on_bad_sample: skip to audit without it)") from None
        if skipped is not None:
            skipped.append({"index": index, "error": str(exc)})

    samples = read_metadata(dataset, indices, SampleCache(dataset, cache_bytes), bad)
    if not samples:
        raise DataError(f"every one of the {len(indices)} samples was unreadable; the first: {skipped[0]['error'] if skipped else ''}")
    return samples


def _align_labels(samples: list[LazySample], dataset: Dataset, model: ModelAdapter, plan: Plan) -> list[LazySample]:
    """Re-index labels from the data set's class order to the model's."""
    if dataset.classes is None or list(dataset.classes) == list(model.classes):
        return samples
    index = {name: k for k, name in enumerate(model.classes)}
    unknown = [c for c in dataset.classes if c not in index]
    if unknown:
        raise DataError(
            f"data set class {unknown[0]!r} is not among the model's classes {list(model.classes)} "
            f"(dataset loader '{plan.dataset.name}')"
        )
    mapping = {k: index[name] for k, name in enumerate(dataset.classes)}
    return [s if s.label is None else s.with_label(mapping[s.label]) for s in samples]


# --------------------------------------------------------------------------- steps


def _baseline(model: ModelAdapter, samples: list[Sample], plan: Plan, cache: Cache, base_key: dict,
              executor: Any = None) -> np.ndarray:
    key = content_key("baseline", base_key)
    hit = cache.get(key)
    if hit is not None:
        return hit[1]["probs"]
    _seed_everything(plan.seed)
    try:  # chunk by chunk: the images are read as they are needed, never all at once
        if executor is None:
            parts = [
                with_halving_batch(lambda size: model.predict_proba(images, batch_size=size), plan.runtime.batch_size,
                                   "baseline predictions")
                for _, images in sample_chunks(samples, _stream_chunk(plan))
            ]
        else:
            parts = list(executor.predict_chunks((images for _, images in sample_chunks(samples, _stream_chunk(plan))),
                                                 "baseline predictions"))
        probs = np.concatenate(parts) if parts else np.zeros((0, len(model.classes)), np.float32)
    except XaiAuditError:
        raise
    except Exception as exc:
        raise ModelError(f"the model failed on the baseline predictions: {type(exc).__name__}: {exc}") from exc
    if not np.all(np.isfinite(probs)):
        bad = samples[int(np.flatnonzero(~np.isfinite(probs).all(axis=1))[0])].id
        raise ModelError(f"the model returned NaN or infinite scores (first on sample {bad!r})")
    cache.put(key, {}, {"probs": probs})
    return probs


def _stream_chunk(plan: Plan) -> int:
    """Images per chunk when the runner walks every sample: several batches, bounded."""
    return max(plan.runtime.batch_size, min(4 * plan.runtime.batch_size, 1024))


def _step_key(kind: str, step: Step, base_key: dict, extra: Any = None) -> str:
    return content_key(
        kind, step.name, step.plugin.package, step.plugin.version, _code_hash(step.plugin.cls),
        step.options_dict(), base_key, extra,
    )


@functools.lru_cache(maxsize=None)
def _code_hash(cls: type) -> str:
    """Hash of the source files of the plugin's package, so an edited plugin never reuses stale results."""
    module = sys.modules.get(cls.__module__)
    path = Path(getattr(module, "__file__", "") or "")
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    for source in sorted(path.parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


def _explain(step, model, samples, targets, seed, cache, base_key, executor=None) -> Explanation:
    plugin = step.instantiate()
    if plugin.needs_gradients and model.module is None:
        raise ModelError(f"'{step.name}' needs gradients, and this model is a black box")
    key = _step_key("explainer", step, base_key, [[s.id for s in samples], np.asarray(targets).tolist()])
    hit = cache.get(key)
    if hit is not None:
        return explanation_from_cache(*hit)
    _seed_everything(seed)
    with time_limit(step.timeout, f"explainer {step.name}"):
        if executor is not None and not plugin.wants_all_samples:  # sharded across workers with executor: ray
            exp = executor.explain(step, samples, np.asarray(targets), seed)
        else:
            exp = plugin.explain(model, samples, np.asarray(targets), seed)
    if plugin.wants_all_samples:  # maps for the samples it names, a subset of those it was given
        unknown = set(exp.sample_ids) - {s.id for s in samples}
        if exp.maps.shape[0] != len(exp.sample_ids) or unknown:
            raise ValueError(f"explainer returned {exp.maps.shape[0]} maps for {len(exp.sample_ids)} sample ids"
                             + (f", {len(unknown)} of them unknown" if unknown else ""))
    elif exp.maps.shape[0] != len(samples):
        raise ValueError(f"explainer returned {exp.maps.shape[0]} maps for {len(samples)} samples")
    cache.put(key, *explanation_to_cache(exp))
    return exp


def _trust_session(plan: Plan, model: ModelAdapter, dataset: Dataset, samples: list[Sample], targets: np.ndarray,
                   seed: int) -> trust_metrics.TrustSession | None:
    spec = plan.explain.trust
    if not spec.enabled or not samples:
        return None
    settings = trust_metrics.TrustSettings(
        steps=spec.steps, sanity_samples=spec.sanity_samples, sanity_stages=spec.sanity_stages, regions=spec.regions,
    )
    return trust_metrics.TrustSession(
        model=model, samples=samples, targets=np.asarray(targets), classes=list(model.classes), seed=seed,
        settings=settings, class_regions=dict(getattr(dataset, "class_regions", None) or {}),
    )


def _trust(step: Step, exp: Explanation, entry: dict[str, Any], session: trust_metrics.TrustSession | None,
           cache: Cache, base_key: dict, failures: list[dict[str, str]]) -> None:
    """Trust metrics for one explainer's maps (xai_audit.trust), cached; a failure is recorded, not fatal."""
    if session is None or list(exp.sample_ids) != [s.id for s in session.samples]:
        return
    key = _step_key("trust", step, base_key, [trust_metrics.code_version(), dataclasses.asdict(session.settings),
                                             exp.sample_ids, np.asarray(exp.targets).tolist(),
                                             sorted(session.class_regions.items())])
    try:
        hit = cache.get(key)
        if hit is None:
            _seed_everything(session.seed)
            data, arrays = trust_metrics.explainer_trust(session, step.instantiate(), exp.maps)
            data = to_jsonable(data)
            cache.put(key, data, arrays)
        else:
            data, arrays = hit
        trust_metrics.attach(exp, entry, data, arrays, session.classes)
    except Exception as exc:  # the maps stand; only their trust scores are missing
        failures.append(_failure(f"trust {step.name}", step, exc))


def _agreement(entries: dict[str, Any], explanations: dict[str, Explanation], ids: list[str]) -> None:
    """Rank correlation between the maps of every pair of explainers that explained the same samples."""
    same = {name: exp.maps for name, exp in explanations.items()
            if list(exp.sample_ids) == ids and "trust" in entries.get(name, {})}
    if len(same) < 2:
        return
    for name, row in trust_metrics.agreement(same).items():
        entries[name]["trust"]["agreement"] = {other: rho for other, rho in row.items() if other != name}


def _suggested_steps(registry: Registry, planned: list[Step], explanations: dict[str, Explanation],
                     explainer_results: dict[str, Any], suggested: dict[str, dict[str, str]],
                     failures: list[dict[str, str]]) -> list[Step]:
    """Hypothesis steps for what the explainers suggest, leaving out those the plan already tests.

    Each explainer's entry lists its suggestions and the step that tested each
    (``tested_as``); ``suggested`` maps a new step's name to who suggested it and why.
    """
    steps: list[Step] = []
    seen = {(s.plugin.name, repr(s.options_dict())): s.name for s in planned}
    for explainer, exp in explanations.items():
        rows = []
        for k, wish in enumerate(exp.suggested_hypotheses):
            plugin, options = str(wish.get("plugin", "")), dict(wish.get("options") or {})
            row = {"plugin": plugin, "options": options, "why": str(wish.get("why", ""))}
            rows.append(row)
            try:
                info = registry.get("hypothesis", plugin)
                step = Step("hypothesis", f"{plugin}-from-{explainer}", info, info.cls.Options(**options))
            except Exception as exc:
                row["tested_as"] = None
                failures.append({"step": f"suggestion {k + 1} of explainer {explainer}", "plugin": plugin,
                                 "error": f"cannot test the suggested hypothesis: {type(exc).__name__}: {exc}",
                                 "traceback": ""})
                continue
            key = (plugin, repr(step.options_dict()))
            if key not in seen:
                base, n = step.name, 1
                while step.name in suggested or any(s.name == step.name for s in planned):
                    n += 1
                    step.name = f"{base}-{n}"
                seen[key] = step.name
                suggested[step.name] = {"suggested_by": explainer, "why": row["why"]}
                steps.append(step)
            row["tested_as"] = seen[key]
        if rows and explainer in explainer_results:
            explainer_results[explainer]["suggestions"] = rows
    return steps


def _hypothesis(step: Step, context: HypothesisContext, cache: Cache, base_key: dict) -> HypothesisResult:
    key = _step_key("hypothesis", step, base_key)
    hit = cache.get(key)
    if hit is not None:
        return hypothesis_from_cache(*hit)
    _seed_everything(context.seed)
    with time_limit(step.timeout, f"hypothesis {step.name}"):
        result = step.instantiate().test(context)
    cache.put(key, *hypothesis_to_cache(result))
    return result


def _result_dict(result: HypothesisResult) -> dict[str, Any]:
    """The result as results.json holds it: numbers and tables; figures and arrays go to the report only."""
    data = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in ("arrays", "figures")}
    data["ci"] = list(result.ci) if result.ci is not None else None
    return to_jsonable(data)


def _correct_for_multiple_tests(hypotheses: dict[str, Any]) -> int:
    """Holm correction across every test of the audit; verdicts follow the adjusted p-value.

    Every test counts once: each hypothesis's own test and each of its further ``tests``.
    """
    entries: list[dict[str, Any]] = []
    for entry in hypotheses.values():
        if entry["status"] != "ok":
            continue
        entries += [e for e in [entry, *(entry.get("tests") or [])] if e.get("p_value") is not None]
    adjusted = holm([e["p_value"] for e in entries])
    for entry, p_adj in zip(entries, adjusted):
        entry["p_value_adjusted"] = p_adj
        if entry["verdict"] == "supported" and p_adj is not None and p_adj >= ALPHA:
            entry["verdict"] = "not supported"
            entry.setdefault("details", {})["note"] = "significant alone, not after Holm correction"
    for entry in hypotheses.values():
        entry.setdefault("p_value_adjusted", None)
        for test in entry.get("tests") or []:
            test.setdefault("p_value_adjusted", None)
    return len(entries)


def _failure(where: str, step: Step, exc: Exception) -> dict[str, str]:
    log.debug("step %s failed", where, exc_info=exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {
        "step": where,
        "plugin": f"{step.plugin.name} {step.plugin.version}",
        "error": f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
        "traceback": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
    }


def _accuracy_tables(labels: np.ndarray, preds: np.ndarray, classes: list[str], labelled: bool):
    n_classes = len(classes)
    share = [float(np.mean(preds == k)) if len(preds) else 0.0 for k in range(n_classes)]
    if not labelled:
        return None, None, [
            {"class": c, "n": None, "recall": None, "precision": None, "predicted_share": share[k]}
            for k, c in enumerate(classes)
        ]
    correct = preds == labels
    ci = wilson_ci(int(correct.sum()), len(correct))
    accuracy = {"value": float(correct.mean()), "ci": list(ci) if ci else None, "n": int(len(correct)), "correct": int(correct.sum())}
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (labels, preds), 1)
    per_class = []
    for k, c in enumerate(classes):
        n_true, n_pred = int(confusion[k].sum()), int(confusion[:, k].sum())
        per_class.append(
            {
                "class": c,
                "n": n_true,
                "recall": confusion[k, k] / n_true if n_true else None,
                "precision": confusion[k, k] / n_pred if n_pred else None,
                "predicted_share": share[k],
            }
        )
    return accuracy, confusion.tolist(), per_class


# --------------------------------------------------------------------------- provenance


def _seed_everything(seed: int) -> None:
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""Stage 3, running: the baseline predictions, the explainers and the hypotheses.

Reads what loading produced (:class:`~xai_audit.load.loading.AuditInputs`) and
the plan. Each step's output is cached by a content hash of model weights,
data, plugin code and options; a plugin that raises is recorded in
``failures`` and the rest of the audit goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np

from xai_audit.contract.images import chunks as sample_chunks
from xai_audit.contract.types import (
    Explanation,
    HypothesisContext,
    HypothesisResult,
    LoadContext,
    NonFiniteScores,
    Sample,
    StepParts,
)
from xai_audit.errors import ModelError, XaiAuditError
from xai_audit.load.loading import AuditInputs, load_step, seed_everything
from xai_audit.plan import Plan, Step
from xai_audit.registry import Registry
from xai_audit.run.cache import Cache, content_key
from xai_audit.run.facts import RunFacts
from xai_audit.limits import StepAbandoned, StepTimeout, run_with_limit, with_halving_batch
from xai_audit.run.serialize import (
    explanation_from_cache,
    explanation_to_cache,
    hypothesis_from_cache,
    hypothesis_to_cache,
    to_jsonable,
)

log = logging.getLogger("xai_audit")

#: a progress bar's ``step(description)``: a context manager around one step
StepBar = Callable[[str], ContextManager[None]]


@dataclass
class Baseline:
    """The model's clean-image predictions over every audited sample."""

    probs: np.ndarray  # (N, C)
    labels: np.ndarray  # (N,), -1 where unlabelled
    labelled: bool

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


@dataclass
class Explained:
    """What the explainer steps produced: explanations by step name, and their results.json entries."""

    explanations: dict[str, Explanation]
    entries: dict[str, dict[str, Any]]


@dataclass
class Tested:
    """What the hypothesis steps produced: results by step name, and their results.json entries."""

    results: dict[str, HypothesisResult]
    entries: dict[str, dict[str, Any]]
    #: every step that ran, planned or suggested, by name
    steps: dict[str, Step] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- baseline


def predict_baseline(inputs: AuditInputs, plan: Plan, cache: Cache, executor: Any = None) -> Baseline:
    """Clean-image probabilities for every audited sample, chunk by chunk (cached)."""
    samples = inputs.samples
    labels = np.array([-1 if s.label is None else s.label for s in samples])
    labelled = bool(len(samples)) and all(s.label is not None for s in samples)
    key = content_key("baseline", inputs.base_key)
    with cache.claim(key):  # another run on this cache waits, then reads this step's entry
        hit = cache.get(key)
        if hit is not None:
            return Baseline(hit[1]["probs"], labels, labelled)
        model = inputs.model
        seed_everything(plan.seed)
        current = {"start": 0}  # the first sample of the chunk being read, to name a bad one

        def read_chunks() -> Iterator[np.ndarray]:
            for rows, images in sample_chunks(samples, stream_chunk(plan)):
                current["start"] = rows.start
                yield images

        def predict_all() -> list[np.ndarray]:  # chunk by chunk: the images are read as they are needed
            chunks = read_chunks()
            if executor is None:
                return [with_halving_batch(lambda size: model.predict_proba(images, batch_size=size),
                                           plan.runtime.batch_size, "baseline predictions") for images in chunks]
            return list(executor.predict_chunks(chunks, "baseline predictions"))

        limit = plan.runtime.step_timeout
        try:  # a model that stops returning after its first pass must not hang the run: the step's limit
            parts = run_with_limit(predict_all, limit, "the baseline predictions")
            probs = np.concatenate(parts) if parts else np.zeros((0, len(model.classes)), np.float32)
        except XaiAuditError:
            raise
        except StepTimeout as exc:
            stuck = " (stuck in native code, left behind)" if isinstance(exc, StepAbandoned) else ""
            raise ModelError(f"the model's predictions on the {len(samples)} audited images did not finish within "
                             f"{limit:g} s (runtime.step_timeout){stuck}; it was at the chunk from sample "
                             f"{samples[min(current['start'], len(samples) - 1)].id!r} on") from None
        except NonFiniteScores as exc:
            bad = samples[min(current["start"] + exc.index, len(samples) - 1)].id
            raise ModelError(f"the model returned NaN or infinite scores (first on sample {bad!r})") from None
        except Exception as exc:
            raise ModelError(f"the model failed on the baseline predictions: {type(exc).__name__}: {exc}") from exc
        if not np.all(np.isfinite(probs)):
            bad = samples[int(np.flatnonzero(~np.isfinite(probs).all(axis=1))[0])].id
            raise ModelError(f"the model returned NaN or infinite scores (first on sample {bad!r})")
        cache.put(key, {}, {"probs": probs})
        return Baseline(probs, labels, labelled)


def stream_chunk(plan: Plan) -> int:
    """Images per chunk when the runner walks every sample: several batches, bounded."""
    return max(plan.runtime.batch_size, min(4 * plan.runtime.batch_size, 1024))


# --------------------------------------------------------------------------- explainers


def run_explainers(plan: Plan, inputs: AuditInputs, baseline: Baseline, chosen: list[Sample], targets: np.ndarray,
                   cache: Cache, executor: Any, bar: StepBar, failures: list[dict[str, str]],
                   then: Callable[[Step, Explanation, dict[str, Any]], None] | None = None,
                   facts: RunFacts | None = None) -> Explained:
    """Every explainer of the plan: on the chosen samples, or on all of them for ``wants_all_samples``.

    ``then(step, explanation, entry)`` runs right after each explainer of the chosen samples, inside its
    step (the audit judges each explainer's maps there, so a run killed later keeps those scores cached).
    ``facts`` records each explainer's and each ``then``'s wall time, and how the explainer batched its passes
    (``Explanation.run``): how the run went, never in the results.
    """
    facts = facts or RunFacts()
    explanations: dict[str, Explanation] = {}
    entries: dict[str, dict[str, Any]] = {}
    for step in plan.explainers:
        with bar(f"explainer {step.name}"):
            entry: dict[str, Any] = {"status": "ok", "plugin": step.plugin.name, "options": step.options_dict()}
            try:
                limit = step_limit(step, plan)
                if getattr(step.plugin.cls, "wants_all_samples", False):
                    with facts.step(f"explainer {step.name}", cache) as fact:
                        exp = explain(step, inputs, inputs.samples, baseline.preds, plan.seed, cache, limit=limit)
                else:
                    with facts.step(f"explainer {step.name}", cache) as fact:
                        exp = explain(step, inputs, chosen, targets, plan.seed, cache, executor, limit=limit)
                    if then is not None:
                        with facts.step(f"trust {step.name}", cache):
                            then(step, exp, entry)
                if exp.run:
                    fact["batching"] = to_jsonable(exp.run)
                explanations[step.name] = exp
                entry.update(
                    n_samples=len(exp.sample_ids), sample_ids=exp.sample_ids, targets=exp.targets.tolist(),
                    scalars=exp.scalars, tables=exp.tables, notes=exp.notes,
                )
            except Exception as exc:  # a failing plugin is recorded, not fatal
                entry["status"] = "failed"
                failures.append(failure(f"explainer {step.name}", step, exc))
                if isinstance(exc, StepAbandoned):
                    replace_model(plan, inputs, executor, f"explainer {step.name}")
            entries[step.name] = entry
    return Explained(explanations, entries)


def explain(step: Step, inputs: AuditInputs, samples: list[Sample], targets: np.ndarray, seed: int, cache: Cache,
            executor: Any = None, *, limit: float | None = None) -> Explanation:
    """One explainer step (cached), stopped after ``limit`` seconds; the maps are checked against the samples."""
    model = inputs.model
    plugin = step.instantiate()
    if plugin.needs_gradients and model.module is None:
        raise ModelError(f"'{step.name}' needs gradients, and this model is a black box")
    if getattr(plugin, "needs_layer_hooks", False) and not getattr(model, "provides_hooks", True):
        raise ModelError(f"'{step.name}' reads a layer through forward hooks, and this model's layers cannot be hooked")
    key = step_key("explainer", step, inputs.base_key, [[s.id for s in samples], np.asarray(targets).tolist()])
    with cache.claim(key):  # another run on this cache waits, then reads this step's entry
        hit = cache.get(key)
        if hit is not None:
            return explanation_from_cache(*hit)
        seed_everything(seed)
        if executor is not None and not plugin.wants_all_samples:  # sharded across workers with executor: ray
            exp = run_with_limit(lambda: executor.explain(step, samples, np.asarray(targets), seed), limit,
                                 f"explainer {step.name}")
        else:
            exp = run_with_limit(lambda: plugin.explain(model, samples, np.asarray(targets), seed), limit,
                                 f"explainer {step.name}")
        if plugin.wants_all_samples:  # maps for the samples it names, a subset of those it was given
            unknown = set(exp.sample_ids) - {s.id for s in samples}
            if exp.maps.shape[0] != len(exp.sample_ids) or unknown:
                raise ValueError(f"explainer returned {exp.maps.shape[0]} maps for {len(exp.sample_ids)} sample ids"
                                 + (f", {len(unknown)} of them unknown" if unknown else ""))
        elif exp.maps.shape[0] != len(samples):
            raise ValueError(f"explainer returned {exp.maps.shape[0]} maps for {len(samples)} samples")
        cache.put(key, *explanation_to_cache(exp))
        return exp


# --------------------------------------------------------------------------- hypotheses


def run_hypotheses(plan: Plan, registry: Registry, context: HypothesisContext, inputs: AuditInputs,
                   explained: Explained, cache: Cache, bar: StepBar, failures: list[dict[str, str]],
                   executor: Any = None, facts: RunFacts | None = None) -> Tested:
    """The plan's hypotheses, and (with ``explain: {test_suggestions: true}``) what the explainers suggest;
    ``facts`` records each one's wall time."""
    facts = facts or RunFacts()
    results: dict[str, HypothesisResult] = {}
    entries: dict[str, dict[str, Any]] = {}
    suggested: dict[str, dict[str, str]] = {}
    steps = list(plan.hypotheses)
    if plan.explain.test_suggestions:
        steps += suggested_steps(registry, steps, explained, suggested, failures)
    for step in steps:
        with bar(f"hypothesis {step.name}"):
            entry = {"status": "ok", "plugin": step.plugin.name, "options": step.options_dict(),
                     **suggested.get(step.name, {})}
            try:
                with facts.step(f"hypothesis {step.name}", cache):
                    result = test_hypothesis(step, context, cache, inputs.base_key, limit=step_limit(step, plan))
                results[step.name] = result
                entry.update(result_dict(result))
            except Exception as exc:
                entry["status"] = "failed"
                failures.append(failure(f"hypothesis {step.name}", step, exc))
                if isinstance(exc, StepAbandoned):
                    context.model = replace_model(plan, inputs, executor, f"hypothesis {step.name}")
            entries[step.name] = entry
    return Tested(results, entries, {step.name: step for step in steps})


def suggested_steps(registry: Registry, planned: list[Step], explained: Explained,
                    suggested: dict[str, dict[str, str]], failures: list[dict[str, str]]) -> list[Step]:
    """Hypothesis steps for what the explainers suggest, leaving out those the plan already tests.

    Each explainer's entry lists its suggestions and the step that tested each
    (``tested_as``); ``suggested`` maps a new step's name to who suggested it and why.
    """
    steps: list[Step] = []
    seen = {(s.plugin.name, repr(s.options_dict())): s.name for s in planned}
    for explainer, exp in explained.explanations.items():
        rows = []
        for k, wish in enumerate(exp.suggested_hypotheses):
            plugin, options = str(wish.get("plugin", "")), dict(wish.get("options") or {})
            row = {"plugin": plugin, "options": options, "why": str(wish.get("why", ""))}
            rows.append(row)
            same = [s for s in planned if s.kind == "hypothesis" and s.plugin.name == plugin]
            covering = next((s for s in same if _covers(s.options_dict(), options)), None)
            if covering is not None:  # the plan tests this already (e.g. the same regions, its own fill): once
                row["tested_as"] = covering.name
                continue
            try:
                info = registry.get("hypothesis", plugin)
                # what the suggestion leaves unsaid is as the plan says it (e.g. occlude-regions' fill and
                # label_regions, so a region that carries the label is not read as a shortcut); a mapping (such
                # as occlude-regions' groups) names further tests, which the plan runs already
                inherited = {k: v for k, v in (same[0].options_dict() if same else {}).items()
                             if k not in options and not isinstance(v, dict)}
                step = Step("hypothesis", f"{plugin}-from-{explainer}", info,
                            info.cls.Options(**{**inherited, **options}))
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
        if rows and explainer in explained.entries:
            explained.entries[explainer]["suggestions"] = rows
    return steps


def _covers(planned: dict[str, Any], suggested: dict[str, Any]) -> bool:
    """True when a planned step's options already test what a suggestion names: every option the suggestion
    sets is the plan's, a list contained in the plan's list (regions [mouth] within [eyes, mouth, hair])."""
    for key, value in suggested.items():
        have = planned.get(key)
        if isinstance(value, list) and isinstance(have, list):
            if not {repr(v) for v in value} <= {repr(v) for v in have}:
                return False
        elif have != value:
            return False
    return True


def test_hypothesis(step: Step, context: HypothesisContext, cache: Cache, base_key: dict, *,
                    limit: float | None = None) -> HypothesisResult:
    """One hypothesis step (cached), stopped after ``limit`` seconds."""
    key = step_key("hypothesis", step, base_key)
    with cache.claim(key):  # another run on this cache waits, then reads this step's entry
        hit = cache.get(key)
        if hit is not None:
            return hypothesis_from_cache(*hit)
        seed_everything(context.seed)
        plugin = step.instantiate()
        context = dataclasses.replace(context, parts=CachedParts(cache, step, base_key))
        result = run_with_limit(lambda: plugin.test(context), limit, f"hypothesis {step.name}")
        cache.put(key, *hypothesis_to_cache(result))
        return result


class CachedParts(StepParts):
    """A hypothesis step's parts in the run's cache, keyed by the inputs, the plugin's code and the part (not
    the step's name or options: a part is shared by every step that asks for it)."""

    def __init__(self, cache: Cache, step: Step, base_key: dict):
        self.cache = cache
        self.prefix = ["hypothesis-part", step.plugin.package, step.plugin.version, code_hash(step.plugin.cls),
                       base_key]

    def get(self, part: Any) -> dict[str, np.ndarray] | None:
        hit = self.cache.get(content_key(*self.prefix, part))
        return None if hit is None else hit[1]

    def put(self, part: Any, arrays: dict[str, np.ndarray]) -> None:
        self.cache.put(content_key(*self.prefix, part), {}, arrays)


def result_dict(result: HypothesisResult) -> dict[str, Any]:
    """The result as results.json holds it: numbers and tables; figures and arrays go to the report only."""
    data = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name not in ("arrays", "figures")}
    data["ci"] = list(result.ci) if result.ci is not None else None
    return to_jsonable(data)


# --------------------------------------------------------------------------- shared by the steps


def step_limit(step: Step, plan: Plan) -> float:
    """The step's own ``timeout:``, or the audit-wide ``runtime.step_timeout``."""
    return step.timeout if step.timeout is not None else plan.runtime.step_timeout


def replace_model(plan: Plan, inputs: AuditInputs, executor: Any, what: str = "a step") -> Any:
    """Load the model again for the steps still to come: a step left stuck may still hold the old one
    (hooks on its layers, a half-done forward pass). Returns the new model."""
    log.warning("%s is stuck in native code past its time limit; left running in the background, and the model "
                "is loaded again for the steps after it", what)
    seed_everything(plan.seed)  # a model built without a weights file is the same as the first
    model = load_step(plan.model, LoadContext(plan.base_dir, plan.seed, plan.runtime.device), ModelError, "model")
    inputs.model = model
    if executor is not None and hasattr(executor, "model"):
        executor.model = model
    return model


def step_key(kind: str, step: Step, base_key: dict, extra: Any = None) -> str:
    """The cache key of one step: its plugin's version and code, its options, the inputs, ``extra``."""
    options = step.options_dict()
    files = named_files(options)
    return content_key(
        kind, step.name, step.plugin.package, step.plugin.version, code_hash(step.plugin.cls),
        options, base_key, extra, *([files] if files else []),
    )


def named_files(options: Any) -> dict[str, str]:
    """The SHA-256 of every file an option names by absolute path (weight files, masks, tables).

    An option that names a file keeps naming it after the file is overwritten, so the file's
    bytes, not its path, must decide whether a cached result still holds.
    """
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, str) and len(value) < 4096 and Path(value).is_absolute():
            path = Path(value)
            if path.is_file():
                stat = path.stat()
                found[value] = _file_sha256(value, stat.st_size, stat.st_mtime_ns)

    walk(options)
    return found


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is read again
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_hash(cls: type) -> str:
    """Hash of the source files of the plugin's package, so an edited plugin never reuses stale results."""
    module = sys.modules.get(cls.__module__)
    path = Path(getattr(module, "__file__", "") or "")
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    for source in sorted(path.parent.glob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()


#: the key under which a failure carries its whole traceback until the audit moves it to the run's log
FULL_TRACEBACK = "_traceback_full"


def failure(where: str, step: Step, exc: Exception) -> dict[str, str]:
    """A failed step as results.json lists it, with its whole traceback under FULL_TRACEBACK for the run's log."""
    log.debug("step %s failed", where, exc_info=exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return {
        "step": where,
        "plugin": f"{step.plugin.name} {step.plugin.version}",
        "error": f"{type(exc).__name__}: {message}" if message else type(exc).__name__,
        "traceback": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        FULL_TRACEBACK: "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }

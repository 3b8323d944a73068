"""One audit, start to end: the stages in order, each reading what the one before produced.

    plan ─► load (model, data, samples) ─► run (regions, baseline, explainers, hypotheses)
         ─► judge (trust after each explainer; Holm, accuracy, findings, recommendations, checks)
         ─► AuditOutcome

The report (``xai_audit.report``) turns the outcome into HTML, PDF and JSON.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from xai_audit import __version__
from xai_audit.contract.batching import batch_decisions, track_decisions
from xai_audit.contract.stats import ALPHA
from xai_audit.contract.types import Explanation, HypothesisContext, HypothesisResult
from xai_audit.judge.accuracy import accuracy_tables
from xai_audit.judge.checks import evaluate_checks
from xai_audit.judge.correction import correct_for_multiple_tests, not_applicable
from xai_audit.judge.findings import derive_findings
from xai_audit.judge.limitations import completeness, derive_limitations
from xai_audit.judge.recommend import recommend
from xai_audit.judge.trusting import agreement, trust_one, trust_session
from xai_audit.limits import StepAbandoned
from xai_audit.load.loading import AuditInputs, load_inputs, other_dataset_loader
from xai_audit.load.provenance import build_provenance
from xai_audit.plan import Plan, Step
from xai_audit.registry import Registry
from xai_audit.run.cache import Cache
from xai_audit.run.examples import Selection, choose_examples, describe_chosen
from xai_audit.run.discovery import Discovered, DiscoveredRecommender, run_discovery
from xai_audit.run.executors import make_executor
from xai_audit.run.facts import RunFacts
from xai_audit.run.regions import with_regions
from xai_audit.run.serialize import to_jsonable
from xai_audit.run.steps import (
    FULL_TRACEBACK,
    Baseline,
    Explained,
    Tested,
    predict_baseline,
    replace_model,
    run_explainers,
    run_hypotheses,
    step_limit,
)

#: 2.0: what depends on the machine, the load or the cache (started, finished, cache, batch sizes, times)
#: moved under one key, ``run``; nothing outside it may depend on them
#: 2.1: ``system`` (the plan's system: section), ``limitations`` and ``completeness`` (issue 19)
SCHEMA_VERSION = "2.2"
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
    #: the run's log: each failed step's whole traceback, and plugins that failed to import (not in results.json,
    #: whose tracebacks stay one line: paths and line numbers differ between machines)
    log: list[str] = dataclasses.field(default_factory=list)


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
    facts = RunFacts()  # how the run goes: results.json's ``run``, kept apart from what it finds
    track_decisions()
    with facts.step("load"):
        inputs = load_inputs(plan, registry)  # with the other data sets the steps name
    failures: list[dict[str, str]] = []
    n_steps = 1 + len(plan.explainers) + len(plan.discoverers) + len(plan.hypotheses)
    with _Progress(progress, n_steps) as bar, make_executor(plan, inputs.model) as executor:
        with facts.step("regions", cache):
            inputs = with_regions(inputs, plan, cache)
        with bar.step("baseline predictions"), facts.step("baseline", cache):
            baseline = predict_baseline(inputs, plan, cache, executor)
        selection = _select(inputs, baseline, plan, explain_ids)
        chosen = [inputs.samples[i].materialise() for i in selection.indices]  # few: held, not re-read
        targets = baseline.preds[selection.indices]
        session = trust_session(plan, inputs.model, inputs.dataset, chosen, targets)

        def trust(step: Step, exp: Explanation, entry: dict[str, Any]) -> None:
            if session is None:
                return
            session.model = inputs.model  # a step stuck before this one may have left a model loaded afresh
            try:
                trust_one(step, exp, entry, session, cache, inputs.base_key, failures, limit=step_limit(step, plan))
            except StepAbandoned:  # recorded; the maps stand, and the steps after it get a model loaded afresh
                replace_model(plan, inputs, executor, f"trust {step.name}")

        explained = run_explainers(plan, inputs, baseline, chosen, targets, cache, executor, bar.step, failures,
                                   then=trust, facts=facts)
        agreement(explained.entries, explained.explanations, [s.id for s in chosen])
        context = HypothesisContext(
            model=inputs.model, samples=inputs.samples, probs=baseline.probs, classes=list(inputs.model.classes),
            seed=plan.seed, predict=lambda images: executor.predict(images, "a hypothesis' predictions"),
            load_dataset=other_dataset_loader(registry, plan, inputs.other_datasets),
        )
        discovered = run_discovery(plan, inputs, baseline.probs, explained, cache, executor, bar.step, failures,
                                   class_regions=dict(getattr(inputs.dataset, "class_regions", None) or {}),
                                   facts=facts)
        context.model = inputs.model  # loaded afresh if a discoverer was left stuck
        tested = run_hypotheses(plan, registry, context, inputs, explained, cache, bar.step, failures, executor,
                                facts=facts)
    tested.entries.update(discovered.entries)  # confirmed cues are tested claims like the plan's own
    tested.results.update(discovered.results)
    failures += [{"step": "load plugins", "plugin": "", "error": error, "traceback": ""}
                 for error in registry.load_errors]
    run_log = [f"{f['step']} ({f['plugin']}):\n{f.pop(FULL_TRACEBACK, '') or f['error']}" for f in failures]
    with facts.step("judge"):
        results = _judge(plan, registry, inputs, baseline, selection, explained, tested, failures, discovered)
    results["run"] = to_jsonable(facts.summary(cache=cache, device=plan.runtime.device, executor=executor,
                                               batching=batch_decisions(inputs.model),
                                               executor_kind=plan.runtime.executor))
    outcome = _outcome(results, inputs, baseline, selection, explained, tested)
    outcome.log = run_log
    return outcome


def _select(inputs: AuditInputs, baseline: Baseline, plan: Plan, explain_ids: list[str] | None) -> Selection:
    """The few samples the explainers explain: chosen by case, or the ids a comparison fixed."""
    labels = baseline.labels if baseline.labelled else None
    classes = list(inputs.model.classes)
    if explain_ids is not None:
        index_of = {s.id: i for i, s in enumerate(inputs.samples)}
        chosen = np.array(sorted(index_of[i] for i in explain_ids if i in index_of), dtype=np.int64)
        return describe_chosen(inputs.samples, chosen, baseline.probs, labels, classes)
    return choose_examples(inputs.samples, baseline.probs, labels, plan.explain.samples, classes,
                           error_sink=plan.explain.error_sink)


def _judge(plan: Plan, registry: Registry, inputs: AuditInputs, baseline: Baseline, selection: Selection,
           explained: Explained, tested: Tested, failures: list[dict[str, str]],
           discovered: Discovered) -> dict[str, Any]:
    """results.json: the run's numbers, then the Holm correction, findings, recommendations and checks;
    none of it may depend on the machine, the load or the cache (those facts go to ``run``, added after)."""
    model, samples = inputs.model, inputs.samples
    n_tests = correct_for_multiple_tests(tested.entries)
    preds, probs = baseline.preds, baseline.probs
    accuracy, confusion, per_class = accuracy_tables(baseline.labels, preds, list(model.classes), baseline.labelled)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "xai-audit", "version": __version__},
        "title": plan.report.title,
        "seed": plan.seed,
        "plan": plan.as_run(),
        # what the system is for and who answers for it, as the plan states it (null: the plan says nothing)
        "system": plan.system.model_dump() if plan.system is not None else None,
        "provenance": build_provenance(plan, registry, model, inputs.dataset, inputs.region_source,
                                       inputs.other_datasets),
        "classes": list(model.classes),
        "samples": {"n": len(samples), "ids_sha256": inputs.ids_sha, "labelled": baseline.labelled},
        "per_sample": {
            "ids": inputs.ids,
            "labels": [s.label for s in samples],
            "predictions": preds.tolist(),
            "confidence": probs.max(axis=1).round(6).tolist(),
        },
        "accuracy": accuracy,
        "confusion_matrix": confusion,
        "per_class": per_class,
        "prediction_share": {c: float(np.mean(preds == k)) if len(preds) else 0.0 for k, c in enumerate(model.classes)},
        "examples": selection.summary,
        "explainers": explained.entries,
        "hypotheses": tested.entries,
        "findings": [],
        "failures": failures,
        "skipped_samples": inputs.skipped,
    }
    if plan.discoverers:
        results["discovery"] = discovered.summary
    results["findings"] = derive_findings(results)
    results["multiple_testing"] = {"method": "holm", "alpha": ALPHA, "n_tests": n_tests,
                                   "not_applicable": not_applicable(tested.entries)}
    plugins: dict[str, Any] = {name: step.instantiate() for name, step in tested.steps.items()}
    plugins.update({name: DiscoveredRecommender(step, candidate)
                    for name, (step, candidate) in discovered.origins.items()})
    results["recommendations"] = recommend(results, samples, plugins, failures)
    results = to_jsonable(results)
    # after the recommendations (a plugin's recommend() may fail too), before the checks (which may read them)
    results["completeness"] = completeness(results, plan.on_step_failure)
    results["limitations"] = derive_limitations(results)
    results["checks"] = to_jsonable(evaluate_checks(plan.checks, results))
    return results


def _outcome(results: dict[str, Any], inputs: AuditInputs, baseline: Baseline, selection: Selection,
             explained: Explained, tested: Tested) -> AuditOutcome:
    """The results and the images, predictions and arrays the report draws."""
    samples, preds, probs = inputs.samples, baseline.preds, baseline.probs
    shown = set(selection.indices.tolist())
    explained_ids = {sid for exp in explained.explanations.values() for sid in exp.sample_ids}
    shown.update(i for i, s in enumerate(samples) if s.id in explained_ids)
    for entry in tested.entries.values():
        shown.update(i for i, s in enumerate(samples) if s.id in set(entry.get("examples", [])))
    return AuditOutcome(
        results=results,
        images={samples[i].id: samples[i].image for i in sorted(shown)},
        explanations=explained.explanations,
        hypotheses=tested.results,
        predictions={samples[i].id: (int(preds[i]), float(probs[i, preds[i]])) for i in sorted(shown)},
        labels={samples[i].id: samples[i].label for i in sorted(shown)},
        explained_ids=[samples[i].id for i in selection.indices],
    )


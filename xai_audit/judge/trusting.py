"""Stage 4a, judging the explanations: trust scores for each explainer's maps, and agreement between them.

Reads what the explainer steps produced; the metrics themselves live in
:mod:`xai_audit.judge.trust`. The audit calls :func:`trust_one` right after each
explainer (so a run killed later keeps it cached), and :func:`agreement` once all
have run. Each explainer's trust is cached like a step; a failure is recorded while
the maps stand.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xai_audit.contract.types import Dataset, Explanation, ModelAdapter, Sample
from xai_audit.judge import trust as trust_metrics
from xai_audit.limits import StepAbandoned, run_with_limit
from xai_audit.load.loading import seed_everything
from xai_audit.plan import Plan, Step
from xai_audit.run.cache import Cache
from xai_audit.run.serialize import to_jsonable
from xai_audit.run.steps import failure, step_key


def trust_session(plan: Plan, model: ModelAdapter, dataset: Dataset, samples: list[Sample],
                  targets: np.ndarray) -> trust_metrics.TrustSession | None:
    """What every explainer's trust metrics share, or None when the plan turns them off."""
    spec = plan.explain.trust
    if not spec.enabled or not samples:
        return None
    settings = trust_metrics.TrustSettings(
        steps=spec.steps, sanity_samples=spec.sanity_samples, sanity_stages=spec.sanity_stages, regions=spec.regions,
        images=spec.images, budget=spec.budget,
    )
    return trust_metrics.TrustSession(
        model=model, samples=samples, targets=np.asarray(targets), classes=list(model.classes), seed=plan.seed,
        settings=settings, class_regions=dict(getattr(dataset, "class_regions", None) or {}),
    )


def trust_one(step: Step, exp: Explanation, entry: dict[str, Any], session: trust_metrics.TrustSession | None,
              cache: Cache, base_key: dict, failures: list[dict[str, str]], limit: float | None = None) -> None:
    """Trust metrics for one explainer's maps, cached, added to its ``entry``; a failure is recorded, not fatal.

    The metrics run the model many times: they are stopped after ``limit`` seconds like the explainer step. One
    stuck in native code is recorded, then :class:`~xai_audit.limits.StepAbandoned` is raised again so that the
    caller loads the model afresh for the steps after it.
    """
    if session is None or list(exp.sample_ids) != [s.id for s in session.samples]:
        return
    key = step_key("trust", step, base_key, [trust_metrics.code_version(), dataclasses.asdict(session.settings),
                                            exp.sample_ids, np.asarray(exp.targets).tolist(),
                                            sorted(session.class_regions.items())])
    try:
        with cache.claim(key):  # another run on this cache waits, then reads these scores
            hit = cache.get(key)
            if hit is None:
                seed_everything(session.seed)
                plugin = step.instantiate()
                data, arrays = run_with_limit(lambda: trust_metrics.explainer_trust(session, plugin, exp.maps), limit,
                                              f"trust {step.name}")
                data = to_jsonable(data)
                cache.put(key, data, arrays)
            else:
                data, arrays = hit
        trust_metrics.attach(exp, entry, data, arrays, session.classes)
    except Exception as exc:  # the maps stand; only their trust scores are missing
        failures.append(failure(f"trust {step.name}", step, exc))
        if isinstance(exc, StepAbandoned):
            raise


def agreement(entries: dict[str, Any], explanations: dict[str, Explanation], ids: list[str]) -> None:
    """Rank correlation between the maps of every pair of explainers that explained the same samples."""
    same = {name: exp.maps for name, exp in explanations.items()
            if list(exp.sample_ids) == ids and "trust" in entries.get(name, {})}
    if len(same) < 2:
        return
    for name, row in trust_metrics.agreement(same).items():
        entries[name]["trust"]["agreement"] = {other: rho for other, rho in row.items() if other != name}

"""Stage 3b, discovery: discoverers propose cues on one half of the images; each is confirmed on the other.

The audited images are split once, seeded: discoverers see the *discovery*
half; every candidate they propose is tested on the *held-back* half, which no
discoverer saw, with its own intervention and a paired test. A candidate tied
to a class is confirmed when removing the cue takes that class's predictions
away (exact McNemar test on "predicted as the class" before/after, paired
bootstrap interval of the share lost); one tied to no class, when it changes
the predictions (the intervention engine's paired test). A *slice* (a rule that
picks images: property ranges, a metadata value, an embedding cluster) is
confirmed when the model is worse on the held-back images the rule picks than on
the others: accuracy (one-sided Fisher exact test) with labels, confidence
(one-sided Mann-Whitney test) without; bootstrap interval of the difference.
Each confirmation is
an ordinary hypothesis entry, so the audit's Holm correction, findings,
recommendations, checks and report all apply to it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xai_audit.contract.discovery import Candidate, DiscoveryContext
from xai_audit.contract.interventions import InterventionOptions, apply_and_predict, compare
from xai_audit.contract.stats import ALPHA, bootstrap_paired_diff_ci, bootstrap_two_sample_diff_ci, mcnemar_exact
from xai_audit.contract.types import HypothesisContext, HypothesisResult, labels_of
from xai_audit.errors import ModelError
from xai_audit.limits import StepAbandoned, run_with_limit
from xai_audit.load.loading import AuditInputs, seed_everything
from xai_audit.plan import Plan, Step
from xai_audit.run.cache import Cache
from xai_audit.run.facts import RunFacts
from xai_audit.run.serialize import hypothesis_from_cache, hypothesis_to_cache, to_jsonable
from xai_audit.run.steps import Explained, StepBar, failure, replace_model, result_dict, step_key, step_limit

#: fewest images on each side of the split for discovery to run at all
MIN_IMAGES = 20


@dataclass
class Discovered:
    """What the discovery stage produced: candidates, their confirmations as hypothesis entries, the split."""

    #: results.json's ``discovery``: the split and every candidate, confirmed or not
    summary: dict[str, Any]
    #: confirmation results and their entries, keyed by entry name (``discovered: <discoverer>/<candidate>``)
    results: dict[str, HypothesisResult] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: entry name -> (the discoverer's step, the candidate), for recommendations
    origins: dict[str, tuple[Step, Candidate]] = field(default_factory=dict)


def split(n: int, seed: int, held_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the discovery and held-back halves: a seeded permutation, each part in index order."""
    order = np.random.default_rng([seed, 16]).permutation(n)
    n_held = int(round(n * held_out))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def confirming(held: np.ndarray, seed: int, cap: int | None) -> np.ndarray:
    """The held-back indices each candidate is confirmed on: all of them, or a seeded ``cap`` of them."""
    if cap is None or len(held) <= cap:
        return held
    return np.sort(np.random.default_rng([seed, 17]).choice(held, size=cap, replace=False))


def run_discovery(plan: Plan, inputs: AuditInputs, probs: np.ndarray, explained: Explained, cache: Cache,
                  executor: Any, bar: StepBar, failures: list[dict[str, str]],
                  class_regions: dict[str, list[str]] | None = None, facts: RunFacts | None = None) -> Discovered:
    """Every discoverer of the plan on the discovery half; every candidate confirmed on the held-back half.

    ``facts`` records each discoverer's wall time (its candidates' confirmation included)."""
    facts = facts or RunFacts()
    samples = inputs.samples
    classes = list(inputs.model.classes)
    found, held = split(len(samples), plan.seed, plan.discover.held_out)
    confirmed_on = confirming(held, plan.seed, plan.discover.confirm_images)
    summary: dict[str, Any] = {
        "held_out": plan.discover.held_out,
        "discovery_ids": [samples[i].id for i in found],
        "held_back_ids": [samples[i].id for i in held],
        "confirmed_on": int(len(confirmed_on)),
        "candidates": [],
        "note": "",
    }
    out = Discovered(summary)
    if not plan.discoverers:
        return out
    if min(len(found), len(held)) < MIN_IMAGES:
        summary["note"] = (f"not run: {len(found)} discovery and {len(held)} held-back images; each half needs at "
                           f"least {MIN_IMAGES} for a candidate to be found and then confirmed")
        return out

    def predict(images: np.ndarray) -> np.ndarray:
        return executor.predict(images, "discovery's predictions")

    context = DiscoveryContext(
        model=inputs.model, samples=[samples[i] for i in found], probs=np.asarray(probs)[found], classes=classes,
        seed=plan.seed, predict=predict, explanations=explained.explanations, class_regions=dict(class_regions or {}),
    )
    held_context = HypothesisContext(
        model=inputs.model, samples=[samples[i] for i in confirmed_on], probs=np.asarray(probs)[confirmed_on],
        classes=classes,
        seed=plan.seed, predict=predict,
    )
    for step in plan.discoverers:
        with bar(f"discoverer {step.name}"), facts.step(f"discoverer {step.name}", cache):
            try:
                candidates = _discover(step, context, inputs, cache, summary["discovery_ids"], plan)
            except Exception as exc:  # a failing plugin is recorded, not fatal
                failures.append(failure(f"discoverer {step.name}", step, exc))
                if isinstance(exc, StepAbandoned):  # it may have left hooks on the model: the rest gets a new one
                    context.model = held_context.model = replace_model(plan, inputs, executor,
                                                                       f"discoverer {step.name}")
                continue
            plugin = step.instantiate()
            for candidate in candidates:
                name = f"discovered: {step.name}/{candidate.name}"
                row = _candidate_row(step, candidate, classes, name)
                try:
                    result = _confirm(step, plugin, candidate, held_context, cache, inputs.base_key, plan)
                except Exception as exc:
                    failures.append(failure(f"confirmation of {name}", step, exc))
                    if isinstance(exc, StepAbandoned):
                        context.model = held_context.model = replace_model(plan, inputs, executor,
                                                                           f"confirmation of {name}")
                    row["tested_as"] = None
                    summary["candidates"].append(row)
                    continue
                entry = {"status": "ok", "plugin": step.plugin.name, "options": step.options_dict(),
                         "discovered": {"discoverer": step.name, "candidate": candidate.name,
                                        "description": candidate.description, "cue": candidate.cue}}
                entry.update(result_dict(result))
                out.results[name], out.entries[name] = result, entry
                out.origins[name] = (step, candidate)
                summary["candidates"].append(row)
    return out


def _discover(step: Step, context: DiscoveryContext, inputs: AuditInputs, cache: Cache, ids: list[str],
              plan: Plan) -> list[Candidate]:
    """One discoverer on the discovery half (cached: candidates are plain data)."""
    plugin = step.instantiate()
    if getattr(plugin, "needs_gradients", False) and inputs.model.module is None:
        raise ModelError(f"'{step.name}' needs gradients, and this model is a black box")
    key = step_key("discoverer", step, inputs.base_key, ids)
    with cache.claim(key):
        hit = cache.get(key)
        if hit is not None:
            return [_candidate_from_cache(data, hit[1], k) for k, data in enumerate(hit[0]["candidates"])]
        seed_everything(plan.seed)
        candidates = run_with_limit(lambda: plugin.discover(context), step_limit(step, plan),
                                    f"discoverer {step.name}")
        for c in candidates:
            if not isinstance(c, Candidate):
                raise TypeError(f"discoverer {step.name} returned {type(c).__name__}, not a Candidate")
        data = {"candidates": [to_jsonable({f.name: getattr(c, f.name) for f in dataclasses.fields(c)
                                            if f.name != "arrays"}) for c in candidates]}
        arrays = {f"{k}/{name}": np.asarray(a) for k, c in enumerate(candidates) for name, a in c.arrays.items()}
        cache.put(key, data, arrays)
        return candidates


def _candidate_from_cache(data: dict[str, Any], arrays: dict[str, np.ndarray], k: int) -> Candidate:
    prefix = f"{k}/"
    own = {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}
    return Candidate(**{**data, "arrays": own})


def _candidate_row(step: Step, candidate: Candidate, classes: Sequence[str], name: str) -> dict[str, Any]:
    target = candidate.target_class
    return to_jsonable({
        "discoverer": step.name,
        "name": candidate.name,
        "description": candidate.description,
        "cue": candidate.cue,
        "class": classes[target] if target is not None and 0 <= target < len(classes) else None,
        "members": list(candidate.members),
        "intervention": candidate.intervention,
        "intervention_adds_cue": candidate.intervention_adds_cue,
        "confirmation": candidate.confirmation,
        "evidence": candidate.evidence,
        "tested_as": name,
    })


def _confirm(step: Step, plugin: Any, candidate: Candidate, context: HypothesisContext, cache: Cache,
             base_key: dict, plan: Plan) -> HypothesisResult:
    """The candidate's intervention on the held-back images, and the paired test (cached)."""
    key = step_key("confirmation", step, base_key,
                   [candidate.name, candidate.intervention, candidate.target_class, candidate.intervention_adds_cue,
                    candidate.confirmation, [s.id for s in context.samples]])
    with cache.claim(key):
        hit = cache.get(key)
        if hit is not None:
            return hypothesis_from_cache(*hit)
        seed_everything(plan.seed)
        result = run_with_limit(lambda: confirm(plugin, candidate, context), step_limit(step, plan),
                                f"confirmation of {candidate.name}")
        cache.put(key, *hypothesis_to_cache(result))
        return result


def confirm(plugin: Any, candidate: Candidate, context: HypothesisContext) -> HypothesisResult:
    """One candidate's confirmation, uncached: its discoverer's intervention on ``context`` (the held-back
    images) and the paired test. What the audit runs, and what a null-audit simulation calls directly."""
    if candidate.confirmation == "slice":
        return _confirm_slice(plugin, candidate, context)
    transform = plugin.intervention(candidate.intervention)
    what = (f"the cue is put on the images ({candidate.description})" if candidate.intervention_adds_cue
            else f"the cue is removed ({candidate.description})")
    run = apply_and_predict(context, transform, what=what)
    result = compare(context, run, what=what, options=InterventionOptions())
    if candidate.target_class is not None:
        result = _class_loss(result, run, candidate, list(context.classes), context.seed)
    result.kind = "shortcut" if candidate.target_class is not None else "fragility"
    result.details["candidate"] = {"description": candidate.description, "cue": candidate.cue,
                                   "members_in_discovery": len(candidate.members)}
    # what the discoverer saw (e.g. a cluster's mean attribution over its members) before what was confirmed
    result.figures = [_renamed(f, "cue/") for f in candidate.figures] + list(result.figures)
    result.arrays = {**{f"cue/{n}": a for n, a in candidate.arrays.items()}, **result.arrays}
    return result


def _class_loss(engine: HypothesisResult, run: Any, candidate: Candidate, classes: list[str],
                seed: int) -> HypothesisResult:
    """The primary claim of a cue tied to a class: removing it takes that class's predictions away.

    The engine's accuracy (or flip-rate) test stays in ``details``; it is not a further test of
    the Holm family, so each candidate counts once. A candidate whose intervention puts the cue on the
    images (``intervention_adds_cue``) is read the other way round: the transformed images are the ones
    with the cue (``before``), the images as they are the ones without (``after``).
    """
    k = int(candidate.target_class)
    name = classes[k]
    with_cue, without = (run.after, run.before) if candidate.intervention_adds_cue else (run.before, run.after)
    before = with_cue.argmax(axis=1) == k
    after = without.argmax(axis=1) == k
    n = len(before)
    p_value, lost, gained = mcnemar_exact(before, after)
    drop = float(before.mean() - after.mean()) if n else 0.0
    ci = bootstrap_paired_diff_ci(before, after, seed=seed) if n else None
    supported = n > 0 and p_value < ALPHA and drop > 0 and ci is not None and ci[0] > 0
    details = dict(engine.details)
    details.update({
        "engine_test": {"claim": engine.claim, "metric": engine.metric, "before": engine.before,
                        "after": engine.after, "effect": engine.effect, "ci": engine.ci, "p_value": engine.p_value,
                        "verdict": engine.verdict, "test": engine.test},
        "predicted_then_not": lost,
        "not_then_predicted": gained,
        "share_of_class_kept": float(after[before].mean()) if before.any() else None,
    })
    return dataclasses.replace(
        engine,
        claim=f"The model predicts '{name}' because of a cue nobody named: {candidate.description}.",
        metric=(f"share of held-back images predicted '{name}' with the cue put on them (before) and as they are "
                f"(after)" if candidate.intervention_adds_cue else f"share of held-back images predicted '{name}'"),
        before=float(before.mean()) if n else None,
        after=float(after.mean()) if n else None,
        effect=drop,
        ci=ci,
        p_value=p_value,
        verdict="supported" if supported else "not supported",
        n=n,
        test=(f"held-back images only (never seen by the discoverer): exact McNemar test on paired 'predicted "
              f"{name}' " + ("with the cue put on / as they are" if candidate.intervention_adds_cue
                             else "before/after removing the cue")
              + "; 95 % paired bootstrap interval of the share lost"),
        details=details,
        tests=[],
    )


#: fewest held-back images on each side of a slice for its test to be run at all
MIN_SLICE = 5


def _confirm_slice(plugin: Any, candidate: Candidate, context: HypothesisContext) -> HypothesisResult:
    """A weak slice on the held-back images: its rule picks them (no model pass unless the rule reads the
    model), and the model's clean predictions there are compared with the others'.

    With labels the metric is accuracy (one-sided Fisher exact test that it is lower inside); without, the
    model's confidence, its largest probability (one-sided Mann-Whitney test). Either way a 95 % bootstrap
    interval of outside minus inside (each side resampled alone); ``effect`` is that difference, positive
    when the slice is worse."""
    from scipy import stats

    inside = np.asarray(plugin.slice_members(candidate, context), bool)
    if inside.shape != (len(context.samples),):
        raise ValueError(f"{plugin.name}.slice_members returned shape {inside.shape} for "
                         f"{len(context.samples)} held-back images")
    probs = np.asarray(context.probs)
    labels = labels_of(context.samples)
    labelled = labels is not None
    value = (probs.argmax(axis=1) == labels).astype(float) if labelled else probs.max(axis=1).astype(float)
    a, b = value[inside], value[~inside]
    n_in, n_out = len(a), len(b)
    what = "accuracy" if labelled else "confidence (the model's largest probability)"
    p_value, ci, effect = 1.0, None, None
    if min(n_in, n_out) >= MIN_SLICE:
        effect = float(b.mean() - a.mean())
        ci = bootstrap_two_sample_diff_ci(b, a, seed=context.seed)
        if labelled:
            table = [[int(a.sum()), n_in - int(a.sum())], [int(b.sum()), n_out - int(b.sum())]]
            p_value = float(stats.fisher_exact(table, alternative="less").pvalue)
        elif np.ptp(value) > 0:
            p_value = float(stats.mannwhitneyu(a, b, alternative="less").pvalue)
    supported = effect is not None and p_value < ALPHA and effect > 0 and ci is not None and ci[0] > 0
    words = str(candidate.evidence.get("slice") or candidate.description)
    inside_text = "n/a" if not n_in else (f"{100 * a.mean():.1f} %" if labelled else f"{a.mean():.2f}")
    outside_text = "n/a" if not n_out else (f"{100 * b.mean():.1f} %" if labelled else f"{b.mean():.2f}")
    gap = "" if effect is None else (f"{100 * effect:.1f} points" if labelled else f"{effect:.3f}")
    interval = "" if ci is None else (f" (95 % CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f} pp)" if labelled
                                      else f" (95 % CI {ci[0]:+.3f} to {ci[1]:+.3f})")
    if labelled:
        detail = (f"Accuracy on the held-back images in the slice ({words}) is {inside_text}, against "
                  f"{outside_text} on the others: {gap} worse{interval}; n = {n_in} in the slice, {n_out} outside.")
        reading = "The model fails a slice of the data more often than the rest: a weak segment nobody named."
    else:
        detail = (f"No labels: the model's confidence (its largest probability, mean) on the held-back images in "
                  f"the slice ({words}) is {inside_text}, against {outside_text} on the others: {gap} lower"
                  f"{interval}; n = {n_in} in the slice, {n_out} outside. Whether its predictions there are wrong "
                  "needs labelled images.")
        reading = ("The model is less sure of itself on a slice of the data than on the rest (no labels: measured "
                   "by its own confidence, not against labels).")
    claim = (f"The model is less accurate on a slice nobody named: {words}." if labelled else
             f"The model is less confident on a slice nobody named: {words}.")
    return HypothesisResult(
        claim=claim,
        metric=f"{what} outside the slice (before) and inside it (after)",
        before=float(b.mean()) if n_out else None,
        after=float(a.mean()) if n_in else None,
        effect=effect,
        ci=ci,
        p_value=p_value,
        verdict="supported" if supported else "not supported",
        n=n_in + n_out,
        test=("held-back images only (never seen by the discoverer): the slice's rule picks them; "
              + ("one-sided Fisher exact test that accuracy is lower inside the slice"
                 if labelled else "one-sided Mann-Whitney test that confidence is lower inside the slice")
              + "; 95 % bootstrap interval of outside minus inside, each side resampled alone"),
        examples=[s.id for s, m in zip(context.samples, inside) if m][:8],
        details={"slice": {"description": candidate.description, "rule": candidate.intervention,
                           "in_slice": n_in, "outside": n_out, "labelled": labelled, "reading": reading},
                 "detail": detail,
                 "candidate": {"description": candidate.description, "cue": candidate.cue,
                               "members_in_discovery": len(candidate.members)}},
        figures=[_renamed(f, "cue/") for f in candidate.figures],
        arrays={f"cue/{n}": a for n, a in candidate.arrays.items() if n in _referenced(candidate.figures)},
        kind="bias",
    )


def _referenced(value: Any) -> set[str]:
    """The arrays a figure spec (or a list of them) draws: a slice's rule arrays are not drawn."""
    if isinstance(value, dict) and set(value) == {"array"}:
        return {str(value["array"])}
    if isinstance(value, dict):
        return set().union(*(_referenced(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_referenced(v) for v in value)) if value else set()
    return set()


def _renamed(value: Any, prefix: str) -> Any:
    """A figure spec whose array references point to ``prefix + name``."""
    if isinstance(value, dict) and set(value) == {"array"}:
        return {"array": prefix + str(value["array"])}
    if isinstance(value, dict):
        return {k: _renamed(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, prefix) for v in value]
    return value


class DiscoveredRecommender:
    """The recommendation hook of a confirmed candidate: its discoverer's ``recommend`` (by default, train on
    images with the cue removed)."""

    def __init__(self, step: Step, candidate: Candidate):
        self.name = step.plugin.name
        self._plugin, self._candidate = step.instantiate(), candidate

    def recommend(self, finding: dict[str, Any] | None, result: dict[str, Any]) -> list[dict[str, Any]]:
        if finding is None:
            return []
        return list(self._plugin.recommend(finding, self._candidate))

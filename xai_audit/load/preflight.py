"""Before any step runs: can the plan's hypotheses get what they read from this data?

``validate`` and ``run`` both call :func:`preflight` once the model, the data, the audited samples and the
region source are loaded, so a plan that `run` would refuse for its own reasons (region masks the data lack,
a group column that is not there) is refused by `validate` first, each problem one line naming the plan field,
exit status 2, and `run` stops the same way before its first step instead of recording a failed step late.
"""

from __future__ import annotations

from typing import Any

from xai_audit.contract.types import AuditedData
from xai_audit.errors import PlanError
from xai_audit.plan import Plan, Step

#: what to write in a plan that needs masks and has none
REGION_HINT = ("add a region source to the plan: masks stored as files beside the images "
               "(regions: {source: mask-files, path: <folder of masks>}), facial landmarks "
               "(regions: {source: landmarks}, pip install xai-audit[landmarks]) or a face-parsing model "
               "(regions: {source: segmentation, id: <folder>})")


def audited_data(plan: Plan, inputs: Any) -> AuditedData:
    """The facts a hypothesis's ``check_data`` reads, from the loaded inputs (no image is read)."""
    samples = inputs.samples
    columns = sorted({k for s in samples for k in s.groups})
    return AuditedData(
        n=len(samples),
        labelled=any(s.label is not None for s in samples),
        group_columns=tuple(columns),
        region_names=tuple(_region_names(inputs)),
        dataset=plan.dataset.name,
    )


def _region_names(inputs: Any) -> list[str]:
    """The region names every audited sample will have: the data set's own where it gives masks, the region
    source's for the rest (empty when some sample gets none, or when the source names them only at run time)."""
    samples = inputs.samples
    own = [s for s in samples if s.has_own_regions]
    names: set[str] | None = None
    if own:
        names = set(inputs.dataset.region_names or []) or set(own[0].regions or {})
    if len(own) < len(samples):
        source = inputs.region_source
        given = source.names() if source is not None else None
        if given is None:
            return []
        names = set(given) if names is None else names & set(given)
    return sorted(names or ())


def region_problem(step: Step, needed: list[str], plan: Plan, inputs: Any) -> str | None:
    """Why ``step`` cannot get the region masks ``needed`` on these samples, or None."""
    samples = inputs.samples
    without = [s for s in samples if not s.has_own_regions]
    source = inputs.region_source
    if without and source is None:
        return (f"needs region masks ({', '.join(needed)}), and {len(without)} of the {len(samples)} audited images "
                f"have none (the data set '{plan.dataset.name}' gives {'no masks' if len(without) == len(samples) else 'masks for the others only'}, "
                f"and the plan has no regions: section); {REGION_HINT}")
    own = [s for s in samples if s.has_own_regions]
    if own:
        have = set(inputs.dataset.region_names or []) or set(own[0].regions or {})
        lacking = [n for n in needed if n not in have]
        if lacking:
            return f"needs region {lacking[0]!r}, and the data set's masks are {sorted(have)}"
    if without and source is not None:
        given = source.names()
        if given is not None:
            lacking = [n for n in needed if n not in given]
            if lacking:
                return (f"needs region {lacking[0]!r}, and the region source '{plan.regions.name}' gives "
                        f"{sorted(given)}")
        why = source.missing([s.id for s in without], needed)
        if why:
            return f"needs region masks ({', '.join(needed)}) from the region source '{plan.regions.name}': {why}"
    return None


def preflight(plan: Plan, inputs: Any) -> None:
    """Refuse the plan (PlanError, one line per problem naming the field) when a hypothesis would refuse this data."""
    where = str(plan.path) if plan.path is not None else "<plan>"
    facts = audited_data(plan, inputs)
    problems: list[str] = []
    for step in plan.hypotheses:
        plugin = step.instantiate()
        needed = list(dict.fromkeys(plugin.needs_regions()))
        why = region_problem(step, needed, plan, inputs) if needed else None
        if why is None:
            why = plugin.check_data(facts)
        if why:
            problems.append(f"{where}: hypotheses.{step.name}: {why}")
    if problems:
        raise PlanError(problems)

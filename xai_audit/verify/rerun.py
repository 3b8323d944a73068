"""`xai-audit verify --rerun DIR`: run the plan a report recorded again, and compare what it found.

The plan is the one in DIR/results.json (``plan``, with every default filled
in), run from the folder the report names (``provenance.base_dir``), with the
batch sizes the report's run used (``run.batching``: they change no number, and
reusing them makes the re-run compute exactly what the first did). Everything
outside ``run`` is compared with the report:

* on the same machine (``run.machine.numerics`` equal: the same CPU and
  instruction sets, torch build and threads, numpy, device) byte for byte:
  the same plan on the same inputs must give the same results;
* on another machine, where a BLAS or a CPU's instruction set may round the
  last bits otherwise, floats within ``rtol`` and ``atol``
  (``|a - b| <= atol + rtol * |b|``), everything else exactly; the output says
  which comparison was used and why.

``verification`` (what ``xai-audit demo --verify`` adds after the audit, from a
second audit) is not re-run and not compared.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from xai_audit.verify.files import read_results

#: floats on another machine: |a - b| <= ATOL + RTOL * |b|
RTOL = 1e-5
ATOL = 1e-8
#: top-level keys a re-run does not compare: how the run went, and the demo's second audit
NOT_COMPARED = ("run", "verification")
#: the rule the examples follow when a several-model plan fixed them (xai_audit.run.examples.describe_chosen)
_FIXED_EXAMPLES = "the samples another model of the plan was explained on"


@dataclass
class Difference:
    path: str
    report: Any
    rerun: Any


@dataclass
class Rerun:
    """What ``verify --rerun`` found: the differences (none: reproduced) and how it compared."""

    differences: list[Difference]
    #: "bytes" (the same machine) or "tolerance"
    mode: str
    #: one sentence: how the fields were compared, and why
    how: str
    results: dict[str, Any] = field(default_factory=dict)


def recorded_batch_sizes(results: dict[str, Any]) -> str | None:
    """The batch sizes a report's run used, as ``XAI_AUDIT_BATCH_SIZE`` takes them (``forward=32,backward=16``),
    or None when it recorded none."""
    sizes: dict[str, int] = {}
    for row in ((results.get("run") or {}).get("batching") or []):
        if isinstance(row, dict) and row.get("mode") in ("forward", "backward") and isinstance(row.get("size"), int):
            sizes.setdefault(row["mode"], row["size"])
    return ",".join(f"{mode}={size}" for mode, size in sorted(sizes.items())) or None


@contextlib.contextmanager
def batch_sizes_from(results: dict[str, Any]) -> Iterator[str | None]:
    """The report's batch sizes in force (``XAI_AUDIT_BATCH_SIZE``) for the duration; yields them."""
    from xai_audit.contract.batching import ENV_BATCH

    sizes = recorded_batch_sizes(results)
    before = os.environ.get(ENV_BATCH)
    if sizes:
        os.environ[ENV_BATCH] = sizes
    try:
        yield sizes
    finally:
        if before is None:
            os.environ.pop(ENV_BATCH, None)
        else:
            os.environ[ENV_BATCH] = before


def plan_of(results: dict[str, Any], registry: Any) -> Any:
    """The plan as the report ran it, from its ``plan`` and ``provenance.base_dir``; it names the report's plan
    file where that still exists (so ``provenance.plan_file`` is checked too)."""
    from xai_audit.plan import parse_plan

    provenance = results.get("provenance") or {}
    data = {k: v for k, v in results["plan"].items() if v is not None}
    plan = parse_plan(yaml.safe_dump(data), registry, filename="results.json plan",
                      base_dir=Path(provenance.get("base_dir") or "."))
    plan_file = (provenance.get("plan_file") or {}).get("path")
    if plan_file and Path(plan_file).is_file():
        plan.path = Path(plan_file)
    return plan


def rerun_report(folder: Path, registry: Any, run_audit: Callable[..., Any], *, cache: Any,
                 tolerance: bool = False) -> Rerun:
    """Run the plan of the report in ``folder`` again with ``run_audit`` (:func:`xai_audit.audit.run_audit`,
    passed in: the audit's runner sits above this stage) and compare everything outside ``run`` with it;
    ``tolerance`` compares floats within it even on the same machine."""
    _, report = read_results(folder)
    plan = plan_of(report, registry)
    examples = report.get("examples") or {}
    explain_ids = None
    if examples.get("rule") == _FIXED_EXAMPLES:  # one model of a several-model plan: the same images again
        explain_ids = [sid for case in (examples.get("cases") or {}).values() for sid in case.get("shown") or []]
    with batch_sizes_from(report):
        outcome = run_audit(plan, registry, cache=cache, explain_ids=explain_ids)
    rerun = json.loads(json.dumps(outcome.results, allow_nan=False))  # as results.json holds it
    before = (report.get("run") or {}).get("machine") or {}
    now = (rerun.get("run") or {}).get("machine") or {}
    same = bool(before.get("numerics")) and before.get("numerics") == now.get("numerics")
    if same and not tolerance:
        mode = "bytes"
        how = f"every field outside `run` compared byte for byte (the same machine: numerics {now.get('numerics')})"
    else:
        mode = "tolerance"
        why = "asked for" if same else "another machine: " + (_machine_change(before, now) or "no machine recorded")
        how = (f"floats compared within rtol {RTOL:g}, atol {ATOL:g} and every other field exactly ({why}; "
               "a CPU or BLAS may round the last bits otherwise)")
    return Rerun(differences(report, rerun, exact=mode == "bytes"), mode, how, rerun)


def differences(report: dict[str, Any], rerun: dict[str, Any], *, exact: bool = True,
                rtol: float = RTOL, atol: float = ATOL) -> list[Difference]:
    """Every field outside ``run`` (and ``verification``) that differs: byte for byte when ``exact`` (1 and
    1.0 differ, as they do in the file), else floats within the tolerance."""
    found: list[Difference] = []
    keys = [k for k in dict.fromkeys([*report, *rerun]) if k not in NOT_COMPARED]
    for key in keys:
        _walk(report.get(key, _MISSING), rerun.get(key, _MISSING), key, exact, rtol, atol, found)
    return found


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()


def _walk(a: Any, b: Any, path: str, exact: bool, rtol: float, atol: float, found: list[Difference]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            _walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}", exact, rtol, atol, found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", exact, rtol, atol, found)
    elif not _same(a, b, exact, rtol, atol):
        found.append(Difference(path, a, b))


def _same(a: Any, b: Any, exact: bool, rtol: float, atol: float) -> bool:
    if exact or not (isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool)
                     or isinstance(b, float) and isinstance(a, (int, float)) and not isinstance(a, bool)):
        return type(a) is type(b) and a == b
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def _machine_change(before: dict[str, Any], now: dict[str, Any]) -> str:
    keys = ("cpu", "cpu_flags_sha256", "machine", "torch", "torch_config_sha256", "torch_threads", "numpy", "device")
    return ", ".join(f"{k} {before.get(k)!s} -> {now.get(k)!s}" for k in keys if before.get(k) != now.get(k))


def shown(value: Any, limit: int = 120) -> str:
    """A value for one line of output: JSON, cut to ``limit`` characters."""
    text = "(missing)" if value is _MISSING else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""A whole audit against the model passes it needs, step by step, the trust step included.

One real audit per model, run in this process (``run_audit``, no cache): LIME,
Occlusion, Integrated Gradients and Grad-CAM on a few explained synthetic
faces, each with the host's trust step at its defaults, and one hypothesis. A
forward hook on the model counts every image that goes through it, and a hook
on its output every image whose pass a backward pass follows, under the step
that ran them (the step names of results.json's ``run.steps``). The batch-size
probe runs before the audit and is not counted.

The limit of a step is its passes alone: forward images x the time of one
image in a forward pass, plus forward + backward images x the time of one image
in a forward + backward pass, both timed here at the model's best batch size and
layout (the batch the plugins use). The table prints limit / measured per step
(1.00: the step is its passes and nothing else) and for the whole audit.

The trust step of an explainer is sized by default to cost at most the passes
its explainer states (xai_audit.judge.trust.plan_budget; a forward + backward
pass counts two forward passes): 2k + 1 curve canvases per scored image, 2k - 2
more for the random pixel order they are compared with (kept per image and
steps, so an explainer scored like one before it reuses them), and the sanity
check's re-explanations. The summary compares each explainer's trust step with
the explainer's own, for every explainer (target: at most as much, i.e. a ratio
of at least 1.00), in the time of their passes, with the counted passes' ratio
and the wall-time ratio beside it, and says on how many images and steps each
trust step scored its curves (results.json's trust.budget).

    python -m bench.audit_cost                       # demo CNN, ResNet-18, mini-Xception
    python -m bench.audit_cost --models demo --quick
    python -m bench.audit_cost --threads 1           # on a shared machine: one thread waits for no other
    python -m bench --only audit
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.common import Row, Section, fmt_seconds, ratio, timed_passes

MODELS = ("demo", "resnet18", "mini-xception")
CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
#: explainers whose trust step must cost at most what they did (every built-in one, by default)
BOUNDED = ("lime", "occlusion", "integrated-gradients", "gradcam")
#: seconds of back-to-back passes timed for each unit cost, and how many times (the fastest counts: a busy
#: machine only ever slows a pass down, and a slow unit would flatter every ratio)
_UNIT_WORK_S = 0.25
_UNIT_ROUNDS = 3

# --------------------------------------------------------------------------- counting passes

#: images through the model under each step: [forward images, of which a backward pass followed]
COUNTS: dict[str, list[int]] = {}
_CURRENT: dict[str, str] = {"step": "outside a step"}


def _count(_module: Any, args: tuple, output: Any) -> None:
    x = args[0] if args else None
    n = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim >= 1 else 0
    row = COUNTS.setdefault(_CURRENT["step"], [0, 0])
    row[0] += n
    out = output[0] if isinstance(output, (tuple, list)) else output
    if isinstance(out, torch.Tensor) and out.requires_grad:
        def backward(grad: torch.Tensor, row: list[int] = row, n: int = n) -> None:
            row[1] += n

        out.register_hook(backward)


def counted(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with the counting hook (kept by the deep copies the sanity check randomises)."""
    module.register_forward_hook(_count)
    return module


@contextlib.contextmanager
def counting() -> Iterator[None]:
    """Count under the step names RunFacts gives."""
    from xai_audit.run.facts import RunFacts

    step = RunFacts.step

    @contextlib.contextmanager
    def labelled(self: RunFacts, name: str, cache: Any = None) -> Iterator[dict[str, Any]]:
        before, _CURRENT["step"] = _CURRENT["step"], name
        try:
            with step(self, name, cache) as entry:
                yield entry
        finally:
            _CURRENT["step"] = before

    RunFacts.step = labelled  # type: ignore[method-assign]
    try:
        yield
    finally:
        RunFacts.step = step  # type: ignore[method-assign]

# --------------------------------------------------------------------------- the models (plan factories)


def demo() -> torch.nn.Module:
    from xai_audit.demo.model import DemoCNN

    torch.manual_seed(0)
    return counted(DemoCNN())


def resnet18() -> torch.nn.Module:
    from bench.attribution import ResNet18

    torch.manual_seed(0)
    return counted(ResNet18(len(CLASSES)))


def mini_xception() -> torch.nn.Module:
    from xai_audit_torch.mini_xception import mini_xception as make

    torch.manual_seed(0)
    return counted(make(len(CLASSES), classes=CLASSES))


def plan_text(model: str, quick: bool) -> str:
    factory, size, channels = {"demo": ("demo", 64, 3), "resnet18": ("resnet18", 64, 3),
                               "mini-xception": ("mini_xception", 48, 1)}[model]
    input_spec = "{size: %d, channels: 1, mean: [0.5], std: [0.5]}" % size if channels == 1 else "{size: %d}" % size
    return f"""\
seed: 0
model:
  adapter: torch
  module: bench.audit_cost:{factory}
  classes: [{', '.join(CLASSES)}]
  input: {input_spec}
dataset: {{loader: synthetic-faces, split: test, n: {16 if quick else 24}, size: {size}, seed: 0}}
explain: {{samples: {4 if quick else 8}}}
explainers:
  - lime
  - occlusion
  - integrated-gradients
  - gradcam
hypotheses:
  - luminance: {{factor: 0.5}}
report: {{title: "audit cost benchmark, {model}", formats: [json]}}
"""


# --------------------------------------------------------------------------- measuring


def unit_costs(adapter: Any, shape: tuple[int, ...]) -> dict[bool, float]:
    """Seconds per image of a forward pass (False) and of a forward + backward pass (True), at the batch
    size and layout the plugins use (the probe's; measured before the audit, so not counted in it)."""
    from xai_audit.contract import batching

    out = {}
    for backward in (False, True):
        batch = batching.best_batch_size(adapter, shape, backward=backward)
        x = batching.in_best_layout(adapter, torch.rand(batch, *shape), backward=backward)
        batching._pass(adapter, x, backward)  # warm-up
        best = float("inf")
        for _ in range(_UNIT_ROUNDS):
            passes, elapsed = timed_passes(partial(batching._pass, adapter, x, backward), _UNIT_WORK_S)
            best = min(best, elapsed / (passes * batch))
        out[backward] = best
    return out


def audit(model: str, quick: bool) -> dict[str, Any]:
    """One audit of ``model``: per step its seconds, forward and forward + backward images, and limit."""
    from xai_audit.audit import run_audit
    from xai_audit.load.loading import load_model_and_data
    from xai_audit.plan import load_plan
    from xai_audit.registry import make_plugin_manager
    from xai_audit.run.cache import Cache

    registry = make_plugin_manager()
    with tempfile.TemporaryDirectory(prefix="xai-audit-bench-cost-") as folder:
        path = Path(folder) / "plan.yaml"
        path.write_text(plan_text(model, quick))
        plan = load_plan(path, registry)
        adapter, data = load_model_and_data(plan)
        shape = tuple(data[0].image.shape)
        unit = unit_costs(adapter, shape)  # also runs the batch-size probe the audit would
        COUNTS.clear()
        with counting():
            start = time.perf_counter()
            outcome = run_audit(plan, registry, cache=Cache(None))
            seconds = time.perf_counter() - start
        after = unit_costs(adapter, shape)  # the machine's load drifts: the faster of before and after counts
        unit = {backward: min(unit[backward], after[backward]) for backward in unit}
    results = outcome.results
    steps = dict((results.get("run") or {}).get("steps") or {})
    rows = []
    for name, entry in steps.items():
        forward, backward = COUNTS.get(name, [0, 0])
        limit = (forward - backward) * unit[False] + backward * unit[True]
        rows.append({"step": name, "seconds": float(entry.get("seconds") or 0.0), "forward": forward,
                     "backward": backward, "limit": limit})
    uncounted = {k: v for k, v in COUNTS.items() if k not in steps}
    return {"model": model, "shape": shape, "unit": unit, "rows": rows, "seconds": seconds,
            "failures": [f["step"] for f in results.get("failures") or []], "uncounted": uncounted,
            "trust_budget": {name: (entry.get("trust") or {}).get("budget")
                             for name, entry in (results.get("explainers") or {}).items()}}


def results(runs: list[dict[str, Any]]) -> tuple[list[Row], list[Section]]:
    rows: list[Row] = []
    sections: list[Section] = []
    for run in runs:
        name = {"demo": "demo CNN", "resnet18": "ResNet-18", "mini-xception": "mini-Xception (gray)"}[run["model"]]
        on = f"{name} ({run['shape'][-1]} px)"
        table = [[r["step"], fmt_seconds(r["seconds"]), str(r["forward"]), str(r["backward"]),
                  fmt_seconds(r["limit"]), f"{ratio(r['limit'], r['seconds']):.2f}" if r["limit"] else "-"]
                 for r in run["rows"]]
        total_limit = sum(r["limit"] for r in run["rows"])
        table.append(["whole audit", fmt_seconds(run["seconds"]), str(sum(r["forward"] for r in run["rows"])),
                      str(sum(r["backward"] for r in run["rows"])), fmt_seconds(total_limit),
                      f"{ratio(total_limit, run['seconds']):.2f}"])
        by_step = {r["step"]: r for r in run["rows"]}
        notes = [f"One image: {run['unit'][False] * 1e3:.2f} ms forward, {run['unit'][True] * 1e3:.2f} ms forward + "
                 "backward, at the plugins' batch size and layout. Images: every image through the model in the "
                 "step; backward: those a backward pass followed. limit = the step's passes alone."]
        if run["failures"]:
            notes.append("Failed steps: " + ", ".join(run["failures"]))
        for explainer, budget in run["trust_budget"].items():
            if budget:
                notes.append(f"trust {explainer} ({budget['mode']}): curves on {budget['images']} of {budget['of']} "
                             f"images at {budget['steps']} steps, sanity {budget['sanity_samples']} image(s) x "
                             f"{budget['sanity_stages']} stage(s); {budget['passes']} passes stated against the "
                             f"explainer's {budget['explainer_passes']} (results.json trust.budget)")
        sections.append(Section(f"A whole audit against its model passes, per step: {on}",
                                ["step", "measured", "images", "backward", "limit", "limit ÷ measured"],
                                table, notes=notes, right=(1, 2, 3, 4, 5)))
        rows.append(Row("whole audit (time of its passes ÷ time)", on, fmt_seconds(run["seconds"]),
                        fmt_seconds(total_limit), ratio(total_limit, run["seconds"])))
        for explainer in ("lime", "occlusion", "integrated-gradients", "gradcam"):
            own, trust = by_step.get(f"explainer {explainer}"), by_step.get(f"trust {explainer}")
            if not own or not trust or not trust["limit"]:
                continue
            bounded = explainer in BOUNDED
            value = ratio(own["limit"], trust["limit"])
            counted = ratio(own["forward"] + own["backward"], trust["forward"] + trust["backward"])
            rows.append(Row(f"trust ÷ {explainer} (time of passes; passes {counted:.2f}, "
                            f"wall time {trust['seconds'] / max(own['seconds'], 1e-9):.2f}x)",
                            on, f"trust {fmt_seconds(trust['limit'])}", f"{explainer} {fmt_seconds(own['limit'])}",
                            value, target=">= 1.00 (trust within its explainer)" if bounded else "",
                            met=bool(value >= 1.0) if bounded else None, bar=1.0 if bounded else None))
    return rows, sections


def run(quick: bool = False, models: list[str] | None = None) -> tuple[list[Row], list[Section]]:
    chosen = models or (["demo"] if quick else list(MODELS))
    unknown = set(chosen) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODELS)}")
    runs = []
    for model in chosen:
        print(f"audit cost: {model} ...", flush=True)
        got = audit(model, quick)
        runs.append(got)
        print("   " + ", ".join(f"{r['step']} {r['seconds']:.1f} s" for r in got["rows"]), flush=True)
    return results(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="fewer images (4 explained, not 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 on a machine other processes share)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench import audit_cost  # the plan's factories count into this module, not __main__
    from bench.common import summary_text

    rows, sections = audit_cost.run(args.quick, [m.strip() for m in args.models.split(",")])

    for section in sections:
        print("\n" + section.text())
    print("\n" + summary_text(rows))


if __name__ == "__main__":
    main()

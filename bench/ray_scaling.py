"""Ray: two workers against one on a CPU-bound audit.

The audit is Occlusion (6 px windows every 2 px) and LIME (1,500 samples) on 16
images of the demo CNN (seeded random weights), trust checks off, no cache: the
model passes of the explainers dominate and split evenly between the workers.
Both runs use ``executor: ray`` on one local Ray instance started here, so the
Ray start-up is paid once and outside the timings; each run includes starting
its workers and loading the model in them, as an audit does. The target
(issue 9) is a speed-up of at least 1.6 with two workers "where the machine has
the cores": with one core the row has no verdict; the load average at the start is noted.

    python -m bench.ray_scaling
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import DEMO_CNN_PLAN_HEAD, Row, Section

TARGET = 1.6
PLAN = DEMO_CNN_PLAN_HEAD + """\
dataset: {{loader: synthetic-faces, split: test, n: {n}, seed: 0}}
explain: {{samples: {n}, trust: {{enabled: false}}}}
explainers:
  - occlusion: {{window: 6, stride: 2}}
  - lime: {{samples: {lime}}}
runtime: {{executor: ray, ray: {{workers: {workers}}}}}
report: {{title: "ray scaling"}}
"""


def _audit(workers: int, n: int, lime: int, folder: Path) -> float:
    from xai_audit.run.cache import Cache
    from xai_audit.plan import load_plan
    from xai_audit.registry import make_plugin_manager
    from xai_audit.audit import run_audit

    path = folder / f"ray-{workers}.yaml"
    path.write_text(PLAN.format(n=n, lime=lime, workers=workers))
    registry = make_plugin_manager()
    plan = load_plan(path, registry)
    start = time.perf_counter()
    outcome = run_audit(plan, registry, cache=Cache(None))
    seconds = time.perf_counter() - start
    if outcome.results["failures"]:
        raise RuntimeError(f"the benchmark audit failed: {outcome.results['failures'][0]['error']}")
    return seconds


def run(quick: bool = False) -> tuple[list[Row], list[Section]]:
    try:
        import ray
    except ImportError:
        return [Row("Ray, 2 workers vs 1", "-", "ray not installed (pip install xai-audit[ray])", "-", None)], []
    n, lime = (8, 600) if quick else (16, 1500)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # idle cores before this part starts (the load average of the other parts decays slowly: read it as a hint)
    idle = max(0.0, cores - os.getloadavg()[0])
    print(f"ray: {n} images, occlusion + LIME ({lime} samples), 1 then 2 workers", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = _audit(1, n, lime, Path(tmp))
            two = _audit(2, n, lime, Path(tmp))
    finally:
        ray.shutdown()
    speedup = one / two
    enough = cores >= 2  # the target holds "where the machine has the cores"
    row = Row("Ray, 2 workers vs 1 (speed-up)", f"demo CNN, {n} images, occlusion + LIME",
              f"{two:.1f} s vs {one:.1f} s", f"{TARGET:.1f}x", speedup, target=f">= {TARGET:.2f}",
              met=(speedup >= TARGET) if enough else None)
    if not enough:
        row.measured += " (one core: no verdict)"
    elif idle < 1.5:
        row.measured += f" (about {idle:.1f} of {cores} cores idle at the start)"
    section = Section(
        "Ray: two workers against one",
        ["workers", "seconds"],
        [["1", f"{one:.1f}"], ["2", f"{two:.1f}"]],
        [f"Speed-up {speedup:.2f} (target {TARGET}); {cores} cores, load average {os.getloadavg()[0]:.1f} at the end."],
    )
    return [row], [section]


def main() -> None:
    rows, sections = run()
    for s in sections:
        print(s.text())
    for r in rows:
        print(" | ".join(r.cells()))


if __name__ == "__main__":
    main()

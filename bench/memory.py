"""Peak memory of a real audit against the number of images.

Each N runs ``xai-audit run PLAN --out DIR --no-cache`` in its own process on the
built-in ``synthetic-faces`` data set with the demo CNN (random weights, seeded),
Integrated Gradients and Grad-CAM on a fixed 8 explained samples, and the
luminance and grayscale hypotheses, with a 32 MiB image cache; the child's peak resident set size comes
from ``os.wait4`` (the kernel's ``ru_maxrss`` for that child alone). The trust
checks are off: they work on the explained samples only, so their cost does not
depend on N, and leaving them out keeps the run short. The slope of peak RSS
against N, in MiB per 1,000 images, says whether memory grows with the data.

    python -m bench.memory            # N = 500, 1000, 2000, 4000 at 96 px (about 2 minutes on 2 cores)
    python -m bench.memory --quick    # N = 250, 500, 1000 at 96 px
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import DEMO_CNN_PLAN_HEAD, FLAT_TARGET, Row, Section, flatness, slope_per_1000

FULL_SIZES = (500, 1000, 2000, 4000)
QUICK_SIZES = (250, 500, 1000)
#: image side: large enough that holding every image would show (4,000 x 3 x 96 x 96 x 4 bytes = 422 MiB)
SIZE = 96
#: the audit's image cache (runtime.image_cache_mb): memory may grow until it is full (about 500 images
#: here), and must stay flat after; the default of 256 MiB would hide the slope below ~3,000 images
CACHE_MB = 32

PLAN = DEMO_CNN_PLAN_HEAD + """\
dataset: {{loader: synthetic-faces, split: test, n: {n}, size: {size}, seed: 0}}
explain: {{samples: {samples}, trust: {{enabled: false}}}}
explainers:
  - integrated-gradients: {{steps: 16}}
  - gradcam: {{}}
hypotheses:
  - luminance: {{factor: 0.2}}
  - grayscale: {{}}
report: {{title: "memory benchmark, {n} images", formats: [html, json]}}
runtime: {{image_cache_mb: {cache_mb}}}
"""


@dataclass
class Run:
    n: int
    size: int
    peak_mib: float
    seconds: float
    returncode: int
    tail: str = ""


def plan_text(n: int, size: int, samples: int = 8, cache_mb: int = CACHE_MB) -> str:
    return PLAN.format(n=n, size=size, samples=samples, cache_mb=cache_mb)


def _command(plan: Path, out: Path) -> list[str]:
    script = Path(sys.executable).parent / "xai-audit"
    head = [str(script)] if script.exists() else [sys.executable, "-c", "from xai_audit.cli import app; app()"]
    return [*head, "run", str(plan), "--out", str(out), "--no-cache", "--quiet"]


def audit(n: int, size: int, workdir: Path) -> Run:
    """One audit of ``n`` images in a child process: its peak RSS (MiB) and wall time."""
    plan = workdir / f"plan-{n}.yaml"
    plan.write_text(plan_text(n, size))
    out = workdir / f"report-{n}"
    log = workdir / f"log-{n}.txt"
    start = time.perf_counter()
    with open(log, "wb") as sink:
        child = subprocess.Popen(_command(plan, out), stdout=sink, stderr=subprocess.STDOUT, cwd=workdir)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    tail = "" if child.returncode == 0 else log.read_text(errors="replace")[-2000:]
    # ru_maxrss is in KiB on Linux
    return Run(n, size, usage.ru_maxrss / 1024, seconds, child.returncode, tail)


def measure(sizes: tuple[int, ...], size: int, progress: bool = True) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="xai-audit-bench-memory-"))
    runs = []
    try:
        for n in sizes:
            run = audit(n, size, workdir)
            runs.append(run)
            if progress:
                state = "" if run.returncode == 0 else f"  FAILED (exit {run.returncode})"
                print(f"   N = {n:5d}: peak RSS {run.peak_mib:7.0f} MiB, {run.seconds:5.1f} s{state}", flush=True)
                if run.tail:
                    print(run.tail, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


def results(runs: list[Run]) -> tuple[list[Row], list[Section]]:
    ok = [r for r in runs if r.returncode == 0]
    size = runs[0].size if runs else 0
    detail = Section(
        f"Peak memory of an audit against the number of images (synthetic-faces, {size} px)",
        ["images", "peak RSS (MiB)", "MiB per image over the smallest run", "wall time", "exit"],
        [[str(r.n), f"{r.peak_mib:.0f}",
          "-" if r is ok[0] or r not in ok else f"{(r.peak_mib - ok[0].peak_mib) / max(1, r.n - ok[0].n):.3f}",
          f"{r.seconds:.1f} s", str(r.returncode)] for r in runs] if ok else [],
        notes=["One `xai-audit run --no-cache` per N in its own process: demo CNN (random weights), "
               "integrated-gradients (16 steps) and gradcam on 8 explained samples, luminance and grayscale "
               "hypotheses, HTML + JSON report, trust checks off. Peak RSS is the child's `ru_maxrss` (os.wait4)."],
        right=(0, 1, 2, 3, 4),
    )
    if len(ok) < 2:
        return [Row("peak memory vs images", "audit", "failed", "flat", None, target="flat", met=False)], [detail]
    slope = slope_per_1000([r.n for r in ok], [r.peak_mib for r in ok])
    flat = flatness([r.n for r in ok], [r.peak_mib for r in ok])
    met = flat >= FLAT_TARGET
    detail.notes.append(
        f"Slope: {slope:+.1f} MiB per 1,000 images (least squares over N = {ok[0].n}-{ok[-1].n}); "
        f"peak at N = {ok[0].n} ÷ peak at N = {ok[-1].n} = {flat:.2f}: "
        + ("flat." if met else f"memory grows with the number of images (flat would be ≥ {FLAT_TARGET:.2f}).")
    )
    row = Row(
        "peak memory vs images",
        f"audit, {ok[0].n}-{ok[-1].n} images at {size} px",
        f"{ok[0].peak_mib:.0f} -> {ok[-1].peak_mib:.0f} MiB ({slope:+.0f} MiB/1k images)",
        "flat",
        flat,
        target=f"≥ {FLAT_TARGET:.2f} (flat)",
        met=met,
    )
    return [row], [detail]


def run(quick: bool = False) -> tuple[list[Row], list[Section]]:
    sizes, size = (QUICK_SIZES if quick else FULL_SIZES), SIZE
    print(f"memory: one audit per N in a child process ({size} px)", flush=True)
    return results(measure(sizes, size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, smaller audits")
    args = parser.parse_args(argv)
    rows, sections = run(args.quick)
    for s in sections:
        print("\n" + s.text())


if __name__ == "__main__":
    main()

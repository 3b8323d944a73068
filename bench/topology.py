"""Cost of the topology explainer's persistence against the number of points.

    python -m bench.topology           # everything (about two minutes on 2 cores)
    python -m bench.topology --quick   # smaller sizes only

Three measurements, on a noisy circle embedded in 768 dimensions (an
activation-like cloud with one real loop):

1. Rips persistence (giotto-ph, H0–H1, 2 threads) on all N points, for growing
   N, with the growth exponent: the slope of log(time) against log(N).
2. The explainer's default pipeline (PCA to 64 dimensions, 200 farthest-point
   landmarks, H0–H2, and the significance test on 19 Gaussian clouds) for
   growing N, with its growth exponent.
3. The limit the issue sets: 20,000 vectors of 768 dimensions with the
   default settings must take under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.common import TOPOLOGY_LIMIT_S, Row, Section, fmt_seconds, growth_exponent, ratio
from xai_audit_topology.cloud import farthest_point_landmarks, fit_reduction
from xai_audit_topology.options import TopologyOptions
from xai_audit_topology.persistence import assess, rips

LIMIT_S = TOPOLOGY_LIMIT_S


def noisy_circle(n: int, dims: int = 768, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    basis, _ = np.linalg.qr(rng.standard_normal((dims, 2)))  # a random plane in R^dims
    return (np.c_[np.cos(t), np.sin(t)] @ basis.T + 0.3 * rng.standard_normal((n, dims)) / np.sqrt(dims)).astype(np.float32)


def default_pipeline(cloud: np.ndarray, seed: int = 0) -> tuple[float, dict[str, float], list[int]]:
    """The explainer's steps on ``cloud`` with its default options; seconds in all, per step, significant counts."""
    opts = TopologyOptions()
    times: dict[str, float] = {}
    start = time.perf_counter()
    reduction = fit_reduction(cloud, opts.pca_dims, seed)
    reduced = reduction.project(cloud)
    times["pca"] = time.perf_counter() - start

    def select(x: np.ndarray, s: int) -> np.ndarray:
        return farthest_point_landmarks(x, opts.landmarks, s)

    found = assess(reduced, opts.dims, select, null_clouds=opts.null_clouds, alpha=opts.alpha, seed=seed,
                   n_threads=opts.n_threads)
    total = time.perf_counter() - start
    times["persistence"] = found.diagrams.seconds
    times["significance (19 noise clouds)"] = found.significance.seconds if found.significance else 0.0
    times["landmarks"] = total - sum(times.values())
    return total, times, [len(found.significant(k)) for k in opts.dims]


RIPS_SIZES = (200, 300, 400, 600, 800)
RIPS_SIZES_QUICK = (150, 200, 300, 400)
PIPELINE_SIZES = (2500, 5000, 10000, 20000)
PIPELINE_SIZES_QUICK = (2500, 5000, 10000)
LIMIT_N = 20000


def rips_sweep(sizes: tuple[int, ...]) -> list[float]:
    """Seconds of Rips persistence H0-H1 on every point, the faster of two runs per N."""
    rips(noisy_circle(50), [0, 1], n_threads=2, generators=False)  # warm up
    seconds = []
    for n in sizes:
        cloud = noisy_circle(n)
        runs = []
        for _ in range(2):  # the faster of two runs: less noise from whatever else the machine does
            start = time.perf_counter()
            rips(cloud, [0, 1], n_threads=2, generators=False)
            runs.append(time.perf_counter() - start)
        seconds.append(min(runs))
        print(f"   N = {n:6d}: {seconds[-1]:7.2f} s", flush=True)
    return seconds


def pipeline_sweep(sizes: tuple[int, ...]) -> list[tuple[float, dict[str, float], list[int]]]:
    out = []
    for n in sizes:
        total, times, counts = default_pipeline(noisy_circle(n))
        out.append((total, times, counts))
        print(f"   N = {n:6d}: {total:7.2f} s   significant H0/H1/H2: {counts}", flush=True)
    return out


def run(quick: bool = False, limit: bool = True) -> tuple[list[Row], list[Section]]:
    """Every measurement, as summary rows and detail sections (``python -m bench``).

    The 20,000-point limit reuses the pipeline sweep's own 20,000-point run when the sweep has one.
    """
    rips_sizes = RIPS_SIZES_QUICK if quick else RIPS_SIZES
    pipe_sizes = PIPELINE_SIZES_QUICK if quick else PIPELINE_SIZES
    print("topology: Rips persistence H0-H1 on every point (noisy circle in 768 dimensions)", flush=True)
    rips_s = rips_sweep(rips_sizes)
    print("topology: default pipeline (PCA 64, 200 landmarks, H0-H2, 19 noise clouds)", flush=True)
    pipe = pipeline_sweep(pipe_sizes)
    rips_exp = growth_exponent(rips_sizes, rips_s)
    pipe_exp = growth_exponent(pipe_sizes, [p[0] for p in pipe])
    span = lambda sizes: f"N = {sizes[0]:,}-{sizes[-1]:,} x 768"  # noqa: E731
    rows = [
        Row("persistent homology H0-H1, all points: growth", span(rips_sizes),
            f"N^{rips_exp:.2f} ({fmt_seconds(rips_s[-1])} at N = {rips_sizes[-1]})", "-", None, target="-"),
        Row("topology default pipeline H0-H2: growth", span(pipe_sizes),
            f"N^{pipe_exp:.2f} ({fmt_seconds(pipe[-1][0])} at N = {pipe_sizes[-1]:,})", "-", None, target="-"),
    ]
    sections = [
        Section("Rips persistence H0-H1 on every point (giotto-ph, 2 threads)", ["N", "seconds"],
                [[str(n), f"{s:.2f}"] for n, s in zip(rips_sizes, rips_s)],
                [f"Growth exponent {rips_exp:.2f} (time ~ N^exponent, least squares on log-log)."], right=(0, 1)),
    ]
    limit_run = None
    if LIMIT_N in pipe_sizes:
        limit_run = pipe[pipe_sizes.index(LIMIT_N)]
    elif limit:
        print(f"topology: the limit, {LIMIT_N:,} x 768, default settings", flush=True)
        limit_run = default_pipeline(noisy_circle(LIMIT_N))
        print(f"   N = {LIMIT_N:6d}: {limit_run[0]:7.2f} s   significant H0/H1/H2: {limit_run[2]}", flush=True)
    notes = [f"Growth exponent {pipe_exp:.2f}."]
    if limit_run is not None:
        total, times, counts = limit_run
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        notes.append(f"{LIMIT_N:,} x 768: {total:.1f} s ({parts}); significant H0/H1/H2 {counts} "
                     "(one loop expected).")
        r = ratio(LIMIT_S, total)
        rows.append(Row("persistent homology, default pipeline H0-H2", f"{LIMIT_N:,} x 768 activations",
                        fmt_seconds(total), fmt_seconds(LIMIT_S), r, target="≥ 1.00", met=total < LIMIT_S))
    sections.append(Section("Topology explainer's default pipeline: PCA to 64 dims, 200 farthest-point landmarks, "
                            "H0-H2, significance on 19 Gaussian clouds",
                            ["N", "seconds", "significant H0/H1/H2"],
                            [[f"{n:,}", f"{p[0]:.2f}", str(p[2])] for n, p in zip(pipe_sizes, pipe)],
                            notes, right=(0, 1)))
    return rows, sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes only")
    args = parser.parse_args()
    print(f"topology bench: {os.cpu_count()} CPU(s) visible; giotto-ph on 2 threads\n")

    sizes = [150, 200, 300, 400] if args.quick else [200, 300, 400, 600, 800]
    print("1. Rips persistence H0-H1 on every point (noisy circle in 768 dimensions)")
    seconds = rips_sweep(tuple(sizes))
    print(f"   growth exponent: {growth_exponent(sizes, seconds):.2f} (time ~ N^exponent)\n")

    sizes = [2500, 5000, 10000] if args.quick else [2500, 5000, 10000, 20000]
    print("2. default pipeline: PCA to 64 dims, 200 farthest-point landmarks, H0-H2, 19 noise clouds")
    seconds = []
    for n in sizes:
        total, _, counts = default_pipeline(noisy_circle(n))
        seconds.append(total)
        print(f"   N = {n:6d}: {total:7.2f} s   significant H0/H1/H2: {counts}")
    print(f"   growth exponent: {growth_exponent(sizes, seconds):.2f}\n")

    print("3. the limit: 20,000 x 768 with the default settings")
    total, times, counts = default_pipeline(noisy_circle(20000))
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    verdict = "PASS" if total < LIMIT_S else "FAIL"
    print(f"   {total:.1f} s ({parts}); limit {LIMIT_S:.0f} s; ratio {total / LIMIT_S:.2f}: {verdict}")
    print(f"   significant H0/H1/H2: {counts} (one loop expected)")


if __name__ == "__main__":
    main()

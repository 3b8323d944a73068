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

from xai_audit_topology.cloud import farthest_point_landmarks, fit_reduction
from xai_audit_topology.options import TopologyOptions
from xai_audit_topology.persistence import assess, rips

LIMIT_S = 60.0


def noisy_circle(n: int, dims: int = 768, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    basis, _ = np.linalg.qr(rng.standard_normal((dims, 2)))  # a random plane in R^dims
    return (np.c_[np.cos(t), np.sin(t)] @ basis.T + 0.3 * rng.standard_normal((n, dims)) / np.sqrt(dims)).astype(np.float32)


def growth_exponent(sizes: list[int], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes only")
    args = parser.parse_args()
    print(f"topology bench: {os.cpu_count()} CPU(s) visible; giotto-ph on 2 threads\n")

    sizes = [150, 200, 300, 400] if args.quick else [200, 300, 400, 600, 800]
    print("1. Rips persistence H0-H1 on every point (noisy circle in 768 dimensions)")
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
        print(f"   N = {n:6d}: {seconds[-1]:7.2f} s")
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

"""Vietoris–Rips persistence (giotto-ph) and which features are real.

Persistence comes from giotto-ph's ``ripser_parallel``, the engine that
giotto-tda's ``VietorisRipsPersistence`` wraps, called directly because it
also returns the simplices that create and destroy each feature
(``return_generators``) and runs on several threads.

Significance is a Monte Carlo test against noise of the same size and scale.
The statistic of a loop or void (H1, H2, ...) is Bobrowski and Skraba's
ℓ = ½·log log(death/birth) − ½·mean(log log(death/birth)) − γ, the
multiplicative persistence centred on the diagram's own bulk (their
"universal null distribution" for Rips, Sci. Rep. 13, 2023); a component's
(H0) is log(death / median death). Centring on the diagram's own features
makes the statistic blind to scale and, largely, to the cloud's dimension.
The null draws Gaussian clouds with the same number of points and per-axis
variance as the (PCA-reduced) cloud, sends them through the same landmark
selection and persistence, and keeps the largest statistic of each
dimension. A Gumbel law fitted to those maxima gives each feature a p-value;
a feature is significant when its statistic exceeds both the value whose
p-value is ``alpha / len(dims)`` (Bonferroni over dimensions; the maximum
already accounts for the many features of one diagram) and every null
maximum seen.

Two other tests, those of the published FER study (its tdads tools), are
offered beside this Monte Carlo (``significance``):

* ``universal``: no simulation. Bobrowski and Skraba's result is that ℓ of a
  loop or void of noise follows one law whatever the cloud, the left Gumbel
  (P(ℓ > x) = exp(−eˣ)); a feature is significant when its p-value, taken
  for the largest of the diagram's own n features (1 − (1 − exp(−eˡ))ⁿ), is
  below α / len(dims). The law says nothing of components: H0 keeps the
  Monte Carlo (or no test when ``null_clouds`` is 0).
* ``bootstrap``: a confidence set of the diagram (Fasy et al. 2014, "Confidence
  sets for persistence diagrams"; TDApplied's and tdads'
  ``bootstrap_persistence_thresholds``). The landmarks are resampled with
  replacement ``null_clouds`` times; the (1 − α / len(dims)) quantile c of
  the bottleneck distances between each resample's diagram and the data's
  bounds how far the diagram may move; a feature is significant when its
  half-persistence (death − birth) / 2 exceeds c, i.e. its confidence box
  stays off the diagonal. Its p-value is the share of resamples at least
  that far away.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

EULER_GAMMA = 0.5772156649015329
#: a diagram needs this many features to centre its own statistic
MIN_SELF = 3
#: when fewer noise clouds than this have a feature in a dimension, the null falls back to the universal law
MIN_NULL = 5
#: ... for the largest of this many features
UNIVERSAL_FEATURES = 100
#: the significance tests offered
SIGNIFICANCE = ("monte-carlo", "universal", "bootstrap")


@dataclass
class Diagrams:
    """Persistence diagrams of one cloud, with the simplices behind each finite feature.

    ``diagrams[k]`` is (n, 2) birth, death (death ``inf`` for an essential
    feature). ``generators[k]`` holds one row per finite feature, in the same
    order: for H0 ``[born vertex, death edge a, death edge b]``, for k ≥ 1
    ``[birth edge a, b, death edge c, d]``; vertices index the cloud.
    """

    dims: list[int]
    diagrams: dict[int, np.ndarray]
    generators: dict[int, np.ndarray]
    seconds: float = 0.0

    def finite(self, k: int) -> np.ndarray:
        dgm = self.diagrams.get(k, np.zeros((0, 2)))
        return dgm[np.isfinite(dgm[:, 1])]


def rips(points: np.ndarray, dims: Sequence[int], *, n_threads: int = 2, generators: bool = True) -> Diagrams:
    """Rips persistence of ``points`` (n, d) in dimensions ``dims``."""
    from gph import ripser_parallel

    dims = sorted(set(int(k) for k in dims))
    start = time.perf_counter()
    result = ripser_parallel(
        np.asarray(points, dtype=np.float64), maxdim=max(dims), n_threads=n_threads, return_generators=generators
    )
    diagrams: dict[int, np.ndarray] = {}
    gens: dict[int, np.ndarray] = {}
    for k in dims:
        dgm = np.asarray(result["dgms"][k], dtype=np.float64).reshape(-1, 2)
        finite = np.isfinite(dgm[:, 1])
        # giotto-ph lists finite pairs first, in the order of their generators
        diagrams[k] = np.vstack([dgm[finite], dgm[~finite]])
        if generators:
            g = result["gens"][0] if k == 0 else result["gens"][1][k - 1]
            gens[k] = np.asarray(g, dtype=np.int64).reshape(-1, 3 if k == 0 else 4)
    return Diagrams(dims, diagrams, gens, time.perf_counter() - start)


def _loglog(dgm: np.ndarray) -> np.ndarray:
    ratio = dgm[:, 1] / np.maximum(dgm[:, 0], 1e-12)
    return np.log(np.log(np.maximum(ratio, 1.0 + 1e-9)))


def statistic(dgm: np.ndarray, k: int, reference: float | None = None) -> np.ndarray:
    """The scale-free size of each finite feature of a dimension-k diagram (see the module's text).

    A diagram with fewer than ``MIN_SELF`` features cannot centre itself; it is
    centred on ``reference`` (the mean log log(death/birth) of the noise
    clouds' features) when given, else not at all.
    """
    dgm = dgm[np.isfinite(dgm[:, 1])]
    if len(dgm) == 0:
        return np.zeros(0)
    if k == 0:
        scale = float(np.median(dgm[:, 1]))
        return np.log(dgm[:, 1] / scale) if scale > 0 else np.zeros(len(dgm))
    ll = _loglog(dgm)
    centre = float(ll.mean()) if len(ll) >= MIN_SELF else (reference if reference is not None else 0.0)
    return 0.5 * ll - 0.5 * centre - EULER_GAMMA


def universal_statistic(dgm: np.ndarray, k: int) -> np.ndarray:
    """ℓ with A = 1, as TDApplied's ``universal_null`` takes it for Rips filtrations: log log(death/birth)
    minus its mean over the diagram, minus γ (twice :func:`statistic`'s ½-scaled ℓ, plus γ)."""
    return 2.0 * statistic(dgm, k) + EULER_GAMMA


def to_line(dgm: np.ndarray, k: int, value: float, reference: float | None = None) -> float:
    """The statistic ``value`` as a line on the diagram: a death level (H0) or a death/birth ratio."""
    dgm = dgm[np.isfinite(dgm[:, 1])]
    if len(dgm) == 0:
        return float("nan")
    if k == 0:
        return float(np.median(dgm[:, 1]) * math.exp(value))
    centre = float(_loglog(dgm).mean()) if len(dgm) >= MIN_SELF else (reference if reference is not None else 0.0)
    return float(math.exp(math.exp(2.0 * (value + EULER_GAMMA) + centre)))


@dataclass
class Significance:
    """The null test's outcome for each dimension of one cloud."""

    alpha: float
    null_clouds: int
    #: per dimension: statistic threshold, null maxima, fitted Gumbel (mu, beta)
    threshold: dict[int, float] = field(default_factory=dict)
    null_max: dict[int, np.ndarray] = field(default_factory=dict)
    gumbel: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: mean log log(death/birth) of the noise clouds' features, per dimension (None: they had none)
    reference: dict[int, float | None] = field(default_factory=dict)
    #: dimensions where the universal law sets the threshold (the noise clouds had too few features, or
    #: ``significance: universal``), and for how many features its maximum is taken
    universal: set[int] = field(default_factory=set)
    universal_n: dict[int, int] = field(default_factory=dict)
    #: "monte-carlo", "universal" or "bootstrap" (see the module's text)
    method: str = "monte-carlo"
    #: bootstrap: per dimension, the bottleneck distance of each resample's diagram to the data's
    bootstrap: dict[int, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    def statistic(self, k: int, dgm: np.ndarray) -> np.ndarray:
        if k in self.bootstrap:  # half-persistence: the distance to the diagonal in the bottleneck's max-norm
            dgm = dgm[np.isfinite(dgm[:, 1])]
            return (dgm[:, 1] - dgm[:, 0]) / 2.0
        if self.method == "universal" and k > 0:
            return universal_statistic(dgm, k)
        return statistic(dgm, k, self.reference.get(k))

    def line(self, k: int, dgm: np.ndarray) -> float | None:
        """The threshold as a line of the diagram figure; None for the bootstrap's band (death − birth = 2c)."""
        if k in self.bootstrap:
            return None
        if self.method == "universal" and k > 0:  # A = 1 back to the A = 1/2 statistic that to_line reads
            return to_line(dgm, k, (self.threshold[k] - EULER_GAMMA) / 2.0)
        return to_line(dgm, k, self.threshold[k], self.reference.get(k))

    def p_values(self, k: int, stats: np.ndarray) -> np.ndarray:
        """P(largest null statistic >= s) under the fitted Gumbel law (or the universal law; or the share of
        bootstrap resamples at least that far from the data's diagram)."""
        if k in self.bootstrap:
            seen = self.bootstrap[k]
            s = np.asarray(stats, dtype=np.float64)
            return (1.0 + (seen[None, :] >= s[:, None]).sum(axis=1)) / (len(seen) + 1.0)
        if k not in self.threshold:
            return np.full(len(np.asarray(stats)), np.nan)
        if k in self.universal:  # P(the largest of n left-Gumbel variables >= s)
            n = self.universal_n.get(k, UNIVERSAL_FEATURES)
            tail = np.exp(-np.exp(np.asarray(stats, dtype=np.float64)))
            return np.clip(-np.expm1(n * np.log1p(-np.minimum(tail, 1 - 1e-16))), 0.0, 1.0)
        mu, beta = self.gumbel[k]
        z = (np.asarray(stats, dtype=np.float64) - mu) / beta
        return np.clip(-np.expm1(-np.exp(-z)), 0.0, 1.0)  # 1 - exp(-exp(-z)), accurate for small p

    def significant(self, k: int, stats: np.ndarray) -> np.ndarray:
        if k not in self.threshold:  # a dimension this test does not cover (H0 under the universal law alone)
            return np.zeros(len(np.asarray(stats)), bool)
        return np.asarray(stats) > self.threshold[k]

    def describe(self, k: int) -> str:
        what = "log(death / median death)" if k == 0 else "ℓ"
        if k in self.bootstrap:
            return (f"H{k}: (death − birth) / 2 > {self.threshold[k]:.3g} (the {100 * (1 - self.alpha / len(self.threshold)):.1f} % "
                    f"quantile of the bottleneck distances of {len(self.bootstrap[k])} bootstrap resamples)")
        if k in self.universal and self.method == "universal":
            return (f"H{k}: ℓ > {self.threshold[k]:.3g} (the universal law's bound for the largest of the diagram's "
                    f"{self.universal_n.get(k, 0)} features)")
        if k in self.universal:
            return (f"H{k}: {what} > {self.threshold[k]:.3g} (the noise clouds had almost no H{k} features; the universal "
                    f"law's bound for the largest of {UNIVERSAL_FEATURES})")
        return f"H{k}: {what} > {self.threshold[k]:.3g} (largest of {self.null_clouds} noise clouds: {float(self.null_max[k].max()):.3g})"


def null_test(
    reduced: np.ndarray,
    dims: Sequence[int],
    select: Callable[[np.ndarray, int], np.ndarray],
    *,
    null_clouds: int = 19,
    alpha: float = 0.05,
    seed: int = 0,
    n_threads: int = 2,
) -> Significance:
    """Fit the null of the largest statistic per dimension on Gaussian clouds like ``reduced``.

    ``reduced`` is the whole (N, k) cloud in PCA coordinates (uncorrelated
    axes), ``select(cloud, seed)`` picks the landmark rows exactly as for the
    data, so the null goes through the same pipeline.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    scale = reduced.std(axis=0)
    diagrams: dict[int, list[np.ndarray]] = {k: [] for k in dims}
    for b in range(null_clouds):
        noise = (rng.standard_normal(reduced.shape) * scale).astype(np.float32)
        sub = noise[select(noise, seed + 1 + b)]
        dgms = rips(sub, dims, n_threads=n_threads, generators=False)
        for k in dims:
            diagrams[k].append(dgms.finite(k))
    result = Significance(alpha=alpha, null_clouds=null_clouds)
    level = alpha / max(1, len(dims))
    for k in dims:
        pooled = [_loglog(d) for d in diagrams[k] if len(d)] if k > 0 else []
        result.reference[k] = float(np.concatenate(pooled).mean()) if pooled else None
        seen = np.array([statistic(d, k, result.reference[k]).max() for d in diagrams[k] if len(d)])
        result.null_max[k] = seen
        if len(seen) < MIN_NULL:  # noise of this size and scale (almost) never has such features
            result.universal.add(k)
            result.gumbel[k] = (0.0, 1.0)
            result.threshold[k] = _universal_bound(level, UNIVERSAL_FEATURES)
            continue
        beta = max(float(seen.std(ddof=1)) * math.sqrt(6) / math.pi, 1e-3)
        mu = float(seen.mean()) - EULER_GAMMA * beta
        # the statistic whose p-value is exactly the level, never below the largest null maximum seen
        result.gumbel[k] = (mu, beta)
        result.threshold[k] = max(mu - beta * math.log(-math.log1p(-level)), float(seen.max()))
    result.seconds = time.perf_counter() - start
    return result


def universal_test(dgms: Diagrams, dims: Sequence[int], *, alpha: float = 0.05,
                   h0: Significance | None = None) -> Significance:
    """Bobrowski and Skraba's universal law for every loop and void of ``dgms``, no simulation; components
    (which the law does not cover) keep ``h0``'s Monte Carlo test when given, else are not tested."""
    start = time.perf_counter()
    result = Significance(alpha=alpha, null_clouds=h0.null_clouds if h0 is not None else 0, method="universal")
    level = alpha / max(1, len(dims))
    for k in dims:
        if k == 0:
            if h0 is not None and 0 in h0.threshold:
                result.threshold[0], result.null_max[0] = h0.threshold[0], h0.null_max[0]
                result.gumbel[0], result.reference[0] = h0.gumbel[0], h0.reference.get(0)
                if 0 in h0.universal:
                    result.universal.add(0)
            continue
        n = max(1, len(dgms.finite(k)))
        result.universal.add(k)
        result.universal_n[k] = n
        result.gumbel[k] = (0.0, 1.0)
        result.threshold[k] = _universal_bound(level, n)  # ℓ (A = 1) whose p-value is the level, for n features
    result.seconds = time.perf_counter() - start + (h0.seconds if h0 is not None else 0.0)
    return result


def bootstrap_test(reduced: np.ndarray, dgms: Diagrams, dims: Sequence[int],
                   select: Callable[[np.ndarray, int], np.ndarray], *, resamples: int = 19, alpha: float = 0.05,
                   seed: int = 0, n_threads: int = 2) -> Significance:
    """The bootstrap confidence set of ``dgms``, the diagram of the landmarks ``select`` picked from ``reduced``:
    each resample draws the cloud's points with replacement and goes through the same landmark selection and
    persistence (see the module's text)."""
    from xai_audit_topology.bottleneck import bottleneck

    start = time.perf_counter()
    rng = np.random.default_rng([seed, 4027])
    distances: dict[int, list[float]] = {k: [] for k in dims}
    for b in range(resamples):
        resample = np.unique(reduced[rng.integers(0, len(reduced), len(reduced))], axis=0)
        boot = rips(resample[select(resample, seed + 1 + b)], dims, n_threads=n_threads, generators=False)
        for k in dims:
            distances[k].append(bottleneck(boot.finite(k), dgms.finite(k)))
    result = Significance(alpha=alpha, null_clouds=resamples, method="bootstrap")
    level = alpha / max(1, len(dims))
    for k in dims:
        seen = np.asarray(distances[k], dtype=np.float64)
        result.bootstrap[k] = seen
        result.null_max[k] = seen
        result.threshold[k] = float(np.quantile(seen, 1.0 - level)) if len(seen) else float("inf")
    result.seconds = time.perf_counter() - start
    return result


def _universal_bound(level: float, n: int) -> float:
    """x with P(max of n left-Gumbel variables > x) = level: (1 - exp(-e^x))^n = 1 - level."""
    return math.log(-math.log(1.0 - (1.0 - level) ** (1.0 / n)))


@dataclass
class Assessment:
    """A cloud's landmarks, their diagrams, and the significance of every feature."""

    landmarks: np.ndarray  # indices into the cloud
    diagrams: Diagrams
    significance: Significance | None

    def significant(self, k: int) -> np.ndarray:
        """The finite dimension-k features (birth, death) found significant."""
        finite = self.diagrams.finite(k)
        if self.significance is None or len(finite) == 0:
            return np.zeros((0, 2))
        return finite[self.significance.significant(k, self.significance.statistic(k, finite))]


def assess(
    reduced: np.ndarray,
    dims: Sequence[int],
    select: Callable[[np.ndarray, int], np.ndarray],
    *,
    null_clouds: int = 19,
    alpha: float = 0.05,
    seed: int = 0,
    n_threads: int = 2,
    method: str = "monte-carlo",
) -> Assessment:
    """Landmarks of ``reduced`` by ``select``, their Rips diagrams, and the significance test ``method``
    (monte-carlo, universal or bootstrap; ``null_clouds`` noise clouds or resamples, none when 0 except for
    the universal law's loops and voids)."""
    if method not in SIGNIFICANCE:
        raise ValueError(f"unknown significance test {method!r}; known: {', '.join(SIGNIFICANCE)}")
    chosen = select(reduced, seed)
    dgms = rips(reduced[chosen], dims, n_threads=n_threads)
    sig = None
    if method == "universal":
        h0 = None
        if 0 in dims and null_clouds > 0:
            h0 = null_test(reduced, [0], select, null_clouds=null_clouds, alpha=alpha / len(dims), seed=seed,
                           n_threads=n_threads)
        sig = universal_test(dgms, dims, alpha=alpha, h0=h0)
    elif method == "bootstrap" and null_clouds > 0:
        sig = bootstrap_test(reduced, dgms, dims, select, resamples=null_clouds, alpha=alpha, seed=seed,
                             n_threads=n_threads)
    elif null_clouds > 0:
        sig = null_test(reduced, dims, select, null_clouds=null_clouds, alpha=alpha, seed=seed, n_threads=n_threads)
    return Assessment(chosen, dgms, sig)

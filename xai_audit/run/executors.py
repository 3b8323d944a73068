"""Where the costly work of an audit runs: in this process, or on Ray workers.

Two executors with one interface, chosen by the plan's ``runtime.executor``:

* :class:`LocalExecutor` (the default) runs everything in this process, exactly
  as the runner always did.
* :class:`RayExecutor` starts ``runtime.ray.workers`` Ray actors. Each loads the
  plan's model once (from the plan's model step, seeded like the runner) and then
  serves two kinds of work:

  - **model predictions**: the baseline predictions (one chunk of images per
    task, a few chunks in flight, results gathered in order) and every
    hypothesis' ``predict`` calls (the images split across the workers on
    batch boundaries, so every worker computes exactly the batches a local run
    would);
  - **explainers** that do not set ``wants_all_samples``: the explained samples
    are cut into one contiguous shard per worker, each worker runs the explainer
    plugin on its shard (seeded like the runner before the call), and the driver
    merges the shards with :func:`merge_explanations`.

What stays on the driver: loading and reading the data, region sources, the
choice of samples to explain, explainers that want every sample (topology),
trust metrics, the hypothesis plugins themselves (only their model predictions
go to the workers), statistics and the report.

Every explainer shipped with xai-audit seeds its randomness per sample (from the
seed and the sample id), so a shard's maps equal those of a local run up to float
rounding (a different internal batch can change the last bits).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from xai_audit.contract.types import Explanation, ModelAdapter, Sample
from xai_audit.errors import ModelError, PlanError, XaiAuditError
from xai_audit.load.loading import seed_everything
from xai_audit.plan.schema import RAY_MISSING
from xai_audit.limits import with_halving_batch

if TYPE_CHECKING:  # pragma: no cover
    from xai_audit.plan import Plan, Step

log = logging.getLogger("xai_audit")

def make_executor(plan: "Plan", model: ModelAdapter) -> "LocalExecutor | RayExecutor":
    """The executor the plan asks for. Use it as a context manager: it closes what it started."""
    if plan.runtime.executor == "ray":
        return RayExecutor(plan, model)
    return LocalExecutor(plan, model)


def predict_batched(model: ModelAdapter, images: np.ndarray, batch_size: int, what: str) -> np.ndarray:
    """``model.predict_proba`` in batches of ``batch_size``, halving the batch when memory runs out."""
    return with_halving_batch(lambda size: model.predict_proba(images, batch_size=size), batch_size, what)


def run_explainer(step: "Step", model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray,
                  seed: int) -> Explanation:
    """One explainer call, seeded like the runner seeds every step."""
    seed_everything(seed)
    return step.instantiate().explain(model, samples, np.asarray(targets), seed)


class LocalExecutor:
    """Everything in this process (``runtime.executor: local``, the default)."""

    name = "local"
    workers = 1

    def __init__(self, plan: "Plan", model: ModelAdapter):
        self.model = model
        self.batch_size = plan.runtime.batch_size

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def predict(self, images: np.ndarray, what: str = "predictions") -> np.ndarray:
        """Probabilities (N, C) for images (N, 3, H, W)."""
        return predict_batched(self.model, images, self.batch_size, what)

    def predict_chunks(self, chunks: Iterable[np.ndarray], what: str = "predictions") -> Iterator[np.ndarray]:
        """Probabilities chunk by chunk, in order; the chunks are read as they are needed."""
        for images in chunks:
            yield self.predict(images, what)

    def explain(self, step: "Step", samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        return run_explainer(step, self.model, samples, targets, seed)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- Ray


class _Worker:
    """A Ray actor: the plan's model, loaded once, serving predictions and explainers."""

    def __init__(self, model_step: "Step", base_dir: Any, seed: int, device: str):
        self.model_step, self.base_dir, self.seed, self.device = model_step, base_dir, seed, device
        self.model: ModelAdapter | None = None

    def load(self) -> str:
        """Load the model as the runner does (seeded first); its fingerprint, for the driver to compare."""
        from xai_audit.contract.types import LoadContext

        seed_everything(self.seed)  # a model built without a weights file is then the same as the driver's
        context = LoadContext(base_dir=self.base_dir, seed=self.seed, device=self.device)
        try:
            self.model = self.model_step.instantiate().load(context)
        except XaiAuditError:
            raise
        except Exception as exc:
            raise ModelError(f"a Ray worker cannot load the model with plugin '{self.model_step.name}': "
                             f"{type(exc).__name__}: {exc}") from exc
        return self.model.fingerprint()

    def predict(self, images: np.ndarray, batch_size: int, what: str) -> np.ndarray:
        seed_everything(self.seed)
        return predict_batched(self.model, _writable(images), batch_size, what)

    def explain(self, step: "Step", samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        samples = [s if s.image.flags.writeable else dataclasses.replace(s, image=_writable(s.image)) for s in samples]
        return run_explainer(step, self.model, samples, _writable(targets), seed)


def _writable(array: np.ndarray) -> np.ndarray:
    """Arrays from Ray's object store are read-only views; torch warns on them and a plugin may write."""
    return array if array.flags.writeable else np.array(array)


#: seconds the workers may take to be placed and load the model before the audit gives up
_START_TIMEOUT_S = 600


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PlanError([RAY_MISSING]) from None
    return ray


class _RayKeeper:
    """A local Ray instance started on a thread of its own, which lives until :meth:`release`.

    Ray ties the life of the processes it starts (its raylet, its GCS) to the thread that started them
    (``prctl(PR_SET_PDEATHSIG)``: they are killed when that thread ends), and a step runs on a thread that
    ends with the step (:func:`xai_audit.limits.run_with_limit`). Started there, by the first step that
    needs it (a re-run whose earlier steps came from the cache), Ray died with that step, and the next step
    took the whole run down ("the connection to the plasma store is failed")."""

    def __init__(self, ray: Any, **options: Any):
        self._done = threading.Event()
        started = threading.Event()
        box: dict[str, Exception] = {}

        def keep() -> None:
            try:
                ray.init(**options)
            except Exception as exc:  # handed to the thread that asked, which raises it
                box["error"] = exc
            started.set()
            self._done.wait()

        threading.Thread(target=keep, name="xai-audit ray", daemon=True).start()
        started.wait()
        if "error" in box:
            self._done.set()
            raise box["error"]

    def release(self) -> None:
        """Let the thread end (after ``ray.shutdown()``: the processes it started are gone by then)."""
        self._done.set()


class RayExecutor:
    """Predictions and explainers on Ray actors (``runtime.executor: ray``).

    Ray and the actors start on first use, so an audit served from the cache starts
    nothing. Without ``runtime.ray.address`` a local Ray instance is started with
    ``num_cpus=workers`` and shut down by :meth:`close`; with one, the audit joins
    that cluster (``ray.init(address=...)``) and leaves it running. Every worker
    needs the plan's model files at the same paths (a shared file system on a cluster).
    """

    name = "ray"

    def __init__(self, plan: "Plan", model: ModelAdapter):
        self.plan = plan
        self.model = model
        self.spec = plan.runtime.ray
        self.workers = int(self.spec.workers)
        self.batch_size = plan.runtime.batch_size
        self._ray: Any = None
        self._actors: list[Any] = []
        self._started_ray = False
        self._keeper: _RayKeeper | None = None
        self._next = 0

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- start and stop

    def _start(self) -> list[Any]:
        if self._actors:
            return self._actors
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith("XAI_AUDIT_")}
            runtime_env = {"env_vars": env} if env else None
            if self.spec.address:
                ray.init(address=self.spec.address, runtime_env=runtime_env, log_to_driver=True)
            else:
                self._keeper = _RayKeeper(ray, num_cpus=self.workers, num_gpus=_local_gpus(self.spec),
                                          include_dashboard=False, logging_level=logging.WARNING,
                                          runtime_env=runtime_env, log_to_driver=True)
                self._started_ray = True
        actor = ray.remote(_Worker)
        self._actors = [
            actor.options(num_cpus=1, num_gpus=self.spec.num_gpus_per_worker).remote(
                self.plan.model, self.plan.base_dir, self.plan.seed, self.plan.runtime.device)
            for _ in range(self.workers)
        ]
        try:
            fingerprints = self._get([a.load.remote() for a in self._actors], timeout=_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ModelError(
                f"Ray could not start {self.workers} worker(s) with 1 CPU and {self.spec.num_gpus_per_worker:g} GPU(s) "
                f"each within {_START_TIMEOUT_S} s (does the cluster have them? runtime.ray.workers and "
                "num_gpus_per_worker set what each worker asks for)") from None
        expected = self.model.fingerprint()
        if any(f != expected for f in fingerprints):
            self.close()
            raise ModelError("a Ray worker loaded a different model than this process "
                             "(are the model files the same on every machine?)")
        log.info("ray: %d workers ready", self.workers)
        return self._actors

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:  # pragma: no cover - already gone
                pass
        self._actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        if self._keeper is not None:
            self._keeper.release()
            self._keeper = None
        self._started_ray = False
        self._ray = None

    def _get(self, refs: Any, timeout: float | None = None) -> Any:
        """``ray.get``, raising a worker's own exception (not Ray's wrapper) so failures read as locally."""
        try:
            return self._ray.get(refs, timeout=timeout)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    # ----------------------------------------------------------------- work

    def predict(self, images: np.ndarray, what: str = "predictions") -> np.ndarray:
        """Probabilities (N, C): the images split across the workers on batch boundaries."""
        actors = self._start()
        bounds = _split_on_batches(len(images), self.batch_size, len(actors))
        if len(bounds) <= 1:
            return self._get(self._pick().predict.remote(images, self.batch_size, what))
        refs = [actor.predict.remote(images[a:b], self.batch_size, what) for actor, (a, b) in zip(actors, bounds)]
        return np.concatenate(self._get(refs))

    def predict_chunks(self, chunks: Iterable[np.ndarray], what: str = "predictions") -> Iterator[np.ndarray]:
        """Probabilities chunk by chunk, in order: one task per chunk, at most two per worker in flight
        (the driver reads the next chunks while the workers compute)."""
        actors = self._start()
        in_flight: deque[Any] = deque()
        for images in chunks:
            if len(in_flight) >= 2 * len(actors):
                yield self._get(in_flight.popleft())
            in_flight.append(self._pick().predict.remote(images, self.batch_size, what))
        while in_flight:
            yield self._get(in_flight.popleft())

    def explain(self, step: "Step", samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        """The explainer on one contiguous shard of the samples per worker, merged in the original order."""
        actors = self._start()
        targets = np.asarray(targets)
        shards = [s for s in np.array_split(np.arange(len(samples)), min(len(actors), max(1, len(samples)))) if len(s)]
        if not shards:
            return self._get(self._pick().explain.remote(step, list(samples), targets, seed))
        refs = [
            actor.explain.remote(step, [samples[i] for i in rows], targets[rows], seed)
            for actor, rows in zip(actors, shards)
        ]
        parts = self._get(refs)
        for part, rows in zip(parts, shards):
            if part.maps.shape[0] != len(rows):  # the runner's own check would blame the merge
                raise ValueError(f"explainer returned {part.maps.shape[0]} maps for {len(rows)} samples")
        return merge_explanations(parts)

    def _pick(self) -> Any:
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return actor


def _local_gpus(spec: Any) -> int | None:
    """GPUs to give a local Ray instance: None (Ray detects them) unless the workers ask for none."""
    return 0 if not spec.num_gpus_per_worker else None


def _split_on_batches(n: int, batch_size: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop)]``: at most ``parts`` contiguous ranges of ``n`` rows, each a whole number of
    batches (the last may be short), so each part computes exactly the batches of an unsplit call."""
    if n == 0:
        return []
    batches = -(-n // max(1, batch_size))
    per_part = -(-batches // max(1, parts))
    step = per_part * batch_size
    return [(a, min(a + step, n)) for a in range(0, n, step)]


# --------------------------------------------------------------------------- merging shards


def merge_explanations(parts: Sequence[Explanation]) -> Explanation:
    """One explanation from the explanations of consecutive shards of the samples.

    * ``maps``, ``sample_ids`` and ``targets``: concatenated in shard order (the original order).
    * ``arrays``: an array with one row per sample in every shard is concatenated; any other
      array, and every array a figure of the first shard refers to, is the first shard's (so a
      figure shows the first shard's samples, as its titles say).
    * ``scalars``: ``*_mean`` is the mean weighted by the shards' sizes, ``*_max`` the largest,
      ``*_min`` the smallest, ``*_sum`` / ``n_*`` the sum; any other scalar is the first shard's.
      Settings such as a window are the same in every shard.
    * ``tables``: a table with one row per sample in every shard is concatenated; any other is
      the first shard's.
    * ``notes`` and ``suggested_hypotheses``: every distinct one, in shard order.
    * ``method``, ``signed``, ``maps_caption`` and ``figures``: the first shard's.
    * ``run`` (how the shards were batched and timed): the first shard's, with ``shards`` their number.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    sizes = [len(p.sample_ids) for p in parts]
    total = sum(sizes)

    def per_sample(values: Sequence[Any]) -> bool:
        return all(hasattr(v, "__len__") and len(v) == n for v, n in zip(values, sizes))

    figure_arrays = _figure_array_names(first.figures)
    arrays: dict[str, np.ndarray] = {}
    for key, value in first.arrays.items():
        values = [p.arrays.get(key) for p in parts]
        if key not in figure_arrays and all(v is not None for v in values) and per_sample(values):
            arrays[key] = np.concatenate([np.asarray(v) for v in values])
        else:
            arrays[key] = value

    scalars: dict[str, float] = {}
    for key, value in first.scalars.items():
        values = [p.scalars.get(key) for p in parts]
        if any(v is None for v in values):
            scalars[key] = value
        elif key.endswith("_mean"):
            scalars[key] = float(sum(float(v) * n for v, n in zip(values, sizes)) / total) if total else float(value)
        elif key.endswith("_max"):
            scalars[key] = float(max(values))
        elif key.endswith("_min"):
            scalars[key] = float(min(values))
        elif key.endswith("_sum") or key.startswith("n_"):
            scalars[key] = float(sum(values))
        else:
            scalars[key] = value

    tables: dict[str, list[dict[str, Any]]] = {}
    for key, rows in first.tables.items():
        values = [p.tables.get(key) for p in parts]
        if all(v is not None for v in values) and per_sample(values):
            tables[key] = [row for v in values for row in v]
        else:
            tables[key] = rows

    notes: list[str] = []
    suggestions: list[dict[str, Any]] = []
    for p in parts:
        notes += [n for n in p.notes if n not in notes]
        suggestions += [s for s in p.suggested_hypotheses if s not in suggestions]

    return Explanation(
        method=first.method,
        sample_ids=[sid for p in parts for sid in p.sample_ids],
        targets=np.concatenate([np.asarray(p.targets) for p in parts]),
        maps=np.concatenate([np.asarray(p.maps) for p in parts]),
        signed=first.signed,
        scalars=scalars,
        arrays=arrays,
        tables=tables,
        notes=notes,
        figures=first.figures,
        maps_caption=first.maps_caption,
        suggested_hypotheses=suggestions,
        run={**first.run, "shards": len(parts)},
    )


def _figure_array_names(figures: Any) -> set[str]:
    """Names of the arrays figures refer to (``{"array": name}`` anywhere in a figure spec)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("array"), str):
                names.add(value["array"])
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(figures)
    return names

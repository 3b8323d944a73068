"""Stage 2, loading: the model, the data set, the audited samples and their region masks.

Reads only the plan (stage 1). Hands the next stage an :class:`AuditInputs`:
the model adapter, the data set, the samples (streamed, see ``samples``),
what was skipped, and the content key every later step's cache entry starts from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from xai_audit.contract.types import Dataset, LoadContext, ModelAdapter, RegionSource, Sample
from xai_audit.errors import DataError, ModelError, XaiAuditError
from xai_audit.files import shown
from xai_audit.limits import StepTimeout, run_with_limit
from xai_audit.load.preflight import preflight
from xai_audit.load.samples import DEFAULT_CACHE_BYTES, LazySample, SampleCache, read_metadata
from xai_audit.plan import Plan, Step
from xai_audit.registry import Registry

#: the longest one black image may take through the model when it is checked (validate and run)
FIRST_PASS_LIMIT_S = 120.0


@dataclass
class AuditInputs:
    """What the loading stage produced; the later stages read only this and the plan."""

    model: ModelAdapter
    dataset: Dataset
    samples: list[LazySample]
    #: ``{"index", "error"}`` for each sample left out with ``on_bad_sample: skip``
    skipped: list[dict[str, Any]]
    region_source: RegionSource | None
    #: the sha256 of the audited ids, one per line
    ids_sha: str
    #: model and data fingerprints, the ids and the seed: the start of every step's cache key
    base_key: dict[str, Any]
    #: the other data sets the plan's steps name (a dataset-shift's data, a reference set), loaded here
    other_datasets: list["OtherDataset"] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]


@dataclass
class OtherDataset:
    """A data set a step of the plan names besides the audited one, loaded once before any step runs: its
    content is evidence like the audited data's (hashed in the provenance, checked by ``xai-audit verify``)
    and part of the cache key of every step (a changed file is never answered from the cache)."""

    #: the step's name in the plan, and where in its options the data set entry is (``dataset``, ``reference``)
    step: str
    option: str
    #: the entry as the plan gives it: ``{loader: ..., path: ..., ...}``
    options: dict[str, Any]
    dataset: Dataset | None = None
    fingerprint: str | None = None
    #: why it could not be loaded (the step that reads it then fails, and is recorded, as it would alone)
    error: str | None = None


def dataset_entries(plan: Plan, loaders: list[str]) -> list[tuple[Step, str, dict[str, Any]]]:
    """Every data set a step's options name besides the audited one: (step, where, entry) for each value, at
    any depth, that is a plan-style data set entry, a mapping whose ``loader`` is a registered data set plugin."""
    found = []
    for step in [*plan.explainers, *plan.discoverers, *plan.hypotheses]:
        for where, value in _mappings(step.options_dict(), ""):
            if isinstance(value.get("loader"), str) and value["loader"] in loaders:
                found.append((step, where, value))
    return found


def _mappings(value: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        if where and isinstance(value.get("loader"), str):
            yield where, value
            return  # an entry's own options are not searched for more
        for key, item in value.items():
            yield from _mappings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _mappings(item, f"{where}[{i}]")


def load_other_datasets(registry: Registry, plan: Plan) -> list[OtherDataset]:
    """Load every other data set the plan's steps name, with its content fingerprint."""
    out = []
    for step, where, entry in dataset_entries(plan, registry.names("dataset")):
        other = OtherDataset(step.name, where, entry)
        try:
            other.dataset = load_other_dataset(registry, plan, entry)
            other.fingerprint = other.dataset.fingerprint()
        except XaiAuditError as exc:
            other.error = str(exc)
        out.append(other)
    return out


def other_dataset_loader(registry: Registry, plan: Plan,
                         loaded: list[OtherDataset]) -> Callable[[dict[str, Any]], Dataset]:
    """The ``load_dataset`` a step is given: the data set loaded before the run (the one the provenance hashed)
    when the step asks for an entry of the plan, else a fresh load."""
    def key(entry: dict[str, Any]) -> str:
        return json.dumps(entry, sort_keys=True, default=str)

    ready = {key(o.options): o.dataset for o in loaded if o.dataset is not None}

    def load(options: dict[str, Any]) -> Dataset:
        found = ready.get(key(dict(options)))
        return found if found is not None else load_other_dataset(registry, plan, options)

    return load


def load_inputs(plan: Plan, registry: Registry | None = None) -> AuditInputs:
    """Load the model, the data, the other data sets the steps name (with ``registry``) and the region source,
    and select and read the audited samples."""
    seed = plan.seed
    model, dataset = load_model_and_data(plan)
    skipped: list[dict[str, Any]] = []
    samples = select_samples(dataset, plan.sample, seed, plan.on_bad_sample, skipped,
                             cache_bytes=plan.runtime.image_cache_mb * 2**20)
    samples = align_labels(samples, dataset, model, plan)
    ids_sha = hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()
    region_source = None
    if plan.regions is not None:  # loaded here; its masks are a model pass, made by the running stage
        region_source = load_step(plan.regions, LoadContext(plan.base_dir, seed, plan.runtime.device), DataError,
                                  "region source")
    base_key = {"model": model.fingerprint(), "data": dataset.fingerprint(), "ids": ids_sha, "seed": seed}
    others = load_other_datasets(registry, plan) if registry is not None else []
    if others:  # only then: a plan without other data keeps its cache keys
        base_key["other_data"] = [[o.step, o.option, o.fingerprint or f"not loaded: {o.error}"] for o in others]
    inputs = AuditInputs(model, dataset, samples, skipped, region_source, ids_sha, base_key, others)
    preflight(plan, inputs)  # what a hypothesis would refuse in this data stops the audit now (validate: the same)
    return inputs


def load_model_and_data(plan: Plan) -> tuple[ModelAdapter, Dataset]:
    """Load the model and the data set, and check that the data's images go through the model."""
    context = LoadContext(base_dir=plan.base_dir, seed=plan.seed, device=plan.runtime.device)
    seed_everything(plan.seed)  # a model built without a weights file is then the same every time
    model = load_step(plan.model, context, ModelError, "model")
    dataset = load_step(plan.dataset, context, DataError, "data set")
    if dataset_length(dataset, plan.dataset.name) == 0:
        raise DataError("the data set has no samples")
    first = _first_readable(dataset, plan.on_bad_sample)
    height, width = first.image.shape[-2:]
    limit = min(plan.runtime.step_timeout, FIRST_PASS_LIMIT_S)
    try:  # a model whose forward never returns must not hang validate or run
        run_with_limit(lambda: model.check(height, width), limit, "the model's first forward pass")
    except StepTimeout:
        raise ModelError(f"one {height}x{width} image did not go through the model within {limit:g} s "
                         "(its forward pass never returned)") from None
    unknown = [c for c in dataset.classes or [] if c not in list(model.classes)]
    if unknown:
        raise DataError(
            f"data set class {unknown[0]!r} is not among the model's classes {list(model.classes)} "
            f"(dataset loader '{plan.dataset.name}')"
        )
    return model, dataset


def load_other_dataset(registry: Registry, plan: Plan, options: dict[str, Any]) -> Dataset:
    """A second data set from plan-style options ``{"loader": name, ...}`` (for dataset-shift)."""
    options = dict(options)
    name = options.pop("loader", None)
    if name not in registry.names("dataset"):
        raise DataError(f"unknown dataset loader {name!r}; known: {', '.join(registry.names('dataset'))}")
    info = registry.get("dataset", name)
    try:
        validated = info.cls.Options(**options)
    except Exception as exc:
        raise DataError(f"bad options for dataset loader {name!r}: {exc}") from exc
    context = LoadContext(base_dir=plan.base_dir, seed=plan.seed, device=plan.runtime.device)
    return load_step(Step("dataset", name, info, validated), context, DataError, "second data set")


def dataset_length(dataset: Dataset, name: str) -> int:
    """``len(dataset)``; a length Python cannot hold (a data set option out of range) is a DataError."""
    try:
        return len(dataset)
    except (OverflowError, TypeError, ValueError) as exc:
        raise DataError(f"the data set (loader '{name}') has no usable length: {type(exc).__name__}: {exc}") from None


def _first_readable(dataset: Dataset, on_bad_sample: str) -> Sample:
    """The sample whose size the model is checked with: the first one that reads.

    With ``fail`` that is sample 0 (its error stops the audit, as a later bad one would). With
    ``skip`` it is the first of all that reads, however many bad ones come before it (those are
    then listed as skipped by :func:`select_samples`, like any other).
    """
    if on_bad_sample != "skip":
        try:
            return dataset[0]
        except DataError as exc:
            raise DataError(f"{exc} (sample 0; set dataset.on_bad_sample: skip to audit without it)") from None
    first: DataError | None = None
    for i in range(len(dataset)):
        try:
            return dataset[i]
        except DataError as exc:
            first = first or exc
    raise DataError(f"every one of the {len(dataset)} samples was unreadable; the first: {shown(str(first))}")


def load_step(step: Step, context: LoadContext, error: type[XaiAuditError], what: str) -> Any:
    """``step``'s plugin loaded; any failure becomes ``error`` naming the plugin."""
    try:
        return step.instantiate().load(context)
    except XaiAuditError:
        raise
    except Exception as exc:
        raise error(f"cannot load the {what} with plugin '{step.name}': {type(exc).__name__}: {exc}") from exc


def select_samples(
    dataset: Dataset, sample: int | None, seed: int, on_bad_sample: str = "fail", skipped: list | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> list[LazySample]:
    """The audited samples; an unreadable one stops the audit, or with ``skip`` is listed in ``skipped``.

    Each is read once here; afterwards its image is read again when a step asks for it,
    through a cache of ``cache_bytes`` (xai_audit.load.samples), so memory does not grow with N.
    """
    n = len(dataset)
    if n == 0:
        raise DataError("the data set has no samples")
    if sample is not None and sample < n:
        indices = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    else:
        indices = np.arange(n)

    def bad(index: int, exc: Exception) -> None:
        if not isinstance(exc, DataError):
            raise exc
        if on_bad_sample != "skip":
            raise DataError(f"{exc} (sample {index}; set dataset.on_bad_sample: skip to audit without it)") from None
        if skipped is not None:
            skipped.append({"index": index, "error": shown(str(exc))})

    samples = read_metadata(dataset, indices, SampleCache(dataset, cache_bytes), bad)
    if not samples:
        raise DataError(f"every one of the {len(indices)} samples was unreadable; the first: {skipped[0]['error'] if skipped else ''}")
    return samples


def align_labels(samples: list[LazySample], dataset: Dataset, model: ModelAdapter, plan: Plan) -> list[LazySample]:
    """Re-index labels from the data set's class order to the model's."""
    if dataset.classes is None or list(dataset.classes) == list(model.classes):
        return samples
    index = {name: k for k, name in enumerate(model.classes)}  # every data set class is one (load_model_and_data)
    mapping = {k: index[name] for k, name in enumerate(dataset.classes)}
    return [s if s.label is None else s.with_label(mapping[s.label]) for s in samples]


def seed_everything(seed: int) -> None:
    """Seed numpy's and torch's global generators (a step that draws from them is then repeatable)."""
    import torch

    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)

"""The objects that travel between stages, and the base classes plugins extend.

Everything here is plain data or an abstract interface: no stage reaches back
into an earlier one, and no explainer library is imported.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from xai_audit.contract.images import chunks
from xai_audit.contract.recommendations import augment_row

#: Region names the built-in data sets and hypotheses use.
FACE_REGIONS = ("eyes", "brows", "nose", "mouth", "hair", "skin", "background")

#: Options the host reads from a plan entry itself, by plugin kind (the plugin never sees them): the plugin's
#: name, the rows to audit, what to do with an unreadable image, a step's time limit and its own name (``as``,
#: for a plugin listed several times). A plugin's ``Options``
#: may not declare these names; the plugin manager refuses one that does.
HOST_OPTIONS: dict[str, tuple[str, ...]] = {
    "model-adapter": ("adapter", "name"),
    "dataset": ("loader", "sample", "on_bad_sample"),
    "region-source": ("source",),
    "explainer": ("timeout", "as"),
    "hypothesis": ("timeout", "as"),
    "discoverer": ("timeout", "as"),
}


@dataclass(frozen=True)
class Sample:
    """One image in display space.

    ``image`` is float32 RGB in [0, 1], shape (3, H, W). ``label`` is a class
    index into the data set's ``classes`` (or None when unlabelled). ``groups``
    maps a group attribute to its value (``{"skin_tone": "IV"}``). ``regions``
    maps a region name to a boolean (H, W) mask.
    """

    id: str
    image: np.ndarray
    label: int | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    regions: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True)
class SampleInfo:
    """What the host keeps of a sample for the whole audit, without its image: the id, label and groups of
    :class:`Sample`, and whether the data set gives the sample region masks (``Sample.regions`` not empty)."""

    id: str
    label: int | None = None
    groups: Mapping[str, str] = field(default_factory=dict)
    has_regions: bool = False


class Dataset(abc.ABC):
    """A sized, indexable collection of :class:`Sample` read lazily."""

    #: class names in label order, or None when the data set has no labels
    classes: list[str] | None = None
    #: group attribute names every sample carries in ``groups``
    group_names: list[str] = []
    #: region names available in ``Sample.regions`` (empty when none)
    region_names: list[str] = []
    #: class name -> the regions whose shape defines that class (for localisation
    #: metrics), e.g. ``{"happy": ["mouth", "brows", "eyes"]}``; empty when unknown
    class_regions: dict[str, list[str]] = {}

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample: ...

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A content hash: equal fingerprints mean equal samples."""

    def sample_info(self, index: int) -> SampleInfo | None:
        """Sample ``index``'s id, label, groups and whether it has region masks, without reading its image;
        None (the default) when the host must read the sample to know them.

        The host reads every sample once at the start of an audit, for these facts alone; that read is also
        where a sample that cannot be read is found. Override only where the facts are cheap to tell apart
        from the image and the image cannot fail to be made (generated data): they must equal what
        ``self[index]`` returns."""
        return None

    def files(self) -> list[Path]:
        """Files the data came from, for provenance (empty for generated data)."""
        return []

    def describe(self) -> dict[str, Any]:
        """Plain facts about the data set for the report (size, source, ...)."""
        return {"n_samples": len(self)}


class NonFiniteScores(ValueError):
    """The model returned NaN or an infinite score; ``index`` is the first such image in the batch given."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


class ModelAdapter(abc.ABC):
    """Maps display-space images to a model's input and returns logits."""

    classes: list[str]
    #: the torch module when gradients exist; None for a black box
    module: Any = None
    #: named layers for activations / Grad-CAM
    default_layer: str | None = None
    #: why ``default_layer`` was chosen, in a sentence the report can quote ("" when unsaid)
    default_layer_reason: str = ""
    #: False when the model's layers cannot be hooked (a compiled TorchScript or torch.export graph, a
    #: black box): explainers that read a layer are refused, and memory is estimated without hooks
    provides_hooks: bool = True
    device: str = "cpu"

    @abc.abstractmethod
    def forward(self, images: Any) -> Any:
        """Logits for a torch tensor of display-space images (N, 3, H, W).

        Differentiable with respect to ``images`` when ``module`` is set.
        """

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A content hash of the model's weights and its input mapping."""

    def layers(self) -> dict[str, Any]:
        """Named sub-modules whose activations can be read (Grad-CAM, topology, neuron maps use them).

        The default: every named sub-module of ``module`` when it is a torch module, else none.
        """
        named = getattr(self.module, "named_modules", None)
        return {name: m for name, m in named() if name} if callable(named) else {}

    def files(self) -> list[Path]:
        """Files the model came from, for provenance."""
        return []

    def model_input(self, images: Any) -> Any:
        """The tensor the model itself receives for display-space ``images`` (N, 3, H, W), or None when
        the adapter cannot say. The default applies ``self.preprocess`` when the adapter has one (the
        plan's input spec). The host uses it to tell an intervention that cannot reach the model (grayscale
        for a one-channel model) from one the model ignores."""
        preprocess = getattr(self, "preprocess", None)
        return preprocess(images) if callable(preprocess) else None

    @property
    def input_channels(self) -> int | None:
        """How many channels the model receives (1 for a grayscale model), or None when unknown."""
        import torch

        try:
            with torch.no_grad():
                x = self.model_input(torch.zeros(1, 3, 8, 8, device=self.device))
        except Exception:
            return None
        return int(x.shape[1]) if x is not None and getattr(x, "ndim", 0) == 4 else None

    def describe(self) -> dict[str, Any]:
        return {}

    def check(self, height: int, width: int) -> None:
        """Raise ModelError when display images of (height, width) cannot go through the model.

        The default runs one black image through ``forward`` and checks the
        output has one score per class.
        """
        import torch

        from xai_audit.errors import ModelError

        try:
            with torch.no_grad():
                logits = self.forward(torch.zeros(1, 3, height, width, device=self.device))
        except ModelError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"a {height}x{width} image does not go through the model: {first}") from None
        if tuple(logits.shape) != (1, len(self.classes)):
            raise ModelError(
                f"the model returns {tuple(logits.shape)[1:]} scores per image, but {len(self.classes)} classes are named"
            )

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C) for display-space images (N, 3, H, W)."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.as_tensor(images[start : start + batch_size], device=self.device)
                logits = self.forward(batch.float())
                finite = torch.isfinite(logits).all(dim=1)
                if not bool(finite.all()):  # -inf too: softmax would turn it into a harmless-looking 0
                    first = start + int((~finite).nonzero()[0, 0])
                    raise NonFiniteScores(first, f"the model returned NaN or infinite scores (first on image {first} "
                                                 f"of the {len(images)} it was given)")
                out.append(torch.softmax(logits, dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)


@dataclass
class Explanation:
    """What an explainer returns: per-sample maps in display space, and data.

    ``maps`` has shape (N, H, W) aligned with ``sample_ids`` and ``targets``.
    ``signed`` says whether negative values carry meaning. ``scalars``,
    ``arrays`` and ``tables`` hold anything else the method yields, as data.
    """

    method: str
    sample_ids: list[str]
    targets: np.ndarray
    maps: np.ndarray
    signed: bool
    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: figures described as data (see xai_audit.report.specs); arrays by reference
    figures: list[dict[str, Any]] = field(default_factory=list)
    #: what the maps show when they are not attributions (e.g. "the pixel change of ..."); the report's
    #: heatmap grid then says this instead of "the attribution"
    maps_caption: str = ""
    #: hypotheses the explanation suggests testing: ``{"plugin": name, "options": {...}, "why": text}``;
    #: with ``explain: {test_suggestions: true}`` the host tests them in the same audit
    suggested_hypotheses: list[dict[str, Any]] = field(default_factory=list)
    #: how the computation ran, not what it found (batch sizes, memory layout, seconds of a part): written to
    #: results.json's ``run.steps``, which a re-run never compares; nothing else may depend on it
    run: dict[str, Any] = field(default_factory=dict)


@dataclass
class HypothesisResult:
    """The outcome of one hypothesis test, as plain data.

    ``verdict`` is one of ``"supported"``, ``"not supported"``,
    ``"inconclusive"``. ``effect`` is signed so that a positive value is the
    harm the claim names (e.g. an accuracy drop, an accuracy gap).
    """

    claim: str
    metric: str
    before: float | None
    after: float | None
    effect: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    verdict: str
    n: int
    test: str = ""
    breakdown: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: figures described as data (see xai_audit.report.specs), and the arrays they refer to
    figures: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: what the claim is about: "fragility" (an intervention costs accuracy or changes
    #: predictions), "bias" (groups differ), "shift" (another data set), "" when unsaid
    kind: str = ""
    #: further tests, each a dict like the result itself (name, kind, claim, metric, before,
    #: after, effect, ci, p_value, verdict, n, test, details); every one of them is counted
    #: in the audit's Holm correction, and its verdict follows the adjusted p-value
    tests: list[dict[str, Any]] = field(default_factory=list)
    #: what a reader must know to judge the result (e.g. a group too small to judge)
    warnings: list[str] = field(default_factory=list)
    #: the prediction after the intervention, image by image: ``{"ids": [...], "predictions_after": [...]}``;
    #: lets a comparison of several models pair their effects on the same images
    per_sample: dict[str, list[Any]] = field(default_factory=dict)
    #: names of ``breakdown`` tables the report shows in the step's body section (their first rows; every
    #: table is in the appendix in full), beside the figures marked ``key``
    key_tables: list[str] = field(default_factory=list)


def labels_of(samples: Sequence[Sample]) -> np.ndarray | None:
    """The samples' labels as int64, or None when any sample is unlabelled."""
    labels = [s.label for s in samples]
    if any(label is None for label in labels):
        return None
    return np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class LoadContext:
    """What a model adapter or data set plugin needs to resolve its options."""

    base_dir: Path
    seed: int = 0
    device: str = "cpu"


class StepParts(abc.ABC):
    """A hypothesis step's parts, cached one by one, for a step made of parts that do not depend on each other
    (the corruption battery: one part per corruption and severity), so that a plan that adds one part computes
    only that one again.

    The host keys a part by the model, the data, the seed, the plugin's package, version and code, and
    ``part``: plain data (JSON-serialisable) naming everything else the part's arrays depend on (e.g. the
    corruption, the severity and the images' ids), but not the step's options, so a part is shared by every
    step and plan that asks for it."""

    @abc.abstractmethod
    def get(self, part: Any) -> dict[str, np.ndarray] | None:
        """The arrays stored for ``part``, or None when there are none (or the entry is damaged)."""

    @abc.abstractmethod
    def put(self, part: Any, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` for ``part`` (a cache that cannot be written costs a later run a recomputation)."""


@dataclass
class HypothesisContext:
    """What a hypothesis sees: the model, the audited samples and the baseline.

    ``probs`` are the model's clean-image probabilities (N, C) aligned with
    ``samples``. ``predict`` maps display-space images (N, 3, H, W) to
    probabilities with the audit's batching.
    """

    model: ModelAdapter
    samples: Sequence[Sample]
    probs: np.ndarray
    classes: list[str]
    seed: int
    predict: Callable[[np.ndarray], np.ndarray]
    #: builds another data set from plan-style options ``{"loader": name, ...}`` (for
    #: dataset-shift), resolving paths like the plan's; None where the host offers none
    load_dataset: Callable[[dict[str, Any]], Dataset] | None = None
    #: the step's cache of its own parts (see :class:`StepParts`); None where the host caches nothing
    parts: "StepParts | None" = None

    @property
    def labels(self) -> np.ndarray | None:
        return labels_of(self.samples)

    def images(self) -> np.ndarray:
        """Every audited image in one array (N, 3, H, W). Holds them all: for a large audit
        walk :meth:`batches` instead, which keeps memory flat."""
        return np.stack([s.image for s in self.samples]).astype(np.float32)

    def batches(self, size: int = 256) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows, images)`` chunk by chunk: ``rows`` indexes ``samples`` and ``probs``;
        images are read from the data set as each chunk is reached."""
        yield from chunks(self.samples, size)


def _refuse_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_not_a_number", "must be a number, not {value}", {"value": str(value).lower()})
    return value


def _numbers_refuse_booleans(schema: Any) -> Any:
    """``schema`` (a pydantic-core schema) with every int and float validator refusing ``True`` / ``False``.

    Pydantic's lax mode reads ``true`` as 1 where a number is expected; a plan that says ``steps: true`` is a
    mistake, not a one. Only booleans are refused: ``"3"`` and ``3.0`` stay lax, and a field typed
    ``bool | int`` still takes a boolean through its ``bool`` branch. Nested schemas (``list[int]``,
    ``dict[str, float]``, ``int | None``, sub-models) are covered, as they are walked whole.
    """
    if isinstance(schema, list):
        return [_numbers_refuse_booleans(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "function-before" and (schema.get("function") or {}).get("function") is _refuse_boolean:
        return schema  # already wrapped (a sub-model built from this base)
    if schema.get("type") in ("int", "float"):
        return core_schema.no_info_before_validator_function(_refuse_boolean, schema)
    return {key: _numbers_refuse_booleans(value) for key, value in schema.items()}


class StrictNumbers(BaseModel):
    """A model whose number fields refuse booleans (``steps: true``), wherever they are nested."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return _numbers_refuse_booleans(handler(source))


class Options(StrictNumbers):
    """Base of every plugin's options schema: unknown options are errors, and so is a boolean for a number."""

    model_config = ConfigDict(extra="forbid")


class Plugin:
    """Base of the four plugin kinds. A plugin is a class with a unique ``name``.

    ``Options`` is the pydantic schema of its plan options. The host builds
    the plugin as ``cls(options)`` with a validated ``Options`` instance.
    """

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options

    def __init__(self, options: Options | None = None):
        self.options = options if options is not None else self.Options()


class ModelAdapterPlugin(Plugin):
    kind = "model-adapter"
    #: False for a black box (e.g. ONNX): explainers that need gradients are refused at validation
    provides_gradients: ClassVar[bool] = True
    #: False when the model's layers can never be hooked: explainers that read a layer (``needs_layer_hooks``)
    #: are refused at validation. An adapter whose answer depends on its options overrides :meth:`no_hooks_reason`
    provides_hooks: ClassVar[bool] = True

    @classmethod
    def no_hooks_reason(cls, options: Options) -> str | None:
        """Why the model these (validated) options load cannot have its layers hooked, or None when it can."""
        if cls.provides_hooks and cls.provides_gradients:
            return None
        return f"the {cls.name} adapter runs the model as a black box: it has no layers to read"

    @abc.abstractmethod
    def load(self, context: LoadContext) -> ModelAdapter:
        """Build the model adapter from ``self.options``."""


class DatasetPlugin(Plugin):
    kind = "dataset"

    @abc.abstractmethod
    def load(self, context: LoadContext) -> Dataset:
        """Build the data set from ``self.options``."""


class RegionSource(abc.ABC):
    """Finds named regions (eyes, mouth, ...) in display-space images.

    The host asks :meth:`regions_for` with each image's sample id (a source that reads masks stored per image
    needs it); its default calls :meth:`regions`, so a source that finds regions in the pixels implements only
    that. Before anything runs (``validate``, and ``run`` before its first step) the host asks :meth:`names`
    and :meth:`missing` whether the plan's hypotheses can get the masks they need.
    """

    @abc.abstractmethod
    def regions(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """One ``{region name: bool (H, W) mask}`` per image of (N, 3, H, W)."""

    def regions_for(self, images: np.ndarray, ids: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """The masks of the samples ``ids`` (the data set's sample ids), whose images are ``images`` (N, 3, H, W).
        Override to find masks by id; the default is :meth:`regions`."""
        return self.regions(images)

    def names(self) -> list[str] | None:
        """The region names every image gets, or None when they are known only once the images are seen."""
        return None

    def missing(self, ids: Sequence[str], names: Sequence[str]) -> str | None:
        """Why some of the samples ``ids`` cannot get the regions ``names``, in one line, or None when they all
        can (or the source cannot tell before it runs)."""
        return None

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A content hash of the model (or the files) behind the regions."""

    def files(self) -> list[Path]:
        return []

    def describe(self) -> dict[str, Any]:
        return {}


class RegionSourcePlugin(Plugin):
    kind = "region-source"

    @abc.abstractmethod
    def load(self, context: LoadContext) -> RegionSource:
        """Build the region source from ``self.options``."""


#: what a forward + backward pass of an image counts for, in forward passes, wherever passes are weighed
#: against each other (the trust step's default budget): the backward pass costs about the forward pass
#: at least (for the weights' gradients as well, about twice; counting it once favours the explainer's side less)
BACKWARD_WEIGHT = 2


@dataclass(frozen=True)
class ModelPasses:
    """Images through the model in one call: ``forward`` through a forward pass only, ``backward`` through a
    forward pass that a backward pass followed (not counted in ``forward``)."""

    forward: int = 0
    backward: int = 0

    @property
    def weighed(self) -> int:
        """In forward passes: a forward + backward pass counts ``BACKWARD_WEIGHT``."""
        return int(self.forward + BACKWARD_WEIGHT * self.backward)


class ExplainerPlugin(Plugin):
    kind = "explainer"
    #: True when the method needs gradients (a torch ``module``)
    needs_gradients: ClassVar[bool] = True
    #: True when the method reads a layer with forward hooks (Grad-CAM, activations): refused at validation
    #: for a model whose layers cannot be hooked (TorchScript, torch.export, a black box)
    needs_layer_hooks: ClassVar[bool] = False
    #: True when the method needs every audited sample, not only the few chosen
    #: to explain (e.g. the topology of a layer's activation cloud). ``explain``
    #: then receives all samples with the model's predictions as ``targets``,
    #: and returns maps only for the samples it names in ``sample_ids``.
    wants_all_samples: ClassVar[bool] = False

    @abc.abstractmethod
    def explain(
        self,
        model: ModelAdapter,
        samples: Sequence[Sample],
        targets: np.ndarray,
        seed: int,
    ) -> Explanation:
        """Explain ``model``'s score for class ``targets[i]`` on each sample."""

    def explain_maps(
        self,
        model: ModelAdapter,
        samples: Sequence[Sample],
        targets: np.ndarray,
        seed: int,
    ) -> np.ndarray:
        """Only the maps (N, H, W) of :meth:`explain`, for trust metrics that re-run
        the method (e.g. on a weight-randomised copy of the model). Override when
        the maps are much cheaper than the whole explanation."""
        return self.explain(model, samples, targets, seed).maps

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses | None:
        """The images that :meth:`explain` (``maps_only``: :meth:`explain_maps`) sends through ``model`` for
        ``n`` images of ``image_shape`` (C, H, W), not counting the host's batch-size probe. The host sizes the
        trust step by it (by default it costs at most what the explainer did); None (the default): not known,
        and the trust step keeps its full size."""
        return None


@dataclass(frozen=True)
class AuditedData:
    """What is known of the audited data before any step runs: what :meth:`HypothesisPlugin.check_data` reads."""

    #: how many samples are audited
    n: int
    #: whether the samples carry labels
    labelled: bool
    #: the group columns the samples carry (``Sample.groups`` keys)
    group_columns: tuple[str, ...] = ()
    #: the region names every audited sample will have (its data set's masks or the region source's); empty: none
    region_names: tuple[str, ...] = ()
    #: the data set plugin's name (for messages)
    dataset: str = ""


class HypothesisPlugin(Plugin):
    kind = "hypothesis"

    @abc.abstractmethod
    def test(self, context: HypothesisContext) -> HypothesisResult:
        """Run the test on the audited samples and return its result."""

    def needs_regions(self) -> list[str]:
        """The region masks this step's test reads (``region_masks``); the host refuses the plan before anything
        runs when the audited samples cannot get them. Default: none."""
        return []

    def check_data(self, data: AuditedData) -> str | None:
        """Why the test would refuse this data, in one line naming the option (``"by: no group column ..."``), or
        None. Called by ``validate`` and by ``run`` before its first step, so a plan that cannot run stops at
        once with exit status 2 instead of failing one step late in the run. Default: None."""
        return None

    def augmentation(self, finding: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any] | None:
        """The training augmentation that would undo what a finding of this hypothesis found.

        ``finding`` is one entry of results.json's ``findings`` (``kind``, ``title``, ``test``, ``class``,
        ...); ``result`` is this step's entry in ``hypotheses`` (``options``, ``details``, ``breakdown``,
        ...). Return a JSON-able spec such as ``{"transform": "luminance", "factor": [0.2, 1.0]}``, or None
        (the default) when no augmentation covers it. Used by the default :meth:`recommend`.
        """
        return None

    def recommend(self, finding: Mapping[str, Any] | None, result: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Fine-tuning data that would address this hypothesis's findings, as manifest rows.

        Called once for each finding of this step, most severe first, and then once with
        ``finding=None`` for rows that need no finding (e.g. a group too small to judge).
        Build rows with ``xai_audit.api.recommendation(...)``. The default turns a shortcut,
        fragility or reliance finding into one ``augment`` row from :meth:`augmentation`.
        """
        if finding is None or finding.get("kind") not in ("shortcut", "fragility", "reliance"):
            return []
        spec = self.augmentation(finding, result)
        return [augment_row(finding, spec)] if spec is not None else []

"""Discovery: plugins that look for cues nobody named, and propose them as candidates.

A discoverer sees one half of the audited images (the discovery split, seeded)
with the model's predictions and whatever the explainers already computed, and
returns :class:`Candidate` objects: a set of images that share something, what
they share in words a reviewer reads, and an *intervention* that removes or
neutralises it, described as plain data. The host then confirms each candidate
on the other half (the held-back split) with the same paired tests the
hypotheses use, in the audit's one Holm family; only a confirmed candidate
becomes a finding. Testing on images the discoverer never saw is what keeps a
pattern found by looking from becoming a false alarm.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from xai_audit.contract.recommendations import augment_row
from xai_audit.contract.types import Explanation, HypothesisContext, ModelAdapter, Plugin, Sample, labels_of

#: what a candidate's cue is: a place in the image, a colour, an image property, a metadata value, a cluster
#: of the model's embedding
CUES = ("region", "colour", "property", "metadata", "embedding")
#: how the host confirms a candidate on the held-back images: by its ``intervention`` (remove the cue, paired
#: test), or as a ``slice`` (its ``intervention`` is a rule that picks images; the model's accuracy, or without
#: labels its confidence, inside the slice against outside it)
CONFIRMATIONS = ("intervention", "slice")


@dataclass
class Candidate:
    """One cue a discoverer proposes, as plain data (it is cached and written to results.json).

    ``intervention`` is a JSON-able spec that the discoverer's :meth:`DiscovererPlugin.intervention`
    turns into a transform; ``target_class`` is the class the cue is tied to (its predictions should
    leave that class when the cue is removed), or None when the cue is tied to no class.
    ``intervention_adds_cue`` says the transform puts the cue on the images instead (a cue the audited
    images do not show, such as darkness the model learned from darkened training images): the held-back
    images as they are then stand for "cue removed", and confirmation asks whether applying the transform
    brings ``target_class``'s predictions in.

    With ``confirmation="slice"`` the candidate is a weak slice, not a cue to remove: ``intervention`` is the
    slice's *rule* (plain data, e.g. property ranges, or the nearest of a few embedding centroids kept in
    ``arrays``), which :meth:`DiscovererPlugin.slice_members` applies to the held-back images; the host then
    tests whether the model is worse inside the slice than outside it (accuracy with labels, confidence
    without). ``evidence["slice"]``, when given, is the slice in words (the description may add the numbers
    seen on the discovery split); the confirmation's claim quotes it.
    """

    name: str
    description: str
    cue: str
    members: list[str]
    intervention: dict[str, Any]
    target_class: int | None = None
    #: numbers that support the proposal (e.g. the share of attribution in the place, a property's AUC)
    evidence: dict[str, Any] = field(default_factory=dict)
    #: figures described as data (xai_audit.contract.figures) and the arrays they refer to
    figures: list[dict[str, Any]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: True when ``intervention`` puts the cue on the images rather than removing it
    intervention_adds_cue: bool = False
    #: how the host confirms it (one of :data:`CONFIRMATIONS`)
    confirmation: str = "intervention"

    def __post_init__(self) -> None:
        if self.cue not in CUES:
            raise ValueError(f"candidate {self.name!r}: cue must be one of {', '.join(CUES)}, not {self.cue!r}")
        if not self.description:
            raise ValueError(f"candidate {self.name!r} has no description")
        if self.intervention_adds_cue and self.target_class is None:
            raise ValueError(f"candidate {self.name!r}: an intervention that adds the cue needs a target_class")
        if self.confirmation not in CONFIRMATIONS:
            raise ValueError(f"candidate {self.name!r}: confirmation must be one of {', '.join(CONFIRMATIONS)}, "
                             f"not {self.confirmation!r}")
        if self.confirmation == "slice" and self.intervention_adds_cue:
            raise ValueError(f"candidate {self.name!r}: a slice has a rule, not an intervention that adds a cue")


@dataclass
class DiscoveryContext:
    """What a discoverer sees: the discovery split with the model's clean predictions.

    ``probs`` (N, C) align with ``samples``; ``explanations`` are what the plan's explainers
    returned (their ``sample_ids`` say which images they cover, often only a few); ``predict``
    batches display-space images (N, 3, H, W) through the model.
    """

    model: ModelAdapter
    samples: Sequence[Sample]
    probs: np.ndarray
    classes: list[str]
    seed: int
    predict: Callable[[np.ndarray], np.ndarray]
    explanations: Mapping[str, Explanation] = field(default_factory=dict)
    #: class name -> the regions that define it (when the data set says), e.g. {"happy": ["mouth"]}
    class_regions: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray | None:
        return labels_of(self.samples)

    @property
    def preds(self) -> np.ndarray:
        return np.asarray(self.probs).argmax(axis=1)


class DiscovererPlugin(Plugin):
    """Base of a discoverer: ``discover`` proposes candidates, ``intervention`` builds their transforms."""

    kind = "discoverer"
    #: True when the method needs gradients (a torch ``module``)
    needs_gradients: ClassVar[bool] = False

    @abc.abstractmethod
    def discover(self, context: DiscoveryContext) -> list[Candidate]:
        """Candidates found on ``context.samples`` (the discovery split), most convincing first."""

    @abc.abstractmethod
    def intervention(self, spec: Mapping[str, Any]) -> Callable[[np.ndarray, Sequence[Sample]], np.ndarray]:
        """The transform a candidate's ``intervention`` spec stands for: images (N, 3, H, W) in [0, 1] and
        their samples -> the images with the cue removed, same shape."""

    def augmentation(self, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        """The training augmentation that removes the cue from fine-tuning data; by default the intervention
        itself, applied to a share of the training images of every class."""
        return {"transform": f"discovered:{self.name}", **dict(spec)}

    def slice_members(self, candidate: Candidate, context: HypothesisContext) -> np.ndarray:
        """For a candidate confirmed as a slice (``confirmation="slice"``): which of ``context.samples`` (the
        held-back images) its rule ``candidate.intervention`` picks, as a boolean array (N,). ``context.model``
        is there for a rule that reads the model (an embedding cluster)."""
        raise NotImplementedError(f"discoverer {self.name!r} proposes no slices (it has no slice_members)")

    def recommend(self, finding: Mapping[str, Any], candidate: Candidate) -> list[dict[str, Any]]:
        """Manifest rows (xai_audit.api.recommendation) for a confirmed candidate's ``finding``: by default one
        ``augment`` row with :meth:`augmentation` of its intervention (none when that is None)."""
        spec = self.augmentation(candidate.intervention)
        return [augment_row(finding, spec)] if spec is not None else []

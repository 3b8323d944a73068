"""The audit plan as the host runs it: its sections (pydantic specs), its steps, and the plan itself."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from xai_audit.contract.types import Options, StrictNumbers
from xai_audit.plan.checks import Check
from xai_audit.registry import PluginInfo

FORMATS = ("html", "pdf", "json")

#: the one line an audit says when the plan asks for Ray and Ray is not installed
RAY_MISSING = "executor: ray needs `pip install xai-audit[ray]`"


def ray_installed() -> bool:
    """Whether ``import ray`` can work, without importing it (half a second)."""
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


#: the largest seed (2**63 - 1): numpy takes any seed >= 0 and torch any below 2**64, and a plugin's
#: ``seed + i`` must stay below both
MAX_SEED = 2**63 - 1


class _Strict(StrictNumbers):
    """A plan section: unknown keys are errors, and so is ``true`` / ``false`` where a number goes."""

    model_config = ConfigDict(extra="forbid")


class ReportSpec(_Strict):
    title: str = "xai-audit report"
    #: card: a Hugging Face model card (README.md) beside the report; not written unless listed
    formats: list[Literal["html", "pdf", "json", "card"]] = Field(default_factory=lambda: list(FORMATS))
    paper: Literal["A4", "letter"] = "A4"


class TrustSpec(_Strict):
    """How the host checks every explainer's maps (see xai_audit.judge.trust)."""

    #: compute faithfulness, sanity, localisation and agreement for every explainer
    enabled: bool = True
    #: how large the trust step is where the options below say nothing: ``explainer``, at most the model passes
    #: its explainer spent (a one-pass method such as Grad-CAM gets fewer steps, a one-image sanity check and its
    #: curves on a subset of the explained images; the report says how many), or ``full``: every explained image
    #: at 12 steps and the sanity check below (xai_audit.judge.trust.plan_budget)
    budget: Literal["explainer", "full"] = "explainer"
    #: deletion / insertion curve points k: the curves cost 2k + 1 forward passes per scored image and the random
    #: pixel order they are compared with 2k - 2 more (shared by explainers scored alike), run at the model's best
    #: batch size; None: 12, or 6 or 3 where the budget needs fewer
    steps: int | None = Field(None, ge=3, le=256)
    #: explained images whose curves are scored (spread evenly over them); None: all, or as many as the budget pays for
    images: int | None = Field(None, ge=1, le=100_000)
    #: images the sanity check re-explains on weight-randomised copies of the model, at every stage (0: no sanity
    #: check); None: chosen with the stages so that images x stages is at most a third of the explained images
    #: (at most 4 images; xai_audit.judge.trust.sanity_size), and one image at one stage where the budget needs less
    sanity_samples: int | None = Field(None, ge=0, le=10_000)
    #: cascade stages of the sanity check: the top layer randomised first, every layer last; None: chosen as above
    sanity_stages: int | None = Field(None, ge=1, le=50)
    #: the regions that define every class, for localisation; default: the data set's own
    regions: list[str] | None = None


class ExplainSpec(_Strict):
    #: how many audited samples the explainers explain: borderline / confident x correct / wrong
    samples: int = Field(12, ge=1, le=100_000)
    trust: TrustSpec = Field(default_factory=TrustSpec)
    #: test the hypotheses an explainer suggests (e.g. topology's) in the same audit, Holm-corrected with the rest
    test_suggestions: bool = False
    #: also explain up to this many images wrongly predicted as the class that collects the errors (case error-sink)
    error_sink: int = Field(0, ge=0, le=10_000)


class DiscoverSpec(_Strict):
    #: share of the audited images held back to confirm what the discoverers find on the rest
    held_out: float = Field(0.5, ge=0.2, le=0.8)
    #: confirm each candidate on at most this many held-back images (a seeded subset; None: all of them), so
    #: confirming costs the same whatever the audit's size past it: 2,000 images tell a few points' effect
    confirm_images: int | None = Field(2000, ge=20)


class RaySpec(_Strict):
    """Where and how wide ``executor: ray`` runs (see xai_audit.run.executors)."""

    #: an existing Ray cluster (``ray://host:10001``, ``auto``); None: start a local Ray with ``workers`` CPUs
    address: str | None = None
    #: Ray actors, each holding the model once; predictions and explainers are split across them
    workers: int = Field(2, ge=1, le=4096)
    #: GPUs each worker reserves (0: CPU only); set ``runtime.device: cuda`` with it
    num_gpus_per_worker: float = Field(0.0, ge=0, le=64)  # a float default: the plan as run reads back the same


class RuntimeSpec(_Strict):
    batch_size: int = Field(64, ge=1, le=65_536)
    device: str = "cpu"
    #: images kept in memory between steps (MiB); beyond it they are read again from the data set
    image_cache_mb: int = Field(256, ge=0, le=1_048_576)
    #: where predictions and explainers run: in this process, or on Ray workers (``pip install xai-audit[ray]``)
    executor: Literal["local", "ray"] = "local"
    ray: RaySpec = Field(default_factory=RaySpec)
    #: the time limit (s) of every explainer and hypothesis step that sets no ``timeout:`` of its own
    step_timeout: float = Field(3600.0, gt=0)


class ResponsiblePerson(_Strict):
    """Someone who answers for the system: a name and the role they hold (e.g. "model owner")."""

    name: str = Field(min_length=1)
    role: str | None = Field(None, min_length=1)


class SystemSpec(_Strict):
    """What the audited system is for and who answers for it, as the provider states it (issue 19).

    Every field is optional: one the plan leaves out is shown as "not stated" in the report, never filled in.
    The EU AI Act's Annex IV 1(a) and Art. 13(3)(b) ask for these; the audit does not check them, it carries them.
    """

    #: what the model is meant to do, in the provider's words
    intended_purpose: str | None = Field(None, min_length=1)
    #: who is meant to use its outputs
    intended_users: str | None = Field(None, min_length=1)
    #: where and how it runs (the setting its inputs come from)
    deployment_context: str | None = Field(None, min_length=1)
    #: uses the provider rules out
    out_of_scope_uses: list[str] | None = None
    #: who places the model on the market or puts it into service
    provider: str | None = Field(None, min_length=1)
    #: the version of the model audited, as the provider names it
    model_version: str | None = Field(None, min_length=1)
    #: the people who answer for the system, each with their role
    responsible_persons: list[ResponsiblePerson] | None = None
    #: limitations the provider declares (the audit's own are derived from its results)
    known_limitations: list[str] | None = None


class PlanSchema(_Strict):
    seed: int = 0
    model: dict[str, Any] | None = None
    models: list[dict[str, Any]] | None = None
    dataset: dict[str, Any]
    regions: dict[str, Any] | None = None
    explainers: list[Any] = Field(default_factory=list)
    hypotheses: list[Any] = Field(default_factory=list)
    discoverers: list[Any] = Field(default_factory=list)
    discover: DiscoverSpec = Field(default_factory=DiscoverSpec)
    explain: ExplainSpec = Field(default_factory=ExplainSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    checks: list[Any] = Field(default_factory=list)
    #: what the system is for and who answers for it (optional; absent fields are reported as not stated)
    system: SystemSpec | None = None
    #: a planned step that failed or did not run: "fail" makes `run` exit 1 (after writing the whole report),
    #: "warn" exits 0; either way the report's verdict says INCOMPLETE
    on_step_failure: Literal["fail", "warn"] = "fail"

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, seed: int) -> int:
        if not 0 <= seed <= MAX_SEED:
            raise PydanticCustomError("seed_out_of_range", "must be a whole number from 0 to 2**63 - 1 ({most}), "
                                      "the range numpy and torch both accept", {"most": MAX_SEED})
        return seed


@dataclass
class Step:
    """One plugin use in the plan: its kind, plan name, plugin and validated options.

    ``name`` names the step everywhere (results.json, the report, the cache key, checks); it is the plugin's
    name unless the plan gave the step its own (``as:``, or ``<plugin>@<layer>`` from ``layers:``), so one
    plugin may be listed several times. ``plugin.name`` is the plugin it runs."""

    kind: str
    name: str
    plugin: PluginInfo
    options: Options
    #: seconds the step may run before it is stopped and recorded as failed (None: no limit)
    timeout: float | None = None

    def instantiate(self) -> Any:
        return self.plugin.cls(self.options)

    def options_dict(self) -> dict[str, Any]:
        return self.options.model_dump(mode="json")

    def as_entry(self) -> dict[str, Any]:
        """The step as a plan list entry that parses back to it: ``{plugin: {as: name, timeout: s, ...options}}``."""
        named = {"as": self.name} if self.name != self.plugin.name else {}
        return {self.plugin.name: named | self.options_dict() | ({"timeout": self.timeout} if self.timeout else {})}


@dataclass
class Plan:
    path: Path | None
    base_dir: Path
    seed: int
    model: Step
    dataset: Step
    sample: int | None
    #: "fail": an unreadable sample stops the audit (exit 2); "skip": it is left out and listed in the report
    on_bad_sample: str
    regions: Step | None
    explainers: list[Step]
    hypotheses: list[Step]
    explain: ExplainSpec
    report: ReportSpec
    runtime: RuntimeSpec
    raw: dict[str, Any] = field(default_factory=dict)
    #: every model of the plan with its name; one entry unless the plan lists ``models:``
    models: list[tuple[str, Step]] = field(default_factory=list)
    #: the plan's checks, evaluated against the results; a failing one makes `run` exit 1
    checks: list[Check] = field(default_factory=list)
    #: discoverers (issue 16): they propose cues on one part of the images, confirmed on the rest
    discoverers: list[Step] = field(default_factory=list)
    discover: DiscoverSpec = field(default_factory=DiscoverSpec)
    #: the plan's ``system:`` section (None: the plan states nothing about the system)
    system: SystemSpec | None = None
    #: "fail": a planned step that did not run makes `run` exit 1; "warn": exit 0 (the report says INCOMPLETE)
    on_step_failure: str = "fail"

    def for_model(self, name: str) -> Plan:
        """This plan with only the named model (for running a several-model plan one model at a time)."""
        step = dict(self.models)[name]
        return dataclasses.replace(self, model=step, models=[(name, step)])

    def as_run(self) -> dict[str, Any]:
        """The validated plan with every default filled in, for results.json."""
        return {
            "seed": self.seed,
            "model": {"adapter": self.model.name, **self.model.options_dict()},
            "dataset": {"loader": self.dataset.name, "sample": self.sample, "on_bad_sample": self.on_bad_sample,
                        **self.dataset.options_dict()},
            "regions": {"source": self.regions.name, **self.regions.options_dict()} if self.regions else None,
            "explainers": [s.as_entry() for s in self.explainers],
            "hypotheses": [s.as_entry() for s in self.hypotheses],
            "discoverers": [s.as_entry() for s in self.discoverers],
            "discover": self.discover.model_dump(),
            "explain": self.explain.model_dump(),
            "report": self.report.model_dump(),
            "runtime": self.runtime.model_dump(),
            "checks": [{"check": c.text, "severity": c.severity} for c in self.checks],
            "system": self.system.model_dump() if self.system is not None else None,
            "on_step_failure": self.on_step_failure,
        }


# --------------------------------------------------------------------------- YAML with lines

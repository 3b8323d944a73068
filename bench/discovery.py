"""Discovery: how often a null audit confirms a cue, and what discovery costs.

    python -m bench --only discovery
    python -m bench.discovery [--quick]

Three measurements:

1. **False alarms of null audits.** ``R`` seeded audits of a model with no real effect anywhere: its
   logits are drawn afresh at every call whatever the image, plus a term 10^-6 times the brightness of the
   top-left corner, the same for every class. The term changes no prediction, but it puts every image's
   gradient x input in that corner, so attribution-clusters proposes "the model looks at the top-left
   corner" for every class it sees (the stress case: many candidates, each under its null),
   property-slices searches the predictions for slices, property-shifts shifts the images, and error-slices
   searches for slices where accuracy is lower (the answers are random, so none is). Each audit splits its images (seeded), discovers on
   one half, confirms every candidate on the other with the host's own confirmation
   (``xai_audit.run.discovery.confirm``), corrects the family with Holm and derives findings: any finding is
   a false alarm. The row prints the share of audits with one, with its exact (Clopper-Pearson) 95 %
   interval, against the 5 % level.
2. **Extra model passes.** The images the discovery stage sends through the model (forward only, and
   forward + backward), per audited image, against the one forward pass of the audit's baseline, which
   discovery reuses rather than repeats.
3. **Time against N.** The built-in discoverers (error-slices too) and the confirmation of their candidates on N demo faces
   (64 px, the corner stamp planted on 'happy'; the demo CNN with seeded random weights, its 'happy' logit
   also reading the corner, so there is a candidate to confirm), against the time of an audit without discovery measured
   in the same run (the baseline pass and the demo plan's intervention hypotheses: luminance, grayscale,
   occlude-regions), with the growth exponent. The issue's limit: discovery adds less than a third.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import Row, Section, fmt_seconds, growth_exponent, ratio
from xai_audit.api import ModelAdapter, Sample
from xai_audit.contract.discovery import DiscoveryContext
from xai_audit.contract.stats import ALPHA
from xai_audit.contract.types import HypothesisContext
from xai_audit.judge.correction import correct_for_multiple_tests
from xai_audit.judge.findings import derive_findings
from xai_audit.run.discovery import confirm, confirming, split
from xai_audit.run.steps import result_dict

#: the issue's limit: discovery adds less than this share to the time of an audit without it
ADDED_LIMIT = 1 / 3
#: the demo's seven expressions
CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
#: images of one null audit (half discover, half confirm) and their side in pixels
NULL_IMAGES = 200
NULL_SIZE = 32


# --------------------------------------------------------------------------- models


class NullCorner(ModelAdapter):
    """No real effect: logits drawn afresh at every call (seeded), plus 1e-6 x the top-left corner's
    brightness for every class, so gradients sit in the corner and predictions ignore it."""

    classes = CLASSES

    def __init__(self, seed: int):
        import torch

        self.module = torch.nn.Identity()
        self._generator = torch.Generator().manual_seed(seed)

    def forward(self, images: Any) -> Any:
        import torch

        noise = torch.randn(len(images), len(CLASSES), generator=self._generator)
        corner = images[:, :, :4, :4].mean(dim=(1, 2, 3))
        return noise + 1e-6 * corner[:, None]

    def fingerprint(self) -> str:
        return "null-corner"


class Counting(ModelAdapter):
    """Wraps an adapter and counts the images it is sent, forward only and with gradients."""

    def __init__(self, inner: ModelAdapter):
        self.inner, self.classes, self.module, self.device = inner, inner.classes, inner.module, inner.device
        self.forward_only = 0
        self.with_gradients = 0

    def forward(self, images: Any) -> Any:
        if getattr(images, "requires_grad", False):
            self.with_gradients += len(images)
        else:
            self.forward_only += len(images)
        return self.inner.forward(images)

    def layers(self) -> dict[str, Any]:
        return self.inner.layers()

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


def predictor(model: ModelAdapter, batch: int = 256):
    """Display-space images -> probabilities, in batches, without gradients (what the audit's executor does)."""
    import torch

    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                x = torch.as_tensor(np.asarray(images[start:start + batch], np.float32))
                out.append(torch.softmax(model.forward(x).float(), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(model.classes)), np.float32)

    return predict


def faces(n: int, size: int, seed: int, **cues: Any) -> list[Sample]:
    from xai_audit_datasets.synthetic_faces import SyntheticFacesDataset, SyntheticFacesOptions

    data = SyntheticFacesDataset(SyntheticFacesOptions(split="test", n=n, size=size, seed=seed, **cues))
    return [data[i] for i in range(n)]


def discoverers(seed: int) -> list[Any]:
    """The four built-in discoverers with their defaults (the demo plan's)."""
    from xai_audit_discovery.shifts import PropertyShiftsDiscoverer
    from xai_audit_discovery.slices import PropertySlicesDiscoverer
    from xai_audit_discovery.spray import AttributionClustersDiscoverer
    from xai_audit_discovery.weak_slices import ErrorSlicesDiscoverer

    spray = AttributionClustersDiscoverer(AttributionClustersDiscoverer.Options(batch_size=64))
    return [spray, PropertySlicesDiscoverer(PropertySlicesDiscoverer.Options()),
            PropertyShiftsDiscoverer(PropertyShiftsDiscoverer.Options()),
            ErrorSlicesDiscoverer(ErrorSlicesDiscoverer.Options())]


# --------------------------------------------------------------------------- one discovery stage


@dataclass
class Stage:
    candidates: int
    confirmed_raw: int
    findings: int
    discover_s: float
    confirm_s: float
    descriptions: list[str]
    #: each discoverer's own time (its discover call), by name
    per_discoverer: dict[str, float] = field(default_factory=dict)
    #: the time each discoverer's candidates took to confirm, by name
    per_confirm: dict[str, float] = field(default_factory=dict)


def discovery_stage(samples: Sequence[Sample], model: ModelAdapter, probs: np.ndarray, seed: int,
                    held_out: float = 0.5) -> Stage:
    """What the audit's discovery stage does, uncached: split, discover, confirm, Holm, findings."""
    predict = predictor(model)
    found, held = split(len(samples), seed, held_out)
    held = confirming(held, seed, CONFIRMED)
    regions = {name: ["mouth", "brows", "eyes"] for name in CLASSES}
    context = DiscoveryContext(model=model, samples=[samples[i] for i in found], probs=probs[found],
                               classes=list(CLASSES), seed=seed, predict=predict, class_regions=regions)
    held_context = HypothesisContext(model=model, samples=[samples[i] for i in held], probs=probs[held],
                                     classes=list(CLASSES), seed=seed, predict=predict)
    entries: dict[str, dict[str, Any]] = {}
    descriptions: list[str] = []
    discover_s = confirm_s = 0.0
    per: dict[str, float] = {}
    per_confirm: dict[str, float] = {}
    for plugin in discoverers(seed):
        start = time.perf_counter()
        candidates = plugin.discover(context)
        per[plugin.name] = time.perf_counter() - start
        discover_s += per[plugin.name]
        for candidate in candidates:
            descriptions.append(candidate.description)
            start = time.perf_counter()
            result = confirm(plugin, candidate, held_context)
            confirm_s += time.perf_counter() - start
            per_confirm[plugin.name] = per_confirm.get(plugin.name, 0.0) + time.perf_counter() - start
            entries[f"discovered: {plugin.name}/{candidate.name}"] = {
                "status": "ok", "plugin": plugin.name, "options": {}, **result_dict(result),
                "discovered": {"discoverer": plugin.name, "candidate": candidate.name},
            }
    raw = sum(e["verdict"] == "supported" for e in entries.values())
    correct_for_multiple_tests(entries)
    findings = derive_findings({"hypotheses": entries})
    return Stage(len(entries), raw, len(findings), discover_s, confirm_s, descriptions, per, per_confirm)


# --------------------------------------------------------------------------- 1. null audits


@dataclass
class NullAudits:
    audits: int
    with_findings: int
    candidates: int
    confirmed_raw: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.with_findings / self.audits

    def interval(self) -> tuple[float, float]:
        """The exact (Clopper-Pearson) 95 % interval of the false-alarm rate."""
        from scipy.stats import binomtest

        ci = binomtest(self.with_findings, self.audits).proportion_ci(0.95, method="exact")
        return float(ci.low), float(ci.high)


def one_null_audit(seed: int, n: int = NULL_IMAGES, size: int = NULL_SIZE) -> Stage:
    samples = faces(n, size, seed)
    model = NullCorner(seed)
    probs = predictor(model)(np.stack([s.image for s in samples]))
    return discovery_stage(samples, model, probs, seed)


def null_audits(audits: int, first_seed: int = 0) -> NullAudits:
    start = time.perf_counter()
    stages = [one_null_audit(seed) for seed in range(first_seed, first_seed + audits)]
    return NullAudits(audits, sum(s.findings > 0 for s in stages), sum(s.candidates for s in stages),
                      sum(s.confirmed_raw for s in stages), time.perf_counter() - start)


# --------------------------------------------------------------------------- 2 and 3. passes and time


def demo_cnn(seed: int = 0) -> ModelAdapter:
    """The demo CNN with seeded random weights, whose 'happy' logit also reads the top-left corner's
    brightness (the planted stamp's place), so discovery has a candidate to confirm, as on a real audit."""
    import torch

    from xai_audit.demo.model import DemoCNN

    class Adapter(ModelAdapter):
        classes = CLASSES

        def __init__(self):
            torch.manual_seed(seed)
            self.module = DemoCNN().eval()

        def forward(self, images: Any) -> Any:
            logits = self.module(images)
            corner = images[:, :, 2:8, 2:8].mean(dim=(1, 2, 3))
            return torch.cat([logits[:, :1] + 20 * (corner - 0.7)[:, None], logits[:, 1:]], dim=1)

        def fingerprint(self) -> str:
            return f"demo-cnn-random-{seed}"

    return Adapter()


def plain_audit_seconds(samples: Sequence[Sample], model: ModelAdapter, seed: int) -> tuple[float, float, np.ndarray]:
    """An audit without discovery: the baseline pass, then the demo plan's intervention hypotheses.
    Returns (baseline seconds, whole seconds, the baseline probabilities)."""
    from xai_audit_hypotheses.grayscale import GrayscaleHypothesis
    from xai_audit_hypotheses.luminance import LuminanceHypothesis
    from xai_audit_hypotheses.occlusion import OccludeRegionsHypothesis

    from xai_audit.api import sample_chunks

    predict = predictor(model)
    start = time.perf_counter()
    probs = np.concatenate([predict(images) for _, images in sample_chunks(samples, 256)])
    baseline = time.perf_counter() - start
    context = HypothesisContext(model=model, samples=samples, probs=probs, classes=list(CLASSES), seed=seed,
                                predict=predict)
    for cls, options in ((LuminanceHypothesis, {"factor": 0.2}), (GrayscaleHypothesis, {}),
                         (OccludeRegionsHypothesis, {"regions": ["eyes", "brows", "mouth", "hair", "nose"],
                                                     "fill": "mean", "label_regions": ["eyes", "brows", "mouth"]})):
        cls(cls.Options(**options)).test(context)
    return baseline, time.perf_counter() - start, probs


@dataclass
class Sized:
    n: int
    size: int
    plain_s: float
    baseline_s: float
    discover_s: float
    confirm_s: float
    candidates: int
    forward_per_image: float
    gradient_per_image: float
    plain_forward_per_image: float
    per_discoverer: dict[str, float] = field(default_factory=dict)
    per_confirm: dict[str, float] = field(default_factory=dict)

    @property
    def discovery_s(self) -> float:
        return self.discover_s + self.confirm_s

    @property
    def weak_slices_s(self) -> float:
        """Of it, error-slices' search and its candidates' confirmation."""
        return self.per_discoverer.get(WEAK_SLICES, 0.0) + self.per_confirm.get(WEAK_SLICES, 0.0)

    def projected(self, n: int) -> tuple[float, float]:
        """(audit without discovery, discovery) projected to ``n`` images from this run: everything the audit
        does per image grows linearly (the plain audit's passes, property-slices' properties, confirming each
        candidate on the held-back half up to the plan's confirm_images); what is capped does not
        (attribution-clusters explains at most 300 images, property-shifts shifts at most 300, confirmation uses at
        most 2,000 held-back images)."""
        grow = n / self.n
        spray = self.per_discoverer.get("attribution-clusters", 0.0)
        shifts = self.per_discoverer.get("property-shifts", 0.0) * min(n / 2, SHIFTED) / min(self.n / 2, SHIFTED)
        rest = self.discover_s - self.per_discoverer.get("attribution-clusters", 0.0) \
            - self.per_discoverer.get("property-shifts", 0.0)
        confirm = self.confirm_s * min(n / 2, CONFIRMED) / min(self.n / 2, CONFIRMED)
        return self.plain_s * grow, spray + shifts + rest * grow + confirm

    def projected_weak_slices(self, n: int) -> float:
        """Of :meth:`projected`'s discovery, error-slices': its search scaled with N (its embedding is read for at most
        1,000 images, so this is an upper bound), its confirmations with the held-back half up to confirm_images."""
        confirm = self.per_confirm.get(WEAK_SLICES, 0.0) * min(n / 2, CONFIRMED) / min(self.n / 2, CONFIRMED)
        return self.per_discoverer.get(WEAK_SLICES, 0.0) * n / self.n + confirm


#: property-shifts' default max_images, and the plan's default discover.confirm_images
SHIFTED = 300
CONFIRMED = 2000
#: the weak-slice search, newest of the discoverers: its share is shown in rows of its own
WEAK_SLICES = "error-slices"


def sized_run(n: int, seed: int = 0, size: int = 64) -> Sized:
    samples = faces(n, size, seed, stamp_class="happy")
    model = demo_cnn(seed)
    counted_plain = Counting(model)
    baseline, plain, probs = plain_audit_seconds(samples, counted_plain, seed)
    counting = Counting(model)
    stage = discovery_stage(samples, counting, probs, seed)
    return Sized(n, size, plain, baseline, stage.discover_s, stage.confirm_s, stage.candidates,
                 counting.forward_only / n, counting.with_gradients / n, counted_plain.forward_only / n,
                 stage.per_discoverer, stage.per_confirm)


# --------------------------------------------------------------------------- rows


#: the issue's figure: this many images at this side
TARGET_N, TARGET_SIZE = 10000, 224


def run(quick: bool = False, n224: int | None = None) -> tuple[list[Row], list[Section]]:
    n_audits = 60 if quick else 200
    sizes = (500, 1000, 2000) if quick else (1000, 5000, 10000)
    # the whole bench is sized for minutes on 2 cores: a few hundred faces at 224 px, projected to the issue's
    # 10,000 (python -m bench.discovery --n224 10000 measures it, in about an hour and a half on 2 cores)
    n224 = n224 or (200 if quick else 500)
    print(f"discovery: {n_audits} null audits of {NULL_IMAGES} images ...", flush=True)
    null = null_audits(n_audits)
    lo, hi = null.interval()
    print(f"discovery: time against N ({', '.join(map(str, sizes))} images, 64 px) ...", flush=True)
    sized = [sized_run(n) for n in sizes]
    exponent = growth_exponent([s.n for s in sized], [s.discovery_s for s in sized])
    names = ("attribution-clusters", "property-slices", "property-shifts", "error-slices")
    exponents = {name: growth_exponent([s.n for s in sized], [max(s.per_discoverer.get(name, 0.0), 1e-6)
                                                              for s in sized]) for name in names}
    largest = sized[-1]
    print(f"discovery: {n224} images at {TARGET_SIZE} px ...", flush=True)
    big = sized_run(n224, size=TARGET_SIZE)
    plain_big, discovery_big = big.projected(TARGET_N)
    measured_at = "measured" if n224 == TARGET_N else f"projected from {n224} images measured at {TARGET_SIZE} px"

    rows = [
        Row("discovery: null audits with a confirmed cue", f"{n_audits} audits of {NULL_IMAGES} images",
            f"{100 * null.rate:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %)", f"{100 * ALPHA:.0f} %",
            ratio(ALPHA, null.rate) if null.with_findings else None, target="rate <= 5 %",
            met=null.rate <= ALPHA),
        Row("discovery: extra model passes per image", f"{largest.n} demo faces, demo CNN",
            f"{largest.forward_per_image:.2f} forward + {largest.gradient_per_image:.2f} backward",
            f"{largest.plain_forward_per_image:.1f} forward (audit without discovery)", None),
        Row("discovery: added time", f"{largest.n} demo faces, 64 px",
            f"{fmt_seconds(largest.discovery_s)} ({100 * largest.discovery_s / largest.plain_s:.0f} %)",
            f"{fmt_seconds(ADDED_LIMIT * largest.plain_s)} (1/3 of {fmt_seconds(largest.plain_s)})",
            ratio(ADDED_LIMIT * largest.plain_s, largest.discovery_s), target=">= 1.00",
            met=largest.discovery_s <= ADDED_LIMIT * largest.plain_s, bar=1.0),
        Row("discovery: added time, the issue's figure", f"{TARGET_N} faces at {TARGET_SIZE} px ({measured_at})",
            f"{fmt_seconds(discovery_big)} ({100 * discovery_big / plain_big:.0f} %)",
            f"{fmt_seconds(ADDED_LIMIT * plain_big)} (1/3 of {fmt_seconds(plain_big)})",
            ratio(ADDED_LIMIT * plain_big, discovery_big), target=">= 1.00",
            met=discovery_big <= ADDED_LIMIT * plain_big, bar=1.0),
        Row("discovery: of the added time, error-slices", f"{largest.n} demo faces, 64 px",
            f"{fmt_seconds(largest.weak_slices_s)} ({100 * largest.weak_slices_s / largest.plain_s:.0f} % of the "
            "audit without discovery)", "-", None),
        Row("discovery: of the issue's figure, error-slices", f"{TARGET_N} faces at {TARGET_SIZE} px ({measured_at})",
            f"{fmt_seconds(big.projected_weak_slices(TARGET_N))} "
            f"({100 * big.projected_weak_slices(TARGET_N) / plain_big:.0f} % of the audit without discovery)",
            "-", None),
        Row("discovery: time growth against N", f"{sizes[0]}-{sizes[-1]} images",
            f"exponent {exponent:.2f} (clustering {exponents['attribution-clusters']:.2f}, slice search "
            f"{exponents['property-slices']:.2f}, shifts {exponents['property-shifts']:.2f}, error slices "
            f"{exponents['error-slices']:.2f})", "-", None),
    ]
    null_section = Section(
        "Discovery: null audits (no real effect; every confirmed candidate is a false alarm)",
        ["audits", "candidates proposed", "confirmed before Holm", "audits with a finding", "rate", "95 % CI",
         "seconds"],
        [[str(null.audits), str(null.candidates), str(null.confirmed_raw), str(null.with_findings),
          f"{100 * null.rate:.1f} %", f"{100 * lo:.1f}-{100 * hi:.1f} %", f"{null.seconds:.0f}"]],
        [(f"Each audit: {NULL_IMAGES} synthetic faces at {NULL_SIZE} px, split in half (seeded); the model's "
          "logits are drawn afresh at every call, and its gradients sit in the top-left corner, so "
          "attribution-clusters proposes that corner for every class it sees; property-slices, property-shifts "
          "and error-slices search the same predictions. Holm across each audit's candidates; the interval is "
          "Clopper-Pearson.")],
        right=(0, 1, 2, 3),
    )
    every = [*sized, big]
    time_section = Section(
        "Discovery: time and passes against N (demo CNN, random weights, 'happy' reads the corner stamp)",
        ["N", "px", "audit without discovery", "of it: baseline pass", "clustering", "slice search", "shifts",
         "error slices", "confirm", "candidates", "forward / image", "backward / image", "added"],
        [[str(s.n), str(s.size), fmt_seconds(s.plain_s), fmt_seconds(s.baseline_s),
          *(fmt_seconds(s.per_discoverer.get(name, 0.0)) for name in names), fmt_seconds(s.confirm_s),
          str(s.candidates), f"{s.forward_per_image:.2f}", f"{s.gradient_per_image:.2f}",
          f"{100 * s.discovery_s / s.plain_s:.0f} %"] for s in every],
        [(f"Growth exponent of discover + confirm over the 64-px rows: {exponent:.2f}; of the clustering "
          f"(attribution-clusters) {exponents['attribution-clusters']:.2f}, the slice search (property-slices) "
          f"{exponents['property-slices']:.2f}, the shifts (property-shifts) {exponents['property-shifts']:.2f}, "
          f"the weak-slice search (error-slices: properties, pairs, metadata, k-means of the penultimate "
          f"layer) {exponents['error-slices']:.2f}. "
          "The audit without discovery is the baseline pass and the demo plan's intervention hypotheses "
          f"(luminance, grayscale, occlude-regions: {largest.plain_forward_per_image:.1f} forward passes per "
          "image); discovery reuses the baseline's predictions. attribution-clusters explains at most 300 images "
          f"and property-shifts shifts at most {SHIFTED} (their defaults), so their time stays flat; "
          "property-slices' and error-slices' properties grow with N (error-slices also reads the penultimate "
          "layer of at most 1,000 discovery images, and once of the held-back images for its embedding slices; the "
          "projection scales all of it with N, an upper bound), and each candidate's confirmation with the "
          "held-back half "
          f"up to {CONFIRMED} images (the plan's discover.confirm_images). "
          + (f"The {TARGET_SIZE}-px figure for {TARGET_N} images is projected from the {n224}-image row: the plain "
             "audit and the per-image parts of discovery scaled by N, the capped parts kept."
             if n224 != TARGET_N else ""))],
        right=tuple(range(13)),
    )
    return rows, [null_section, time_section]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 null audits; 500, 1000 and 2000 images; 200 at 224 px")
    parser.add_argument("--n224", type=int, default=None,
                        help=f"images at {TARGET_SIZE} px (default 500, --quick 200; fewer than the issue's {TARGET_N} "
                             "are projected to it)")
    args = parser.parse_args(argv)
    rows, sections = run(args.quick, args.n224)
    from bench.common import summary_text

    for section in sections:
        print(section.text() + "\n")
    print(summary_text(rows))


if __name__ == "__main__":
    main()

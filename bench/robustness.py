"""The robustness battery against its limits: corruptions, adversarial search, calibration and data checks.

    python -m bench --only robustness
    python -m bench.robustness [--quick] [--images N] [--resnet-images N]

The corruption battery is many model passes over the same images, each image first corrupted by the
library. Its limit is what cannot be avoided, measured in the same run on the same images: the
corruption library alone (every corruption and severity of every image, no model) plus the model passes
(images x corruptions x severities forward passes) at the model's best batch size and memory layout
(``bench.attribution.best_passes``, the same sweep as the explainers' limits). The row prints limit ÷ the
plugin's measured time (target 0.85, as for the explainers): the machinery, the batching and the
statistics may cost at most 15 %. A second row, informational, prints the model passes alone ÷ the
battery: how much of the battery is the model at all (for a small CNN the corruptions dominate).

The adversarial search's limit is the passes it needs, counted in the same run: a forward pass with the
gradient of the scores with respect to the input only (no weight gradients, as PGD) for every PGD step
(each image's clean gradient once, which every attack's first step shares, then one per step of an attack
still unflipped), and a forward pass alone for the check after an attack's last step; each at the best
batch size and layout of the sweep, or the plugin's own where that is faster. The plugin and its limit are
timed in two rounds, the order turned round in the second. The gradient computed in the pass that shows
an image flipped is counted (the flip is known only after that pass).

The wall time of the full battery (corruptions with their defaults: 9 corruptions x 5 severities;
adversarial with 64 images, L∞ and L2; calibration; data checks against a reference of the same size) is
printed for 1,000 images of the demo CNN (64 px) and for a ResNet-18 at 224 px (written out in
bench/attribution.py; random weights). The demo CNN's adversarial search attacks the demo CNN as
``xai-audit demo`` trains it (trained once into ``XAI_AUDIT_BENCH_CACHE``, untimed): with random weights no
image flips within the largest budget, and the search would be nothing but full-length attacks. The ResNet-18
battery is measured on ``--resnet-images`` images
(default 16) and scaled to 1,000 by its per-image cost (every part is linear in the images but the
adversarial search, which attacks a fixed 64 and is measured at its full size; said so in the table).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.attribution import ModuleAdapter, ResNet18, best_passes, faces, limit_call, timed
from bench.common import ATTRIBUTION_TARGET, Row, Section, fmt_seconds, ratio
from xai_audit.contract.types import Dataset, HypothesisContext, Sample


@dataclass
class Part:
    """One plugin's measurement."""

    name: str
    seconds: float
    limit_s: float | None = None
    passes_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Listed(Dataset):
    classes = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def fingerprint(self) -> str:
        return "bench-reference"


def _context(model: ModuleAdapter, samples: list[Sample], reference: list[Sample]) -> HypothesisContext:
    """A hypothesis context as the runner builds one: predictions through the local executor's batching."""
    from xai_audit.run.executors import predict_batched

    images = np.stack([s.image for s in samples]).astype(np.float32)
    batch = 64  # the plan's default runtime.batch_size, which the runner's hypothesis predictions use
    probs = predict_batched(model, images, batch, "bench")
    return HypothesisContext(
        model=model, samples=samples, probs=probs, classes=list(model.classes), seed=0,
        predict=lambda x: predict_batched(model, x, batch, "bench"),
        load_dataset=lambda options: _Listed(reference),
    )


def _faces_seeded(n: int, size: int, seed: int) -> list[Sample]:
    from pathlib import Path

    from xai_audit.contract.types import LoadContext
    from xai_audit_datasets.synthetic_faces import SyntheticFacesOptions, SyntheticFacesPlugin

    data = SyntheticFacesPlugin(SyntheticFacesOptions(n=n, size=size, seed=seed, split="train")).load(
        LoadContext(base_dir=Path.cwd()))
    return [data[i] for i in range(n)]


def corruptions_part(model: ModuleAdapter, samples: list[Sample], size: int, ctx: HypothesisContext,
                     options: dict[str, Any]) -> Part:
    from xai_audit_robustness.corruptions import CorruptionsHypothesis, corrupt

    plugin = CorruptionsHypothesis(CorruptionsHypothesis.Options(**options))
    names, levels = plugin.options.corruptions, plugin.options.severities
    images = np.stack([s.image for s in samples]).astype(np.float32)
    ids = [s.id for s in samples]
    n = len(samples)
    # the limit's two parts, on the same images: the library alone, and the model passes at the best batch;
    # each corruption once first, untimed (imports, compiled kernels, texture files), as the plugin gets them
    for c in names:
        corrupt(images[:1], ids[:1], c, levels[0], 0)
    best = best_passes(model, size, backward=False)
    passes = n * len(names) * len(levels)
    # two rounds, the order turned round in the second, so a machine whose speed drifts (other jobs) slows both
    # sides alike; the sums are compared
    library_s = passes_s = seconds = 0.0
    for first in ("limit", "plugin"):
        for side in ((first, "plugin") if first == "limit" else ("plugin", "limit")):
            if side == "plugin":
                seconds += timed(lambda: plugin.test(ctx))
            else:
                library_s += timed(lambda: [corrupt(images, ids, c, s, 0) for c in names for s in levels])
                passes_s += min(timed(limit_call(model, size, False, b, passes)) for b in best)
    return Part("corruptions", seconds / 2, (library_s + passes_s) / 2, passes_s / 2,
                {"library_s": library_s / 2, "passes": passes, "best": best[0][0]})


def adversarial_part(model: ModuleAdapter, size: int, ctx: HypothesisContext, options: dict[str, Any]) -> Part:
    from xai_audit.contract import batching
    from xai_audit_robustness import adversarial

    counted: list[adversarial._Search] = []
    original = adversarial._Search

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            counted.append(self)

    plugin = adversarial.AdversarialHypothesis(adversarial.AdversarialHypothesis.Options(**options))
    shape = (3, size, size)
    # the plugin's batch sizes, probed once per process and shared with the explainers in an audit: untimed here,
    # as in the attribution benchmark
    ours = {backward: (batching.best_batch_size(model, shape, backward=backward),
                       torch.channels_last if batching.prefers_channels_last(model, shape, backward=backward)
                       else torch.contiguous_format) for backward in (False, True)}
    adversarial._Search = Counting
    try:
        plugin.test(ctx)  # untimed: counts the passes (the same in every run: each attack's steps are its own)
    finally:
        adversarial._Search = original
    backward_passes = counted[0].backward_passes
    forward_passes = counted[0].forward_passes
    # the limit: the passes the search needs, forward with the input gradient where a step follows (as PGD: no
    # weight gradients) and forward alone for the checks after the last step, each at the best batch size and
    # layout of the sweep, or the plugin's own where that is faster
    best = {backward: best_passes(model, size, backward=backward) for backward in (False, True)}
    for backward in (False, True):
        if ours[backward] not in best[backward]:
            best[backward].append(ours[backward])
    calls = [_input_gradient_passes(model, size, b, backward_passes) for b in best[True]]
    forward_calls = [limit_call(model, size, False, b, forward_passes) for b in best[False]] if forward_passes else []
    # two rounds, the order turned round in the second, so a machine whose speed drifts slows both sides alike
    seconds = limit_s = 0.0
    for order in (("plugin", "limit"), ("limit", "plugin")):
        for side in order:
            if side == "plugin":
                adversarial._Search = Counting
                try:
                    seconds += timed(lambda: plugin.test(ctx))
                finally:
                    adversarial._Search = original
            else:
                limit_s += min(timed(c) for c in calls) + (min(timed(c) for c in forward_calls) if forward_calls else 0)
    return Part("adversarial", seconds / 2, limit_s / 2, limit_s / 2,
                {"passes": f"{backward_passes} + {forward_passes} fwd", "best": best[True][0][0],
                 "ours": ours[True][0]})


def _input_gradient_passes(model: ModuleAdapter, size: int, best: tuple[int, Any], images: int):
    """``images`` forward passes with the gradient of the scores with respect to the input only (what PGD needs:
    no weight gradients), at a batch size and layout of the sweep; one untimed pass at each shape first."""
    batch, layout = best
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=layout)
    full, rest = divmod(images, batch)

    def one(part: torch.Tensor) -> None:
        part = part.detach().requires_grad_(True)
        torch.autograd.grad(model.forward(part).sum(), part)

    def run() -> None:
        for _ in range(full):
            one(x)
        if rest:
            one(x[:rest])

    with torch.enable_grad():
        one(x[: max(1, rest or batch)])
        if full and rest:
            one(x)
    return lambda: _with_grad(run)


def _with_grad(fn) -> None:
    with torch.enable_grad():
        fn()


def plain_part(name: str, cls_name: str, ctx: HypothesisContext, options: dict[str, Any]) -> Part:
    import xai_audit_robustness as package

    cls = getattr(package, cls_name)
    plugin = cls(cls.Options(**options))
    return Part(name, timed(lambda: plugin.test(ctx)))


def trained_demo() -> ModuleAdapter:
    """The demo CNN as ``xai-audit demo`` trains it (cached in ``XAI_AUDIT_BENCH_CACHE``, else trained here,
    untimed): a CNN with random weights flips no image within the default largest budget, so its adversarial
    search would be every attack running all its steps, never the search a trained model gets."""
    import os
    import tempfile
    from pathlib import Path

    from xai_audit.demo.model import DemoCNN
    from xai_audit.demo.train import train_demo_model
    from xai_audit.registry import make_plugin_manager
    from xai_audit.run.cache import Cache

    cache = Path(os.environ.get("XAI_AUDIT_BENCH_CACHE") or Path(tempfile.gettempdir()) / "xai-audit-bench-cache")
    trained = train_demo_model(make_plugin_manager(), Cache(cache), data="faces", seed=0, shortcuts=True,
                               log=lambda *_: None)
    module = DemoCNN()
    module.load_state_dict(torch.load(trained.weights, map_location="cpu"))
    return ModuleAdapter(module, 7, lambda m, x: m(x))


def battery(model: ModuleAdapter, size: int, n: int, *, adversarial_images: int = 64,
            attacked: ModuleAdapter | None = None) -> list[Part]:
    """Every part of the battery with its defaults on ``n`` faces (a reference of ``n`` other faces); the
    adversarial search on ``attacked`` (default ``model``)."""
    samples = faces(n, size)
    reference = _faces_seeded(n, size, seed=1)
    ctx = _context(model, samples, reference)
    attacked_ctx = ctx if attacked is None else _context(attacked, samples, reference)
    return [
        corruptions_part(model, samples, size, ctx, {}),
        adversarial_part(attacked or model, size, attacked_ctx, {"max_images": adversarial_images}),
        plain_part("calibration", "CalibrationHypothesis", ctx, {}),
        plain_part("data-checks", "DataChecksHypothesis", ctx, {"reference": {"loader": "bench"},
                                                                 "reference_sample": n}),
    ]


def run(quick: bool = False, images: int | None = None, resnet_images: int | None = None
        ) -> tuple[list[Row], list[Section]]:
    torch.manual_seed(0)
    from xai_audit.demo.model import DemoCNN

    n = images or (100 if quick else 1000)
    demo = ModuleAdapter(DemoCNN(), 7, lambda m, x: m(x))
    print(f"robustness: the battery on {n} demo faces (64 px; the attack on the trained demo CNN) ...", flush=True)
    parts = battery(demo, 64, n, attacked=trained_demo())
    rows, table = _rows(parts, f"demo CNN, {n} faces (64 px)", n, scale=1000 / n)
    if not quick:
        m = resnet_images or 16
        print(f"robustness: the battery on {m} faces at 224 px, ResNet-18 (scaled to 1,000) ...", flush=True)
        resnet = ModuleAdapter(ResNet18(), 7, lambda mod, x: mod(x))
        # the adversarial search attacks a fixed number of images: measured at its full size when it fits
        r_parts = battery(resnet, 224, m, adversarial_images=m)
        more_rows, more_table = _rows(r_parts, f"ResNet-18 (224 px), {m} faces", m, scale=1000 / m)
        rows += more_rows
        table += more_table
    section = Section(
        "Robustness battery: time and ratio against its limit",
        ["part", "on", "measured", "limit", "limit ÷ measured", "passes alone ÷ measured", "for 1,000 images"],
        table,
        ["Corruptions' limit: the corruption library alone on the same images plus images x corruptions x "
         "severities forward passes at the model's best batch size and layout (measured in the same run). "
         "Adversarial: its counted passes (forward with the input gradient for each PGD step, forward alone for "
         "the check after the last) at the best batch size. "
         "Calibration and data "
         "checks run no attack (data checks: one forward pass of up to 400 images a side for the embedding "
         "drift); their time is shown for information. 'For 1,000 images' scales the measured time linearly "
         "(the adversarial search attacks at most 64 images whatever the N: it is not scaled beyond 64)."],
        right=(2, 3, 4, 5, 6),
    )
    return rows, [section]


def _rows(parts: list[Part], on: str, n: int, scale: float) -> tuple[list[Row], list[list[str]]]:
    rows, table = [], []
    total_1000 = 0.0
    for part in parts:
        part_scale = scale
        if part.name == "adversarial":  # it attacks min(64, N) images
            part_scale = 64 / min(64, n)
        at_1000 = part.seconds * part_scale
        total_1000 += at_1000
        r = ratio(part.limit_s, part.seconds) if part.limit_s else None
        passes_r = ratio(part.passes_s, part.seconds) if part.passes_s else None
        table.append([part.name, on, fmt_seconds(part.seconds), fmt_seconds(part.limit_s) if part.limit_s else "-",
                      f"{r:.2f}" if r is not None else "-", f"{passes_r:.2f}" if passes_r is not None else "-",
                      fmt_seconds(at_1000)])
        if part.limit_s:
            what = ("corruption battery vs library + model passes" if part.name == "corruptions"
                    else "adversarial search vs its passes")
            rows.append(Row(f"robustness: {what}", on, fmt_seconds(part.seconds), fmt_seconds(part.limit_s), r,
                            target=f">= {ATTRIBUTION_TARGET:.2f}", met=r >= ATTRIBUTION_TARGET,
                            bar=ATTRIBUTION_TARGET))
    rows.append(Row("robustness: full battery, wall time for 1,000 images", on,
                    fmt_seconds(total_1000) + ("" if n == 1000 else f" (scaled from {n})"), "-", None))
    table.append(["whole battery", on, fmt_seconds(sum(p.seconds for p in parts)), "-", "-", "-",
                  fmt_seconds(total_1000)])
    return rows, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 demo faces, no ResNet-18")
    parser.add_argument("--images", type=int, default=None, help="demo faces (default 1,000; --quick 100)")
    parser.add_argument("--resnet-images", type=int, default=None, help="ResNet-18 faces (default 16)")
    args = parser.parse_args()
    rows, sections = run(args.quick, args.images, args.resnet_images)
    from bench.common import summary_text

    for section in sections:
        print(section.text() + "\n")
    print(summary_text(rows))


if __name__ == "__main__":
    main()

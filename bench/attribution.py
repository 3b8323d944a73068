"""Attribution speed against its limit: Integrated Gradients, Occlusion and LIME.

The limit of a method (DESIGN.md, "Performance") is its count of model passes
run at the model's best batch size on this machine, measured in the same run:
IG with S steps on N images is S·N forward + backward passes, Occlusion one
forward pass per window per image, LIME one per perturbed sample. Each method
is timed twice: as the built-in plugin runs it, and as the call a user would
write by hand (captum and lime with their defaults, one image at a time). The
table prints limit time ÷ measured time: 1.00 is as fast as the passes alone.

    python -m bench                      # every model (about 5-8 minutes on 2 cores)
    python -m bench --models demo        # the demo CNN only (under a minute)
    python -m bench --threads 2          # torch threads (default: torch's own choice)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from xai_audit import batching
from xai_audit.types import ModelAdapter, Sample

#: a sweep stops growing the batch once one pass takes this long
_SWEEP_PASS_S = 2.5
#: seconds of back-to-back passes timed at each batch size of a sweep
_SWEEP_WORK_S = 0.3


# --------------------------------------------------------------------------- models


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) written out: 11.2 M parameters at 7 classes."""

    def __init__(self, n_classes: int = 7):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class ModuleAdapter(ModelAdapter):
    """A module whose input is the display image itself."""

    def __init__(self, module: nn.Module, n_classes: int, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        self.module = module.eval()
        self.classes = [f"class_{k}" for k in range(n_classes)]
        self._call = call
        convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
        self.default_layer = convs[-1] if convs else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._call(self.module, images)

    def fingerprint(self) -> str:
        return type(self.module).__name__

    def layers(self) -> dict[str, Any]:
        return {name: m for name, m in self.module.named_modules() if name}


@dataclass
class Workload:
    name: str
    model: ModuleAdapter
    size: int
    images: int
    ig_steps: int
    window: int
    stride: int
    lime_samples: int


def workloads(names: list[str]) -> list[Workload]:
    out = []
    torch.manual_seed(0)
    if "demo" in names:
        from xai_audit.demo.model import DemoCNN

        out.append(Workload("demo CNN (64 px)", ModuleAdapter(DemoCNN(), 7, lambda m, x: m(x)), 64,
                            images=8, ig_steps=50, window=8, stride=4, lime_samples=500))
    if "resnet18" in names:
        out.append(Workload("ResNet-18 (224 px)", ModuleAdapter(ResNet18(), 7, lambda m, x: m(x)), 224,
                            images=1, ig_steps=24, window=32, stride=32, lime_samples=96))
    if "vit" in names:
        from transformers import ViTConfig, ViTForImageClassification

        vit = ViTForImageClassification(ViTConfig(num_labels=7))  # ViT-base/16 at 224 px, random weights
        out.append(Workload("ViT-base (224 px)", ModuleAdapter(vit, 7, lambda m, x: m(pixel_values=x).logits), 224,
                            images=1, ig_steps=8, window=56, stride=56, lime_samples=24))
    return out


# --------------------------------------------------------------------------- measuring


def faces(n: int, size: int) -> list[Sample]:
    """Synthetic faces at the benchmark's size: real structure matters for LIME's superpixels."""
    from xai_audit.types import LoadContext
    from xai_audit_datasets.synthetic_faces import SyntheticFacesOptions, SyntheticFacesPlugin

    data = SyntheticFacesPlugin(SyntheticFacesOptions(n=n, size=size)).load(LoadContext(base_dir=Path.cwd()))
    return [data[i] for i in range(n)]


def best_pass(model: ModuleAdapter, size: int, backward: bool) -> tuple[int, Any]:
    """The batch size and memory layout (standard or channels-last) with the best steady-state time
    per image over batch sizes 1, 2, 4, ...; each timed twice, back-to-back passes for at least
    ``_SWEEP_WORK_S`` each time."""
    timings: dict[tuple[int, Any], float] = {}
    for _ in range(2):
        batch = 1
        while batch <= 256:
            slowest_pass = 0.0
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.rand(batch, 3, size, size).contiguous(memory_format=layout)
                batching._pass(model, x, backward)  # warm-up
                passes, start = 0, time.perf_counter()
                while True:
                    batching._pass(model, x, backward)
                    passes += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= _SWEEP_WORK_S and passes >= 2:
                        break
                key = (batch, layout)
                timings[key] = min(timings.get(key, float("inf")), elapsed / (passes * batch))
                slowest_pass = max(slowest_pass, elapsed / passes)
            if slowest_pass > _SWEEP_PASS_S:
                break
            batch *= 2
    return min(timings, key=timings.get)


def limit_call(model: ModuleAdapter, size: int, backward: bool, best: tuple[int, Any], images: int) -> Callable[[], None]:
    """``images`` passes' worth of the model at its best batch size and layout: the limit, run for real."""
    batch, layout = best
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=layout)
    full, rest = divmod(images, batch)

    def run() -> None:
        for _ in range(full):
            batching._pass(model, x, backward)
        if rest:
            batching._pass(model, x[:rest], backward)

    return run


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(work: Workload, repeats: int) -> list[dict[str, Any]]:
    """Every method on one model, against its limit.

    The limit is not computed from a per-image time but run: the method's count of passes at the
    best batch size and layout, timed right beside the method in every round (the order rotating),
    and the ratio is the sum of limit times over the sum of method times. On a machine whose speed
    drifts (other processes, a shared host) both sides see the same conditions.
    """
    model, size, n = work.model, work.size, work.images
    samples = faces(n, size)
    targets = np.arange(n) % len(model.classes)
    probe_start = time.perf_counter()
    ours_fwd = batching.best_batch_size(model, (3, size, size), backward=False)
    ours_bwd = batching.best_batch_size(model, (3, size, size), backward=True)
    for backward in (False, True):
        batching.prefers_channels_last(model, (3, size, size), backward=backward)
    probe = time.perf_counter() - probe_start
    best = {False: best_pass(model, size, False), True: best_pass(model, size, True)}
    calls = _calls(work, samples, targets)
    windows = ((size - work.window + work.stride - 1) // work.stride + 1) ** 2
    methods = (
        ("Integrated Gradients", work.ig_steps * n, True, ours_bwd),
        ("Occlusion", windows * n, False, ours_fwd),
        ("LIME", work.lime_samples * n, False, ours_fwd),
    )
    totals: dict[str, float] = {}
    for round_ in range(repeats):
        for method, passes, backward, _ in methods:
            runs = [("limit", limit_call(model, size, backward, best[backward], passes)),
                    ("ours", calls[f"{method} ours"]), ("default", calls[f"{method} default"])]
            for which, call in runs[round_ % 3:] + runs[: round_ % 3]:
                totals[f"{method} {which}"] = totals.get(f"{method} {which}", 0.0) + timed(call)
    rows = []
    for method, passes, backward, ours_batch in methods:
        limit, ours, default = (totals[f"{method} {w}"] / repeats for w in ("limit", "ours", "default"))
        batch, layout = best[backward]
        rows.append({"model": work.name, "method": method, "passes": passes, "limit_s": limit, "ours_s": ours,
                     "ours": limit / ours, "default_s": default, "default": limit / default,
                     "batch": f"{ours_batch} ({batch}{', NHWC' if layout == torch.channels_last else ''})",
                     "probe_s": probe})
    return rows


def _calls(work: Workload, samples: list[Sample], targets: np.ndarray) -> dict[str, Callable[[], Any]]:
    """Each method as the built-in plugin runs it ("ours") and as a user would write it by hand."""
    from captum.attr import IntegratedGradients, Occlusion
    from lime.lime_image import LimeImageExplainer

    from xai_audit_captum.integrated_gradients import IntegratedGradientsExplainer
    from xai_audit_captum.occlusion import OcclusionExplainer
    from xai_audit_lime.explainer import LimeExplainer

    model, n = work.model, len(samples)
    images = torch.as_tensor(np.stack([s.image for s in samples]))
    ig = IntegratedGradientsExplainer(IntegratedGradientsExplainer.Options(steps=work.ig_steps))
    plain_ig = IntegratedGradients(model.forward)
    occ = OcclusionExplainer(OcclusionExplainer.Options(window=work.window, stride=work.stride))
    plain_occ = Occlusion(model.forward)
    lime = LimeExplainer(LimeExplainer.Options(samples=work.lime_samples))

    def ig_default() -> None:
        for i in range(n):
            plain_ig.attribute(images[i : i + 1], target=int(targets[i]), n_steps=work.ig_steps)

    def occlusion_default() -> None:
        with torch.no_grad():
            for i in range(n):
                plain_occ.attribute(images[i : i + 1], sliding_window_shapes=(3, work.window, work.window),
                                    strides=(3, work.stride, work.stride), target=int(targets[i]))

    def classify(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(batch.transpose(0, 3, 1, 2), dtype=torch.float32)
            return torch.softmax(model.forward(x), dim=1).numpy()

    def lime_default() -> None:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # lime's progress bar
            for s in samples:
                LimeImageExplainer(random_state=0).explain_instance(
                    s.image.transpose(1, 2, 0).astype(np.float64), classify, num_samples=work.lime_samples)

    return {
        "Integrated Gradients ours": lambda: ig.explain_maps(model, samples, targets, 0),
        "Integrated Gradients default": ig_default,
        "Occlusion ours": lambda: occ.explain_maps(model, samples, targets, 0),
        "Occlusion default": occlusion_default,
        "LIME ours": lambda: lime.explain_maps(model, samples, targets, 0),
        "LIME default": lime_default,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'model':<20} {'method':<21} {'passes':>6} {'limit s':>8} {'ours s':>8} {'ours/limit':>10} "
              f"{'default s':>9} {'default/limit':>13}  batch ours (best)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<20} {r['method']:<21} {r['passes']:>6} {r['limit_s']:>8.2f} {r['ours_s']:>8.2f} "
              f"{r['ours']:>10.2f} {r['default_s']:>9.2f} {r['default']:>13.2f}  {r['batch']}")
    print("\nratio = limit time ÷ measured time (mean over the rounds); limit = the method's model passes at the "
          "best batch size and layout, run beside it.\n'default' = captum / lime with their defaults, one image at "
          "a time (lime: default quickshift, batch_size 10, top_labels 5). batch: ours (the limit's).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet18,vit", help="comma-separated: demo, resnet18, vit")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds of measurement (limit and every call); the best time of each is kept")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    rows = []
    for work in workloads([m.strip() for m in args.models.split(",")]):
        start = time.perf_counter()
        rows += bench(work, args.repeats)
        print(f"  {work.name}: {time.perf_counter() - start:.0f} s (batch-size probe {rows[-1]['probe_s']:.1f} s, "
              "not counted)", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()

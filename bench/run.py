"""Every benchmark of xai-audit, and one table of every ratio against its limit.

    python -m bench                        # everything (sized for under 10 minutes on 2 quiet cores)
    python -m bench --quick                # smaller sizes, the demo CNN only (about 2 minutes)
    python -m bench --only attribution     # or topology, memory, ray, discovery, report, audit; comma-separated
    python -m bench --out results.md       # where the markdown copy goes (default: bench-results.md)

Five parts (docs/benchmarks.md explains every column):

* attribution: Integrated Gradients, Occlusion, LIME, Saliency and Grad-CAM on the
  demo CNN, a ResNet-18 and a ViT-base (random weights), each as limit time ÷
  measured time, beside the same ratio for the naive captum / lime call;
* topology: persistent homology time against N with its growth exponent, and the
  20,000 x 768 default pipeline against its one-minute limit;
* memory: peak RSS of a real audit against the number of images, with its slope;
* ray: the same CPU-bound audit on two Ray workers against one (speed-up, target 1.6);
* discovery: the false-alarm rate of null audits against 5 %, the extra model passes per image, and the
  time against N with its growth exponent, against a third of an audit without discovery (bench/discovery.py);
* robustness: the corruption battery against the corruption library plus its model passes at the best batch
  size, the adversarial search against its counted passes, and the full battery's wall time for 1,000 images
  of the demo CNN and (measured on a few, scaled) of a ResNet-18 at 224 px (bench/robustness.py);
* audit: a whole audit (LIME, Occlusion, Integrated Gradients, Grad-CAM, each with its trust step) on the demo
  CNN, a ResNet-18 and a grayscale mini-Xception: per step its time against its model passes, and each trust
  step's passes against its explainer's (bench/audit_cost.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Row, Section, machine, machine_line, summary_markdown, summary_text

PARTS = ("attribution", "topology", "memory", "ray", "discovery", "report", "robustness", "audit")


def parse_only(value: str) -> list[str]:
    chosen = [p.strip() for p in value.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PARTS)} (comma-separated), not {value!r}")
    return chosen


def markdown(info: dict[str, str], rows: list[Row], sections: list[Section], command: str, seconds: float) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# xai-audit benchmarks",
        "",
        f"`{command}`, {when}, {seconds:.0f} s in all.",
        "",
        "Machine: " + machine_line(info) + ".",
        "",
        "## Every ratio (limit ÷ measured; 1.00 = at the limit)",
        "",
        summary_markdown(rows),
        "",
    ]
    for section in sections:
        lines += [section.markdown(), ""]
    return "\n".join(lines)


def _run_part(part: str, args: argparse.Namespace) -> tuple[list[Row], list[Section]]:
    """One benchmark's summary rows and detail sections (its module imported only when it runs)."""
    if part == "attribution":
        from bench import attribution

        models = args.models or ("demo" if args.quick else ",".join(attribution.MODELS))
        repeats = args.repeats or (1 if args.quick else 2)
        return attribution.run([m.strip() for m in models.split(",")], args.quick, repeats)
    from importlib import import_module

    module = {"ray": "ray_scaling", "audit": "audit_cost"}.get(part, part)
    return import_module(f"bench.{module}").run(args.quick)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, the demo CNN only (about 2 minutes on 2 quiet cores)")
    parser.add_argument("--only", type=parse_only, default=list(PARTS),
                        help="attribution, topology, memory, ray and/or discovery, comma-separated (default: all)")
    parser.add_argument("--models", default=None,
                        help="attribution models, comma-separated: demo, resnet18, vit "
                             "(default: all; --quick: demo)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="attribution rounds, each timing the limit and every call (default 2; --quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("bench-results.md"),
                        help="markdown copy of the tables (default: ./bench-results.md)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print("machine: " + machine_line(info) + "\n", flush=True)
    start = time.perf_counter()
    rows: list[Row] = []
    sections: list[Section] = []
    for part in PARTS:
        if part in args.only:
            got = _run_part(part, args)
            rows += got[0]
            sections += got[1]
    seconds = time.perf_counter() - start
    try:
        info["load average at end"] = "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except OSError:
        pass

    print()
    for section in sections:
        print(section.text() + "\n")
    print("Every ratio (limit ÷ measured; 1.00 = at the limit; 'naive anchor': the same for the captum / lime call "
          "a user would write)\n")
    print(summary_text(rows))
    print("\nmachine: " + machine_line(info))
    met = [r for r in rows if r.met is not None]
    print(f"targets met: {sum(r.met for r in met)} of {len(met)}; {seconds:.0f} s in all")
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    args.out.write_text(markdown(info, rows, sections, command, seconds))
    print(f"markdown: {args.out}")


if __name__ == "__main__":
    main()

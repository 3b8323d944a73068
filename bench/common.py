"""What every benchmark shares: the ratio, the fits, the machine, and the one summary table.

Pure helpers (no timing, no torch at import) so tests can check them on made-up numbers.

Every ratio in the summary is *limit ÷ measured*, oriented so that larger is better and 1.00
means "exactly at the limit": an attribution method's limit time (its model passes alone at the
model's best batch size) over its measured time; the one-minute topology target over the measured
time; the peak memory at the fewest images over the peak at the most (1.00 = flat).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

#: every attribution method should reach this share of its limit
ATTRIBUTION_TARGET = 0.85
#: persistent homology of 20,000 x 768 activations, dimensions 0-2, default settings (seconds)
TOPOLOGY_LIMIT_S = 60.0
#: memory counts as flat when the peak at the most images is within this share of the peak at the fewest
FLAT_TARGET = 0.95


#: the start of a benchmark audit plan: the demo CNN with seeded random weights (no braces: safe in str.format)
DEMO_CNN_PLAN_HEAD = """\
seed: 0
model:
  adapter: torch
  module: xai_audit.demo.model:DemoCNN
  classes: [happy, sad, neutral, angry, disgust, fear, surprise]
"""


def ratio(limit_s: float, measured_s: float) -> float:
    """limit ÷ measured: 1.00 is as fast as the limit, 0.50 twice as slow; ``nan`` for no measurement."""
    if not measured_s or measured_s <= 0 or not np.isfinite(measured_s):
        return float("nan")
    return float(limit_s) / float(measured_s)


def timed_passes(one_pass: Callable[[], object], work_s: float) -> tuple[int, float]:
    """Call ``one_pass`` until ``work_s`` seconds and at least two passes are spent: (passes, seconds)."""
    passes, start = 0, time.perf_counter()
    while True:
        one_pass()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= work_s and passes >= 2:
            return passes, elapsed


def growth_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """The slope of log(seconds) against log(size): time grows as size^exponent."""
    if len(sizes) != len(seconds) or len(sizes) < 2:
        raise ValueError("a growth exponent needs at least two (size, seconds) pairs")
    return float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)[0])


def slope_per_1000(counts: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``counts``, per 1,000 counts (MiB per 1,000 images)."""
    if len(counts) != len(values) or len(counts) < 2:
        raise ValueError("a slope needs at least two points")
    return float(np.polyfit(np.asarray(counts, float), np.asarray(values, float), 1)[0]) * 1000.0


def flatness(counts: Sequence[float], peaks: Sequence[float]) -> float:
    """The peak at the fewest images ÷ the peak at the most (1.00: flat; 0.50: doubled)."""
    order = np.argsort(np.asarray(counts, float))
    return ratio(float(peaks[order[0]]), float(peaks[order[-1]]))


def fmt_ratio(value: float, bar: float | None = None) -> str:
    """Two decimals; three where two would round across ``bar`` (0.845 against 0.85 reads "0.845", not "0.85")."""
    if value is None or not np.isfinite(value):
        return "n/a"
    if bar is not None and (round(value, 2) >= bar) != (value >= bar):
        # truncated towards the verdict: 0.8496 against 0.85 reads "0.849"
        return f"{(np.floor if value < bar else np.ceil)(value * 1000) / 1000:.3f}"
    return f"{value:.2f}"


def fmt_seconds(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f} s" if value < 1 else f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


# --------------------------------------------------------------------------- machine


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()`` elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> dict[str, str]:
    """CPU model, cores this process may use, memory, torch version and threads, GPU if any."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    memory = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024**2:.0f} GiB"
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        load = "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": cpu_model(),
        "cores": f"{usable} usable ({os.cpu_count()} visible)",
        "memory": memory,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "load average at start (1/5/15 min)": load,
    }


def machine_line(info: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in info.items())


# --------------------------------------------------------------------------- the summary table


@dataclass
class Row:
    """One line of the summary: what was measured, on what, against which limit, and the verdict."""

    what: str
    on: str
    measured: str
    limit: str
    ratio: float | None
    anchor: float | None = None  # the naive captum / lime call's ratio (attribution only)
    target: str = ""
    met: bool | None = None  # None: no target (informational)
    bar: float | None = None  # the ratio the target asks for, where it is one number

    def cells(self) -> list[str]:
        verdict = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.what, self.on, self.measured, self.limit,
                "-" if self.ratio is None else fmt_ratio(self.ratio, self.bar),
                "-" if self.anchor is None else fmt_ratio(self.anchor), self.target or "-", verdict or "-"]


HEADERS = ["benchmark", "on", "measured", "limit", "ratio", "naive anchor", "target", "met"]


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain-text table with columns padded to their widest cell (``right``: right-aligned columns)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""

    def cell(c: object) -> str:
        return str(c).replace("|", "\\|")

    align = ["---:" if i in right else "---" for i in range(len(headers))]
    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


SUMMARY_RIGHT = (4, 5)


def summary_text(rows: Sequence[Row]) -> str:
    return text_table(HEADERS, [r.cells() for r in rows], right=SUMMARY_RIGHT)


def summary_markdown(rows: Sequence[Row]) -> str:
    return markdown_table(HEADERS, [r.cells() for r in rows], right=SUMMARY_RIGHT)


@dataclass
class Section:
    """A benchmark's detail: a title, a table (headers, rows) and notes, printed and written as markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    right: tuple[int, ...] = ()

    def text(self) -> str:
        return "\n".join([self.title, "", text_table(self.headers, self.rows, self.right), *[""] * bool(self.notes),
                          *self.notes])

    def markdown(self) -> str:
        return "\n".join([f"### {self.title}", "", markdown_table(self.headers, self.rows, self.right),
                          *[""] * bool(self.notes), *self.notes])

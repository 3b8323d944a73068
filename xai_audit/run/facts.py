"""How a run went, as opposed to what it found: results.json's ``run``.

Everything here depends on the machine, the load or the cache: when the run
started and finished, each step's wall time and whether the cache had it, the
batch sizes and memory layouts the explainers used, the host and its numeric
libraries. Nothing outside ``run`` may depend on any of it, so two runs of one
plan on the same inputs give a results.json identical outside ``run``, byte for
byte (``xai-audit verify --rerun`` checks exactly that).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunFacts:
    """The facts of one run, gathered as it goes: ``step`` times each step, ``summary`` writes ``run``."""

    started: str = field(default_factory=now)
    _clock: float = field(default_factory=time.perf_counter)
    #: by step ("baseline", "explainer <name>", "trust <name>", "hypothesis <name>"): seconds, cached, ...
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str, cache: Any = None) -> Iterator[dict[str, Any]]:
        """Time the step ``name``; it was ``cached`` when ``cache`` had a hit during it. Yields its entry,
        where the step may add more (an explainer's batch sizes)."""
        entry = self.steps.setdefault(name, {})
        hits = getattr(cache, "hits", 0)
        start = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] = round(time.perf_counter() - start, 3)
            if cache is not None:
                entry["cached"] = cache.hits > hits

    def summary(self, *, cache: Any, device: str, executor: Any = None, batching: list[dict[str, Any]] | None = None,
                executor_kind: str = "local") -> dict[str, Any]:
        """results.json's ``run``."""
        root = getattr(cache, "root", None)
        return {
            "started": self.started,
            "finished": now(),
            "seconds": round(time.perf_counter() - self._clock, 3),
            "machine": machine(device),
            "executor": {"kind": executor_kind, "workers": int(getattr(executor, "workers", 1) or 1)},
            "cache": {"dir": str(root) if root is not None else None, "hits": int(getattr(cache, "hits", 0)),
                      "misses": int(getattr(cache, "misses", 0))},
            "batching": batching or [],
            "steps": self.steps,
        }


def machine(device: str) -> dict[str, Any]:
    """The machine the run ran on, and ``numerics``: a hash of what decides the last bits of a float result
    (the CPU and its instruction sets, torch's build and threads, numpy's version, the device). Two runs
    with the same ``numerics`` compute the same bits; ``verify --rerun`` compares floats with a tolerance
    only where it differs."""
    import numpy as np
    import torch

    cpu, flags = _cpu()
    config = torch.__config__.show()
    facts = {
        "cpu": cpu,
        "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_config_sha256": hashlib.sha256(config.encode()).hexdigest()[:16],
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "device": str(device),
    }
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **facts,
        "numerics": hashlib.sha256(repr(sorted(facts.items())).encode()).hexdigest()[:16],
    }


def _cpu() -> tuple[str, str]:
    """(the CPU's model name, its flags), from /proc/cpuinfo where there is one."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                if name and flags:
                    break
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags

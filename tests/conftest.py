"""Shared fixtures: a tiny model written to disk, plans, and a registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from xai_audit.registry import make_plugin_manager

TINY_MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, n_classes=7):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(4)
            self.head = nn.Linear(4 * 16, n_classes)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    def make(n_classes=7):
        return Tiny(n_classes)
    """
)

EMOTIONS = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]


@pytest.fixture(scope="session")
def registry():
    return make_plugin_manager()


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """One cache folder for every demo run of the session: the demo model is trained once."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder with tiny_model.py and weights.pt (seeded random weights)."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    return tmp_path


def plan_text(explainers: str = "", hypotheses: str = "", extra: str = "", n: int = 28, steps: int = 4) -> str:
    classes = ", ".join(EMOTIONS)
    return (
        textwrap.dedent(
            f"""\
            seed: 3
            model:
              adapter: torch
              module: tiny_model.py:make
              weights: weights.pt
              classes: [{classes}]
            dataset:
              loader: synthetic-faces
              split: test
              n: {n}
              size: 32
            explain: {{samples: 4}}
            report: {{title: Test audit}}
            """
        )
        + (f"explainers:\n{explainers}" if explainers else "")
        + (f"hypotheses:\n{hypotheses}" if hypotheses else "")
        + extra
    )


@pytest.fixture
def write_plan(model_dir: Path):
    def write(text: str, name: str = "plan.yaml") -> Path:
        path = model_dir / name
        path.write_text(text)
        return path

    return write

"""The worked examples of docs/plugins.md (docs/examples/): installed like any third-party package, found through
their entry points, and run together in one audit.

Each folder under docs/examples/ is a pip-installable package. They are copied out of the tree (so a build leaves
nothing in docs/), installed with one ``pip install --target`` into a temporary folder put on ``sys.path``, and
found by ``make_plugin_manager()`` exactly as a user's installed plugins are.
"""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xai_audit.api import FIGURE_KINDS, check_figure
from xai_audit.registry import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"

#: folder -> (kind, plugin name, distribution, version, module, class)
PACKAGES = {
    "model-tiny-cnn": ("model-adapter", "tiny-cnn", "xai-audit-tiny-cnn", "0.1.0", "xai_audit_tiny_cnn", "TinyCNNPlugin"),
    "dataset-jsonl": ("dataset", "jsonl", "xai-audit-jsonl", "0.1.0", "xai_audit_jsonl", "JsonlPlugin"),
    "region-source-face-boxes": (
        "region-source", "face-boxes", "xai-audit-face-boxes", "0.1.0", "xai_audit_face_boxes", "FaceBoxesPlugin",
    ),
    "explainer-smoothgrad": (
        "explainer", "smoothgrad", "xai-audit-smoothgrad", "0.1.0", "xai_audit_smoothgrad", "SmoothGradExplainer",
    ),
    "hypothesis-blur": ("hypothesis", "blur", "xai-audit-blur", "0.1.0", "xai_audit_blur", "BlurHypothesis"),
    "hypothesis-flip": ("hypothesis", "flip", "xai-audit-flip", "0.2.0", "xai_audit_flip", "FlipHypothesis"),
    "discoverer-dark-corner": (
        "discoverer", "dark-corner", "xai-audit-dark-corner", "0.1.0", "xai_audit_dark_corner", "DarkCornerDiscoverer",
    ),
}
#: kinds the plan that runs every example together leaves out (a discoverer needs more than its 12 images: it is
#: run in its own audit below)
RUN_APART = {"discoverer"}
#: what an example may import besides the standard library and its own package
ALLOWED = {"xai_audit.api", "numpy", "torch", "scipy", "pydantic", "PIL"}
CLASSES = ["happy", "sad"]
N, SIZE = 12, 32


def _example_sources() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*.py") if not {"build", "__pycache__"} & set(p.parts)
                  and not any(part.endswith(".egg-info") for part in p.parts))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Every example package pip-installed (one pip run) into a folder on sys.path."""
    src = tmp_path_factory.mktemp("example-src")
    for folder in PACKAGES:
        shutil.copytree(EXAMPLES / folder, src / folder,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         *(str(src / folder) for folder in PACKAGES)],
        check=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for _, _, _, _, module, _ in PACKAGES.values():
        sys.modules.pop(module, None)


@pytest.fixture(scope="module")
def registry(installed):
    registry = make_plugin_manager()
    modules = [module for *_, module, _ in PACKAGES.values()]
    assert not [e for e in registry.load_errors if any(m in e for m in modules)]
    return registry


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """12 PNG faces of 32x32 listed in faces.jsonl (label, site), and tiny.pt: weights for the tiny-cnn example."""
    from PIL import Image

    root = tmp_path_factory.mktemp("example-data")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    lines = []
    for i in range(N):
        label = CLASSES[i % 2]
        img = np.empty((SIZE, SIZE, 3))
        img[:] = 0.2 + 0.6 * rng.random(3)  # background
        img[((yy - 16) / 13) ** 2 + ((xx - 16) / 11) ** 2 < 1] = 0.5 + 0.4 * rng.random(3)  # face
        img[11:14, 8:24] = 0.1  # eyes
        img[22:25, 11:21] = (0.8, 0.1, 0.1) if label == "happy" else (0.3, 0.2, 0.2)  # mouth
        Image.fromarray((img * 255).round().astype(np.uint8)).save(root / "img" / f"{i:02d}.png")
        lines.append(json.dumps({"path": f"img/{i:02d}.png", "label": label, "site": "AB"[i % 3 == 0]}))
    (root / "faces.jsonl").write_text("\n".join(lines) + "\n")
    return root


PLAN = """\
seed: 1
model: {adapter: tiny-cnn, classes: [happy, sad], weights: tiny.pt}
dataset: {loader: jsonl, path: faces.jsonl}
regions: {source: face-boxes}
explain: {samples: 4, trust: {steps: 4, sanity_samples: 2, sanity_stages: 1}}
explainers:
  - smoothgrad: {n: 4, batch_size: 8}
hypotheses:
  - blur: {sigma: 2.0, region: eyes, timeout: 120}
  - flip
report: {title: Every example together, formats: [json]}
"""


@pytest.fixture(scope="module")
def audit(installed, registry, data_dir):
    import torch

    from xai_audit.audit import run_audit
    from xai_audit.plan import load_plan
    from xai_audit.run.cache import Cache
    from xai_audit_tiny_cnn import tiny_cnn

    torch.save(tiny_cnn(len(CLASSES), seed=5).state_dict(), data_dir / "tiny.pt")
    (data_dir / "plan.yaml").write_text(PLAN)
    plan = load_plan(data_dir / "plan.yaml", registry)
    return run_audit(plan, registry, cache=Cache(None))


def test_every_example_folder_is_a_tested_package():
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir()}
    assert folders == set(PACKAGES)
    for folder, (_, name, dist, version, module, _) in PACKAGES.items():
        pyproject = (EXAMPLES / folder / "pyproject.toml").read_text()
        assert f'name = "{dist}"' in pyproject and f'version = "{version}"' in pyproject
        assert f'[project.entry-points.xai_audit]\n{name} = "{module}"' in pyproject


@pytest.mark.parametrize("path", _example_sources(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_examples_import_only_the_public_api(path):
    own = path.relative_to(EXAMPLES).parts[1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == own:
                continue
            assert name in ALLOWED or top in ALLOWED - {"xai_audit.api"}, f"{path.name} imports {name}"


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_each_example_is_found_through_its_entry_point_with_its_kind(registry, folder):
    kind, name, dist, version, module, cls = PACKAGES[folder]
    info = registry.get(kind, name)
    assert (info.kind, info.package, info.version) == (kind, dist, version)
    assert info.source == name  # registered under its entry point's name
    assert (info.cls.__module__, info.cls.__name__) == (module, cls)
    assert info.cls.kind == kind and info.cls.description


def test_xai_audit_plugins_lists_every_example(registry):
    from typer.testing import CliRunner

    from xai_audit.cli import app

    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if "│" in line]
    listed = {(cells[1].strip(), cells[2].strip()): cells[4].strip() for cells in rows if len(cells) > 4}
    for kind, name, dist, _, _, _ in PACKAGES.values():
        assert listed.get((kind, name)) == dist


def test_the_guide_shows_the_plan_this_module_runs():
    assert f"```yaml\n{PLAN}```" in (ROOT / "docs" / "plugins.md").read_text()


def test_one_plan_runs_every_example_together(audit):
    r = audit.results
    assert r["failures"] == []
    json.dumps(r, allow_nan=False)  # strict JSON, as results.json is written
    # the data set: every line, labels by name, the group column
    assert r["samples"] == {**r["samples"], "n": N, "labelled": True}
    assert r["per_sample"]["ids"] == [f"img/{i:02d}.png" for i in range(N)]
    assert r["per_sample"]["labels"] == [i % 2 for i in range(N)]
    assert r["classes"] == CLASSES
    provenance = r["provenance"]
    assert provenance["model"]["files"][0]["path"].endswith("tiny.pt") and provenance["model"]["files"][0]["sha256"]
    assert provenance["dataset"]["n_files"] == N + 1  # the .jsonl and every image
    used = {(p["kind"], p["name"]): (p["package"], p["version"]) for p in provenance["plugins"]}
    for kind, name, dist, version, _, _ in PACKAGES.values():
        if kind not in RUN_APART:
            assert used[(kind, name)] == (dist, version)


def test_the_explainer_maps_exist_and_the_host_judged_them(audit):
    entry = audit.results["explainers"]["smoothgrad"]
    assert entry["status"] == "ok" and entry["n_samples"] == 4 and len(entry["sample_ids"]) == 4
    assert entry["scalars"] == {"copies": 4.0, "noise": 0.15}
    trust = entry["trust"]
    assert trust["faithfulness"]["deletion_auc"] is not None and trust["sanity"]["verdict"]
    exp = audit.explanations["smoothgrad"]
    assert exp.maps.shape == (4, SIZE, SIZE) and np.isfinite(exp.maps).all() and (exp.maps >= 0).all()
    assert exp.maps.reshape(4, -1).max(axis=1).min() > 0
    # the explainer's own figure (the host appends its trust figures to the same list)
    (figure,) = [f for f in exp.figures if f.get("title") == "Mean SmoothGrad map"]
    assert figure["kind"] in FIGURE_KINDS
    check_figure(figure, exp.arrays)
    assert exp.arrays["mean_map"].shape == (1, SIZE, SIZE)


def test_the_hypotheses_have_a_verdict_and_a_corrected_p_value(audit):
    hypotheses = audit.results["hypotheses"]
    for name in ("blur", "flip"):
        entry = hypotheses[name]
        assert entry["status"] == "ok"
        assert entry["verdict"] in ("supported", "not supported", "inconclusive")
        assert 0 <= entry["p_value"] <= entry["p_value_adjusted"] <= 1
        assert entry["metric"] == "accuracy" and entry["n"] == N
    blur = hypotheses["blur"]
    assert blur["options"] == {**blur["options"], "sigma": 2.0, "region": "eyes"}  # timeout is the host's
    assert "timeout" not in blur["options"]
    assert blur["claim"] == "The model's accuracy drops when the images are blurred inside the eyes (Gaussian, sigma 2 px)."
    assert [t["name"] for t in blur["tests"]] == ["shortcut"]  # added by intervention_result
    assert blur["details"]["sigma"] == 2.0
    assert audit.results["plan"]["hypotheses"][0] == {"blur": {**blur["options"], "timeout": 120.0}}


def test_the_region_source_gave_the_masks(audit):
    from xai_audit_face_boxes import DEFAULT_BOXES, box_mask

    eyes = box_mask(DEFAULT_BOXES["eyes"], SIZE, SIZE)
    r = audit.results
    regions = r["provenance"]["regions"]
    assert regions["source"] == "face-boxes" and regions["fingerprint"]
    assert set(regions["description"]["regions"]) == {"eyes", "brows", "nose", "mouth", "hair", "skin", "background"}
    # the explainer's attribution by region needs masks, and this data set has none of its own
    mass = {row["class"]: row for row in r["explainers"]["smoothgrad"]["tables"]["region_mass"]}
    assert mass["pixel share"]["eyes"] == pytest.approx(eyes.mean(), abs=1e-3)
    # blur's intervention changed pixels inside the eyes' box, and nowhere else
    pairs = audit.hypotheses["blur"].arrays["examples"]  # clean, changed, clean, changed, ...
    changed = (np.abs(pairs[1::2] - pairs[0::2]).max(axis=1) > 1e-6).any(axis=0)
    assert changed.any() and not (changed & ~eyes).any()


#: folder -> the options the conformance suite checks it with ("{data}": the data folder)
CONFORMANCE_OPTIONS = {
    "model-tiny-cnn": {"classes": CLASSES},
    "dataset-jsonl": {"path": "{data}/faces.jsonl"},
    "region-source-face-boxes": {},
    "explainer-smoothgrad": {"n": 4},
    "hypothesis-blur": {"sigma": 2.0},
    "hypothesis-flip": {},
    "discoverer-dark-corner": {"side": 0.2},
}


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_each_example_passes_the_conformance_suite(installed, data_dir, folder):
    pytest.importorskip("xai_audit.testing")
    from xai_audit.testing import check_plugin

    *_, module, cls = PACKAGES[folder]
    plugin = getattr(importlib.import_module(module), cls)
    options = json.loads(json.dumps(CONFORMANCE_OPTIONS[folder]).replace("{data}", str(data_dir)))
    check_plugin(plugin, options)  # as docs/plugins.md tells authors: one line a plugin


DARK_MODEL = """\
import torch


class DarkCorner(torch.nn.Module):
    # 'sad' (1) when the top-left corner is dark, else 'happy' (0)
    def forward(self, x):
        corner = x[:, :, :5, :5].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(corner), 40 * (0.2 - corner)], dim=1)


def make():
    return DarkCorner()
"""


def test_the_discoverer_example_finds_a_dark_corner_that_the_host_confirms(installed, registry, tmp_path):
    from PIL import Image

    from xai_audit.audit import run_audit
    from xai_audit.plan import load_plan
    from xai_audit.run.cache import Cache

    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(80):
        img = 0.4 + 0.5 * rng.random((SIZE, SIZE, 3))
        if i % 2:
            img[:5, :5] = 0.05  # half the images carry the cue the model reads
        Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / "img" / f"{i:02d}.png")
        rows.append(f"img/{i:02d}.png,\n")
    (tmp_path / "meta.csv").write_text("path,label\n" + "".join(rows))  # no labels: agreement with the model
    (tmp_path / "dark.py").write_text(DARK_MODEL)
    (tmp_path / "plan.yaml").write_text(
        "seed: 3\n"
        "model: {adapter: torch, module: dark.py:make, classes: [happy, sad]}\n"
        f"dataset: {{loader: image-folder, path: img, metadata: meta.csv, size: {SIZE}}}\n"
        "discoverers:\n  - dark-corner: {side: 0.15}\n"
        "report: {formats: [json]}\n"
    )
    r = run_audit(load_plan(tmp_path / "plan.yaml", registry), registry, cache=Cache(None)).results
    assert r["failures"] == []
    (candidate,) = r["discovery"]["candidates"]
    assert candidate["discoverer"] == "dark-corner" and candidate["class"] == "sad"
    assert candidate["description"].startswith("100% of the") and "dark top-left corner" in candidate["description"]
    entry = r["hypotheses"][candidate["tested_as"]]
    assert entry["verdict"] == "supported" and entry["p_value_adjusted"] < 0.05 and entry["kind"] == "shortcut"
    assert any(f.get("discovered", {}).get("discoverer") == "dark-corner" for f in r["findings"])
    used = {(p["kind"], p["name"]): p["package"] for p in r["provenance"]["plugins"]}
    assert used[("discoverer", "dark-corner")] == "xai-audit-dark-corner"

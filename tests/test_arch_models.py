"""timm and torchvision architectures by name with a local weights file (issue 17, item 1).

``model: {adapter: torch, arch: timm:<name> | torchvision:<name>, weights: <file>}`` builds the architecture
with no pretrained weights (nothing is downloaded) and one output per class, then loads the plan's state
dict (.safetensors, .pt or .pth). Neither library is a requirement of xai-audit: the loading code path is
tested here with stand-in modules registered in ``sys.modules`` that mimic ``timm.create_model`` and
``torchvision.models.get_model``; the real libraries are tested where they are installed.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from xai_audit.cli import app

runner = CliRunner()
CLASSES = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]
DATA = "dataset: {loader: synthetic-faces, split: test, n: 8, size: 32, seed: 0}\n"


def _tiny(num_classes: int = 1000, width: int = 8) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(width, width, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, num_classes))


@pytest.fixture
def fake_timm(monkeypatch) -> list[dict[str, Any]]:
    """A stand-in ``timm`` whose create_model records how it was called (and refuses to download)."""
    calls: list[dict[str, Any]] = []

    def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        if pretrained:
            raise AssertionError("asked timm to download weights")
        if name != "tinynet":
            raise RuntimeError(f"Unknown model ({name})")
        return _tiny(**kwargs)

    module = types.ModuleType("timm")
    module.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


@pytest.fixture
def fake_torchvision(monkeypatch) -> list[dict[str, Any]]:
    """A stand-in ``torchvision`` with ``torchvision.models.get_model``."""
    calls: list[dict[str, Any]] = []

    def get_model(name: str, **kwargs: Any) -> torch.nn.Module:
        calls.append({"name": name, **kwargs})
        if kwargs.pop("weights", "missing") is not None:
            raise AssertionError("asked torchvision for pretrained weights")
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return _tiny(**kwargs)

    package, models = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    models.get_model = get_model  # type: ignore[attr-defined]
    package.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def _plan(folder: Path, arch: str, weights: str | None, extra: str = "") -> Path:
    lines = ["seed: 0", "model:", "  adapter: torch", f"  arch: '{arch}'"]
    lines += [f"  weights: {weights}"] if weights else []
    lines += [f"  classes: [{', '.join(CLASSES)}]", "  input: {size: 32}"]
    path = folder / "plan.yaml"
    path.write_text("\n".join(lines) + "\n" + DATA + extra)
    return path


def _load(plan: Path):
    from xai_audit.load.loading import load_model_and_data
    from xai_audit.plan import load_plan
    from xai_audit.registry import make_plugin_manager

    return load_model_and_data(load_plan(plan, make_plugin_manager()))


def _save(module: torch.nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(module.state_dict(), str(path))
    else:
        torch.save(module.state_dict(), path)


def _same_outputs(model: Any, reference: torch.nn.Module) -> None:
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.forward(images), reference.eval()(model.preprocess(images)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_architecture_loads_the_local_weights_and_downloads_nothing(fake_timm, tmp_path, suffix):
    torch.manual_seed(1)
    trained = _tiny(len(CLASSES))
    _save(trained, tmp_path / f"tiny{suffix}")
    model, _ = _load(_plan(tmp_path, "timm:tinynet", f"tiny{suffix}"))
    assert fake_timm == [{"name": "tinynet", "pretrained": False, "num_classes": 7}]
    _same_outputs(model, trained)  # the file's weights, not the fresh ones
    description = model.describe()
    assert description["source"] == "timm:tinynet" and description["architecture"] == "Sequential (timm:tinynet)"
    assert model.files() == [tmp_path / f"tiny{suffix}"] and model.default_layer == "2"


def test_a_torchvision_architecture_loads_the_local_weights_with_factory_kwargs(fake_torchvision, tmp_path):
    torch.manual_seed(2)
    trained = _tiny(len(CLASSES), width=4)
    _save(trained, tmp_path / "tv.pth")
    model, _ = _load(_plan_with_kwargs(tmp_path, "torchvision:tinynet", "tv.pth", "{width: 4}"))
    assert fake_torchvision == [{"name": "tinynet", "weights": None, "num_classes": 7, "width": 4}]
    _same_outputs(model, trained)


def _plan_with_kwargs(folder: Path, arch: str, weights: str, kwargs: str) -> Path:
    path = _plan(folder, arch, weights)
    path.write_text(path.read_text().replace("  adapter: torch\n", f"  adapter: torch\n  factory_kwargs: {kwargs}\n"))
    return path


def test_an_arch_audit_runs_end_to_end_with_a_layer_method(fake_timm, tmp_path):
    torch.manual_seed(3)
    _save(_tiny(len(CLASSES)), tmp_path / "tiny.safetensors")
    plan = _plan(tmp_path, "timm:tinynet", "tiny.safetensors",
                 "explain: {samples: 2, trust: {enabled: false}}\nexplainers:\n  - gradcam\n"
                 "  - occlusion: {window: 8, stride: 8}\nreport: {formats: [json]}\n")
    result = runner.invoke(app, ["run", str(plan), "--out", str(tmp_path / "out"), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failures"] == [] and {e["status"] for e in results["explainers"].values()} == {"ok"}
    assert results["provenance"]["model"]["description"]["source"] == "timm:tinynet"


@pytest.mark.parametrize("arch, package", [("timm:resnet18", "timm"), ("torchvision:resnet18", "torchvision")])
def test_a_missing_library_is_one_line_naming_it(monkeypatch, tmp_path, arch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as where it is not installed
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    (tmp_path / "w.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["validate", str(_plan(tmp_path, arch, "w.safetensors"))])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"needs the {package} package, which is not installed" in lines[0], lines
    assert f"pip install {package}" in lines[0]


def test_an_unknown_architecture_is_one_line(fake_timm, tmp_path):
    torch.manual_seed(0)
    _save(_tiny(len(CLASSES)), tmp_path / "tiny.pt")
    result = runner.invoke(app, ["validate", str(_plan(tmp_path, "timm:nosuchnet", "tiny.pt"))])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "timm could not build it: Unknown model (nosuchnet)" in lines[0], lines


def test_weights_that_do_not_fit_the_architecture_name_the_file(fake_timm, tmp_path):
    _save(_tiny(3), tmp_path / "three.safetensors")  # three classes, the plan names seven
    result = runner.invoke(app, ["validate", str(_plan(tmp_path, "timm:tinynet", "three.safetensors"))])
    assert result.exit_code == 2 and "three.safetensors: weights do not fit the model architecture" in result.stderr


@pytest.mark.parametrize("arch, weights, says", [
    ("timm:tinynet", None, "'arch' needs 'weights'"),
    ("keras:tinynet", "w.pt", "'arch' is 'timm:<name>' or 'torchvision:<name>'"),
    ("timm:", "w.pt", "'arch' is 'timm:<name>' or 'torchvision:<name>'"),
])
def test_the_plan_says_what_an_arch_needs(tmp_path, arch, weights, says):
    result = runner.invoke(app, ["validate", str(_plan(tmp_path, arch, weights))])
    assert result.exit_code == 2 and says in result.stderr, result.stderr


@pytest.mark.parametrize("package, arch", [("timm", "timm:resnet18"), ("torchvision", "torchvision:resnet18")])
def test_the_real_library_builds_resnet18_from_a_local_file(tmp_path, package, arch):
    """Where timm / torchvision are installed: ResNet-18 by name, its weights from a local file."""
    pytest.importorskip(package)
    from xai_audit_torch.adapter import build_arch

    torch.manual_seed(4)
    trained = build_arch(arch, len(CLASSES), {})
    _save(trained, tmp_path / f"{package}.safetensors")
    model, _ = _load(_plan(tmp_path, arch, f"{package}.safetensors"))
    _same_outputs(model, trained)
    assert model.default_layer == "layer4.1.conv2"

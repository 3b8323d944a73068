from __future__ import annotations

import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from xai_audit import hookimpl
from xai_audit.errors import PlanError, PluginLoadError, PluginNameClash
from xai_audit.registry import PluginLoadWarning, make_plugin_manager
from xai_audit.contract.types import HypothesisPlugin

ROOT = Path(__file__).resolve().parents[1]


def test_builtins_are_found_through_entry_points(registry):
    names = {(info.kind, info.name): info for info in registry.all()}
    assert ("model-adapter", "torch") in names
    assert ("dataset", "synthetic-faces") in names
    assert ("dataset", "image-folder") in names
    assert ("explainer", "integrated-gradients") in names
    assert ("hypothesis", "grayscale") in names
    assert ("hypothesis", "group-accuracy") in names
    info = names[("explainer", "integrated-gradients")]
    assert info.package == "xai-audit"
    assert info.version == metadata.version("xai-audit")
    sources = {ep.name for ep in metadata.entry_points(group="xai_audit")}
    assert {"torch", "datasets", "captum", "hypotheses"} <= sources


def test_plugins_from_entry_points_take_their_distribution_from_it_without_scanning_every_one(monkeypatch):
    """An entry point names its distribution, so the registry scans every installed distribution (about half a
    second) only for a class from a module no entry point loaded, and gives it the same answer."""
    scans = []
    scan = metadata.packages_distributions

    def counted():
        scans.append(1)
        return scan()

    monkeypatch.setattr(metadata, "packages_distributions", counted)
    registry = make_plugin_manager()
    assert scans == []
    assert {(info.package, info.version) for info in registry.all()} == {("xai-audit", metadata.version("xai-audit"))}

    class Elsewhere(HypothesisPlugin):
        name = "elsewhere"
        description = "a class from a module no entry point loaded"

    Elsewhere.__module__ = "pluggy._hooks"  # a module of an installed distribution
    registry = make_plugin_manager(extra_plugins=[_plugin_with(Elsewhere)])
    info = registry.get("hypothesis", "elsewhere")
    assert len(scans) == 1 and (info.package, info.version) == ("pluggy", metadata.version("pluggy"))


def _plugin_with(cls):
    module = types.ModuleType(f"fake_{cls.__name__}")

    @hookimpl
    def register_hypotheses():
        return [cls]

    module.register_hypotheses = register_hypotheses
    return module


def test_two_plugins_with_one_name_is_an_error_naming_both():
    class A(HypothesisPlugin):
        name = "same"

        def test(self, context):  # pragma: no cover
            raise NotImplementedError

    class B(A):
        pass

    with pytest.raises(PluginNameClash) as info:
        make_plugin_manager(entry_points=False, extra_plugins=[_plugin_with(A), _plugin_with(B)])
    message = str(info.value)
    assert "test_two_plugins_with_one_name_is_an_error_naming_both.<locals>.A" in message or ".A" in message
    assert "B" in message and '"same"' in message


def test_registering_a_non_plugin_class_is_a_clear_error():
    with pytest.raises(PluginLoadError, match="not a subclass of HypothesisPlugin"):
        make_plugin_manager(entry_points=False, extra_plugins=[_plugin_with(int)])


def test_misspelt_hook_fails_loudly():
    module = types.ModuleType("typo_plugin")

    @hookimpl
    def register_hypothesis():  # missing "es"
        return []

    module.register_hypothesis = register_hypothesis
    with pytest.raises(PluginLoadError, match="unknown hook"):
        make_plugin_manager(entry_points=False, extra_plugins=[module])


def _with_broken_entry_point(monkeypatch):
    real = metadata.entry_points
    broken = metadata.EntryPoint(name="broken", value="no_such_module_for_xai_audit", group="xai_audit")

    def fake(**kwargs):
        eps = list(real(**kwargs))
        return eps + [broken] if kwargs.get("group") == "xai_audit" else eps

    monkeypatch.setattr("xai_audit.registry.metadata.entry_points", fake)


def test_a_broken_third_party_plugin_is_skipped_with_a_warning(monkeypatch):
    _with_broken_entry_point(monkeypatch)
    with pytest.warns(PluginLoadWarning, match='Error importing plugin "broken"'):
        registry = make_plugin_manager()
    assert "grayscale" in registry.names("hypothesis")
    assert registry.load_errors and "no_such_module_for_xai_audit" in registry.load_errors[0]


def test_strict_plugins_makes_a_broken_plugin_fatal(monkeypatch):
    _with_broken_entry_point(monkeypatch)
    with pytest.raises(PluginLoadError, match='Error importing plugin "broken"'):
        make_plugin_manager(strict=True)


@pytest.fixture(scope="module")
def installed_example_plugin(tmp_path_factory):
    """pip-install docs/examples/hypothesis-flip into a folder and put it on sys.path."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT / "docs" / "examples" / "hypothesis-flip")],
        check=True,
    )
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("xai_audit_flip", None)


def test_third_party_plugin_package_is_discovered_and_runs(installed_example_plugin, write_plan):
    from conftest import plan_text
    from xai_audit.run.cache import Cache
    from xai_audit.plan import load_plan
    from xai_audit.audit import run_audit

    registry = make_plugin_manager()
    info = registry.get("hypothesis", "flip")
    assert (info.package, info.version) == ("xai-audit-flip", "0.2.0")
    plan = load_plan(write_plan(plan_text("", "  - flip: {axis: horizontal}\n")), registry)
    results = run_audit(plan, registry, cache=Cache(None)).results
    entry = results["hypotheses"]["flip"]
    assert entry["status"] == "ok", results["failures"]
    assert entry["metric"] == "accuracy" and 0 <= entry["after"] <= 1
    assert {"kind": "hypothesis", "name": "flip", "version": "0.2.0", "package": "xai-audit-flip"} in results[
        "provenance"
    ]["plugins"]


@pytest.mark.parametrize(
    "hook, kind",
    [
        ("register_model_adapters", "model-adapter"),
        ("register_datasets", "dataset"),
        ("register_explainers", "explainer"),
        ("register_hypotheses", "hypothesis"),
        ("register_region_sources", "region-source"),
    ],
)
def test_each_discovery_hook_returns_classes_of_its_kind(registry, hook, kind):
    returned = [cls for classes in getattr(registry.pm.hook, hook)() for cls in classes]
    assert returned and all(cls.kind == kind for cls in returned)
    assert sorted(cls.name for cls in returned) == registry.names(kind)


def test_plugin_template_dirs_override_builtin_sections(tmp_path):
    from xai_audit.report.render import make_environment

    (tmp_path / "sections").mkdir()
    (tmp_path / "sections" / "failures.html").write_text("<p>branded failures section</p>")
    module = types.ModuleType("template_plugin")
    module.register_template_dirs = hookimpl(lambda: [str(tmp_path)])
    registry = make_plugin_manager(entry_points=False, extra_plugins=[module])
    assert registry.template_dirs() == [tmp_path]
    env = make_environment(registry.template_dirs())
    assert env.get_template("sections/failures.html").render() == "<p>branded failures section</p>"
    assert "section" in env.get_template("sections/summary.html").filename  # others still built-in


def test_a_plan_naming_a_plugin_that_failed_to_import_says_so(monkeypatch):
    from xai_audit.plan import parse_plan

    _with_broken_entry_point(monkeypatch)
    with pytest.warns(PluginLoadWarning):
        registry = make_plugin_manager()
    text = "model: {adapter: torch, module: m.py:make, classes: [a, b]}\ndataset: {loader: digits}\nexplainers:\n  - smoothgrad\n"
    with pytest.raises(PlanError) as caught:
        parse_plan(text, registry, filename="p.yaml")
    (problem,) = caught.value.problems
    assert 'unknown explainer "smoothgrad"' in problem and "failed to import" in problem
    assert 'Error importing plugin "broken"' in problem


def test_a_plugin_may_not_declare_an_option_the_host_reads():
    from xai_audit.api import HypothesisPlugin, hookimpl
    from xai_audit.api import Options as BaseOptions

    class Timed(HypothesisPlugin):
        name = "timed"

        class Options(BaseOptions):
            timeout: float = 1.0

        def test(self, context):  # pragma: no cover - never built
            raise NotImplementedError

    module = types.ModuleType("timed")
    module.register_hypotheses = hookimpl(lambda: [Timed])
    with pytest.raises(PluginLoadError, match="options declare timeout: the host reads timeout"):
        make_plugin_manager(entry_points=False, extra_plugins=[module])

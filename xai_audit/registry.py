"""The plugin manager: built-ins and third-party plugins, found by entry point.

A manager is built per run (no global, no work at import). Entry points of the
group ``xai_audit`` are loaded one at a time, so one broken plugin is named in
a warning and the others still load; ``strict=True`` makes it fatal.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Iterable, Mapping

import pluggy

from xai_audit.contract import hookspecs
from xai_audit.contract.discovery import DiscovererPlugin
from xai_audit.contract.types import (
    HOST_OPTIONS,
    DatasetPlugin,
    ExplainerPlugin,
    HypothesisPlugin,
    ModelAdapterPlugin,
    Plugin,
    RegionSourcePlugin,
)
from xai_audit.errors import PluginLoadError, PluginNameClash, XaiAuditError

ENTRY_POINT_GROUP = "xai_audit"

#: plugin kind -> (discovery hook name, base class)
KINDS: dict[str, tuple[str, type[Plugin]]] = {
    "model-adapter": ("register_model_adapters", ModelAdapterPlugin),
    "dataset": ("register_datasets", DatasetPlugin),
    "explainer": ("register_explainers", ExplainerPlugin),
    "hypothesis": ("register_hypotheses", HypothesisPlugin),
    "region-source": ("register_region_sources", RegionSourcePlugin),
    "discoverer": ("register_discoverers", DiscovererPlugin),
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin class came from, for `xai-audit plugins` and provenance."""

    kind: str
    name: str
    cls: type[Plugin]
    source: str  # the registered plugin (entry point or module) name
    package: str  # the distribution that installed it, or "-" when none
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "package": self.package}


class PluginLoadWarning(UserWarning):
    """A third-party plugin failed to load and was skipped."""


class Registry:
    """Plugin classes indexed by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, load_errors: list[str] | None = None,
                 distributions: Mapping[str, tuple[str, str]] | None = None):
        self.pm = pm
        self.load_errors = list(load_errors or [])
        self._by_kind: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        # a plugin class's distribution and version, by its top-level module: known from the entry points that
        # loaded the plugins (make_plugin_manager); every installed distribution is scanned (~0.5 s) only for a
        # class from a module no entry point named, once per registry
        self._known: dict[str, tuple[str, str]] = dict(distributions or {})
        self._scanned: Mapping[str, list[str]] | None = None
        for kind, (hook_name, base) in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                classes = impl.function() or []
                source = pm.get_name(impl.plugin) or getattr(impl.plugin, "__name__", "?")
                for cls in classes:
                    self._add(kind, base, cls, source)

    def _add(self, kind: str, base: type[Plugin], cls: type[Plugin], source: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginLoadError(
                f'Plugin "{source}" registered {cls!r} as a {kind}, but it is not a subclass of {base.__name__}'
            )
        if not cls.name:
            raise PluginLoadError(f'Plugin "{source}" registered {cls.__name__} with no name')
        clash = sorted(set(getattr(cls.Options, "model_fields", {})) & set(HOST_OPTIONS.get(kind, ())))
        if clash:
            raise PluginLoadError(
                f'Plugin "{source}" registered {cls.__name__}, whose options declare {", ".join(clash)}: the host '
                f"reads {', '.join(HOST_OPTIONS[kind])} from a {kind} entry itself; rename the option"
            )
        package, version = self._distribution(cls)
        info = PluginInfo(kind, cls.name, cls, source, package, version)
        existing = self._by_kind[kind].get(cls.name)
        if existing is not None and existing.cls is not cls:
            raise PluginNameClash(
                f'two {kind} plugins are named "{cls.name}": {existing.cls.__module__}.{existing.cls.__name__} '
                f'(from "{existing.source}") and {cls.__module__}.{cls.__name__} (from "{source}")'
            )
        self._by_kind[kind][cls.name] = info

    def _distribution(self, cls: type) -> tuple[str, str]:
        top = cls.__module__.split(".")[0]
        if top not in self._known:
            if self._scanned is None:
                self._scanned = metadata.packages_distributions()
            self._known[top] = _distribution_of(cls, self._scanned)
        return self._known[top]

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def get(self, kind: str, name: str) -> PluginInfo:
        try:
            return self._by_kind[kind][name]
        except KeyError:
            raise XaiAuditError(f'no {kind} plugin named "{name}"{suggest(name, self.names(kind))}') from None

    def template_dirs(self) -> list[Path]:
        """Template folders that plugins ship (``register_template_dirs``), in registration order."""
        return [Path(d) for dirs in self.pm.hook.register_template_dirs() for d in (dirs or [])]

    def all(self) -> list[PluginInfo]:
        return [info for kind in KINDS for _, info in sorted(self._by_kind[kind].items())]


def suggest(name: str, choices: Iterable[str]) -> str:
    """'; did you mean "x"?' for the nearest valid name, or the valid names."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f'; did you mean "{close[0]}"?'
    if choices:
        return "; valid names: " + ", ".join(choices)
    return ""


def _distribution_of(cls: type, distributions: Mapping[str, list[str]] | None = None) -> tuple[str, str]:
    top = cls.__module__.split(".")[0]
    dists = (metadata.packages_distributions() if distributions is None else distributions).get(top, [])
    if dists:
        try:
            return dists[0], metadata.version(dists[0])
        except metadata.PackageNotFoundError:
            pass
    return "-", getattr(__import__(top), "__version__", "-")


def make_plugin_manager(
    *,
    entry_points: bool = True,
    extra_plugins: Iterable[ModuleType | object] = (),
    strict: bool = False,
) -> Registry:
    """Build a plugin manager and index its plugins.

    ``entry_points=False`` skips discovery (tests pass ``extra_plugins``).
    A plugin whose import fails is warned about and skipped, unless ``strict``.
    """
    pm = pluggy.PluginManager("xai_audit")
    pm.add_hookspecs(hookspecs)
    errors: list[str] = []
    distributions: dict[str, tuple[str, str]] = {}  # a loaded entry point's top-level module -> its distribution
    if entry_points:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                if ep.dist is not None:
                    distributions.setdefault(ep.module.split(".")[0], (ep.dist.name, ep.dist.version))
            except Exception as exc:  # one broken plugin must not stop the others
                message = f'Error importing plugin "{ep.name}" ({ep.value}): {type(exc).__name__}: {exc}'
                if strict:
                    raise PluginLoadError(message) from exc
                warnings.warn(message, PluginLoadWarning, stacklevel=2)
                errors.append(message)
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"a plugin implements an unknown hook: {exc}") from exc
    return Registry(pm, errors, distributions)

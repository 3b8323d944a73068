"""The plugin contract: every hook a plugin may implement.

Discovery hooks are called once per run, with no arguments, on every
registered plugin; each returns a list of classes (subclasses of the base
classes in :mod:`xai_audit.contract.types`), and the host indexes them by ``name``.
Two classes with one name for one kind is an error naming both.
"""

from __future__ import annotations

import pluggy

from xai_audit.contract.discovery import DiscovererPlugin
from xai_audit.contract.types import (
    DatasetPlugin,
    ExplainerPlugin,
    HypothesisPlugin,
    ModelAdapterPlugin,
    RegionSourcePlugin,
)

hookspec = pluggy.HookspecMarker("xai_audit")
#: Decorate a plugin module's hook functions with this (re-exported as ``xai_audit.api.hookimpl``).
hookimpl = pluggy.HookimplMarker("xai_audit")


@hookspec
def register_model_adapters() -> list[type[ModelAdapterPlugin]]:
    """Return model adapter classes.

    Called when the plugin manager is built. Each class turns the plan's
    ``model:`` options into a :class:`~xai_audit.contract.types.ModelAdapter`.
    """


@hookspec
def register_datasets() -> list[type[DatasetPlugin]]:
    """Return data set classes.

    Called when the plugin manager is built. Each class turns the plan's
    ``dataset:`` options into a :class:`~xai_audit.contract.types.Dataset`.
    """


@hookspec
def register_explainers() -> list[type[ExplainerPlugin]]:
    """Return explainer classes.

    Called when the plugin manager is built. Each class returns an
    :class:`~xai_audit.contract.types.Explanation` for a batch of samples.
    """


@hookspec
def register_hypotheses() -> list[type[HypothesisPlugin]]:
    """Return hypothesis classes.

    Called when the plugin manager is built. Each class returns a
    :class:`~xai_audit.contract.types.HypothesisResult`.
    """


@hookspec
def register_region_sources() -> list[type[RegionSourcePlugin]]:
    """Return region source classes.

    Called when the plugin manager is built. Each class turns the plan's
    ``regions:`` options into a :class:`~xai_audit.contract.types.RegionSource`, which
    gives region masks to samples whose data set has none (e.g. a
    face-parsing segmentation model).
    """


@hookspec
def register_discoverers() -> list[type[DiscovererPlugin]]:
    """Return discoverer classes.

    Called when the plugin manager is built. Each class looks at one half of the
    audited images (the discovery split) and proposes
    :class:`~xai_audit.contract.discovery.Candidate` cues nobody named, each with an
    intervention that removes it; the host confirms them on the other half.
    """


@hookspec
def register_template_dirs() -> list[str]:
    """Return folders of jinja2 templates this plugin ships.

    Searched after a user's ``--templates`` folder and before the built-in
    templates, so a plugin can add a section template or override one.
    """

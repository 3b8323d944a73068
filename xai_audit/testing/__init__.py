"""A conformance suite for xai-audit plugins, shipped with the host.

One line in a plugin's own tests runs every check for its kind (explainer,
hypothesis, dataset, model adapter, region source) on tiny models and images
built in code, with nothing downloaded::

    from xai_audit.testing import parametrize_with_checks

    @parametrize_with_checks([MyExplainer, (MyHypothesis, {"factor": 0.5})])
    def test_conformance(check):
        check()

or, outside pytest, ``check_plugin(MyExplainer, {"steps": 4})``, which raises one
AssertionError naming the plugin and each check it failed. ``checks_for`` yields
the ``(name, check)`` pairs themselves. The suite imports only ``xai_audit.api``,
torch, numpy, pytest (for ``parametrize_with_checks``) and transformers (for the
ViT, lazily). The pytest plugin ``xai_audit.testing.pytest_plugin`` offers the
fixtures ``tiny_cnn``, ``tiny_vit``, ``tiny_black_box`` and ``tiny_samples``.

Names are loaded on first use, so importing this package (as pytest does for the
plugin) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xai_audit.testing.checks import (
        MODELS,
        SEED,
        Check,
        SkipCheck,
        check_plugin,
        checks_for,
        parametrize_with_checks,
    )
    from xai_audit.testing.models import (
        CLASSES,
        TONES,
        BlackBoxAdapter,
        TinyDataset,
        TorchAdapter,
        black_box,
        tiny_cnn,
        tiny_cnn_module,
        tiny_samples,
        tiny_vit,
    )

_CHECKS = ("MODELS", "SEED", "Check", "SkipCheck", "check_plugin", "checks_for", "parametrize_with_checks")
_MODELS = ("CLASSES", "TONES", "BlackBoxAdapter", "TinyDataset", "TorchAdapter", "black_box", "tiny_cnn",
           "tiny_cnn_module", "tiny_samples", "tiny_vit")

__all__ = [
    "CLASSES",
    "MODELS",
    "SEED",
    "TONES",
    "BlackBoxAdapter",
    "Check",
    "SkipCheck",
    "TinyDataset",
    "TorchAdapter",
    "black_box",
    "check_plugin",
    "checks_for",
    "parametrize_with_checks",
    "tiny_cnn",
    "tiny_cnn_module",
    "tiny_samples",
    "tiny_vit",
]


def __getattr__(name: str) -> Any:
    if name in _CHECKS:
        from xai_audit.testing import checks

        return getattr(checks, name)
    if name in _MODELS:
        from xai_audit.testing import models

        return getattr(models, name)
    raise AttributeError(f"module 'xai_audit.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

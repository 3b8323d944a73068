"""pytest plugin of xai-audit (entry point ``pytest11``): fixtures with the conformance suite's tiny inputs.

* ``tiny_cnn``: a tiny CNN behind the ModelAdapter interface (seeded random weights).
* ``tiny_vit``: a tiny transformers ViT, skipped when transformers is missing.
* ``tiny_black_box``: the tiny CNN as a black box (``module`` None), like an ONNX model.
* ``tiny_samples``: three drawn 32x32 faces with labels, a ``skin_tone`` group and face region masks.

Nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def tiny_cnn() -> Any:
    """A tiny CNN (seeded random weights, 7 classes) behind the ModelAdapter interface."""
    from xai_audit.testing.models import tiny_cnn as build

    return build()


@pytest.fixture
def tiny_vit() -> Any:
    """A tiny transformers ViT (seeded random weights, 7 classes); skipped without transformers."""
    pytest.importorskip("transformers", reason="the tiny ViT needs transformers")
    from xai_audit.testing.models import tiny_vit as build

    return build()


@pytest.fixture
def tiny_black_box() -> Any:
    """The tiny CNN as a black box: module None, no layers, no gradients."""
    from xai_audit.testing.models import black_box, tiny_cnn

    return black_box(tiny_cnn())


@pytest.fixture
def tiny_samples() -> list[Any]:
    """Three drawn 32x32 faces: labels, a skin_tone group, a bool mask per face region."""
    from xai_audit.testing.models import tiny_samples as build

    return build(3, 32)

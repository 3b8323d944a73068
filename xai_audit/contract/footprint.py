"""How much memory one image's pass takes, measured without hooks.

The batch probe (:mod:`xai_audit.contract.batching`) sizes a pass from the outputs of the model's
sub-modules, read with forward hooks. A compiled model (TorchScript, a torch.export program) has no
sub-modules that can be hooked: there the outputs of every tensor operation of one pass are read
instead, with a torch dispatch mode, which sees the operations of any model that runs on torch.
"""

from __future__ import annotations

from typing import Any


def op_output_sizes(model: Any, image_shape: tuple[int, ...]) -> list[int]:
    """Bytes of every tensor that one display image's forward pass through ``model`` creates (empty when
    the operations cannot be observed)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    sizes: list[int] = []

    class Outputs(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel() * t.element_size())
            return out

    x = torch.rand((1, *image_shape), device=model.device)
    try:
        with torch.no_grad(), Outputs():
            model.forward(x)
    except Exception:
        return []
    return sizes

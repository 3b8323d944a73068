"""How many images an explainer should put through the model in one pass.

An explanation costs a known number of model passes (DESIGN.md, "Performance");
how long those passes take depends on how they are batched. One image at a time
leaves most of a CPU's vector units idle on a small CNN, and captum's default
of all integration steps in one batch needs gigabytes for one ViT-base image.
:func:`best_batch_size` measures the model's throughput at a few batch sizes,
once per architecture, image shape and mode in a process, and returns the
largest batch within 10 % of the best, capped by free memory.

Only torch is used here: the host imports no explainer library.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

log = logging.getLogger("xai_audit")

#: a batch within this fraction of the best throughput counts as "best"
_NEAR_BEST = 0.9
#: the probe always tries batches up to this size (unless a pass is slow or memory is short)
_MIN_PROBE = 32
#: stop growing the probe batch once one pass takes this long (per-pass overhead is amortised by then)
_SLOW_PASS_S = 0.6
#: seconds a probe may take before it settles on the best batch seen so far
_PROBE_BUDGET_S = 3.0
#: activation bytes per pass below which batching always pays (the probe starts there)
_FLOOR_BYTES = 48 << 20
#: share of free memory an explainer may plan to use
_MEMORY_SHARE = 0.5
#: environment override of the probed batch size (an int), for reproducing a run exactly
ENV_BATCH = "XAI_AUDIT_BATCH_SIZE"

_probed: dict[tuple, int] = {}
_layouts: dict[tuple, bool] = {}
#: channels-last must beat the standard layout by this much to be used
_LAYOUT_GAIN = 1.05


def free_memory_bytes(device: str) -> int:
    """Bytes the process can still allocate on ``device`` (GPU: free + cached by torch)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        free, _total = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + max(0, cached))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def bytes_per_sample(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> int:
    """Estimated peak memory of one image in one pass: the sum (backward) or the
    largest (forward only) of every sub-module's output, with room for gradients."""
    import torch

    sizes: list[int] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    module = model.module
    handles = [m.register_forward_hook(hook) for m in module.modules()] if module is not None else []
    try:
        x = torch.rand((1, *image_shape), device=model.device)
        with torch.no_grad():
            model.forward(x)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0
    if not sizes:
        return max(1, 16 * int(np.prod(image_shape)) * 4)
    if backward:
        # autograd keeps most outputs for the backward pass, plus their gradients
        return int(3 * sum(sizes)) + params // 64
    return int(4 * max(sizes))


def memory_cap(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> int:
    """The largest batch that fits in half of the free memory (at least 1)."""
    per_sample = bytes_per_sample(model, image_shape, backward=backward)
    return max(1, int(_MEMORY_SHARE * free_memory_bytes(model.device) // max(1, per_sample)))


def best_batch_size(model: Any, image_shape: tuple[int, ...], *, backward: bool, max_batch: int = 256) -> int:
    """The largest probed batch size within 10 % of the model's best measured throughput.

    ``backward`` measures forward + backward to the input (Integrated
    Gradients, saliency); otherwise forward only (occlusion, LIME). Measured
    once per architecture, image shape, mode and device in this process.
    """
    override = os.environ.get(ENV_BATCH)
    if override:
        return max(1, int(override))
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device), max_batch)
    if key not in _probed:
        per_sample = bytes_per_sample(model, image_shape, backward=True)
        cap = min(max_batch, max(1, int(_MEMORY_SHARE * free_memory_bytes(model.device) // per_sample)))
        if not backward:
            cap = min(max_batch, memory_cap(model, image_shape, backward=False))
        # below ~16 MB of activations per pass, per-pass overhead dominates: start probing there
        floor = 1 << max(0, int(np.log2(max(1.0, _FLOOR_BYTES / max(1, per_sample)))))
        _probed[key] = _probe(model, tuple(image_shape), backward, cap, start=min(floor, cap))
        log.debug("best batch size %d (%s, %s)", _probed[key], "backward" if backward else "forward", image_shape)
    return _probed[key]


def prefers_channels_last(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> bool:
    """Whether the model runs faster on channels-last images (N, C, H, W stored as N, H, W, C).

    Convolutions on a CPU often do (oneDNN's native layout); a transformer barely
    notices. Timed at the best batch size, once per architecture, shape and mode.
    """
    if len(image_shape) != 3 or os.environ.get(ENV_BATCH):
        return False
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device))
    if key not in _layouts:
        import torch

        batch = best_batch_size(model, image_shape, backward=backward)
        x = torch.rand((batch, *image_shape), device=model.device)
        timings = {}
        for name, layout in (("standard", torch.contiguous_format), ("channels_last", torch.channels_last)):
            xl = x.contiguous(memory_format=layout)
            _timed(model, xl, backward)  # warm-up
            timings[name] = min(_timed(model, xl, backward) for _ in range(2))
        _layouts[key] = timings["standard"] > _LAYOUT_GAIN * timings["channels_last"]
    return _layouts[key]


def forward_in_best_layout(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> Any:
    """``model.forward``, with its input stored channels-last first when that is faster.

    For attribution libraries that build the model's input themselves (captum's
    scaled or occluded copies): the copy is differentiable and costs far less
    than the pass it speeds up.
    """
    import torch

    if not prefers_channels_last(model, image_shape, backward=backward):
        return model.forward

    def forward(images: Any) -> Any:
        if images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return model.forward(images)

    return forward


def _probe(model: Any, image_shape: tuple[int, ...], backward: bool, cap: int, start: int = 1) -> int:
    """Double the batch from 1 until a pass is slow, memory runs out, two doublings
    gain less than 5 %, or the probe has used its time budget."""
    import torch

    throughput: dict[int, float] = {}
    best, stale, size = 0.0, 0, max(1, start)
    started = time.perf_counter()
    while size <= cap:
        x = torch.rand((size, *image_shape), device=model.device)
        first = _timed(model, x, backward)  # includes warm-up: allocator, kernels
        seconds = min(_timed(model, x, backward) for _ in range(2 if first < 0.05 else 1))
        throughput[size] = size / max(seconds, 1e-9)
        if throughput[size] > 1.05 * best:
            best, stale = throughput[size], 0
        else:
            stale += 1
        if seconds > _SLOW_PASS_S or time.perf_counter() - started > _PROBE_BUDGET_S:
            break
        if size >= _MIN_PROBE and stale >= 2:
            break
        size *= 2
    # timings on a busy machine are noisy, and a larger batch is rarely slower per image:
    # take the largest batch near the best throughput
    best = max(throughput.values())
    return max(b for b, t in throughput.items() if t >= _NEAR_BEST * best)


def _timed(model: Any, x: Any, backward: bool) -> float:
    import torch

    if str(model.device).startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    _pass(model, x, backward)
    if str(model.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _pass(model: Any, x: Any, backward: bool) -> None:
    import torch

    if backward:
        x = x.detach().requires_grad_(True)
        out = model.forward(x)
        torch.autograd.grad(out[:, 0].sum(), x)
    else:
        with torch.no_grad():
            model.forward(x)


def _architecture_key(model: Any) -> tuple:
    module = model.module
    if module is None:
        return (type(model).__name__, id(model))
    shapes = tuple(tuple(p.shape) for p in module.parameters())
    return (type(model).__name__, type(module).__name__, hash(shapes))


def chunks(n: int, size: int) -> list[slice]:
    """``range(n)`` cut into consecutive slices of at most ``size``."""
    size = max(1, int(size))
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]

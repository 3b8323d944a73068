"""How many images an explainer should put through the model in one pass.

An explanation costs a known number of model passes (DESIGN.md, "Performance");
how long those passes take depends on how they are batched. One image at a time
leaves most of a CPU's vector units idle on a small CNN, and captum's default
of all integration steps in one batch needs gigabytes for one ViT-base image.
:func:`best_batch_size` measures the model's throughput at a few batch sizes,
once per architecture, image shape and mode in a process, and returns the
largest batch within 3 % of the best, capped by free memory.

Only torch is used here: the host imports no explainer library.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from xai_audit.contract.footprint import op_output_sizes

log = logging.getLogger("xai_audit")

#: a batch within this fraction of the best throughput counts as "best" (not much lower: past its
#: best batch a small CNN on a CPU ran a quarter slower per image, as its activations left the cache)
_NEAR_BEST = 0.97
#: the probe always tries batches up to this size (unless a pass is slow or memory is short)
_MIN_PROBE = 32
#: past this many seconds a pass, the probe stops at the first doubling that gains under 5 %
_SLOW_PASS_S = 0.6
#: timed passes at each batch size and layout after a warm-up one (the fastest counts)
_PROBE_TIMINGS = 3
#: the probe's front-runners timed again side by side, how many rounds, and the back-to-back passes
#: per candidate and round: at least two, then more until this many seconds or passes
_CONFIRM_CANDIDATES = 4
_CONFIRM_ROUNDS = 3
_CONFIRM_WORK_S = 0.05
_CONFIRM_MAX_PASSES = 4
#: seconds of passes a probe may time before it settles on the best batch seen so far
_PROBE_BUDGET_S = 6.0
#: about how long a probe may spend on its first, untimed forward pass at a large batch
_WARM_PASS_S = 0.15
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
    hookable = module is not None and getattr(model, "provides_hooks", True)
    handles = []
    try:
        for m in module.modules() if hookable else ():
            handles.append(m.register_forward_hook(hook))
    except RuntimeError:  # a ScriptModule behind an adapter that does not say its layers cannot be hooked
        hookable = False
    try:
        x = torch.rand((1, *image_shape), device=model.device)
        with torch.no_grad():
            model.forward(x)
    finally:
        for h in handles:
            h.remove()
    if module is not None and not hookable:  # TorchScript, torch.export: every operation's output instead
        sizes = op_output_sizes(model, image_shape)
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
    """The largest probed batch size within 3 % of the model's best measured throughput
    (in the memory layout the probe found faster, :func:`prefers_channels_last`).

    ``backward`` measures forward + backward to the input (Integrated
    Gradients, saliency); otherwise forward only (occlusion, LIME). Measured
    once per architecture, image shape, mode and device in this process.
    """
    override = os.environ.get(ENV_BATCH)
    if override:
        return max(1, int(override))
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device))
    if (*key, max_batch) not in _probed:
        per_sample = bytes_per_sample(model, image_shape, backward=True)
        cap = min(max_batch, max(1, int(_MEMORY_SHARE * free_memory_bytes(model.device) // per_sample)))
        if not backward:
            cap = min(max_batch, memory_cap(model, image_shape, backward=False))
        # below ~16 MB of activations per pass, per-pass overhead dominates: start probing there
        floor = 1 << max(0, int(np.log2(max(1.0, _FLOOR_BYTES / max(1, per_sample)))))
        batch, channels_last = _probe(model, tuple(image_shape), backward, cap, start=min(floor, cap))
        _probed[(*key, max_batch)] = batch
        _layouts.setdefault(key, channels_last)
        log.debug("best batch size %d%s (%s, %s)", batch, " channels-last" if channels_last else "",
                  "backward" if backward else "forward", image_shape)
    return _probed[(*key, max_batch)]


def prefers_channels_last(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> bool:
    """Whether the model runs faster on channels-last images (N, C, H, W stored as N, H, W, C).

    Convolutions on a CPU often do (oneDNN's native layout); a transformer barely
    notices. Decided by the batch-size probe, which times both layouts at every
    batch size: the best batch can differ between them (a small CNN on a CPU ran
    fastest at 32 images channels-last, and a third slower at 64).
    """
    if len(image_shape) != 3 or os.environ.get(ENV_BATCH):
        return False
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device))
    if key not in _layouts:
        best_batch_size(model, image_shape, backward=backward)
    return _layouts.get(key, False)


def in_best_layout(model: Any, images: Any, *, backward: bool) -> Any:
    """``images`` (N, C, H, W) stored channels-last when the model runs faster that way.

    Attribution libraries build their perturbed or scaled copies with elementwise operations,
    which keep the input's layout: converting once here spares a copy of every batch later.
    """
    import torch

    if images.ndim == 4 and prefers_channels_last(model, tuple(images.shape[1:]), backward=backward):
        return images.contiguous(memory_format=torch.channels_last)
    return images


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


def _probe(model: Any, image_shape: tuple[int, ...], backward: bool, cap: int, start: int = 1) -> tuple[int, bool]:
    """(batch size, channels-last?): double the batch from ``start``, timing each size in the standard
    and (for images) the channels-last layout, until memory runs out, the next size would overrun the
    probe's time budget, a slow pass stops paying for its doubling, or (past ``_MIN_PROBE``) two
    doublings gain less than 5 %. Channels-last is chosen when its best throughput beats the
    standard layout's by ``_LAYOUT_GAIN``; the batch is the largest near that layout's best.

    A slow pass alone does not stop the probe: a ViT-base takes over half a second for one image's
    forward and backward on two CPU cores, yet runs a third faster per image two at a time.
    """
    import torch

    layouts = [torch.contiguous_format] + ([torch.channels_last] if len(image_shape) == 3 else [])
    throughput: dict[tuple[int, Any], float] = {}
    best, stale, size, spent = 0.0, 0, max(1, start), 0.0
    _warm_allocator(model, image_shape, size, cap)
    while size <= cap:
        x = torch.rand((size, *image_shape), device=model.device)
        size_best, slowest, cost = 0.0, 0.0, 0.0
        for layout in layouts:
            xl = x.contiguous(memory_format=layout)
            first = _timed(model, xl, backward)  # includes warm-up: allocator, kernels
            # the same number of timings at every size: the fastest of many short passes would
            # flatter small batches against the fastest of a few long ones
            timings = [_timed(model, xl, backward) for _ in range(_PROBE_TIMINGS if first < _SLOW_PASS_S else 1)]
            seconds = min(timings)
            throughput[(size, layout)] = size / max(seconds, 1e-9)
            size_best, slowest = max(size_best, throughput[(size, layout)]), max(slowest, seconds)
            cost += first + seconds
            spent += first + sum(timings)
        if size_best > 1.05 * best:
            best, stale = size_best, 0
        else:
            stale += 1
        if slowest > _SLOW_PASS_S and stale:
            break  # one pass is long enough to amortise its overhead, and doubling stopped paying
        if size >= _MIN_PROBE and stale >= 2:
            break
        # the next size costs about twice this one, a warm-up pass and a timed one per layout
        if spent + 2 * cost > _PROBE_BUDGET_S and size >= 2:
            break
        size *= 2

    _confirm(model, image_shape, backward, throughput)

    def best_in(layout: Any) -> float:
        return max(t for (_, kind), t in throughput.items() if kind == layout)

    chosen = torch.contiguous_format
    if len(layouts) > 1 and best_in(torch.channels_last) > _LAYOUT_GAIN * best_in(torch.contiguous_format):
        chosen = torch.channels_last
    # timings on a busy machine are noisy: of batches about as fast as the best, the largest
    top = best_in(chosen)
    batch = max(b for (b, kind), t in throughput.items() if kind == chosen and t >= _NEAR_BEST * top)
    return batch, chosen == torch.channels_last


def _warm_allocator(model: Any, image_shape: tuple[int, ...], size: int, cap: int) -> None:
    """One untimed forward pass at as large a batch as about ``_WARM_PASS_S`` allows.

    In a fresh process glibc's malloc maps and unmaps every large activation buffer (the kernel
    zero-fills each one again) until a large block has been freed: until then the demo CNN ran at half
    its speed, and a probe timed in that state picked 8 images a pass where 16 to 32 were best.
    """
    import torch

    first = _timed(model, torch.rand((size, *image_shape), device=model.device), False)
    warm = min(cap, int(size * _WARM_PASS_S / max(first, 1e-6)))
    if warm > size:
        _timed(model, torch.rand((warm, *image_shape), device=model.device), False)


def _confirm(model: Any, image_shape: tuple[int, ...], backward: bool, throughput: dict[tuple[int, Any], float]) -> None:
    """Time the probe's leading candidates again, interleaved, and keep those timings.

    The doubling sweep times each size once, early in the process and at one moment: a pass slowed by
    another process, or run before the kernels for its shape were warm, ranks a batch wrongly. Timing
    the front-runners side by side in a few rounds gives each the same conditions. Here the mean time
    of back-to-back passes counts, not the fastest pass: a batch whose passes are sometimes slow (its
    buffers mapped afresh, its activations spilling the cache) costs an explainer its mean time, and
    the fastest of a few passes had rated 64 images a pass of the demo CNN with 32, where an explainer
    ran a tenth slower at 64.
    """
    import torch

    ranked = sorted(throughput, key=throughput.get, reverse=True)[:_CONFIRM_CANDIDATES]
    if len(ranked) < 2 or any(size / throughput[(size, layout)] > _SLOW_PASS_S for size, layout in ranked):
        return
    inputs = {key: torch.rand((key[0], *image_shape), device=model.device).contiguous(memory_format=key[1])
              for key in ranked}
    seconds = {key: 0.0 for key in ranked}
    passes = {key: 0 for key in ranked}
    for _ in range(_CONFIRM_ROUNDS):
        for key in ranked:
            spent, count = 0.0, 0
            while count < 2 or (spent < _CONFIRM_WORK_S and count < _CONFIRM_MAX_PASSES):
                spent += _timed(model, inputs[key], backward)
                count += 1
            seconds[key] += spent
            passes[key] += count
    for key in ranked:
        throughput[key] = key[0] * passes[key] / max(seconds[key], 1e-9)


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

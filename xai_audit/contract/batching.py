"""How many images an explainer should put through the model in one pass.

An explanation costs a known number of model passes (DESIGN.md, "Performance");
how long those passes take depends on how they are batched. One image at a time
leaves most of a CPU's vector units idle on a small CNN, and captum's default
of all integration steps in one batch needs gigabytes for one ViT-base image.
:func:`best_batch_size` measures the model's throughput at a few batch sizes,
once per architecture, image shape and mode in a process, and returns the
largest batch within 3 % of the best, capped by free memory.

A timing must never change a number (an audit run twice gives the same results,
byte for byte). So the batch only groups passes: each image's output comes out
bit for bit the same in any pass of two or more images (the probe checks this
for the model; where it fails, :func:`fixed_batch_size` decides the batch from
the model's activation memory instead), and :func:`chunks` never leaves one
image alone in a pass (a pass of one takes other kernels). The memory layout,
which does change the last bits of a convolution, follows a rule
(:func:`prefers_channels_last`), not a timing. What was decided is kept for the
report's ``run`` section (:func:`batch_decisions`).

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
#: environment override of the probed batch size: ``32`` for every pass, or ``forward=32,backward=16``
ENV_BATCH = "XAI_AUDIT_BATCH_SIZE"

_probed: dict[tuple, int] = {}
#: what :func:`best_batch_size` decided in this process, by architecture, shape, mode, device and cap
_decisions: dict[tuple, dict[str, Any]] = {}
#: the decisions asked for since :func:`track_decisions` (the current audit's)
_used: set[tuple] = set()
#: the memory layout :func:`prefers_channels_last` decided, by architecture, shape, mode and device
_decided_layout: dict[tuple, bool] = {}
#: channels-last must beat the standard layout by this much to be used (the probe's own comparison)
_LAYOUT_GAIN = 1.05
#: convolutions a model needs for channels-last images (a ViT's one patch embedding barely notices)
_CHANNELS_LAST_CONVS = 2


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


def total_memory_bytes(device: str) -> int:
    """Bytes of memory ``device`` has in all (GPU: the card's; CPU: the machine's): fixed for a machine."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        return int(torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index).total_memory)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
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
    """How many images (or scaled, occluded, perturbed copies) to put through the model in one pass: the
    largest probed batch within 3 % of the model's best measured throughput, capped by free memory, in
    the layout :func:`prefers_channels_last` fixes.

    ``backward`` measures forward + backward to the input (Integrated Gradients, saliency); otherwise
    forward only (occlusion, LIME). Measured once per architecture, image shape, mode and device in this
    process. The batch groups passes for speed and changes no number: the probe checks that the model
    gives each image the same outputs (input gradients for ``backward``), bit for bit, in passes of 2, 3
    and the chosen size, and where it does not, :func:`fixed_batch_size` is used instead. Never below 2
    when memory allows (a pass of one image takes other kernels). ``XAI_AUDIT_BATCH_SIZE`` overrides it.
    """
    forced = _forced_batch(backward)
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device))
    if forced is not None:
        _decide(key, max_batch, forced, "environment", None, prefers_channels_last(model, image_shape, backward=backward))
        return forced
    if (*key, max_batch) not in _probed:
        per_sample = bytes_per_sample(model, image_shape, backward=True)
        cap = min(max_batch, max(1, int(_MEMORY_SHARE * free_memory_bytes(model.device) // per_sample)))
        if not backward:
            cap = min(max_batch, memory_cap(model, image_shape, backward=False))
        # below ~16 MB of activations per pass, per-pass overhead dominates: start probing there
        floor = 1 << max(0, int(np.log2(max(1.0, _FLOOR_BYTES / max(1, per_sample)))))
        channels_last = prefers_channels_last(model, image_shape, backward=backward)
        layouts = [_layout(channels_last)]
        batch, _ = _probe(model, tuple(image_shape), backward, cap, start=min(floor, cap), layouts=layouts)
        batch = max(batch, min(2, cap))
        invariant = batch_invariant(model, tuple(image_shape), backward, batch, channels_last)
        source = "probe"
        if not invariant:
            batch, source = fixed_batch_size(model, image_shape, backward=backward, max_batch=max_batch), "fixed"
        _probed[(*key, max_batch)] = batch
        _decide(key, max_batch, batch, source, invariant, channels_last)
        log.debug("batch size %d%s (%s, %s, %s)", batch, " channels-last" if channels_last else "",
                  "backward" if backward else "forward", image_shape, source)
    _used.add((*key, max_batch))
    return _probed[(*key, max_batch)]


def fixed_batch_size(model: Any, image_shape: tuple[int, ...], *, backward: bool, max_batch: int = 256) -> int:
    """A batch decided without a timing: the largest power of two whose passes hold about 48 MiB of the
    model's activations (forward), within half the device's *total* memory (not its free memory, which
    moves with the load) and ``max_batch``, and at least 2. The same on every run on one machine."""
    per_forward = bytes_per_sample(model, image_shape, backward=False)
    per_sample = bytes_per_sample(model, image_shape, backward=backward)
    cap = max(1, min(max_batch, int(_MEMORY_SHARE * total_memory_bytes(model.device) // max(1, per_sample))))
    batch = 1 << max(0, int(np.log2(max(1.0, _FLOOR_BYTES / max(1, per_forward)))))
    return max(min(2, cap), min(batch, cap))


def batch_invariant(model: Any, image_shape: tuple[int, ...], backward: bool, batch: int, channels_last: bool) -> bool:
    """Whether each image's outputs (``backward``: its gradient with respect to the input) are bit for bit
    the same in passes of 2, 3 and ``batch`` images: then how passes are grouped changes no number."""
    import torch

    sizes = sorted({s for s in (2, 3, batch) if 2 <= s <= batch})
    if len(sizes) < 2:
        return True
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((sizes[-1], *image_shape), generator=generator).to(model.device)

    def per_image(images: Any) -> Any:
        images = images.contiguous(memory_format=_layout(channels_last))
        if not backward:
            with torch.no_grad():
                return model.forward(images)
        images = images.detach().requires_grad_(True)
        return torch.autograd.grad(model.forward(images).sum(), images)[0]

    try:
        whole = per_image(x)
        return all(torch.equal(per_image(x[:s]), whole[:s]) for s in sizes[:-1])
    except Exception:  # noqa: BLE001 - a model that cannot be checked is treated as batch-dependent
        return False


def track_decisions() -> None:
    """Start a new record of the batch sizes asked for (an audit calls it as it starts)."""
    _used.clear()


def batch_decisions(model: Any | None = None) -> list[dict[str, Any]]:
    """What :func:`best_batch_size` answered since :func:`track_decisions` (for ``model``'s architecture, or
    all), each ``{mode, image_shape, device, max_batch, size, source, layout, batch_invariant}``, in the
    order first asked: how the run went, not a result."""
    wanted = None if model is None else _architecture_key(model)
    return [dict(_decisions[key]) for key in _decisions if key in _used and (wanted is None or key[0] == wanted)]


def _decide(key: tuple, max_batch: int, size: int, source: str, invariant: bool | None, channels_last: bool) -> None:
    _arch, shape, backward, device = key
    _used.add((*key, max_batch))
    _decisions[(*key, max_batch)] = {
        "mode": "backward" if backward else "forward", "image_shape": list(shape), "device": device,
        "max_batch": max_batch, "size": int(size), "source": source, "batch_invariant": invariant,
        "layout": "channels-last" if channels_last else "standard",
    }


def _forced_batch(backward: bool) -> int | None:
    """The batch ``XAI_AUDIT_BATCH_SIZE`` sets for this mode: ``32`` (every pass) or ``forward=32,backward=16``."""
    text = os.environ.get(ENV_BATCH, "").strip()
    if not text:
        return None
    if "=" not in text:
        return max(1, int(text))
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() == ("backward" if backward else "forward") and value.strip():
            return max(1, int(value))
    return None


def prefers_channels_last(model: Any, image_shape: tuple[int, ...], *, backward: bool) -> bool:
    """Whether the model's images go to it channels-last (N, C, H, W stored as N, H, W, C).

    A rule, not a timing, since the layout changes the last bits of a convolution: images on a CPU, to
    a model with at least two convolutions (oneDNN's native layout, where a small CNN ran twice as fast;
    a transformer's one patch embedding barely notices). ``backward`` is accepted for symmetry with
    :func:`best_batch_size`; the rule does not depend on it.
    """
    key = (_architecture_key(model), tuple(image_shape), backward, str(model.device))
    if key not in _decided_layout:
        _decided_layout[key] = (len(image_shape) == 3 and not str(model.device).startswith("cuda")
                                and _conv_count(model) >= _CHANNELS_LAST_CONVS)
    return _decided_layout[key]


def _conv_count(model: Any) -> int:
    module = getattr(model, "module", None)
    if module is None or not hasattr(module, "modules"):
        return 0
    try:
        names = [getattr(m, "original_name", None) or type(m).__name__ for m in module.modules()]
    except Exception:  # noqa: BLE001 - a graph that cannot list its modules: the standard layout
        return 0
    return sum(name == "Conv2d" for name in names)


def _layout(channels_last: bool) -> Any:
    import torch

    return torch.channels_last if channels_last else torch.contiguous_format


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


def _probe(model: Any, image_shape: tuple[int, ...], backward: bool, cap: int, start: int = 1,
           layouts: list[Any] | None = None) -> tuple[int, bool]:
    """(batch size, channels-last?): double the batch from ``start``, timing each size in the standard
    and (for images) the channels-last layout, until memory runs out, the next size would overrun the
    probe's time budget, a slow pass stops paying for its doubling, or (past ``_MIN_PROBE``) two
    doublings gain less than 5 %. Channels-last is chosen when its best throughput beats the
    standard layout's by ``_LAYOUT_GAIN``; the batch is the largest near that layout's best.

    A slow pass alone does not stop the probe: a ViT-base takes over half a second for one image's
    forward and backward on two CPU cores, yet runs a third faster per image two at a time.
    """
    import torch

    if layouts is None:  # both, and the faster chosen (best_batch_size gives the layout its rule fixed)
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

    chosen = layouts[0]
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
    """``range(n)`` cut into as few consecutive slices of at most ``size`` as there can be, of sizes that
    differ by at most one: with ``size`` of 2 or more no slice holds a single item unless ``n`` is 1 (a pass
    of one image takes other kernels, and its numbers differ in the last bits from the same image's in a
    pass of several). So ``size`` 2 and an odd ``n`` give one slice of three."""
    size = max(1, int(size))
    if n <= 0:
        return []
    passes = -(-n // size)
    if size == 2 and n % 2:
        passes = max(1, n // 2)
    base, extra = divmod(n, passes)
    bounds = [0]
    for k in range(passes):
        bounds.append(bounds[-1] + base + (k < extra))
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]

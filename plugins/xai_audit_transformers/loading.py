"""Loading a transformers model and its image processor, from a folder or the local hub cache."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from xai_audit.api import InputSpec, ModelError


#: what a hub id can be: a name, or an owner and a name
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def resolve_id(model_id: str, base_dir: Path) -> str:
    """A local folder (relative to the plan) when one exists, else the hub id as given.

    An id that can only be a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) and names no folder is an
    error here, before anything asks the hub for it.
    """
    candidate = Path(model_id).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if candidate.is_dir():
        return str(candidate)
    if not _HUB_ID.match(model_id):
        raise ModelError(f"model folder {candidate} does not exist (id '{model_id}' is a path, not a hub id)")
    return model_id


def _cached(model_id: str, revision: str | None) -> bool:
    """Whether the local hub cache holds this model's config (looked up on disk, no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - an id the cache cannot even name is simply not cached
        return False


def load_pretrained(auto_class: Any, model_id: str, revision: str | None, device: str) -> tuple[Any, Any]:
    """(model, processor) by folder or hub id; a clear error when it is not on this machine."""
    from transformers import AutoImageProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the audit has its own progress; no download bars or notices
    hf_logging.disable_progress_bar()
    local = Path(model_id).is_dir()
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    kwargs: dict[str, Any] = {} if local else {"revision": revision}
    if not local and _cached(model_id, revision):
        kwargs["local_files_only"] = True  # in the cache: load it from there and ask no server
    elif not local and offline:
        raise ModelError(_not_here(model_id, offline=True))
    try:
        model = auto_class.from_pretrained(model_id, **kwargs)
        processor = AutoImageProcessor.from_pretrained(model_id, **kwargs)
    except OSError as exc:
        if local:
            raise ModelError(f"{model_id}: not a transformers model folder: {_first_line(exc)}") from None
        raise ModelError(_not_here(model_id, offline=offline)) from None
    except ValueError as exc:
        raise ModelError(f"'{model_id}': {_first_line(exc)}") from None
    return model.to(device).eval(), processor


def processor_input_spec(processor: Any) -> InputSpec:
    """The processor's resize, crop and normalisation as an InputSpec (applied differentiably)."""
    config = processor.to_dict() if hasattr(processor, "to_dict") else dict(vars(processor))
    size = config.get("size") or {}
    spec: dict[str, Any] = {}
    if config.get("do_resize", True) and size:
        if "height" in size and "width" in size:
            spec["size"] = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            spec["size"] = int(size["shortest_edge"])
            spec["resize"] = "shorter-side"
    crop = config.get("crop_size")
    if config.get("do_center_crop") and crop:
        spec["crop"] = (int(crop["height"]), int(crop["width"])) if isinstance(crop, dict) else int(crop)
    if config.get("do_normalize", True):
        spec["mean"] = [float(v) for v in config.get("image_mean") or [0.5, 0.5, 0.5]]
        spec["std"] = [float(v) for v in config.get("image_std") or [0.5, 0.5, 0.5]]
    resample = int(config.get("resample", 2) or 2)
    spec["interpolation"] = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(resample, "bilinear")
    return InputSpec(**spec)


def weights_fingerprint(module: torch.nn.Module, *extra: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    for item in extra:
        h.update(repr(item).encode())
    return h.hexdigest()


def model_files(model_id: str) -> list[Path]:
    folder = Path(model_id)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))


def _not_here(model_id: str, *, offline: bool) -> str:
    where = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"model '{model_id}' is not a folder beside the plan and not in the local Hugging Face cache ({where})"
        + (" and HF_HUB_OFFLINE is set" if offline else " and could not be downloaded")
        + f": on a connected machine run `hf download {model_id}` (or save_pretrained it) and copy the "
        "cache folder here, or give the model's local folder as 'id'"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

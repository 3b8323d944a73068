"""An on-disk cache of step outputs, keyed by a content hash.

The key of a step hashes everything its output depends on: the model's weight
fingerprint, the data fingerprint and audited sample ids, the plugin's name,
version and options, and the seed. An entry is a folder holding ``meta.json``
(plain data, with a checksum of the arrays) and ``arrays.npz``; it is written
under a temporary name and renamed when whole, and an entry whose checksum
does not match is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FORMAT = 1


def content_key(*parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("XAI_AUDIT_CACHE")
    return Path(env) if env else Path(".xai-audit-cache")


class Cache:
    """Step outputs on disk. ``root=None`` disables caching."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def _dir(self, key: str) -> Path:
        assert self.root is not None
        return self.root / "steps" / key[:2] / key

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        if self.root is None:
            return None
        folder = self._dir(key)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            blob = (folder / "arrays.npz").read_bytes()
            if meta.get("format") != CACHE_FORMAT or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
                return None
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError):
            return None
        self.hits += 1
        return meta["data"], arrays

    def put(self, key: str, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.misses += 1
        if self.root is None:
            return
        folder = self._dir(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        blob = buffer.getvalue()
        meta = {"format": CACHE_FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "data": data}
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=folder.parent))
        try:
            (tmp / "arrays.npz").write_bytes(blob)
            (tmp / "meta.json").write_text(json.dumps(meta, allow_nan=True))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def file_path(self, name: str) -> Path:
        """A path for a named artefact (e.g. the demo model's weights)."""
        root = self.root if self.root is not None else Path(tempfile.gettempdir()) / "xai-audit-nocache"
        path = root / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

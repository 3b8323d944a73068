"""An on-disk cache of step outputs, keyed by a content hash.

The key of a step hashes everything its output depends on: the model's weight
fingerprint, the data fingerprint and audited sample ids, the plugin's name,
version and options, and the seed. An entry is a folder holding ``data.json``
(plain data), ``arrays.npz`` and ``meta.json`` (the format and one checksum over
both); it is written under a temporary name and renamed when whole, and an entry
whose checksum does not match (a half-written or tampered entry) is ignored and
recomputed. Two runs that share a cache compute each step once: a step holds an
exclusive lock on its key (:meth:`Cache.claim`) while it looks up, computes and
stores its output, so the second run waits and then reads the first one's entry.

A run killed at any moment leaves nothing a later run reads as whole: an entry is
visible only once renamed into place, the system frees a dead run's lock, and
the next run that claims the key removes what the dead one left of it (its lock
file, a temporary folder it was filling).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from xai_audit.files import check_folder, make_folder, path_error

#: 2: the checksum covers the plain data too (format 1 entries are ignored and recomputed)
CACHE_FORMAT = 2


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
        #: one line per entry or lock the cache could not write during the run (the step's result was kept)
        self.errors: list[str] = []

    def check(self, what: str = "cache folder", hint: str = "") -> None:
        """Refuse now, before any work, a cache folder that is a file, lies under one or cannot be written
        (a :class:`~xai_audit.files.PathError` naming it). Creates nothing: the first entry does."""
        if self.root is not None:
            check_folder(self.root, what, hint)

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
            text = (folder / "data.json").read_bytes()
            if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT or meta.get("sha256") != _digest(blob, text):
                return None
            data = json.loads(text)
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, KeyError):
            return None
        self.hits += 1
        return data, arrays

    def put(self, key: str, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.misses += 1
        if self.root is None:
            return
        folder = self._dir(key)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        blob = buffer.getvalue()
        text = json.dumps(data, allow_nan=True).encode("utf-8")
        meta = {"format": CACHE_FORMAT, "sha256": _digest(blob, text)}
        # a cache that fails now (disk full, folder gone read-only) costs the next run a recomputation,
        # never this run its result: the step goes on, and the failure is kept in ``errors``
        tmp: Path | None = None
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(key), dir=folder.parent))
            (tmp / "arrays.npz").write_bytes(blob)
            (tmp / "data.json").write_bytes(text)
            (tmp / "meta.json").write_text(json.dumps(meta))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError as exc:
            self.errors.append(str(path_error(exc, "cannot store a step in the cache", folder)))
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[None]:
        """Hold the step ``key`` for this process: another run claiming it waits until this one is done
        (an advisory lock on a file beside the entry; the system frees it if the process dies).

        While it holds the key it removes what a run killed while holding it left behind (a temporary
        folder half filled), and on release it removes the lock file too, so a cache holds no lock files
        but those of steps running now or of a run killed mid-step (removed by the next claim)."""
        if self.root is None:
            yield
            return
        lock_path = self._dir(key).with_suffix(".lock")
        try:
            handle = _hold(lock_path)
        except OSError as exc:  # the step runs unlocked (a second run on this cache may compute it too)
            self.errors.append(str(path_error(exc, "cannot lock a step in the cache", lock_path)))
            yield
            return
        try:
            for leftover in lock_path.parent.glob(_temp_prefix(key) + "*"):
                shutil.rmtree(leftover, ignore_errors=True)
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)  # while still held: a run waiting on this file sees it gone and locks anew
            handle.close()  # frees the lock

    def file_path(self, name: str) -> Path:
        """A path for a named artefact (e.g. the demo model's weights)."""
        root = self.root if self.root is not None else Path(tempfile.gettempdir()) / "xai-audit-nocache"
        path = root / "files" / name
        make_folder(path.parent, "cache folder")
        return path


def _digest(blob: bytes, text: bytes) -> str:
    """One checksum over an entry's arrays and its plain data."""
    h = hashlib.sha256(blob)
    h.update(b"\0data\0")
    h.update(text)
    return h.hexdigest()


def _temp_prefix(key: str) -> str:
    """The name a temporary entry folder of ``key`` starts with (the whole key: only its holder removes it)."""
    return f".{key}-"


def _hold(path: Path) -> Any:
    """An open file ``path`` with an exclusive lock on it: the file at ``path`` now, not one a previous
    holder removed on release while this process waited on it (then it tries again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with contextlib.ExitStack() as unless_held:
            handle = unless_held.enter_context(open(path, "a+b"))
            fcntl.flock(handle, fcntl.LOCK_EX)
            held = os.fstat(handle.fileno())
            with contextlib.suppress(FileNotFoundError):
                now = os.stat(path)
                if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    unless_held.pop_all()
                    return handle

"""Report figures cached by content, in the run's cache folder beside the steps.

A figure is a pure function of its inputs: the key of a drawn figure hashes the
function's name, every argument (arrays by dtype, shape and bytes; mappings in
their order; numbers by their exact value) and the figure code's version (the
source of the modules that draw, and matplotlib's version), so a re-run over the
same results draws nothing, and any change to the drawing code draws again.

The store is active only inside :func:`figure_store` (the report's ``write_report``
opens it on the run's cache folder); outside it every figure is simply drawn. An
entry is the finished PNG followed by the SHA-256 of its key and its bytes, written
under a temporary name and renamed when whole; one that is not a whole PNG, or whose
checksum does not match (damaged, or another figure's file copied over it), is
ignored and drawn again. A store that cannot be written costs the next run a
redraw, never this report its figure.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import numpy as np

from xai_audit.report.display import DataURI

#: bump to redraw every cached figure (the modules' source is hashed too, so an edit there redraws anyway)
FIGURE_FORMAT = 1
#: the modules whose source decides how a figure looks
_DRAWING_MODULES = ("figures.py", "heatmaps.py", "specs.py", "figcache.py")
_PNG_HEAD = b"\x89PNG\r\n\x1a\n"
_PNG_TAIL = b"IEND\xaeB`\x82"
_PREFIX = "data:image/png;base64,"
_JPEG_PREFIX = "data:image/jpeg;base64,"
#: what an entry of each kind starts and ends with, and its data URI's prefix
_KINDS = {"png": (_PNG_HEAD, _PNG_TAIL, _PREFIX), "jpeg": (b"\xff\xd8\xff", b"\xff\xd9", _JPEG_PREFIX)}
_SUFFIX = {"png": "png", "jpeg": "jpg"}
_CHECKSUM_BYTES = 32
#: the PDF's copy of a figure (:func:`print_copy`): JPEG at this quality, colour at full resolution (4:4:4)
PRINT_JPEG_QUALITY = 92


def _checksum(key: str, png: bytes) -> bytes:
    """What a stored figure ends with: the SHA-256 of the key it is stored under and of its PNG bytes."""
    return hashlib.sha256(key.encode("ascii") + b"|" + png).digest()

F = TypeVar("F", bound=Callable[..., str])


class FigureStore:
    """Finished figures on disk under ``root/figures``; counts what it served and what it drew."""

    def __init__(self, root: Path):
        self.root = Path(root) / "figures"
        self.hits = 0
        self.misses = 0
        self.errors: list[str] = []

    def _path(self, key: str, kind: str = "png") -> Path:
        return self.root / key[:2] / f"{key}.{_SUFFIX[kind]}"

    def get(self, key: str, kind: str = "png") -> DataURI | None:
        """The stored figure ``key`` of ``kind`` (``png``: a drawn figure; ``jpeg``: its print copy)."""
        head, tail, prefix = _KINDS[kind]
        try:
            stored = self._path(key, kind).read_bytes()
        except OSError:
            return None
        data, checksum = stored[:-_CHECKSUM_BYTES], stored[-_CHECKSUM_BYTES:]
        if not (data.startswith(head) and data.endswith(tail)) or checksum != _checksum(key, data):
            return None
        self.hits += kind == "png"
        return DataURI(prefix + base64.b64encode(data).decode("ascii"))

    def put(self, key: str, uri: str, kind: str = "png") -> None:
        _, _, prefix = _KINDS[kind]
        self.misses += kind == "png"
        if not uri.startswith(prefix):
            return
        path = self._path(key, kind)
        data = base64.b64decode(uri[len(prefix):])
        failed = store_entry(path, data + _checksum(key, data))
        if failed:
            self.errors.append(f"{path}: cannot store a figure: {failed}")


def store_entry(path: Path, data: bytes) -> str | None:
    """Write a cache entry (one that carries its own checksum) to ``path``: under a temporary name, renamed when
    whole, not synced (an entry a crash cut short fails its checksum and is made again, so the files.atomic_write
    a report's own files get, a synced file each, would buy nothing here). Returns why it could not be written,
    or None: a full disk or a read-only folder costs the next run a redraw, never this report."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(data)
        os.replace(temp, path)
    except Exception as exc:  # noqa: BLE001 - see above
        with contextlib.suppress(OSError):
            temp.unlink()
        return str(exc)
    return None


_STORE: contextvars.ContextVar[FigureStore | None] = contextvars.ContextVar("xai_audit_figure_store", default=None)


@contextlib.contextmanager
def figure_store(root: Path | None) -> Iterator[FigureStore | None]:
    """Serve and keep figures under ``root`` (a cache folder) while the block runs; ``None``: draw every one."""
    store = FigureStore(root) if root is not None else None
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def cached(function: F) -> F:
    """Decorate a function that returns a figure's data URI so that an open :func:`figure_store` keeps it."""
    name = f"{function.__module__}.{function.__qualname__}"

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        store = _STORE.get()
        if store is None:
            return function(*args, **kwargs)
        key = figure_key(name, args, kwargs)
        found = store.get(key)
        if found is not None:
            return found
        uri = function(*args, **kwargs)
        store.put(key, uri)
        return uri

    return wrapper  # type: ignore[return-value]


def print_copy(uri: str) -> str:
    """A figure's copy for the PDF: its PNG data URI as a JPEG (quality :data:`PRINT_JPEG_QUALITY`, no chroma
    subsampling), kept in the open :func:`figure_store` beside the figure; any other URI as it is.

    WeasyPrint embeds a JPEG's bytes as they are, but decodes and re-compresses every PNG (twice for one
    with transparency): on the demo's 97 figures that is 1.4 s of a 9 s PDF, which their JPEG copies save.
    At this quality and resolution the copy is not told apart from the PNG at print size (lines and
    lettering included); report.html keeps the PNGs."""
    if not uri.startswith(_PREFIX):
        return uri
    png = base64.b64decode(uri[len(_PREFIX):])
    key = hashlib.sha256(f"print-jpeg|{PRINT_JPEG_QUALITY}|".encode() + png).hexdigest()
    store = _STORE.get()
    found = store.get(key, "jpeg") if store is not None else None
    if found is not None:
        return found
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        white = Image.new("RGB", image.size, "white")  # a transparent pixel prints as the page under it
        rgba = image.convert("RGBA")
        white.paste(rgba, mask=rgba.getchannel("A"))
        white.save(buffer, format="JPEG", quality=PRINT_JPEG_QUALITY, subsampling=0)
    copy = DataURI(_JPEG_PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii"))
    if store is not None:
        store.put(key, copy, "jpeg")
    return copy


def figure_key(name: str, args: tuple, kwargs: Mapping[str, Any]) -> str:
    """sha256 over the figure code's version, the function's name and its arguments."""
    digest = hashlib.sha256()
    digest.update(code_version().encode())
    digest.update(name.encode())
    _feed(digest, args)
    _feed(digest, dict(sorted(kwargs.items())))
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The figure code's version: FIGURE_FORMAT, matplotlib's version and the drawing modules' source."""
    import matplotlib

    digest = hashlib.sha256(f"{FIGURE_FORMAT}|{matplotlib.__version__}|{np.__version__}".encode())
    here = Path(__file__).resolve().parent
    for module in _DRAWING_MODULES:
        try:
            digest.update((here / module).read_bytes())
        except OSError:  # pragma: no cover - an installed copy always has its sources
            digest.update(module.encode())
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` to ``digest`` unambiguously: a type tag, then the value (lengths before contents)."""
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        array = np.ascontiguousarray(value)
        digest.update(f"A{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    elif isinstance(value, Mapping):
        digest.update(f"M{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float):
        digest.update(b"F" + (value.hex() if math.isfinite(value) else repr(value)).encode())
    elif isinstance(value, (str, bool, int)) or value is None:
        text = repr(value).encode("utf-8", "backslashreplace")
        digest.update(f"S{type(value).__name__}{len(text)}:".encode() + text)
    else:  # anything else by its type and repr (a repr that changes every run only costs a redraw)
        text = f"{type(value).__qualname__}:{value!r}".encode("utf-8", "backslashreplace")
        digest.update(f"O{len(text)}:".encode() + text)

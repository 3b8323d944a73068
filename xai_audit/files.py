"""Files and folders the tool writes: atomic files, folders checked before work starts, located errors.

Every failure to create or write one is a :class:`PathError` naming the path and why
(``error: report folder /x/out: /x is a file, not a folder``), never a bare ``OSError``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from xai_audit.errors import XaiAuditError


class PathError(XaiAuditError):
    """A file or folder the tool reads, creates or writes could not be; the message names it and says why."""


def shown(path: object) -> str:
    """``path`` as text that can always be printed and written as UTF-8.

    A file name that is not valid UTF-8 (``b"bad\\xff.png"``, held by Python as a lone
    surrogate) is shown with its odd bytes escaped: ``bad\\xff.png``.
    """
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _blocker(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or ``path``) that is not a folder, if any."""
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def _reason(exc: OSError, path: Path) -> str:
    blocker = _blocker(path)
    if blocker is not None and exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
        if blocker == path:
            return "it is a file, not a folder" if exc.errno != errno.ENOENT else "a broken symbolic link"
        return f"{shown(blocker)} is a file, not a folder"
    return exc.strerror or str(exc)


def path_error(exc: OSError, what: str, path: Path | str, hint: str = "") -> PathError:
    """``exc`` (raised on ``path``) as one line: ``{what} {path}: {why}{hint}``."""
    return PathError(f"{what} {shown(path)}: {_reason(exc, Path(path))}{hint}")


def check_folder(path: Path | str, what: str, hint: str = "") -> None:
    """Refuse, before any work, a folder that cannot be created or written: it, or a folder above it,
    is a file, or the nearest existing one is not writable. Leaves nothing behind.

    Writability is tried (a temporary file made and removed in the nearest existing folder), not
    asked of ``os.access``: that says yes to root on a read-only mount or a folder such as ``/sys``."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists() or p.is_symlink()), Path("."))
    if not existing.is_dir():
        why = "it is a file, not a folder" if existing == path else f"{shown(existing)} is a file, not a folder"
        if existing.is_symlink() and not existing.exists():
            why = f"{shown(existing)} is a broken symbolic link"
        raise PathError(f"{what} {shown(path)}: {why}{hint}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".xai-audit-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        where = "it" if existing == path else shown(existing)
        raise PathError(f"{what} {shown(path)}: {where} is not writable ({exc.strerror or exc}){hint}") from None


def make_folder(path: Path | str, what: str, hint: str = "") -> Path:
    """Create folder ``path`` (and its parents); any failure is a :class:`PathError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error(exc, what, path, hint) from None
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place.

    A failure (the folder is a file or not writable, the disk is full, ``path`` is a folder)
    leaves ``path`` as it was and raises :class:`PathError` naming it."""
    write_together({Path(path): data})


def write_together(files: Mapping[Path, bytes], last: Path | None = None, folders: str = "",
                   remove: Iterable[Path] = ()) -> None:
    """Write several files as one set (a report): each to a temporary file beside it first, and only when
    every one is whole, each renamed into place; ``last``, the file that says the set is whole (a report's
    results.json), is removed before the first rename and renamed into place after the others. ``remove``:
    files an earlier write of the set held that this one does not (a run.log of failures a re-run no longer
    has), removed once ``last`` is gone, so a whole set never shows a file of another write.

    A failure while writing (a folder not writable, a full disk) leaves every file as it was and raises
    :class:`PathError` naming the file; a process killed while writing leaves the files as they were (and
    temporary files, removed by the next write beside them), one killed while renaming leaves ``last``
    absent, so a set whose ``last`` is there is always whole, never a mix of two writes. ``folders``: what a
    missing folder of a file is called (``"report folder"``), to create it just before its file is written."""
    staged: list[tuple[Path, str]] = []
    created: list[Path] = []  # folders this write made: removed again, when empty, if the write fails
    whole = False
    try:
        for path, data in files.items():
            if folders:
                parent = Path(path).parent
                created += [p for p in reversed([parent, *parent.parents]) if not p.exists() and p not in created]
                make_folder(parent, folders)
            staged.append((Path(path), _stage(Path(path), data)))
        if last is not None and any(path == Path(last) for path, _ in staged):
            staged.sort(key=lambda item: item[0] == Path(last))
            _unlink_if_there(last, "cannot write")
        for stale in remove:
            if Path(stale) in files:
                continue
            _unlink_if_there(stale, "cannot remove")
        while staged:
            path, temp_name = staged[0]
            try:
                os.replace(temp_name, path)
            except OSError as exc:
                raise path_error(exc, "cannot write", path) from None
            staged.pop(0)
        whole = True
    finally:
        for _, temp_name in staged:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
        for folder in reversed(created if not whole else []):  # a failed write leaves no empty report folder
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _stage(path: Path, data: bytes) -> str:
    """``data`` in a whole, synced temporary file beside ``path`` (named for this process: :func:`_tidy`)."""
    _tidy(path)
    try:
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{_temp_stem(path)}{_owner()}.", suffix=".tmp")
    except OSError as exc:
        raise path_error(exc, "cannot write", path) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, 0o644)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise path_error(exc, "cannot write", path) from None
    return temp_name


def _temp_stem(path: Path) -> str:
    return f".{path.name}."


def _owner() -> str:
    """This process, as its temporary files name it: a tag of the host's name, then the process id."""
    host = hashlib.sha256(socket.gethostname().encode("utf-8", "backslashreplace")).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def _tidy(path: Path) -> None:
    """Remove the temporary files of ``path`` that a process of this host left when it was killed
    (its id no longer runs). Those of a live process, or of another host sharing the folder, stay."""
    host = _owner().split("-")[0]
    try:
        leftovers = list(path.parent.glob(glob.escape(_temp_stem(path)) + f"{host}-*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        pid = leftover.name[len(_temp_stem(path)) + len(host) + 1:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _unlink_if_there(path: str | Path, verb: str) -> None:
    """Remove ``path``; one already gone is fine, another failure is a one-line error (``verb`` it)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise path_error(exc, verb, path) from None

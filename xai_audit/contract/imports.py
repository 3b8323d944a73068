"""Import a plan's own code (a model factory, a transform) by ``module:attribute``, from the plan's folder.

Two spellings, resolved the same way for every plugin that takes one:

* ``file.py:name`` (or ``sub/file.py:name``): that file, relative to the plan's folder (or absolute);
* ``package.module:name``: an importable module, looked for first in the plan's folder, then on the usual
  import path, so a plan beside its package needs no ``PYTHONPATH``.

A file is run afresh each time it is imported (an edited file is read again); a module is imported once,
as Python does. While the file or module runs, the plan's folder (and a file's own folder) is first on ``sys.path``, so its
own imports of neighbouring modules work too. The path is put back afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator


class ImportProblem(ValueError):
    """``spec`` cannot be imported; the message says why in one line (the caller names the plan field)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextlib.contextmanager
def _on_path(*folders: Path) -> Iterator[None]:
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def split_spec(spec: str) -> tuple[str, str]:
    """(module or file, attribute path) of ``module:attr``; ImportProblem when it has no such shape."""
    module, sep, attr = str(spec).rpartition(":")
    if not sep or not module or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ImportProblem(f"{spec!r} must look like 'package.module:function' or 'file.py:function'")
    if not module.endswith(".py") and not all(p.isidentifier() for p in module.split(".")):
        raise ImportProblem(f"{spec!r}: {module!r} is neither a file.py nor a dotted module name")
    return module, attr


def import_module_of(spec: str, base_dir: Path | str | None) -> Any:
    """The module (or file) ``spec`` names, imported from the plan's folder ``base_dir``."""
    module, _ = split_spec(spec)
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    if module.endswith(".py"):
        path = Path(module).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ImportProblem(f"{spec!r}: file {path} not found")
        unique = "xai_audit_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(unique, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportProblem(f"{spec!r}: {path} cannot be imported as Python")
        mod = importlib.util.module_from_spec(module_spec)
        sys.modules[unique] = mod
        try:
            with _on_path(path.parent, base):
                module_spec.loader.exec_module(mod)
        except Exception as exc:
            sys.modules.pop(unique, None)
            raise ImportProblem(f"{spec!r}: importing {path} failed: {_first_line(exc)}") from exc
        return mod
    try:
        with _on_path(base):
            return importlib.import_module(module)
    except Exception as exc:
        raise ImportProblem(f"cannot import {module!r} (looked in the plan's folder {base} and on the import "
                            f"path): {_first_line(exc)}") from exc


def import_object(spec: str, base_dir: Path | str | None) -> Any:
    """The object ``spec`` (``file.py:name`` or ``package.module:name``) names, imported from ``base_dir``."""
    module, attr = split_spec(spec)
    target: Any = import_module_of(spec, base_dir)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ImportProblem(f"{spec!r}: {module!r} has no {attr!r}")
        target = getattr(target, part)
    return target

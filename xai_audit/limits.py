"""Limits on a step: a time limit, and halving the batch when memory runs out."""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
#: how long a step that ran past its limit gets to stop before it is left behind
GRACE_S = 2.0

log = logging.getLogger("xai_audit")


class StepTimeout(Exception):
    """A step ran past its ``timeout``. (An Exception, so it is recorded like any plugin failure.)"""


class StepAbandoned(StepTimeout):
    """A step ran past its limit inside native code and could not be stopped: it was left running in the
    background, and whatever it was using (the model) must not be trusted by later steps."""


def run_with_limit(fn: Callable[[], T], seconds: float | None, what: str) -> T:
    """``fn()`` on a worker thread, waited for at most ``seconds``.

    Past the limit, :class:`StepTimeout` is raised inside the worker (an asynchronous exception: Python
    code stops at once, a native call when it returns). A worker still running ``GRACE_S`` later is stuck in
    native code: it is left behind as a daemon thread and :class:`StepAbandoned` is raised here, so the
    audit goes on. Exceptions from ``fn`` are re-raised here with their traceback.
    """
    if seconds is None:
        return fn()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread, which decides
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"xai-audit {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(StepTimeout))
        worker.join(GRACE_S)
        if worker.is_alive():  # the caller says so: the audit goes on (a step), or stops (the first pass)
            raise StepAbandoned(f"{what} ran past its time limit of {seconds:g} s and was stuck in native code: "
                                "left behind, the audit went on without it")
        raise StepTimeout(f"{what} ran past its time limit of {seconds:g} s")
    if "error" in box:
        error = box["error"]
        if isinstance(error, StepTimeout) and not str(error):  # our own async exception, raced with the end
            raise StepTimeout(f"{what} ran past its time limit of {seconds:g} s") from None
        raise error
    return box["value"]


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
    )


def with_halving_batch(run: Callable[[int], Any], batch_size: int, what: str) -> Any:
    """``run(batch_size)``; on out-of-memory, halve the batch and retry (down to 1), logging each retry."""
    size = max(1, int(batch_size))
    while True:
        try:
            return run(size)
        except Exception as exc:
            if not is_out_of_memory(exc) or size == 1:
                raise
            size //= 2
            log.warning("%s ran out of memory; retrying with batch size %d", what, size)

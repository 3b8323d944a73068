"""Limits on a step: a time limit, and halving the batch when memory runs out."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Iterator

log = logging.getLogger("xai_audit")


class StepTimeout(Exception):
    """A step ran past its ``timeout``. (An Exception, so it is recorded like any plugin failure.)"""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise StepTimeout inside the block after ``seconds`` (SIGALRM; main thread on POSIX only).

    Python checks for the signal between bytecodes, so a plugin stuck in one
    long C call is interrupted when that call returns.
    """
    usable = seconds is not None and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise StepTimeout(f"{what} ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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

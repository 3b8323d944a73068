"""The report's PDF made in a process of its own, started before the audit, for the ``xai-audit`` command.

WeasyPrint is most of a cached re-run: a third of a second to import, then five to six seconds to lay out
and write the demo's hundred pages, single-threaded, at the end of the run, in a process that by then holds
torch and the audit's results (laying out in it takes a tenth longer than in a small one). The command
starts a :class:`PdfWorker` before it imports anything heavy: a forked process that imports WeasyPrint while
the audit runs, then waits for one page. :func:`xai_audit.report.render.write_report` hands it the print
page as soon as it is rendered and writes the HTML, results.json and the tables meanwhile; the worker makes
the PDF with the same function the report uses in-process (:func:`render._pdf_bytes`), returns its bytes
and ends without tearing its interpreter down. Having one thread, it may fork: it lays the PDF out in parts,
two at a time, from the run's cache where it can (report/pdfparts.py).

Nothing depends on it: the report is the same without it (the PDF laid out whole, the same pages). Where it
cannot be used (no ``fork``, not Linux, ``XAI_AUDIT_PDF_WORKER=0``) :meth:`PdfWorker.start` returns None, and
a job it could not do (its process died, WeasyPrint raised) is done again in-process, which makes the PDF or
raises what it raises.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: set to 0 to make the PDF in the command's own process
ENV = "XAI_AUDIT_PDF_WORKER"


class PdfWorker:
    """One forked process that makes one PDF (:meth:`submit`, then :meth:`result`)."""

    def __init__(self, process: Any, connection: Any) -> None:
        self._process = process
        self._connection = connection
        self._job: tuple | None = None

    @classmethod
    def start(cls) -> PdfWorker | None:
        """A worker, forked now (call it before torch starts threads), or None where none is used."""
        if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
            return None
        import multiprocessing

        try:
            context = multiprocessing.get_context("fork")
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, ours), name="xai-audit-pdf", daemon=True)
            process.start()
        except (OSError, ValueError) as exc:  # no fork here, or no more processes: the PDF is made in-process
            log.debug("no PDF worker: %s", exc)
            return None
        theirs.close()
        return cls(process, ours)

    def submit(self, *job: Any) -> None:
        """Hand over :func:`render._pdf_bytes`'s arguments (html, attachments, when, bookmarks, figures, in_parts,
        part_cache)."""
        self._job = job
        try:
            self._connection.send(job)
        except Exception as exc:  # noqa: BLE001 - the worker is gone, or the job did not pickle: made in-process
            log.debug("the PDF worker did not take the job: %s", exc)
            self._connection.close()

    def result(self, collect_after: bool = True) -> bytes:
        """The PDF's bytes: the worker's, or, where it failed, made here (``collect_after`` as
        :func:`render._pdf_bytes` takes it)."""
        from xai_audit.report.render import _pdf_bytes

        if self._job is None:
            raise RuntimeError("no PDF was submitted to the worker")
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError):  # it died (killed, out of memory), or never took the job: made here
            status, payload = "died", f"exit status {self._process.exitcode}"
        self.close()
        if status == "ok":
            return payload
        log.debug("the PDF worker could not make the PDF (%s: %s); making it in-process", status, payload)
        return _pdf_bytes(*self._job, collect_after=collect_after)

    def close(self) -> None:
        """End the worker (it ends by itself once its job is done or the pipe closes)."""
        try:
            self._connection.close()
        except OSError:
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _serve(connection: Any, parents_end: Any) -> None:
    """The worker: import WeasyPrint, wait for one job, make the PDF, send it, end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly, with the command
    parents_end.close()
    try:
        import pypdf  # noqa: F401 - imported while the audit runs, with WeasyPrint
        import weasyprint  # noqa: F401

        from xai_audit.report import pdfparts
        from xai_audit.report.render import _pdf_bytes

        pdfparts.allow_fork()  # this process has one thread: the PDF's parts are laid out in processes forked from it

        job = connection.recv()
    except (EOFError, OSError, KeyboardInterrupt):  # the command ended without a PDF to make
        os._exit(0)
    except BaseException:  # noqa: BLE001 - an import that fails: the command makes the PDF itself
        os._exit(1)
    try:
        reply: tuple[str, Any] = ("ok", _pdf_bytes(*job, collect_after=False))
    except BaseException as exc:  # noqa: BLE001 - the command makes it again in-process, and raises there
        reply = ("error", f"{type(exc).__name__}: {exc}")
    try:
        connection.send(reply)
        connection.close()
    except (OSError, ValueError):
        pass
    os._exit(0)  # no teardown: WeasyPrint's objects die with the process


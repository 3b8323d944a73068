"""A page laid out by WeasyPrint and written as the report's PDF/A-3b: the variant, the evidence it carries
as attachments, and a URL fetcher that serves nothing but ``data:`` URLs and the page's own figures.

Shared by the report (report/render.py, which lays a page out whole) and its parts (report/pdfparts.py).
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Callable, Mapping

from xai_audit.judge.recommend import MANIFEST_NAME
from xai_audit.report.errors import URLRefusedError

#: The plan as the audit ran it (results.json's ``plan`` as YAML), written beside the report.
PLAN_NAME = "plan-as-run.yaml"
#: The PDF standard the report is written to: PDF/A-3, level b (embedded files allowed).
PDF_VARIANT = "pdf/a-3b"
#: What each embedded file is, as the PDF's attachment list says it.
EVIDENCE = {
    "results.json": "Every number of this report (xai-audit results.json)",
    PLAN_NAME: "The audit plan as it ran, defaults filled in",
    MANIFEST_NAME: "The recommended fine-tuning data (one row per recommendation)",
}


def data_only_url_fetcher(figures: Mapping[str, tuple[bytes, str]] | None = None) -> Callable[..., Any]:
    """A WeasyPrint URL fetcher that serves ``data:`` URLs and refuses every other scheme; ``figures`` (URL ->
    (bytes, MIME type), made by render._figures_by_reference) are served from memory, by exact URL."""
    figures = dict(figures or {})
    try:
        from weasyprint.urls import URLFetcher, URLFetcherResponse
    except ImportError:  # WeasyPrint < 66: fetchers are plain functions returning dicts
        from weasyprint import default_url_fetcher

        def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
            if url in figures:
                return {"string": figures[url][0], "mime_type": figures[url][1]}
            _check_data_url(url)
            return default_url_fetcher(url, *args, **kwargs)

        return fetch

    class DataOnlyURLFetcher(URLFetcher):
        def __init__(self) -> None:
            super().__init__(allowed_protocols=("data",), allow_redirects=False, fail_on_errors=False)

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url in figures:
                body, mime = figures[url]
                return URLFetcherResponse(url, body, {"Content-Type": mime})
            _check_data_url(url)
            return super().fetch(url, headers)

    return DataOnlyURLFetcher()


def _check_data_url(url: str) -> None:
    if not str(url).lower().startswith("data:"):
        scheme = str(url).split(":", 1)[0] if ":" in str(url) else "relative"
        raise URLRefusedError(
            f"the PDF renderer may only read embedded data: URLs; refused a {scheme} URL: {str(url)[:120]}"
        )


def laid_out(html: str, labels: Mapping[str, str], fetcher: Any) -> Any:
    """``html`` laid out by WeasyPrint (a Document), its outline entries renamed by ``labels``."""
    from weasyprint import HTML

    document = HTML(string=html, url_fetcher=fetcher).render(pdf_variant=PDF_VARIANT)
    for page in document.pages:
        page.bookmarks = [(level, labels.get(label.strip(), label), target, state)
                          for level, label, target, state in page.bookmarks]
    return document


def attachments(attachments: Mapping[str, bytes] | None, when: datetime, fetcher: Any) -> list[Any]:
    """The evidence as WeasyPrint attachments, dated ``when`` (naive UTC)."""
    from weasyprint import Attachment

    return [Attachment(file_obj=io.BytesIO(data), name=name, description=EVIDENCE.get(name), created=when,
                       modified=when, relationship="Source" if name == "results.json" else "Supplement",
                       url_fetcher=fetcher)
            for name, data in (attachments or {}).items()]

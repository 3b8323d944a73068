"""What the report stage raises."""

from __future__ import annotations

from xai_audit.errors import XaiAuditError


class ReportError(XaiAuditError):
    """The report could not be rendered or written."""


class URLRefusedError(ReportError):
    """The PDF renderer asked for a URL that is not an embedded ``data:`` URL."""

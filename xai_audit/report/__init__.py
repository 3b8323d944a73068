"""The report layer: results and artifacts in, HTML, PDF and results.json out.

Plugins never render HTML; they return data. This package turns that data
into figures (:mod:`.figures`), plain template data (:mod:`.context`) and
files (:mod:`.render`).
"""

from __future__ import annotations

from xai_audit.report.artifacts import ReportArtifacts
from xai_audit.report.render import ReportError, URLRefusedError, write_report

__all__ = ["ReportArtifacts", "ReportError", "URLRefusedError", "write_report"]

"""Stage 6, verification: do the model, the data and the plan still match a report's provenance?"""

from xai_audit.verify.files import verify_report

__all__ = ["verify_report"]

"""Hypotheses to test, read off the change summary, as plan lines a user can paste.

Each suggestion names a hypothesis plugin of the plan's ``hypotheses:``
list and says which number suggested it: regions where the change
concentrated → occlude them; a change that is mostly colour or shifts
saturation → grayscale; a change that moves brightness one way → luminance.
"""

from __future__ import annotations

from typing import Any

from xai_audit_topology.change import CONSISTENT, ENRICHED, ChangeSummary

#: share of the change's energy that must be colour (not brightness) to suggest grayscale; 2/3 is chance
CHROMA = 0.8


def suggest(summary: ChangeSummary) -> list[dict[str, Any]]:
    """Rows with ``plugin`` and ``options`` (for the host to test), the plan line and why."""
    rows: list[dict[str, Any]] = []
    if summary.enriched_regions:
        regions = summary.enriched_regions[:4]
        best = next(r for r in summary.regions if r["region"] == regions[0])
        rows.append({
            "plugin": "occlude-regions", "options": {"regions": list(regions)},
            "hypothesis": f"- occlude-regions: {{regions: [{', '.join(regions)}]}}",
            "why": f"the change concentrates there ({regions[0]}: {best['enrichment']:.1f}× its area share; "
                   f"threshold {ENRICHED}×)",
        })
    if not summary.one_channel and (summary.chroma_share >= CHROMA or abs(summary.saturation_consistency) >= CONSISTENT):
        rows.append({
            "plugin": "grayscale", "options": {},
            "hypothesis": "- grayscale: {}",
            "why": f"{100 * summary.chroma_share:.0f} % of the change's energy is colour (67 % by chance), "
                   f"saturation consistency {summary.saturation_consistency:+.2f}",
        })
    if abs(summary.luminance_consistency) >= CONSISTENT:
        way = "brightened" if summary.luminance_consistency > 0 else "darkened"
        rows.append({
            "plugin": "luminance", "options": {"factor": 0.2},
            "hypothesis": "- luminance: {factor: 0.2}",
            "why": f"the change {way} the pixels it touched (luminance consistency {summary.luminance_consistency:+.2f})",
        })
    return rows

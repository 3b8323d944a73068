"""Template data for the discovery section: every candidate a discoverer proposed, confirmed or not."""

from __future__ import annotations

from typing import Any, Mapping

from xai_audit.report import display


def discovery(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The split, and one row per candidate with how its confirmation on the held-back images went."""
    data = results.get("discovery")
    if not isinstance(data, Mapping) or not (data.get("candidates") or data.get("note")
                                            or ((results.get("plan") or {}).get("discoverers"))):
        return None
    hypotheses = results.get("hypotheses") or {}
    rows = []
    for c in data.get("candidates") or []:
        entry = hypotheses.get(str(c.get("tested_as"))) or {}
        p_adj, effect, ci = entry.get("p_value_adjusted"), entry.get("effect"), entry.get("ci")
        status = ("confirmed" if entry.get("verdict") == "supported" else
                  "not confirmed" if entry.get("status") == "ok" else "could not be tested")
        rows.append({
            "discoverer": display.clip(str(c.get("discoverer", "")), 80),
            "description": display.clip(str(c.get("description", "")), 400),
            "cue": str(c.get("cue", "")),
            "class": display.clip(str(c.get("class") or "—"), 80),
            "members": str(len(c.get("members") or [])),
            "status": status,
            "effect": "" if effect is None else _effect(float(effect), ci, confidence=(
                c.get("confirmation") == "slice" and not (results.get("samples") or {}).get("labelled", True))),
            "p": "" if p_adj is None else (f"{float(p_adj):.2g}" if p_adj >= 0.001 else "< 0.001"),
            "anchor": str(c.get("tested_as") or ""),
        })
    return {
        "intro": (
            f"Discoverers looked for cues nobody named on {len(data.get('discovery_ids') or [])} of the audited "
            f"images. Each candidate was then tested on the other {_confirmed_on(data)}, which no discoverer saw. "
            "Only a confirmed candidate is a finding; its figures and numbers are under Hypotheses."),
        "method": (
            "A cue is tested by removing it (or putting on the images a cue they do not show) and comparing the "
            "model's predictions (paired test, in the audit's Holm correction); a slice (a range of image "
            "properties, a metadata value or a cluster of the model's embedding) by its rule: is the model worse "
            "on the images it picks than on the others (accuracy, or its confidence without labels)?"),
        "note": str(data.get("note") or ""),
        "rows": rows,
        "none": "No discoverer proposed a candidate." if not rows and not data.get("note") else "",
    }


def _effect(effect: float, ci: Any, confidence: bool) -> str:
    """An effect and its interval: points of a share, or a difference of confidence (no labels)."""
    if confidence:
        return f"{effect:+.3f} confidence" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
    return f"{100 * effect:+.1f} pp" + (f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else "")


def _confirmed_on(data: Mapping[str, Any]) -> str:
    """The held-back images, or the seeded subset of them each candidate was confirmed on (confirm_images)."""
    held = len(data.get("held_back_ids") or [])
    used = data.get("confirmed_on")
    return f"{used} (a seeded subset of {held})" if isinstance(used, int) and used < held else str(held)

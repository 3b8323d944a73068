"""The comparison page: several models side by side (comparison.html, .pdf, .json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xai_audit.files import atomic_write
from xai_audit.report import figures
from xai_audit.report.artifacts import ReportArtifacts
from xai_audit.report.context import _ci_pct, _effect_with_ci, _p, _pct
from xai_audit.report.render import ReportError, _pdf_bytes, render_html
from xai_audit.report.specs import render_spec

FILENAMES = {"html": "comparison.html", "pdf": "comparison.pdf", "json": "comparison.json"}
MAX_ROWS = 8
#: figure kinds of an explanation drawn once per model, one under the other: what each model learned (filters,
#: images grown from noise) and per-channel curves (the spike plot); maps are compared image by image instead
SIDE_BY_SIDE_KINDS = ("images", "lines")


def build_comparison_context(comparison: Mapping[str, Any], artifacts: Mapping[str, ReportArtifacts]) -> dict[str, Any]:
    models = comparison["models"]
    accuracy_figure = None
    if all(m.get("accuracy") is not None for m in models):
        accuracy_figure = {
            "src": figures.group_accuracy_figure(
                [{"label": m["name"], "n": m["n"], "accuracy": m["accuracy"], "ci": m["ci"]} for m in models], "model"
            ),
            "alt": "Accuracy of each model with its 95 % confidence interval.",
            "caption": "Accuracy per model on the same data, with 95 % Wilson intervals.",
            "samples": [],
        }
    return {
        "title": comparison["title"],
        "tool": f"{comparison['tool']['name']} {comparison['tool']['version']}",
        "same_data": comparison["same_data"],
        "same_classes": comparison.get("same_classes", True),
        "models": [
            {"name": m["name"], "adapter": m["adapter"], "fingerprint": m["fingerprint"][:12] + "…", "n": m["n"],
             "classes": _classes_text(m.get("classes") or []),
             "accuracy": f"{_pct(m['accuracy'])} {_ci_pct(m['ci'])}" if m["accuracy"] is not None else "no labels",
             "findings": m["findings"], "failures": m["failures"]}
            for m in models
        ],
        "accuracy_figure": accuracy_figure,
        "pairs": [
            {"a": p["a"], "b": p["b"], "n": p["n_common"],
             "difference": _effect_with_ci(p.get("difference"), p.get("ci"), True) if p.get("difference") is not None else "—",
             "p_value": _p(p.get("p_value")), "p_value_adjusted": _p(p.get("p_value_adjusted")),
             "verdict": p.get("verdict", ""), "test": p.get("test", "")}
            for p in comparison["pairs"]
        ],
        "groups": [
            {"model": g["model"], "step": g["step"], "column": g["column"] or "—",
             "gap": _effect_with_ci(g.get("gap"), g.get("ci"), True) if g.get("gap") is not None else "—",
             "p_value_adjusted": _p(g.get("p_value_adjusted")), "verdict": g.get("verdict") or "—"}
            for g in comparison["groups"]
        ],
        "hypotheses": [
            {"step": h["step"], "cells": [
                {"model": c["model"], "status": c["status"],
                 "text": (f"{_effect_with_ci(c.get('effect'), c.get('ci'), _is_share(c))}; {c.get('verdict')}"
                          if c["status"] == "ok" else c["status"])}
                for c in h["models"]]}
            for h in comparison["hypotheses"]
        ],
        "effect_pairs": [
            {"step": p["step"], "a": p["a"], "b": p["b"], "n": p["n_common"], "metric": p.get("metric", ""),
             "effects": (f"{_pct(p['effect_a'])} vs {_pct(p['effect_b'])}" if p.get("effect_a") is not None else "—"),
             "difference": _effect_with_ci(p.get("difference"), p.get("ci"), True) if p.get("difference") is not None else "—",
             "p_value_adjusted": _p(p.get("p_value_adjusted")), "verdict": p.get("verdict", ""), "test": p.get("test", "")}
            for p in comparison.get("effect_pairs") or []
        ],
        "corruption_reference": [
            {"step": r["step"], "model": r["model"], "reference": r["reference"], "n": r.get("n_common", 0),
             "mce": _ratio_with_ci(r.get("mce"), r.get("mce_ci")),
             "relative_mce": _ratio_with_ci(r.get("relative_mce"), r.get("relative_mce_ci")), "test": r["test"]}
            for r in comparison.get("corruption_reference") or []
        ],
        "corruption_reference_notes": sorted({r["note"] for r in comparison.get("corruption_reference") or []
                                              if r.get("note")}),
        "model_names": [m["name"] for m in models],
        "heatmaps": _heatmaps(comparison, artifacts),
        "learned": _learned(comparison, artifacts),
        "heatmaps_missing": not artifacts,
    }


def _ratio_with_ci(value: float | None, ci: Sequence[float] | None) -> str:
    """A ratio to the reference model (1.00: as the reference) with its interval."""
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _classes_text(classes: Sequence[str], shown: int = 6) -> str:
    """A model's classes for the models table: how many, and the first few names."""
    if not classes:
        return "—"
    names = ", ".join(str(c) for c in classes[:shown]) + (", …" if len(classes) > shown else "")
    return f"{len(classes)}: {names}"


def _is_share(cell: Mapping[str, Any]) -> bool:
    return all(v is None or 0 <= float(v) <= 1 for v in (cell.get("before"), cell.get("after")))


def _heatmaps(comparison: Mapping[str, Any], artifacts: Mapping[str, ReportArtifacts]) -> list[dict[str, Any]]:
    """For each explainer, the same images' maps under every model, one colour scale per figure."""
    out = []
    names = [m["name"] for m in comparison["models"]]
    if not artifacts or any(n not in artifacts for n in names):
        return out
    for explainer in comparison["explainers"]:
        exps = {n: artifacts[n].explanations.get(explainer) for n in names}
        if any(e is None for e in exps.values()):
            continue
        common = [sid for sid in exps[names[0]].sample_ids if all(sid in e.sample_ids for e in exps.values())][:MAX_ROWS]
        common = [sid for sid in common if sid in artifacts[names[0]].images]
        if not common:
            continue
        overlays = {n: np.stack([exps[n].maps[exps[n].sample_ids.index(sid)] for sid in common]) for n in names}
        images = [artifacts[names[0]].images[sid] for sid in common]
        own = {m["name"]: m.get("classes") or comparison.get("classes") or [] for m in comparison["models"]}
        titles = []
        for sid in common:  # each model's prediction named with its own classes
            preds = ", ".join(
                f"{n}: {comparison_class(artifacts[n], sid, own[n])}"
                for n in names if sid in artifacts[n].predictions
            )
            titles.append(f"{sid}\n{preds}")
        signed = all(e.signed for e in exps.values())
        out.append({
            "name": explainer,
            "figure": {
                "src": figures.explanation_grid(images, overlays, titles, signed),
                "alt": f"{explainer} maps of the same {len(common)} images under each model.",
                "caption": f"{explainer}: the same images explained by each model (columns), one colour scale for the figure.",
                "samples": common,
            },
        })
    return out


def _learned(comparison: Mapping[str, Any], artifacts: Mapping[str, ReportArtifacts]) -> list[dict[str, Any]]:
    """For each explainer, each figure of a ``SIDE_BY_SIDE_KINDS`` kind that every model's explanation has
    (the same kind drawn from the same arrays, e.g. one layer's filters), drawn for each model in turn."""
    names = [m["name"] for m in comparison["models"]]
    if not artifacts or any(n not in artifacts for n in names):
        return []
    out = []
    for explainer in comparison["explainers"]:
        exps = {n: artifacts[n].explanations.get(explainer) for n in names}
        if any(e is None for e in exps.values()):
            continue
        keyed = {n: {_figure_key(spec): spec for spec in e.figures if spec.get("kind") in SIDE_BY_SIDE_KINDS}
                 for n, e in exps.items()}
        for key, first in keyed[names[0]].items():
            if not all(key in keyed[n] for n in names):
                continue
            figures_ = []
            for n in names:
                fig = render_spec(keyed[n][key], exps[n].arrays)
                figures_.append({**fig, "caption": f"{n}: {fig['caption']}", "alt": f"{n}: {fig['alt']}"})
            out.append({"explainer": explainer, "title": str(first.get("title") or first["kind"]), "figures": figures_})
    return out


def _figure_key(spec: Mapping[str, Any]) -> tuple:
    """What makes two models' figures the same figure: the kind and the arrays it is drawn from."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if set(value) == {"array"}:
                found.append(str(value["array"]))
            else:
                for v in value.values():
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(spec)
    return (spec.get("kind"), tuple(sorted(found)))


def comparison_class(artifacts: ReportArtifacts, sid: str, classes: Sequence[str]) -> str:
    index, prob = artifacts.predictions[sid]
    name = classes[index] if 0 <= index < len(classes) else str(index)
    return f"{name} ({prob:.2f})"


def write_comparison(
    comparison: dict[str, Any],
    artifacts: Mapping[str, ReportArtifacts],
    out_dir: Path,
    formats: Sequence[str] = ("html", "pdf", "json"),
    template_dirs: Sequence[Path] = (),
) -> dict[str, Path]:
    """Render, then write each format atomically (nothing is written if rendering fails)."""
    payloads: dict[str, bytes] = {}
    if "json" in formats:
        try:
            payloads["json"] = (json.dumps(comparison, indent=2, allow_nan=False) + "\n").encode()
        except (TypeError, ValueError) as exc:
            raise ReportError(f"comparison is not plain JSON: {exc}") from exc
    if "html" in formats or "pdf" in formats:
        html = render_html(build_comparison_context(comparison, artifacts), template_dirs, page="compare.html")
        if "html" in formats:
            payloads["html"] = html.encode()
        if "pdf" in formats:
            payloads["pdf"] = _pdf_bytes(html)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in [f for f in formats if f in payloads]:  # a model card is one model's (each report folder's)
        atomic_write(out_dir / FILENAMES[fmt], payloads[fmt])
        written[fmt] = out_dir / FILENAMES[fmt]
    return written

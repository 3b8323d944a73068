"""Step outputs to and from (plain data, arrays), for the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xai_audit.contract.types import Explanation, HypothesisResult


def explanation_to_cache(exp: Explanation) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data = {
        "method": exp.method,
        "sample_ids": list(exp.sample_ids),
        "signed": exp.signed,
        "scalars": {k: float(v) for k, v in exp.scalars.items()},
        "tables": exp.tables,
        "notes": list(exp.notes),
        "figures": to_jsonable(exp.figures),
        "maps_caption": exp.maps_caption,
        "suggested_hypotheses": to_jsonable(exp.suggested_hypotheses),
        "run": to_jsonable(exp.run),  # how the cached computation ran: a re-run that reads it reports the same
        "array_names": sorted(exp.arrays),
    }
    arrays = {"maps": np.asarray(exp.maps), "targets": np.asarray(exp.targets)}
    arrays.update({f"extra__{k}": np.asarray(v) for k, v in exp.arrays.items()})
    return data, arrays


def explanation_from_cache(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> Explanation:
    return Explanation(
        method=data["method"],
        sample_ids=list(data["sample_ids"]),
        targets=arrays["targets"],
        maps=arrays["maps"],
        signed=bool(data["signed"]),
        scalars=dict(data["scalars"]),
        arrays={k: arrays[f"extra__{k}"] for k in data["array_names"]},
        tables=data["tables"],
        notes=list(data["notes"]),
        figures=list(data.get("figures", [])),
        maps_caption=str(data.get("maps_caption", "")),
        suggested_hypotheses=list(data.get("suggested_hypotheses", [])),
        run=dict(data.get("run") or {}),
    )


def hypothesis_to_cache(result: HypothesisResult) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "arrays"}
    data["ci"] = list(result.ci) if result.ci is not None else None
    data["array_names"] = sorted(result.arrays)
    return to_jsonable(data), {f"extra__{k}": np.asarray(v) for k, v in result.arrays.items()}


def hypothesis_from_cache(data: dict[str, Any], arrays: dict[str, np.ndarray]) -> HypothesisResult:
    data = dict(data)
    data["ci"] = tuple(data["ci"]) if data.get("ci") is not None else None
    data["arrays"] = {k: arrays[f"extra__{k}"] for k in data.pop("array_names", [])}
    return HypothesisResult(**data)


def to_jsonable(value: Any) -> Any:
    """Numpy scalars and arrays to Python numbers and lists; NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if np.isfinite(f) else None
    return value

"""`xai-audit verify DIR`: do the model and the data still match the report?

Recomputes the sha256 of every model file and data file the report recorded
(the audited data's, every other data set's a step read: a dataset-shift's data,
a reference set; the region source's model files), and, unless told not to,
loads the model and data again from the plan as run and compares the content
fingerprints (which also covers generated data), the other data sets' and the
region source's included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from xai_audit.errors import DataError
from xai_audit.load.provenance import file_sha256


def read_results(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the path of the report's results.json, its data); DataError naming the file when it is not one."""
    path = Path(folder) / "results.json" if Path(folder).is_dir() else Path(folder)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no results.json here") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable results.json: {exc}") from None
    if not isinstance(results, dict) or not isinstance(results.get("plan"), dict) or "provenance" not in results:
        raise DataError(f"{path}: not an xai-audit results.json (no plan or provenance)")
    return path, results


#: the statuses of a row that holds: a file or fingerprint that matches, a signature that is valid
OK = ("match", "valid")


def verify_report(folder: Path, registry: Any, *, load: bool = True,
                  trusted_keys: Path | None = None) -> list[dict[str, Any]]:
    """One row per thing checked: ``{what, path, status, expected, found}``; a row holds when its status is in
    :data:`OK` (files and fingerprints: match|changed|missing; signatures: valid|invalid|untrusted|unchecked).

    Every signature under the report's ``signatures/`` is checked, with every file it signed; with
    ``trusted_keys`` (a file or folder of public keys) a signature by any other key fails."""
    from xai_audit.verify.signing import read_trusted_keys, verify_signatures

    trusted = read_trusted_keys(trusted_keys) if trusted_keys is not None else None
    signatures = verify_signatures(Path(folder) if Path(folder).is_dir() else Path(folder).parent, trusted)
    try:
        path, results = read_results(folder)
        provenance = results.get("provenance")
        if not isinstance(provenance, dict) or "model" not in provenance:
            raise DataError(f"{path}: not an xai-audit results.json (no provenance)")
    except DataError as exc:
        if not signatures:
            raise
        # a signed report whose results.json no longer reads: the signatures say which bytes changed
        return [*signatures, {"what": f"report ({exc})", "path": "", "status": "unreadable", "expected": None,
                              "found": None}]

    rows: list[dict[str, Any]] = []
    for entry in provenance["model"].get("files") or []:
        rows.append(_file_row("model file", entry["path"], entry["sha256"]))
    for file_path, sha in provenance.get("dataset", {}).get("files") or []:
        rows.append(_file_row("data file", file_path, sha))
    for entry in (provenance.get("regions") or {}).get("files") or []:
        rows.append(_file_row("region model file", entry["path"], entry["sha256"]))
    for other in _others(provenance):
        for file_path, sha in other.get("files") or []:
            rows.append(_file_row(f"{other['step']} data file", file_path, sha))
    if provenance.get("plan_file"):
        rows.append(_file_row("plan file", provenance["plan_file"]["path"], provenance["plan_file"]["sha256"]))
    if load:
        rows.extend(_fingerprints(results, registry))
    return rows + signatures


def _file_row(what: str, file_path: str, expected: str) -> dict[str, Any]:
    p = Path(file_path)
    if not p.is_file():
        return {"what": what, "path": file_path, "status": "missing", "expected": expected, "found": None}
    found = file_sha256(p)
    return {"what": what, "path": file_path, "status": "match" if found == expected else "changed",
            "expected": expected, "found": found}


def _fingerprints(results: dict[str, Any], registry: Any) -> list[dict[str, Any]]:
    from xai_audit.contract.types import LoadContext
    from xai_audit.load.loading import load_model_and_data, load_other_dataset, load_step
    from xai_audit.plan import parse_plan

    provenance = results["provenance"]
    plan_data = {k: v for k, v in results["plan"].items() if v is not None}
    plan = parse_plan(yaml.safe_dump(plan_data), registry, filename="results.json plan",
                      base_dir=Path(provenance.get("base_dir") or "."))
    model, dataset = load_model_and_data(plan)
    checks = [
        ("model weights fingerprint", provenance["model"]["fingerprint"], model.fingerprint()),
        ("data fingerprint", provenance["dataset"]["fingerprint"], dataset.fingerprint()),
    ]
    regions = provenance.get("regions") or {}
    if plan.regions is not None and regions.get("fingerprint"):
        source = load_step(plan.regions, LoadContext(plan.base_dir, plan.seed, plan.runtime.device), DataError,
                           "region source")
        checks.append(("region source fingerprint", regions["fingerprint"], source.fingerprint()))
    for other in _others(provenance):
        if other.get("fingerprint"):  # one the run could not load has none, and its step failed
            found = load_other_dataset(registry, plan, dict(other["options"])).fingerprint()
            checks.append((f"{other['step']} data fingerprint ({other['option']})", other["fingerprint"], found))
    rows = []
    for what, expected, found in checks:
        rows.append({"what": what, "path": "", "status": "match" if expected == found else "changed",
                     "expected": expected, "found": found})
    return rows


def _others(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """The other data sets the report's steps read (provenance.other_datasets; none in an older report)."""
    return [o for o in provenance.get("other_datasets") or [] if isinstance(o, dict) and o.get("step")]

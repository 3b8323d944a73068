"""Provenance: what exactly was audited, and with what, so a reviewer can check it later.

Hashes of the model files and of every data file (the audited data's, and
every other data set a step reads: a dataset-shift's data, a reference set),
the fingerprints the plugins compute from content, the plan file, the versions of Python, torch,
every plugin and library, the device, and xai-audit's own version and git
commit where it runs from a checkout. Nothing is sent anywhere.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from xai_audit import __version__

#: libraries whose versions are recorded when installed (the explainers' and the report's)
LIBRARIES = (
    "torch", "numpy", "scipy", "pandas", "scikit-learn", "captum", "lime", "quantus", "giotto-tda", "giotto-ph",
    "transformers", "safetensors", "onnxruntime", "fairlearn", "matplotlib", "jinja2", "weasyprint", "pydantic",
    "pluggy", "pillow", "ray",
)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}


def data_manifest(files: list[Path]) -> tuple[list[list[str]], str | None]:
    """([[path, sha256], ...] sorted by path, sha256 of the manifest) for a data set's files."""
    rows = [[str(p), file_sha256(Path(p))] for p in sorted(files, key=str)]
    if not rows:
        return [], None
    text = "\n".join(f"{p}\t{h}" for p, h in rows)
    return rows, hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()  # a name's own bytes


def other_dataset_entry(other) -> dict[str, Any]:
    """One other data set (``xai_audit.load.loading.OtherDataset``) as provenance records it: where the plan
    names it, its description, fingerprint and every file's sha256 (``error`` when it could not be loaded)."""
    entry: dict[str, Any] = {"step": other.step, "option": other.option, "loader": other.options.get("loader"),
                             "options": other.options}
    if other.dataset is None:
        return {**entry, "error": other.error}
    manifest, manifest_sha = data_manifest(list(other.dataset.files()))
    return {**entry, "description": other.dataset.describe(), "fingerprint": other.fingerprint,
            "files_manifest_sha256": manifest_sha, "n_files": len(manifest), "files": manifest}


def build_provenance(plan, registry, model, dataset, region_source=None, other_datasets=()) -> dict[str, Any]:
    manifest, manifest_sha = data_manifest(list(dataset.files()))
    used = {("model-adapter", plan.model.name), ("dataset", plan.dataset.name)}
    used |= {("dataset", str(o.options.get("loader"))) for o in other_datasets}
    used |= {("explainer", s.name) for s in plan.explainers} | {("hypothesis", s.name) for s in plan.hypotheses}
    used |= {("discoverer", s.name) for s in plan.discoverers}
    regions = None
    if plan.regions is not None and region_source is not None:
        used.add(("region-source", plan.regions.name))
        regions = {
            "source": plan.regions.name,
            "description": region_source.describe(),
            "fingerprint": region_source.fingerprint(),
            "files": [file_entry(p) for p in region_source.files()],
        }
    plan_file = None
    if plan.path is not None and Path(plan.path).is_file():
        plan_file = {"path": str(Path(plan.path).resolve()), "sha256": file_sha256(Path(plan.path))}
    return {
        "plan_file": plan_file,
        "base_dir": str(Path(plan.base_dir).resolve()),
        "model": {
            "adapter": plan.model.name,
            "description": model.describe(),
            "fingerprint": model.fingerprint(),
            "files": [file_entry(p) for p in model.files()],
        },
        "dataset": {
            "loader": plan.dataset.name,
            "description": dataset.describe(),
            "fingerprint": dataset.fingerprint(),
            "files_manifest_sha256": manifest_sha,
            "n_files": len(manifest),
            "files": manifest,
        },
        "regions": regions,
        # only with other data: a plan without any keeps the provenance it always had
        **({"other_datasets": [other_dataset_entry(o) for o in other_datasets]} if other_datasets else {}),
        "plugins": [info.as_dict() for info in registry.all() if (info.kind, info.name) in used],
        "environment": environment(plan.runtime.device),
    }


def environment(device: str) -> dict[str, Any]:
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],  # the platform and the host are run facts (results.json's run.machine)
        "torch": libraries.get("torch"),
        "numpy": libraries.get("numpy"),
        "device": device,
        "xai_audit": __version__,
        "xai_audit_git_commit": git_commit(),
        "libraries": libraries,
    }


def git_commit() -> str | None:
    """The commit xai-audit runs from, when it runs from a git checkout; None otherwise."""
    here = Path(__file__).resolve().parent
    if not any((parent / ".git").exists() for parent in (here, *here.parents)):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None

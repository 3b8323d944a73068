"""Issue 17, items 6-8: region hypotheses reachable offline (masks stored as files beside the images), `validate`
refusing what `run` would (masks the data lack, a group column that is not there), and unlabelled image folders
(a flat folder, a CSV without a label column) and the skin-tone estimate asked for by the README's name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EMOTIONS, TINY_MODEL
from PIL import Image
from typer.testing import CliRunner

from xai_audit.cli import app

runner = CliRunner()
SIZE = 32
N = 12
REGIONS = {"eyes": (8, 12, 6, 26), "brows": (5, 7, 6, 26), "nose": (13, 19, 13, 19), "mouth": (21, 25, 10, 22),
           "skin": (3, 29, 4, 28)}  # rows, columns of each drawn part


def _face(rng: np.random.Generator, tone: float) -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 0.15, np.float32)
    top, bottom, left, right = REGIONS["skin"]
    image[top:bottom, left:right] = np.array([0.95, 0.75, 0.6]) * tone
    for name in ("eyes", "brows", "nose", "mouth"):
        top, bottom, left, right = REGIONS[name]
        image[top:bottom, left:right] = rng.random(3) * 0.5
    return np.clip(image + 0.03 * rng.standard_normal(image.shape), 0, 1)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A plan folder: the tiny model, a flat folder of unlabelled colour faces (no CSV), and masks/<region>/."""
    root = tmp_path_factory.mktemp("offline")
    (root / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), root / "weights.pt")
    rng = np.random.default_rng(0)
    (root / "faces").mkdir()
    for i in range(N):
        image = _face(rng, 0.5 + 0.5 * (i % 2))
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "faces" / f"f{i:02d}.jpg")
        for name, (top, bottom, left, right) in REGIONS.items():
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[top:bottom, left:right] = 255
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / name / f"f{i:02d}.png")
    return root


def _plan(folder: Path, hypotheses: str, *, regions: str = "", dataset: str = "path: faces") -> Path:
    path = folder / "plan.yaml"
    path.write_text(
        "seed: 0\n"
        "model: {adapter: torch, module: tiny_model.py:make, weights: weights.pt, "
        f"classes: [{', '.join(EMOTIONS)}], input: {{size: {SIZE}}}}}\n"
        f"dataset: {{loader: image-folder, {dataset}}}\n"
        + regions
        + "explain: {samples: 2, trust: {enabled: false}}\n"
        + f"hypotheses:\n{hypotheses}"
        + "report: {title: Offline regions}\n"
    )
    return path


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


REGION_STEPS = "  - occlude-regions: {regions: [eyes, mouth, lower_face]}\n  - mask-lower-face\n"
MASK_FILES = "regions: {source: mask-files, path: masks}\n"


def test_validate_refuses_region_hypotheses_without_any_masks(faces):
    result = runner.invoke(app, ["validate", str(_plan(faces, "  - grayscale\n" + REGION_STEPS))])
    assert result.exit_code == 2, result.output
    lines = _errors(result.output)
    assert len(lines) == 2, result.output  # one line per step that needs masks; grayscale needs none
    assert "hypotheses.occlude-regions" in lines[0] and "hypotheses.mask-lower-face" in lines[1]
    assert all("needs region masks" in line and "mask-files" in line for line in lines)


def test_validate_names_the_first_missing_mask_file(faces, tmp_path):
    import shutil

    shutil.copytree(faces, tmp_path / "plan", dirs_exist_ok=True)
    (tmp_path / "plan" / "masks" / "mouth" / "f03.png").unlink()
    result = runner.invoke(app, ["validate", str(_plan(tmp_path / "plan", REGION_STEPS, regions=MASK_FILES))])
    assert result.exit_code == 2, result.output
    lines = _errors(result.output)
    assert len(lines) == 1 and "hypotheses.occlude-regions" in lines[0] and "f03.png" in lines[0], result.output
    # mask-lower-face reads only the nose (and the face parts), all there: not refused
    ok = runner.invoke(app, ["validate", str(_plan(tmp_path / "plan", "  - mask-lower-face\n", regions=MASK_FILES))])
    assert ok.exit_code == 0, ok.output


def test_a_region_the_mask_folder_lacks_is_refused(faces):
    plan = _plan(faces, "  - occlude-regions: {regions: [hair]}\n", regions=MASK_FILES)
    result = runner.invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2 and "needs region 'hair'" in result.output and "mask-files" in result.output


def test_masks_beside_the_images_run_the_region_hypotheses(faces, tmp_path):
    plan = _plan(faces, REGION_STEPS, regions=MASK_FILES)
    assert runner.invoke(app, ["validate", str(plan)]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    for name in ("occlude-regions", "mask-lower-face"):
        assert results["hypotheses"][name]["status"] == "ok", results["hypotheses"][name]
    regions = results["provenance"]["regions"]
    assert regions["source"] == "mask-files" and len(regions["files"]) == N * len(REGIONS)


def test_a_mask_file_is_named_by_its_sample_id():
    from xai_audit_datasets.mask_files import mask_name

    assert mask_name("happy/001.jpg", ".png").as_posix() == "happy/001.png"
    assert mask_name("s0001", ".png").as_posix() == "s0001.png"


def test_mask_files_read_each_images_own_mask(tmp_path):
    from xai_audit_datasets.mask_files import MaskFiles

    for sid, row in (("a", 2), ("sub/b", 5)):
        mask = np.zeros((8, 8), np.uint8)
        mask[row] = 255
        (tmp_path / "mouth" / Path(sid).parent).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "mouth" / f"{sid}.png")
    source = MaskFiles(tmp_path, ["mouth"], ".png")
    masks = source.regions_for(np.zeros((2, 3, 16, 16), np.float32), ["a.jpg", "sub/b.png"])
    assert [np.flatnonzero(m["mouth"].any(axis=1)).tolist() for m in masks] == [[4, 5], [10, 11]]  # 8 -> 16 rows
    assert source.missing(["a.jpg", "c.jpg"], ["mouth"]).startswith("1 mask file(s) missing")


def test_validate_refuses_a_group_column_the_data_lacks(faces):
    result = runner.invoke(app, ["validate", str(_plan(faces, "  - group-accuracy: {by: [site]}\n"))])
    assert result.exit_code == 2, result.output
    lines = _errors(result.output)
    assert len(lines) == 1 and "hypotheses.group-accuracy: by: no group column 'site'" in lines[0], result.output


def test_by_skin_tone_without_such_a_column_uses_the_labelled_estimate(faces, tmp_path):
    plan = _plan(faces, "  - group-accuracy: {by: [skin_tone], min_group_size: 2}\n")
    assert runner.invoke(app, ["validate", str(plan)]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    step = json.loads((out / "results.json").read_text())["hypotheses"]["group-accuracy"]
    assert step["status"] == "ok"
    assert step["details"]["estimated_columns"] == ["skin tone (ITA estimate)"]
    assert any("estimate" in w for w in step.get("warnings", [])), step.get("warnings")


def test_a_csv_without_a_label_column_is_unlabelled_data(faces, tmp_path):
    from xai_audit_datasets import ImageFolderDataset, ImageFolderOptions

    (tmp_path / "meta.csv").write_text("path,site\n" + "".join(f"f{i:02d}.jpg,{'AB'[i % 2]}\n" for i in range(N)))
    data = ImageFolderDataset(ImageFolderOptions(path=str(faces / "faces"), metadata=str(tmp_path / "meta.csv")))
    assert data.classes is None and data.group_names == ["site"]
    assert data[1].label is None and data[1].groups == {"site": "B"}


# --------------------------------------------------------------------------- facial landmarks (the [landmarks] extra)


def test_landmarks_without_the_extra_is_one_line(monkeypatch):
    import sys

    from xai_audit_datasets.landmarks import predictor_file

    from xai_audit.api import DataError

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if not installed
    with pytest.raises(DataError, match=r"pip install 'xai-audit\[landmarks\]'") as info:
        predictor_file()
    assert "\n" not in str(info.value)


def _centre_row(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[0].mean())


def test_landmarks_give_face_part_masks_in_face_order():
    pytest.importorskip("dlib")
    from xai_audit_datasets.landmarks import NAMES, LandmarksOptions, LandmarksPlugin

    source = LandmarksPlugin(LandmarksOptions(face="whole-image")).load(None)
    image = _face(np.random.default_rng(1), 0.9).transpose(2, 0, 1).astype(np.float32)
    (masks,) = source.regions_for(image[None], ["f.png"])
    assert sorted(masks) == NAMES == source.names()
    assert all(m.dtype == bool and m.shape == (SIZE, SIZE) and m.any() for m in masks.values())
    assert _centre_row(masks["brows"]) < _centre_row(masks["eyes"]) < _centre_row(masks["nose"]) \
        < _centre_row(masks["mouth"])
    inside = masks["eyes"] | masks["nose"] | masks["mouth"]
    assert (inside & masks["skin"]).sum() >= 0.9 * inside.sum()  # the face outline holds its parts
    assert source.describe()["images"] == {"whole image": 1}


def test_landmarks_run_the_region_hypotheses_offline(faces, tmp_path):
    pytest.importorskip("dlib")
    plan = _plan(faces, REGION_STEPS, regions="regions: {source: landmarks}\n")
    assert runner.invoke(app, ["validate", str(plan)]).exit_code == 0
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["failures"] == []
    assert all(results["hypotheses"][n]["status"] == "ok" for n in ("occlude-regions", "mask-lower-face"))
    assert results["provenance"]["regions"]["source"] == "landmarks"


@pytest.mark.parametrize("by", [["skin_tone"], ["skin_tone", "site"]])
def test_by_skin_tone_on_grey_images_is_not_a_group_unknown(by):
    """The README's by: [skin_tone] on grey images: the estimate needs colour, so it is left out with the reason
    (not applicable when it was the only grouping), never one group 'unknown'."""
    from xai_audit_hypotheses.groups import GroupAccuracyHypothesis

    from xai_audit.api import HypothesisContext, Sample

    rng = np.random.default_rng(0)
    samples = [Sample(id=f"g{i}", image=np.repeat(rng.random((1, SIZE, SIZE), dtype=np.float32), 3, axis=0),
                      groups={"site": "AB"[i % 2]}) for i in range(12)]
    probs = np.eye(len(EMOTIONS), dtype=np.float32)[np.arange(12) % 3]
    context = HypothesisContext(model=None, samples=samples, probs=probs, classes=EMOTIONS, seed=0,
                                predict=lambda images: probs[: len(images)])
    result = GroupAccuracyHypothesis(GroupAccuracyHypothesis.Options(by=by, min_group_size=2)).test(context)
    columns = set(result.breakdown)
    assert not any("ITA" in c for c in columns), columns
    if by == ["skin_tone"]:
        assert result.verdict == "not applicable" and "no colour" in result.details["reason"]
    else:
        assert "site" in columns and any("no colour" in w for w in result.warnings)

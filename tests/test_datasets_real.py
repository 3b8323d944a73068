"""fer2013-csv and digits, on small files the tests write and on the bundled digits."""

from __future__ import annotations

import numpy as np
import pytest

from xai_audit.errors import DataError
from xai_audit.contract.types import LoadContext


def _load(registry, name, base_dir, **options):
    plugin = registry.get("dataset", name).cls
    return plugin(plugin.Options(**options)).load(LoadContext(base_dir=base_dir))


def _fer_csv(path, rows):
    lines = ["emotion,pixels,Usage"]
    for emotion, value, usage in rows:
        lines.append(f"{emotion}," + " ".join([str(value)] * 2304) + f",{usage}")
    path.write_text("\n".join(lines) + "\n")


def test_fer2013_reads_rows_lazily_with_standard_labels(registry, tmp_path):
    _fer_csv(tmp_path / "fer.csv", [(3, 255, "Training"), (4, 0, "PublicTest"), (6, 128, "PrivateTest")])
    ds = _load(registry, "fer2013-csv", tmp_path, path="fer.csv")
    assert ds.classes == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert len(ds) == 3
    s = ds[0]
    assert s.image.shape == (3, 48, 48) and s.image.dtype == np.float32 and np.allclose(s.image, 1.0)
    assert s.label == 3 and s.groups == {"usage": "Training"} and s.id == "fer-000002"
    assert np.allclose(ds[-1].image, 128 / 255)
    test_only = _load(registry, "fer2013-csv", tmp_path, path="fer.csv", usage=["PublicTest", "PrivateTest"])
    assert [test_only[i].label for i in range(len(test_only))] == [4, 6]
    assert test_only.fingerprint() != ds.fingerprint()


def test_fer2013_bad_rows_name_file_and_line(registry, tmp_path):
    path = tmp_path / "fer.csv"
    path.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n9," + " ".join(["0"] * 2304) + ",Training\n")
    ds = _load(registry, "fer2013-csv", tmp_path, path="fer.csv")
    with pytest.raises(DataError, match=r"fer.csv:2: 3 pixel values, expected 2304"):
        ds[0]
    with pytest.raises(DataError, match=r"fer.csv:3: emotion 9 is not one of 0..6"):
        ds[1]
    (tmp_path / "wrong.csv").write_text("label,image\n1,2\n")
    with pytest.raises(DataError, match=r"wrong.csv:1: expected the columns emotion,pixels"):
        _load(registry, "fer2013-csv", tmp_path, path="wrong.csv")


def test_digits_split_is_stratified_disjoint_and_deterministic(registry, tmp_path):
    train = _load(registry, "digits", tmp_path, split="train")
    test = _load(registry, "digits", tmp_path, split="test")
    assert len(train) + len(test) == 1797
    assert not {train[i].id for i in range(len(train))} & {test[i].id for i in range(len(test))}
    labels = np.array([test[i].label for i in range(len(test))])
    assert np.all(np.abs(np.bincount(labels, minlength=10) / len(labels) - 0.1) < 0.02)
    s = test[0]
    assert s.image.shape == (3, 32, 32) and 0 <= s.image.min() and s.image.max() <= 1
    again = _load(registry, "digits", tmp_path, split="test")
    assert again[5].id == test[5].id and np.array_equal(again[5].image, test[5].image)


@pytest.mark.slow
def test_digits_demo_runs_offline(tmp_path):
    import json

    from typer.testing import CliRunner

    from xai_audit.cli import app

    out = tmp_path / "digits"
    result = CliRunner().invoke(app, ["demo", "--data", "digits", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "-q"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["accuracy"]["value"] > 0.9 and results["classes"] == [str(d) for d in range(10)]

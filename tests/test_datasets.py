"""The built-in data sets: synthetic-faces and image-folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import xai_audit_datasets
from xai_audit import LoadContext
from xai_audit.errors import DataError
from xai_audit_datasets import (
    CLASSES,
    REGIONS,
    TONES,
    ImageFolderPlugin,
    SyntheticFacesDataset,
    SyntheticFacesOptions,
    SyntheticFacesPlugin,
    load_arrays,
)

FACE_PARTS = ("eyes", "brows", "nose", "mouth")


def faces(**options) -> SyntheticFacesDataset:
    return SyntheticFacesPlugin(SyntheticFacesOptions(**options)).load(LoadContext(base_dir=Path(".")))


def brightness(images: np.ndarray) -> np.ndarray:
    return images.mean(axis=(1, 2, 3))


# -- synthetic-faces -------------------------------------------------------------


def test_hook_registers_both_plugins():
    plugins = xai_audit_datasets.register_datasets()
    assert [p.name for p in plugins] == ["synthetic-faces", "image-folder", "fer2013-csv", "digits"]
    assert all(p.kind == "dataset" and p.description for p in plugins)


def test_sample_shapes_types_and_ids():
    ds = faces(n=10, size=48)
    assert len(ds) == 10
    assert ds.classes == CLASSES
    assert ds.group_names == ["skin_tone"]
    assert ds.region_names == REGIONS
    s = ds[3]
    assert s.id == "sf-test-00003"
    assert s.image.dtype == np.float32 and s.image.shape == (3, 48, 48)
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    assert isinstance(s.label, int) and 0 <= s.label < len(CLASSES)
    assert s.groups["skin_tone"] in TONES
    assert set(s.regions) == set(REGIONS)
    for mask in s.regions.values():
        assert mask.dtype == bool and mask.shape == (48, 48)


def test_masks_cover_every_pixel_exactly_once():
    ds = faces(split="train", n=12, size=40, seed=4)
    for i in range(len(ds)):
        regions = ds[i].regions
        count = sum(regions[name].astype(int) for name in REGIONS)
        assert (count == 1).all()
        face = regions["skin"] | np.logical_or.reduce([regions[p] for p in FACE_PARTS])
        assert (regions["background"] == ~(face | regions["hair"])).all()
        for part in ("eyes", "mouth", "skin", "background"):
            assert regions[part].any(), (i, part)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, _, _ = load_arrays(faces(n=6, size=32, seed=1))
    b, _, _ = load_arrays(faces(n=6, size=32, seed=1))
    c, _, _ = load_arrays(faces(n=6, size=32, seed=2))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    ds = faces(n=6, size=32, seed=1)
    assert np.array_equal(ds[2].image, faces(n=6, size=32, seed=1)[2].image)


def test_access_order_and_bulk_loading_do_not_matter():
    ds = faces(split="train", n=9, size=33, seed=7)  # odd size: no SIMD-friendly widths
    forward = [ds[i] for i in range(9)]
    backward = [ds[i] for i in reversed(range(9))][::-1]
    images, labels, tones = ds.arrays(chunk=4)
    for i, (f, b) in enumerate(zip(forward, backward)):
        assert np.array_equal(f.image, b.image)
        assert np.array_equal(f.image, images[i])
        assert f.label == b.label == labels[i]
        assert f.groups["skin_tone"] == tones[i]
        for name in REGIONS:
            assert np.array_equal(f.regions[name], b.regions[name])
    # a sample does not depend on how many samples the data set has
    assert np.array_equal(faces(split="train", n=3, size=33, seed=7)[2].image, forward[2].image)
    assert labels.dtype == np.int64 and images.dtype == np.float32


def test_negative_index_and_index_error():
    ds = faces(n=5, size=16)
    assert ds[-1].id == ds[4].id == "sf-test-00004"
    assert np.array_equal(ds[-5].image, ds[0].image)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(IndexError):
        ds[-6]


def test_options_are_validated():
    with pytest.raises(ValueError):
        SyntheticFacesOptions(size=8)
    with pytest.raises(ValueError):
        SyntheticFacesOptions(n=0)
    with pytest.raises(ValueError):
        SyntheticFacesOptions(rare_tone="VII")
    with pytest.raises(ValueError):
        SyntheticFacesOptions(colour="red")
    assert SyntheticFacesOptions(rare_tone=None).rare_tone is None


def test_test_split_is_balanced():
    ds = faces(split="test", n=700, size=16)
    _, labels, tones = load_arrays(ds)
    assert list(labels[:14]) == [i % 7 for i in range(14)]
    counts = np.bincount(labels, minlength=7)
    assert counts.max() - counts.min() <= 1
    cells = np.zeros((len(CLASSES), len(TONES)), int)
    for label, tone in zip(labels, tones):
        cells[label, TONES.index(tone)] += 1
    assert cells.min() >= 1 and cells.max() - cells.min() <= 1
    assert ds[8].label == 1 and ds[8].groups["skin_tone"] == "II"


def test_planted_effects_in_the_train_split():
    images, labels, tones = load_arrays(faces(split="train", n=3000, size=16, seed=3))
    light = brightness(images)
    sad = labels == CLASSES.index("sad")
    assert light[sad].mean() < 0.75 * light[~sad].mean()
    share = np.mean(np.array(tones) == "VI")
    assert 0.003 <= share <= 0.02  # 1 % planted (binomial scatter at n = 3000)
    assert set(tones) == set(TONES)
    assert np.bincount(labels, minlength=7).min() > 300  # classes roughly balanced


def test_planted_effects_switched_off_and_absent_in_test_split():
    off = faces(split="train", n=1400, size=16, seed=3, dark_sad=0, dark_other=0, rare_tone=None)
    images, labels, tones = load_arrays(off)
    light = brightness(images)
    sad = labels == CLASSES.index("sad")
    assert 0.9 < light[sad].mean() / light[~sad].mean() < 1.1
    assert np.mean(np.array(tones) == "VI") > 0.1
    assert off.describe()["planted"] == []

    test = faces(split="test", n=700, size=16, seed=3, dark_sad=1.0, rare_fraction=0.0)
    images, labels, tones = load_arrays(test)
    light = brightness(images)
    sad = labels == CLASSES.index("sad")
    assert 0.9 < light[sad].mean() / light[~sad].mean() < 1.1
    assert np.mean(np.array(tones) == "VI") == pytest.approx(1 / 6, abs=0.01)
    assert test.describe()["planted"] == []


def test_darkening_only_changes_darkened_images():
    on = faces(split="train", n=40, size=16, seed=5)
    off = faces(split="train", n=40, size=16, seed=5, dark_sad=0.0, dark_other=0.0)
    a, la, _ = load_arrays(on)
    b, lb, _ = load_arrays(off)
    assert np.array_equal(la, lb)
    same = np.array([np.array_equal(x, y) for x, y in zip(a, b)])
    assert same.sum() >= 20 and not same.all()
    assert (brightness(a[~same]) < 0.6 * brightness(b[~same])).all()


def test_fingerprint_and_describe():
    base = faces(split="train", n=50, size=32)
    assert base.fingerprint() == faces(split="train", n=50, size=32).fingerprint()
    assert len(base.fingerprint()) == 64
    for change in ({"seed": 1}, {"n": 51}, {"size": 33}, {"split": "test"}, {"dark_sad": 0.5}, {"rare_tone": None}):
        options = {"split": "train", "n": 50, "size": 32, **change}
        assert faces(**options).fingerprint() != base.fingerprint(), change
    info = base.describe()
    assert info["source"] == "synthetic-faces"
    assert (info["split"], info["n"], info["size"], info["seed"]) == ("train", 50, 32, 0)
    assert any("80%" in p and "sad" in p for p in info["planted"])
    assert any("VI" in p and "1%" in p for p in info["planted"])
    assert faces(split="test").describe()["planted"] == []


def test_classes_differ_where_the_expression_is():
    """Cheap learnability check: a nearest-class-mean rule on the face-part masks
    beats chance by far, and the class-mean images differ in the mouth region
    clearly more than two halves of one class do."""
    train = [s for s in faces(split="test", n=700, size=32, seed=11)]
    test = [s for s in faces(split="test", n=350, size=32, seed=12)]

    def features(samples):
        rows = [np.concatenate([s.regions[p].ravel() for p in ("eyes", "brows", "mouth")]) for s in samples]
        return np.asarray(rows, np.float32), np.asarray([s.label for s in samples])

    xa, ya = features(train)
    xb, yb = features(test)
    means = np.stack([xa[ya == c].mean(axis=0) for c in range(7)])
    predicted = ((xb[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    assert (predicted == yb).mean() > 0.5  # chance is 1/7

    # pixels: luminance relative to the face's own skin, in the mouth window
    window = np.mean([s.regions["mouth"] for s in train], axis=0) > 0.05
    contrast = np.stack([s.image.mean(0)[window] - s.image.mean(0)[s.regions["skin"]].mean() for s in train])
    half_a = np.stack([contrast[ya == c][0::2].mean(axis=0) for c in range(7)])
    half_b = np.stack([contrast[ya == c][1::2].mean(axis=0) for c in range(7)])
    within = np.abs(half_a - half_b).mean()
    off_diagonal = ~np.eye(7, dtype=bool)
    between = np.abs(half_a[:, None] - half_b[None]).mean(axis=-1)[off_diagonal].mean()
    assert between > 1.3 * within


# -- image-folder -----------------------------------------------------------------


def save(path: Path, mode: str, size=(8, 6), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        Image.new("RGB", size, (value, 0, 255 - value)).save(path)
    elif mode == "RGBA":
        Image.new("RGBA", size, (0, 0, 0, 0)).save(path)  # fully transparent -> white
    elif mode == "L":
        Image.new("L", size, value).save(path)
    elif mode == "I;16":
        Image.fromarray(np.full(size[::-1], 65535, dtype=np.uint16)).save(path)
    elif mode == "P":
        Image.new("RGB", size, (value, value, 0)).convert("P").save(path)
    else:
        raise AssertionError(mode)
    return path


def folder(tmp_path: Path, **options):
    return ImageFolderPlugin(ImageFolderPlugin.Options(**options)).load(LoadContext(base_dir=tmp_path))


def test_image_folder_class_subfolders(tmp_path):
    save(tmp_path / "imgs" / "cat" / "a.png", "RGB")
    save(tmp_path / "imgs" / "cat" / "b.png", "RGBA")
    save(tmp_path / "imgs" / "dog" / "c.png", "L", value=51)
    save(tmp_path / "imgs" / "dog" / "d.png", "I;16")
    (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
    ds = folder(tmp_path, path="imgs")
    assert len(ds) == 4 and ds.classes == ["cat", "dog"] and ds.group_names == []
    assert [ds[i].id for i in range(4)] == ["cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"]
    assert [ds[i].label for i in range(4)] == [0, 0, 1, 1]
    for i in range(4):
        s = ds[i]
        assert s.image.dtype == np.float32 and s.image.shape == (3, 6, 8)
        assert 0 <= s.image.min() and s.image.max() <= 1
    assert np.allclose(ds[1].image, 1.0)  # transparent over white
    assert np.allclose(ds[2].image, 0.2)  # L 51 -> 0.2 on every channel
    assert np.allclose(ds[3].image, 1.0)  # 16-bit full scale
    assert np.allclose(ds[-4].image[0], 128 / 255)
    with pytest.raises(IndexError):
        ds[4]
    info = ds.describe()
    assert info["layout"] == "class-folders" and info["n"] == 4 and info["classes"] == ["cat", "dog"]
    assert info["conversions"] == {"I;16": 1, "L": 1, "RGBA": 1}
    assert len(ds.files()) == 4
    # given class order; folders outside it are errors
    assert folder(tmp_path, path="imgs", classes=["dog", "cat"])[0].label == 1
    with pytest.raises(DataError, match="dog"):
        folder(tmp_path, path="imgs", classes=["cat"])


def test_image_folder_with_metadata_csv(tmp_path):
    save(tmp_path / "flat" / "x1.png", "RGB", size=(10, 10))
    save(tmp_path / "flat" / "x2.png", "P", size=(20, 14))
    save(tmp_path / "flat" / "sub" / "x3.png", "L", size=(5, 5))
    (tmp_path / "flat" / "meta.csv").write_text(
        "path,label,skin_tone,age\n"
        "x1.png,happy,II,30\n"
        "x2.png,,V,41\n"
        "sub/x3.png,sad,II,\n"
    )
    ds = folder(tmp_path, path="flat", metadata="flat/meta.csv", size=12)
    assert len(ds) == 3
    assert ds.classes == ["happy", "sad"]
    assert ds.group_names == ["skin_tone", "age"]
    assert [ds[i].label for i in range(3)] == [0, None, 1]
    assert ds[0].groups == {"skin_tone": "II", "age": "30"}
    assert ds[2].groups == {"skin_tone": "II", "age": ""}
    assert ds[2].id == "sub/x3.png"
    assert all(ds[i].image.shape == (3, 12, 12) for i in range(3))
    info = ds.describe()
    assert info["layout"] == "metadata-csv" and info["group_columns"] == ["skin_tone", "age"]
    assert info["conversions"] == {"L": 1, "P": 1}
    assert ds.files()[-1].name == "meta.csv"
    # classes option fixes the label order
    assert folder(tmp_path, path="flat", metadata="flat/meta.csv", size=12, classes=["sad", "happy"])[0].label == 1


def test_image_folder_fingerprint_follows_content(tmp_path):
    save(tmp_path / "d" / "a" / "1.png", "RGB", value=10)
    save(tmp_path / "d" / "b" / "2.png", "RGB", value=20)
    first = folder(tmp_path, path="d").fingerprint()
    assert folder(tmp_path, path=str(tmp_path / "d")).fingerprint() == first
    assert folder(tmp_path, path="d", size=4).fingerprint() != first
    save(tmp_path / "d" / "b" / "2.png", "RGB", value=21)
    assert folder(tmp_path, path="d").fingerprint() != first


def test_image_folder_size_mismatch_names_the_file(tmp_path):
    save(tmp_path / "d" / "a" / "1.png", "RGB", size=(8, 8))
    save(tmp_path / "d" / "a" / "2.png", "RGB", size=(9, 8))
    ds = folder(tmp_path, path="d")
    ds[0]
    with pytest.raises(DataError, match=r"2\.png.*9x8.*size"):
        ds[1]
    assert folder(tmp_path, path="d", size=8)[1].image.shape == (3, 8, 8)


def error_of(tmp_path, **options) -> str:
    with pytest.raises(DataError) as info:
        folder(tmp_path, **options)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_image_folder_errors_name_the_file(tmp_path):
    assert "nowhere" in error_of(tmp_path, path="nowhere")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    assert "no images found" in error_of(tmp_path, path="empty")
    save(tmp_path / "loose" / "a.png", "RGB")
    flat = folder(tmp_path, path="loose")  # a flat folder without a CSV is unlabelled data (issue 17), not an error
    assert len(flat) == 1 and flat.classes is None and flat[0].label is None and flat.layout == "flat-unlabelled"
    assert "missing.csv" in error_of(tmp_path, path="loose", metadata="missing.csv")

    csv = tmp_path / "loose" / "bad.csv"
    csv.write_text("file,label\na.png,x\n")
    message = error_of(tmp_path, path="loose", metadata="loose/bad.csv")
    assert "bad.csv" in message and "line 1" in message and "'path'" in message

    csv.write_text("path,label\na.png,happy\nb.png,sad\n")
    message = error_of(tmp_path, path="loose", metadata="loose/bad.csv")
    assert "bad.csv: line 3, column 'path'" in message and "b.png" in message

    csv.write_text("path,label\na.png,grumpy\n")
    message = error_of(tmp_path, path="loose", metadata="loose/bad.csv", classes=["happy", "sad"])
    assert "bad.csv: line 2, column 'label'" in message and "grumpy" in message

    (tmp_path / "loose" / "broken.png").write_bytes(b"not a png at all")
    csv.write_text("path,label\na.png,happy\nbroken.png,sad\n")
    ds = folder(tmp_path, path="loose", metadata="loose/bad.csv")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        ds[1]

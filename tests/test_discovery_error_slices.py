"""error-slices: weak slices found on the discovery half, confirmed by their rule on the held-back half.

Tiny hand-made models whose weak slice is known exactly. Images are 16 px: class k (of four) is the quadrant
that is bright; every image has a random overall brightness and a group column ``camera`` (A or B). The
models read the quadrants through a linear head (so they have a penultimate layer to cluster):

* ``Quadrants``: right on every image (no weak slice);
* ``DarkFails``: wrong whenever the image is dark (mean luminance under 0.3): the weak slice is "darker images";
* ``MarkFails``: wrong whenever a small grey mark sits in the bottom-right corner, which camera B puts on its
  images: the weak slice is "camera = B" (the mark moves no property of the image much).

A null check: a model whose answers are drawn at random (right 60 % of the time whatever the image) yields no
confirmed slice over several seeds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from xai_audit_discovery import register_discoverers
from xai_audit_discovery.weak_slices import PROPERTIES, ErrorSlicesDiscoverer, image_properties, rule_members

from xai_audit.api import Candidate, DiscoveryContext, HypothesisContext, ModelAdapter, Sample, check_figure
from xai_audit.judge.correction import correct_for_multiple_tests
from xai_audit.judge.findings import derive_findings
from xai_audit.run.discovery import DiscoveredRecommender, confirm, split
from xai_audit.run.steps import result_dict
from xai_audit.testing import check_plugin

CLASSES = ["up-left", "up-right", "down-left", "down-right"]
SIZE = 16
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def images_and_samples(n: int, seed: int, labelled: bool = True) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = int(rng.integers(4))
        level = float(rng.uniform(0.15, 0.9))
        image = np.full((3, SIZE, SIZE), 0.3 * level, np.float32)
        y, x = divmod(label, 2)
        image[:, y * 8:(y + 1) * 8, x * 8:(x + 1) * 8] = level
        image += rng.normal(0, 0.01, image.shape).astype(np.float32)
        camera = "B" if rng.random() < 0.3 else "A"
        if camera == "B":
            image[:, 14:16, 14:16] = 0.5
        out.append(Sample(id=f"s{i:04d}", image=np.clip(image, 0, 1), label=label if labelled else None,
                          groups={"camera": camera}))
    return out


class Quadrants(torch.nn.Module):
    """Reads the four quadrants' means (relative to the image's mean) through a linear head."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.head.weight.copy_(20 * torch.eye(4))
            self.head.bias.zero_()

    def features(self, x):
        lum = (x * LUMA).sum(dim=1)
        q = torch.stack([lum[:, :8, :8], lum[:, :8, 8:], lum[:, 8:, :8], lum[:, 8:, 8:]], dim=1).mean(dim=(2, 3))
        return q - q.mean(dim=1, keepdim=True)

    def forward(self, x):
        return self.head(self.features(x))


class DarkFails(Quadrants):
    def forward(self, x):
        logits = self.head(self.features(x))
        dark = (x * LUMA).sum(dim=1).mean(dim=(1, 2)) < 0.3
        return torch.where(dark[:, None], logits.roll(1, dims=1), logits)  # the next class: wrong


class MarkFails(Quadrants):
    def forward(self, x):
        logits = self.head(self.features(x))
        mark = ((x[:, :, 14:16, 14:16] - 0.5).abs().amax(dim=(1, 2, 3)) < 0.05)
        return torch.where(mark[:, None], logits.roll(1, dims=1), logits)


class RandomRight(ModelAdapter):
    """No weak slice: right with probability 0.6 whatever the image, answers drawn afresh at every call."""

    classes = CLASSES

    def __init__(self, seed: int):
        self.module = Quadrants().eval()
        self._generator = torch.Generator().manual_seed(seed)

    def forward(self, images):
        logits = self.module(images)
        wrong = torch.rand(len(images), generator=self._generator) < 0.4
        return torch.where(wrong[:, None], logits.roll(1, dims=1), logits) \
            + 0.5 * torch.randn(len(images), 4, generator=self._generator)

    def fingerprint(self) -> str:
        return "random-right"


class Adapter(ModelAdapter):
    classes = CLASSES

    def __init__(self, module: torch.nn.Module):
        self.module = module.eval()

    def forward(self, images):
        return self.module(images)

    def fingerprint(self) -> str:
        return type(self.module).__name__


def predict_with(model: ModelAdapter):
    def predict(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model.forward(torch.as_tensor(np.asarray(images, np.float32))), dim=1).numpy()
    return predict


def stage(model: ModelAdapter, samples: list[Sample], seed: int = 0, **options):
    """The host's discovery stage for error-slices alone: split, discover, confirm, Holm, findings."""
    predict = predict_with(model)
    probs = predict(np.stack([s.image for s in samples]))
    found, held = split(len(samples), seed, 0.5)
    context = DiscoveryContext(model=model, samples=[samples[i] for i in found], probs=probs[found],
                               classes=CLASSES, seed=seed, predict=predict)
    held_context = HypothesisContext(model=model, samples=[samples[i] for i in held], probs=probs[held],
                                     classes=CLASSES, seed=seed, predict=predict)
    plugin = ErrorSlicesDiscoverer(ErrorSlicesDiscoverer.Options(**options))
    candidates = plugin.discover(context)
    entries, results = {}, {}
    for c in candidates:
        result = confirm(plugin, c, held_context)
        name = f"discovered: error-slices/{c.name}"
        results[name] = result
        entries[name] = {"status": "ok", "plugin": "error-slices", "options": {}, **result_dict(result),
                         "discovered": {"discoverer": "error-slices", "candidate": c.name,
                                        "description": c.description, "cue": c.cue}}
    correct_for_multiple_tests(entries)
    findings = derive_findings({"hypotheses": entries, "samples": {"labelled": samples[0].label is not None}})
    return plugin, candidates, entries, findings, held_context


def test_it_is_a_registered_discoverer_that_passes_the_conformance_checks():
    assert ErrorSlicesDiscoverer in register_discoverers()
    check_plugin(ErrorSlicesDiscoverer)


def test_a_model_wrong_on_dark_images_has_its_dark_slice_found_confirmed_and_described_by_brightness():
    samples = images_and_samples(600, 0)
    plugin, candidates, entries, findings, held = stage(Adapter(DarkFails()), samples)
    assert candidates, "no slice proposed"
    top = candidates[0]
    assert top.confirmation == "slice" and top.target_class is None
    assert top.description.startswith("darker images (brightness below"), top.description
    assert "accuracy" in top.description
    for figure in top.figures:
        check_figure(figure, top.arrays)
    # the rule picks the dark held-back images, and the slice is confirmed there
    inside = plugin.slice_members(top, held)
    dark = np.array([float((s.image * LUMA.numpy()[0]).sum(axis=0).mean()) < 0.3 for s in held.samples])
    assert (inside & dark).sum() >= 0.8 * inside.sum()
    entry = entries[f"discovered: error-slices/{top.name}"]
    assert entry["verdict"] == "supported" and entry["kind"] == "bias" and entry["p_value_adjusted"] < 0.05
    assert entry["effect"] > 0.3 and entry["ci"][0] > 0 and "held-back images only" in entry["test"]
    assert "Fisher" in entry["test"] and entry["after"] < entry["before"]
    finding = next(f for f in findings if f["hypothesis"] == f"discovered: error-slices/{top.name}")
    assert finding["kind"] == "bias" and "darker images" in finding["title"] and "Accuracy" in finding["detail"]
    # recommended data: more labelled images like the slice
    rows = DiscoveredRecommender.__new__(DiscoveredRecommender)
    rows._plugin, rows._candidate = plugin, top
    (row,) = rows.recommend(finding, entry)
    assert row["action"] == "add-data" and "darker images" in row["group"] and int(row["count"]) > 0
    # the candidate is plain data: JSON round trip of its rule
    assert json.loads(json.dumps(top.intervention)) == top.intervention


def test_a_model_wrong_on_one_camera_has_the_metadata_slice_found_and_confirmed():
    samples = images_and_samples(600, 1)
    _, candidates, entries, _, _ = stage(Adapter(MarkFails()), samples, embedding=False)
    assert candidates
    assert candidates[0].description.startswith("images with camera = B"), [c.description for c in candidates]
    assert candidates[0].cue == "metadata"
    entry = entries[f"discovered: error-slices/{candidates[0].name}"]
    assert entry["verdict"] == "supported" and entry["effect"] > 0.5


def test_an_embedding_cluster_is_a_rule_of_centroids_and_is_described_in_words():
    samples = images_and_samples(600, 2)
    plugin = ErrorSlicesDiscoverer(ErrorSlicesDiscoverer.Options(pairs=False, metadata=False))
    model = Adapter(DarkFails())
    predict = predict_with(model)
    probs = predict(np.stack([s.image for s in samples[:300]]))
    context = DiscoveryContext(model=model, samples=samples[:300], probs=probs, classes=CLASSES, seed=0,
                               predict=predict)
    values = image_properties(context.samples, PROPERTIES)
    clusters = plugin._clusters(context, context.samples, values)
    assert len(clusters) >= 2
    for s in clusters:
        assert s.rule["op"] == "embedding-cluster" and "input of 'head'" in s.words and "cluster 3" not in s.words
        assert set(s.arrays) == {"embedding_mean", "embedding_scale", "embedding_components", "embedding_centroids"}
    # the rule, applied to the same images, gives back each cluster
    held = HypothesisContext(model=model, samples=context.samples, probs=context.probs, classes=CLASSES, seed=0,
                             predict=predict)
    for s in clusters:
        c = Candidate(name="c", description=s.words, cue="embedding", members=[], intervention=s.rule,
                      arrays=s.arrays, confirmation="slice")
        assert (plugin.slice_members(c, held) == s.mask).mean() > 0.97


def test_without_labels_it_compares_confidence_and_never_says_accuracy():
    samples = images_and_samples(600, 0, labelled=False)

    class Unsure(Quadrants):  # right everywhere, but unsure on dark images
        def forward(self, x):
            dark = (x * LUMA).sum(dim=1).mean(dim=(1, 2)) < 0.3
            logits = self.head(self.features(x))
            return torch.where(dark[:, None], 0.05 * logits, logits)

    _, candidates, entries, findings, _ = stage(Adapter(Unsure()), samples)
    assert candidates and candidates[0].description.startswith("darker images")
    text = json.dumps([c.description for c in candidates] + [c.evidence for c in candidates]
                      + list(entries.values()) + findings)
    assert "accuracy" not in text.lower() and "Accuracy" not in text
    assert "confidence" in candidates[0].description
    assert any(e["verdict"] == "supported" and "Mann-Whitney" in e["test"] for e in entries.values())
    assert all("no labels" in f["detail"].lower() for f in findings)


def test_rules_pick_by_property_range_and_metadata_value():
    samples = images_and_samples(40, 3)
    rule = {"op": "slice", "where": [{"property": "brightness", "lo": None, "hi": 0.3},
                                     {"group": "camera", "value": "A"}]}
    picked = rule_members(rule, samples)
    brightness = np.array([float((s.image * LUMA.numpy()[0]).sum(axis=0).mean()) for s in samples])
    assert (picked == ((brightness < 0.3) & np.array([s.groups["camera"] == "A" for s in samples]))).all()
    with pytest.raises(ValueError, match="unknown slice property 'loudness'"):
        rule_members({"op": "slice", "where": [{"property": "loudness", "lo": 0, "hi": 1}]}, samples)


@pytest.mark.parametrize("seed", range(4))
def test_a_model_with_no_weak_slice_yields_no_confirmed_slice(seed):
    samples = images_and_samples(400, 10 + seed)
    _, candidates, entries, findings, _ = stage(RandomRight(seed), samples, seed=seed)
    assert not findings, [f["title"] for f in findings]
    _, _, _, findings, _ = stage(Adapter(Quadrants()), samples, seed=seed)
    assert not findings


MODEL = '''
import torch

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


class DarkFails(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.head.weight.copy_(20 * torch.eye(4))
            self.head.bias.zero_()

    def forward(self, x):
        lum = (x * LUMA).sum(dim=1)
        q = torch.stack([lum[:, :8, :8], lum[:, :8, 8:], lum[:, 8:, :8], lum[:, 8:, 8:]], dim=1).mean(dim=(2, 3))
        logits = self.head(q - q.mean(dim=1, keepdim=True))
        dark = lum.mean(dim=(1, 2)) < 0.3
        return torch.where(dark[:, None], logits.roll(1, dims=1), logits)


def make():
    return DarkFails()
'''


def test_an_audit_with_error_slices_confirms_the_dark_slice_and_reports_it(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from xai_audit.cli import app

    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["path,label,camera"]
    for s in images_and_samples(240, 5):
        Image.fromarray((np.transpose(s.image, (1, 2, 0)) * 255).round().astype(np.uint8)).save(folder / f"{s.id}.png")
        rows.append(f"{s.id}.png,{CLASSES[s.label]},{s.groups['camera']}")
    (folder / "meta.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dark.py").write_text(MODEL)
    (tmp_path / "plan.yaml").write_text(
        "seed: 3\n"
        f"model: {{adapter: torch, module: dark.py:make, classes: {CLASSES}}}\n"
        "dataset: {loader: image-folder, path: data, metadata: data/meta.csv}\n"
        "explain: {samples: 2, trust: {enabled: false}}\n"
        "hypotheses:\n  - grayscale\n"
        "discoverers:\n  - error-slices: {pairs: false}\n"
        "report: {formats: [json, html]}\n")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "plan.yaml"), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code in (0, 1), result.output
    r = json.loads((out / "results.json").read_text())
    rows = [c for c in r["discovery"]["candidates"] if c["discoverer"] == "error-slices"]
    assert rows and rows[0]["confirmation"] == "slice" and rows[0]["class"] is None
    assert rows[0]["description"].startswith("darker images"), rows[0]["description"]
    assert set(rows[0]["members"]) <= set(r["discovery"]["discovery_ids"])
    entry = r["hypotheses"][rows[0]["tested_as"]]
    assert entry["verdict"] == "supported" and entry["kind"] == "bias"
    finding = next(f for f in r["findings"] if f.get("discovered", {}).get("discoverer") == "error-slices")
    assert finding["kind"] == "bias" and finding["slice"].startswith("darker images")
    assert any(row["action"] == "add-data" and row["finding"] == finding["source"] for row in r["recommendations"])
    html = (out / "report.html").read_text()
    assert "darker images" in html, "description"
    assert "Found by discovery" in html, "found"
    assert "images of the slice" in html, "the member strip"


def test_a_slice_candidate_is_checked_and_an_unconfirmed_one_is_named_a_slice():
    with pytest.raises(ValueError, match="confirmation must be one of intervention, slice"):
        Candidate(name="c", description="d", cue="property", members=[], intervention={}, confirmation="vote")
    with pytest.raises(ValueError, match="a slice has a rule"):
        Candidate(name="c", description="d", cue="property", members=[], intervention={}, target_class=0,
                  intervention_adds_cue=True, confirmation="slice")
    from xai_audit.judge.limitations import derive_limitations

    results = {"plan": {"discoverers": [{"error-slices": {}}]}, "samples": {"labelled": True},
               "discovery": {"candidates": [{"discoverer": "error-slices", "name": "dark", "confirmation": "slice",
                                             "description": "darker images", "tested_as": "discovered: x"}]},
               "hypotheses": {"discovered: x": {"status": "ok", "verdict": "not supported"}}}
    (entry,) = [e for e in derive_limitations(results) if e["kind"] == "not confirmed"]
    assert entry["text"].startswith("Candidate slice proposed")

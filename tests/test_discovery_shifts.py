"""Discovery of a cue the audited images do not show (property-shifts), and discovery without labels.

The demo's "darker => 'sad'" shortcut is planted in the training images only: the audited faces are of ordinary
brightness, so no slice of them is dark, and a discoverer that only looks at them cannot see it. property-shifts
asks the model instead (shift a property on every image, see which class the predictions drain into), and the
host confirms the candidate the other way round (does putting the cue on held-back images bring the class in?).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from xai_audit_datasets.synthetic_faces import CLASSES, SyntheticFacesDataset, SyntheticFacesOptions
from xai_audit_discovery import register_discoverers
from xai_audit_discovery.shifts import PropertyShiftsDiscoverer
from xai_audit_discovery.slices import PropertySlicesDiscoverer

from xai_audit.api import Candidate, DiscoveryContext, HypothesisContext, ModelAdapter
from xai_audit.cli import app
from xai_audit.run.discovery import confirm
from xai_audit.testing import check_plugin

SAD, NEUTRAL = CLASSES.index("sad"), CLASSES.index("neutral")
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


class DarkModel(torch.nn.Module):
    """'sad' exactly when the mean luminance is under 0.25, 'neutral' otherwise (the audited faces: 0.27-0.82)."""

    def forward(self, x):
        logits = torch.zeros(len(x), len(CLASSES))
        logits[:, NEUTRAL] = 0.5
        logits[:, SAD] = 60 * (0.25 - (x * LUMA).sum(dim=1).mean(dim=(1, 2)))
        return logits


class Scrambled(torch.nn.Module):
    """Any change to an image redraws its class as if at random: shifts flip predictions, into no class."""

    def __init__(self):
        super().__init__()
        self.register_buffer("freq", torch.linspace(1000.0, 1700.0, len(CLASSES)))

    def forward(self, x):
        total = x.double().sum(dim=(1, 2, 3))
        return torch.sin(total[:, None] * self.freq.double()[None]).float()


class Adapter(ModelAdapter):
    def __init__(self, module: torch.nn.Module):
        self.module, self.classes = module.eval(), list(CLASSES)

    def forward(self, images):
        return self.module(images)

    def fingerprint(self) -> str:
        return type(self.module).__name__


def _contexts(module: torch.nn.Module, labelled: bool = True, n_found: int = 160, n_held: int = 140):
    data = SyntheticFacesDataset(SyntheticFacesOptions(split="test", n=n_found + n_held, size=48))
    samples = [data[i] for i in range(len(data))]
    if not labelled:
        samples = [dataclasses.replace(s, label=None) for s in samples]
    model = Adapter(module)
    probs = model.predict_proba(np.stack([s.image for s in samples]))
    found = DiscoveryContext(model=model, samples=samples[:n_found], probs=probs[:n_found], classes=list(CLASSES),
                             seed=3, predict=model.predict_proba)
    held = HypothesisContext(model=model, samples=samples[n_found:], probs=probs[n_found:], classes=list(CLASSES),
                             seed=3, predict=model.predict_proba)
    return found, held


def test_the_discoverer_registers_and_conforms():
    assert PropertyShiftsDiscoverer in register_discoverers()
    assert not PropertyShiftsDiscoverer.needs_gradients
    check_plugin(PropertyShiftsDiscoverer)
    check_plugin(PropertyShiftsDiscoverer, {"shifts": [{"property": "brightness", "factor": 0.4}], "min_gain": 0.3})
    for bad in ({"shifts": [{"property": "hue", "factor": 0.5}]}, {"shifts": [{"property": "contrast", "factor": 1}]},
                {"shifts": []}):
        with pytest.raises(ValueError):
            PropertyShiftsDiscoverer.Options(**bad)


def test_darker_means_sad_is_found_on_faces_that_are_not_dark_and_confirmed_on_held_back_ones():
    found, held = _contexts(DarkModel())
    assert not (found.preds == SAD).any()  # nothing audited is dark: no slice of these images shows the cue
    assert not [c for c in PropertySlicesDiscoverer().discover(found) if c.target_class == SAD]
    (candidate,) = PropertyShiftsDiscoverer().discover(found)
    assert candidate.target_class == SAD and candidate.intervention_adds_cue and candidate.cue == "property"
    assert candidate.intervention == {"op": "scale", "property": "brightness", "factor": 0.5}
    assert candidate.description.startswith("darker images are taken for 'sad'")
    assert candidate.evidence["gain"] > 0.3 and candidate.evidence["p_bonferroni"] < 0.05
    assert len(candidate.members) == candidate.evidence["newly_predicted"] and candidate.evidence["images"] == 160
    # at most max_images are shifted (a seeded subset): the cost stays flat in the audit's size
    (fewer,) = PropertyShiftsDiscoverer(PropertyShiftsDiscoverer.Options(max_images=60)).discover(found)
    assert fewer.evidence["images"] == 60 and set(fewer.members) <= {s.id for s in found.samples}
    assert json.dumps(dataclasses.asdict(dataclasses.replace(candidate, arrays={})))  # plain data
    result = confirm(PropertyShiftsDiscoverer(), candidate, held)
    # with the cue put on the held-back images (before) most are 'sad'; as they are (after) none is
    assert result.verdict == "supported" and result.kind == "shortcut"
    assert result.before > 0.3 and result.after == 0.0 and result.ci[0] > 0.2
    assert "with the cue put on" in result.test and "held-back images only" in result.test


def test_a_model_whose_predictions_flip_into_no_class_gives_no_candidate():
    found, _ = _contexts(Scrambled())
    before = found.preds
    shifted = PropertyShiftsDiscoverer()._shifted_predictions(
        found, list(found.samples), PropertyShiftsDiscoverer.Options().shifts[0])
    assert (shifted != before).mean() > 0.5  # the shift changes most predictions ...
    assert PropertyShiftsDiscoverer().discover(found) == []  # ... but drains them into no class


def test_discovery_without_labels_proposes_and_confirms_the_same():
    labelled, _ = _contexts(DarkModel())
    unlabelled, held_unlabelled = _contexts(DarkModel(), labelled=False)
    assert unlabelled.labels is None and labelled.labels is not None
    for cls in (PropertyShiftsDiscoverer, PropertySlicesDiscoverer):
        a, b = cls().discover(labelled), cls().discover(unlabelled)
        assert [(c.description, c.members) for c in a] == [(c.description, c.members) for c in b]
    (candidate,) = PropertyShiftsDiscoverer().discover(unlabelled)
    result = confirm(PropertyShiftsDiscoverer(), candidate, held_unlabelled)
    assert result.verdict == "supported" and result.before > 0.3


def test_confirmation_uses_a_seeded_subset_of_the_held_back_images_past_its_cap():
    from xai_audit.run.discovery import confirming, split

    _, held = split(1000, 4, 0.5)
    assert confirming(held, 4, None) is held and confirming(held, 4, 600) is held
    subset = confirming(held, 4, 100)
    assert len(subset) == 100 and set(subset) <= set(held) and (np.diff(subset) > 0).all()
    assert (confirming(held, 4, 100) == subset).all() and not (confirming(held, 5, 100) == subset).all()


def test_a_candidate_that_adds_its_cue_names_its_class():
    with pytest.raises(ValueError, match="needs a target_class"):
        Candidate(name="x", description="darker", cue="property", members=[], intervention={},
                  intervention_adds_cue=True)


# --------------------------------------------------------------------------- end to end, without labels

MODEL = textwrap.dedent(
    """
    import torch

    LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    class CornerAndDark(torch.nn.Module):
        # 'happy' (0) when the top-left corner is bright, 'sad' (1) when the image is dark, else 'neutral' (2)
        def forward(self, x):
            logits = torch.zeros(len(x), 7)
            logits[:, 2] = 0.5
            logits[:, 0] = 40 * (x[:, :, 2:8, 2:8].mean(dim=(1, 2, 3)) - 0.7)
            logits[:, 1] = 60 * (0.25 - (x * LUMA).sum(dim=1).mean(dim=(1, 2)))
            return logits

    def make():
        return CornerAndDark()
    """
)


def test_an_unlabelled_audit_discovers_the_corner_and_darkness_by_agreement(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "faces").mkdir()
    data = SyntheticFacesDataset(SyntheticFacesOptions(split="test", n=120, size=48, stamp_class="happy"))
    rows = []
    for i in range(len(data)):
        name = f"face{i:03d}.png"
        Image.fromarray((255 * data[i].image.transpose(1, 2, 0)).round().astype(np.uint8)).save(tmp_path / "faces" / name)
        rows.append(f"{name},\n")
    (tmp_path / "faces" / "meta.csv").write_text("path,label\n" + "".join(rows))
    (tmp_path / "plan.yaml").write_text(
        "seed: 2\n"
        f"model: {{adapter: torch, module: model.py:make, classes: {list(CLASSES)}}}\n"
        "dataset: {loader: image-folder, path: faces, metadata: faces/meta.csv, size: 48}\n"
        "explain: {samples: 2, trust: {enabled: false}}\n"
        "discoverers:\n  - attribution-clusters\n  - property-slices\n  - property-shifts\n"
        "discover: {held_out: 0.5, confirm_images: 50}\n"
        "report: {formats: [json, html]}\n"
    )
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "plan.yaml"), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "results.json").read_text())
    assert r["samples"]["labelled"] is False
    # each candidate is confirmed on a seeded 50 of the 60 held-back images (discover.confirm_images)
    assert len(r["discovery"]["held_back_ids"]) == 60 and r["discovery"]["confirmed_on"] == 50
    assert {r["hypotheses"][c["tested_as"]]["n"] for c in r["discovery"]["candidates"]} == {50}
    confirmed = {c["discoverer"]: c for c in r["discovery"]["candidates"]
                 if r["hypotheses"][c["tested_as"]]["verdict"] == "supported"}
    assert confirmed["attribution-clusters"]["class"] == "happy"
    assert "top-left" in confirmed["attribution-clusters"]["description"]
    dark = confirmed["property-shifts"]
    assert dark["class"] == "sad" and dark["description"].startswith("darker") and dark["intervention_adds_cue"]
    found = {f["discovered"]["discoverer"] for f in r["findings"] if f.get("discovered")}
    assert {"attribution-clusters", "property-shifts"} <= found
    # the summary (the report's first pages, before its body) says which findings came from discovery
    html = (out / "report.html").read_text()
    assert "tested on the other 50 (a seeded subset of 60)" in html
    summary = html.split('<div class="report-body">')[0]
    assert summary.count("Found by discovery, not named in the plan") == len(
        [f for f in r["findings"] if f.get("discovered")])


# --------------------------------------------------------------------------- the demo, told nothing of darkness


def audit_demo_without_luminance(cache_dir, out, n_test: int = 1400) -> dict:
    """The demo's model (trained with its planted cues) audited by the demo's plan less its ``luminance``
    hypothesis and its explainers (discovery needs neither): what discovery finds on its own."""
    import yaml

    from xai_audit.demo.plan import demo_plan
    from xai_audit.demo.train import train_demo_model
    from xai_audit.registry import make_plugin_manager
    from xai_audit.run.cache import Cache

    trained = train_demo_model(make_plugin_manager(), Cache(cache_dir), seed=0, log=lambda *a: None)
    plan = demo_plan(trained.weights, seed=0, n_test=n_test)
    plan["hypotheses"] = [h for h in plan["hypotheses"] if "luminance" not in h]
    plan["explainers"] = []
    plan["report"]["formats"] = ["json"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    result = CliRunner().invoke(app, ["run", str(out / "plan.yaml"), "--out", str(out), "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_without_the_luminance_hypothesis_discovery_still_finds_darker_means_sad(tmp_path, demo_cache):
    results = audit_demo_without_luminance(demo_cache, tmp_path / "no-luminance")
    assert "luminance" not in results["hypotheses"]
    sad = {c["tested_as"] for c in results["discovery"]["candidates"] if c["class"] == "sad"}
    dark = [f for f in results["findings"] if f.get("discovered", {}).get("discoverer") == "property-shifts"
            and f["hypothesis"] in sad]
    assert dark, [f.get("discovered") for f in results["findings"]]
    (finding,) = dark
    assert finding["kind"] == "shortcut" and finding["p_value_adjusted"] < 0.05
    assert finding["discovered"]["description"].startswith("darker images are taken for 'sad'")
    entry = results["hypotheses"][finding["hypothesis"]]
    assert entry["verdict"] == "supported" and "held-back images only" in entry["test"]
    assert entry["before"] - entry["after"] > 0.2  # 'sad' gains over a fifth of the held-back faces when darkened

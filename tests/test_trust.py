"""Trust metrics on models whose true attribution is known, and the example selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import plan_text
from xai_audit.judge import trust
from xai_audit.run.cache import Cache
from xai_audit.run.examples import case_names, choose_examples, confusion_flow
from xai_audit.plan import load_plan
from xai_audit.report.artifacts import ReportArtifacts
from xai_audit.report.context import build_context
from xai_audit.audit import run_audit
from xai_audit.contract.types import Explanation, ExplainerPlugin, ModelAdapter, Sample

SIZE = 16
PATCH = (slice(4, 10), slice(5, 11))


class LinearAdapter(ModelAdapter):
    """logit_0 = 8 · mean of the patch (all channels) - 4, logit_1 = 0: only the patch matters."""

    def __init__(self) -> None:
        weight = torch.zeros(2, 3, SIZE, SIZE)
        weight[0, :, PATCH[0], PATCH[1]] = 8.0 / (3 * 6 * 6)
        self.module = torch.nn.Linear(3 * SIZE * SIZE, 2)
        with torch.no_grad():
            self.module.weight.copy_(weight.reshape(2, -1))
            self.module.bias.copy_(torch.tensor([-4.0, 0.0]))
        self.module.eval()
        self.classes = ["patch", "rest"]
        self.default_layer = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.flatten(1))

    def fingerprint(self) -> str:
        return "linear"


class BrightnessExplainer(ExplainerPlugin):
    """Ignores the model: the map is the image's brightness (an 'edge detector' in spirit)."""

    name = "brightness"
    needs_gradients = False

    def explain(self, model, samples, targets, seed):
        maps = np.stack([s.image.mean(axis=0) for s in samples]).astype(np.float32)
        return Explanation(self.name, [s.id for s in samples], np.asarray(targets), maps, signed=False)


def _samples(n: int = 6) -> list[Sample]:
    """A bright patch (the evidence) on a dark, noisy background."""
    rng = np.random.default_rng(0)
    patch = np.zeros((SIZE, SIZE), bool)
    patch[PATCH] = True
    images = [np.where(patch, rng.uniform(0.8, 1.0, (3, SIZE, SIZE)), rng.uniform(0.0, 0.3, (3, SIZE, SIZE)))
              for _ in range(n)]
    return [Sample(id=f"s{i}", image=im.astype(np.float32), label=0, regions={"patch": patch, "rest": ~patch})
            for i, im in enumerate(images)]


def _session(model: ModelAdapter, samples: list[Sample], **settings) -> trust.TrustSession:
    return trust.TrustSession(
        model=model, samples=samples, targets=np.zeros(len(samples), dtype=np.int64), classes=list(model.classes),
        seed=0, settings=trust.TrustSettings(**{"steps": 12, "sanity_samples": 3, "sanity_stages": 2, **settings}),
        class_regions={"patch": ["patch"]},
    )


def _ig(registry, **options):
    info = registry.get("explainer", "integrated-gradients")
    return info.cls(info.cls.Options(**{"steps": 16, **options}))


def test_integrated_gradients_is_exact_on_a_linear_model(registry):
    model, samples = LinearAdapter(), _samples()
    maps = _ig(registry).explain_maps(model, samples, np.zeros(len(samples), int), 0)
    weight = model.module.weight[0].detach().numpy().reshape(3, SIZE, SIZE)
    expected = np.stack([(weight * s.image).sum(axis=0) for s in samples])
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)


def test_a_map_of_the_true_evidence_is_faithful_and_beats_a_random_order(registry):
    model, samples = LinearAdapter(), _samples()
    session = _session(model, samples)
    maps = _ig(registry).explain_maps(model, samples, session.targets, 0)
    faith, curves = trust.faithfulness(session, maps)
    assert faith["deletion_auc"] < faith["random_deletion_auc"] - 0.1
    assert faith["insertion_auc"] > faith["random_insertion_auc"] + 0.05
    assert faith["score"] > faith["random_score"] + 0.2 and faith["beats_random_share"] == 1.0
    # the curves start from the whole image (deletion) and end at it (insertion)
    assert curves["deletion_curve"][0] == pytest.approx(curves["insertion_curve"][-1], abs=1e-5)
    assert faith["steps"] % 3 == 0


def test_a_random_map_is_no_more_faithful_than_a_random_order(registry):
    model, samples = LinearAdapter(), _samples()
    session = _session(model, samples)
    noise = np.random.default_rng(1).random((len(samples), SIZE, SIZE)).astype(np.float32)
    faith, _ = trust.faithfulness(session, noise)
    assert abs(faith["score"] - faith["random_score"]) < 0.15


def test_localisation_finds_the_mass_on_the_region_that_defines_the_class(registry):
    model, samples = LinearAdapter(), _samples()
    session = _session(model, samples)
    maps = _ig(registry).explain_maps(model, samples, session.targets, 0)
    loc = trust.localisation(session, maps)
    assert loc["regions"] == ["patch"] and loc["n"] == len(samples)
    assert loc["mass_share"] > 0.99 and loc["pointing_game"] == 1.0
    assert loc["area_share"] < 0.6  # the patch, widened by the tolerance, is a fraction of the image
    rows = trust.region_mass(samples, session.targets, maps, model.classes)
    by_class = {row["class"]: row for row in rows}
    assert by_class["patch"]["patch"] == pytest.approx(1.0) and by_class["patch"]["rest"] == pytest.approx(0.0)
    assert by_class["pixel share"]["patch"] == pytest.approx(36 / 256)


def test_an_explainer_blind_to_the_weights_fails_the_sanity_check():
    model, samples = LinearAdapter(), _samples()
    session = _session(model, samples)
    blind = BrightnessExplainer()
    maps = blind.explain_maps(model, samples, session.targets, 0)
    result, _ = trust.sanity(session, blind, maps)
    assert result["final_similarity"] == pytest.approx(1.0) and result["verdict"] == "fails"
    data, _ = trust.assess(session, blind, maps)
    assert data["verdict"]["level"] == "not trusted"


def test_a_weight_randomised_model_changes_the_maps_so_the_check_passes(registry):
    """Saliency of a linear model is |weight|: randomising the weights must change it completely."""
    model, samples = LinearAdapter(), _samples()
    session = _session(model, samples, sanity_stages=1)
    info = registry.get("explainer", "saliency")
    saliency = info.cls(info.cls.Options())
    maps = saliency.explain_maps(model, samples, session.targets, 0)
    result, arrays = trust.sanity(session, saliency, maps)
    assert result["verdict"] == "passes" and result["final_similarity"] < 0.4
    assert result["stages"][-1]["layers_randomised"] == result["stages"][-1]["of"] == 1
    assert arrays["sanity_randomised_maps"].shape == (3, SIZE, SIZE)
    # the audited model itself is untouched
    assert model.module.weight[0].abs().sum() > 0 and float(model.module.bias[0]) == -4.0


def test_cascade_stages_go_from_the_top_layer_to_all():
    assert trust._stage_cuts(8, 3) == [1, 4, 8]
    assert trust._stage_cuts(8, 1) == [8]
    assert trust._stage_cuts(1, 3) == [1]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert [name for name, _ in trust.parameterised_layers(net)] == ["0", "1", "3"]


def test_agreement_is_one_for_the_same_ranking_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    a = rng.random((4, 32, 32)).astype(np.float32)
    smooth = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (4, 32, 1))
    result = trust.agreement({"a": a, "twice": 2 * a, "smooth": smooth})
    assert result["a"]["twice"] == pytest.approx(1.0)
    assert abs(result["a"]["smooth"]) < 0.3


def test_quantus_deletion_steps_divide_the_image():
    assert trust._curve_steps(12, 64 * 64) == 12
    assert trust._curve_steps(16, 48 * 48) == 12  # 48·48 = 2^8·9: 5 does not divide it, 4 does
    assert trust._curve_steps(12, 7 * 7) == 3


# -- which samples are explained ---------------------------------------------------


def test_cases_split_borderline_and_confident_by_correctness():
    probs = np.array([
        [0.46, 0.44, 0.10],  # borderline, correct
        [0.44, 0.46, 0.10],  # borderline, wrong
        [0.90, 0.05, 0.05],  # confident, correct
        [0.05, 0.90, 0.05],  # confident, wrong
        [0.60, 0.30, 0.10],  # neither
    ])
    labels = np.array([0, 0, 0, 0, 0])
    assert case_names(probs, labels) == [
        "borderline-correct", "borderline-wrong", "confident-correct", "confident-wrong", "other"]
    assert case_names(probs, None)[:4] == ["borderline", "borderline", "confident", "confident"]


def test_the_budget_is_shared_over_the_cases_wrong_first():
    rng = np.random.default_rng(0)
    n = 60
    labels = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), labels] = 0.9  # confident and correct
    probs[:5] = [0.9, 0.05, 0.05]  # confident; wrong where the label is not 0
    labels[:5] = 1
    samples = [Sample(id=f"x{i}", image=np.zeros((3, 4, 4), np.float32), label=int(labels[i])) for i in range(n)]
    selection = choose_examples(samples, probs, labels, 6, ["a", "b", "c"])
    cases = selection.summary["cases"]
    assert len(selection.indices) == 6
    assert len(cases["confident-wrong"]["shown"]) == 3 and len(cases["confident-correct"]["shown"]) == 3
    assert cases["confident-wrong"]["n_audited"] == 5 and cases["borderline-correct"]["n_audited"] == 0
    flow = selection.summary["confusion_flow"]
    assert flow["class"] == "b" and flow["to"][0]["class"] == "a" and flow["errors"] == 5


def test_confusion_flow_of_the_worst_class():
    preds = np.array([0, 0, 1, 2, 2, 2, 1])
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    flow = confusion_flow(preds, labels, ["a", "b", "c"])
    assert flow["class"] == "b" and flow["recall"] == pytest.approx(1 / 3)
    assert flow["to"] == [{"class": "c", "n": 2, "share": 1.0}]


# -- through the runner and the report -------------------------------------------


def test_the_audit_writes_trust_beside_every_explainer(write_plan, registry):
    explainers = "  - integrated-gradients: {steps: 4, baseline: blurred}\n  - saliency\n"
    extra = "explain: {samples: 4, trust: {steps: 6, sanity_samples: 2, sanity_stages: 2}}\n"
    plan = load_plan(write_plan(plan_text(explainers).replace("explain: {samples: 4}\n", "") + extra), registry)
    cache = Cache(None)
    outcome = run_audit(plan, registry, cache=cache)
    r = outcome.results
    assert r["failures"] == []
    assert sum(len(c["shown"]) for c in r["examples"]["cases"].values()) == 4
    for name in ("integrated-gradients", "saliency"):
        entry = r["explainers"][name]
        t = entry["trust"]
        assert set(t) >= {"faithfulness", "sanity", "localisation", "per_sample", "verdict", "agreement"}
        assert t["localisation"]["regions"] == ["brows", "eyes", "mouth"]
        assert len(t["per_sample"]) == 4 and t["verdict"]["level"] in ("trusted", "weak", "not trusted")
        assert len(t["sanity"]["stages"]) == 2
        rows = entry["tables"]["region_mass"]
        assert rows[-1]["class"] == "pixel share"
    assert r["explainers"]["saliency"]["trust"]["agreement"]["integrated-gradients"] == pytest.approx(
        r["explainers"]["integrated-gradients"]["trust"]["agreement"]["saliency"])
    json.dumps(r, allow_nan=False)
    from test_schema import validate

    validate(r)

    artifacts = ReportArtifacts(images=outcome.images, explanations=outcome.explanations, hypotheses=outcome.hypotheses,
                                predictions=outcome.predictions, labels=outcome.labels)
    context = build_context(r, artifacts)
    overview = context["explanation_overview"]
    assert [row["name"] for row in overview["trust_rows"]] == ["integrated-gradients", "saliency"]
    assert any(case["figure"] for case in overview["cases"])
    ig = next(s for s in context["explainers"]["steps"] if s["name"] == "integrated-gradients")
    assert ig["trust"]["rows"] and ig["figure"] is None  # its maps are in the case grids
    assert any(f["caption"].startswith("Deletion: pixels set to black") for f in ig["extra_figures"])
    # saliency (one pass an image, 4 images) cannot pay for the plan's own sanity size: one image at 6 steps, over
    # its budget, and the report says what its scores rest on
    budget = r["explainers"]["saliency"]["trust"]["budget"]
    assert (budget["images"], budget["of"], budget["steps"], budget["within"]) == (1, 4, 6, False)
    saliency = next(s for s in context["explainers"]["steps"] if s["name"] == "saliency")
    rests = {row["key"]: row["value"] for row in saliency["trust"]["rows"]}["what the scores rest on (trust budget)"]
    assert rests.startswith("curves on 1 of 4 explained images at 6 steps; sanity check on 2 image(s) at 2 stage(s)")
    assert "against the explainer's 8 (sized to its explainer)" in rests
    row = next(row for row in overview["trust_rows"] if row["name"] == "saliency")
    assert row["score"].endswith(", on 1 of 4 images at 6 steps")


def test_agreement_survives_constant_maps():
    from xai_audit.judge.trust import spearman

    rng = np.random.default_rng(0)
    a, b = rng.random((3, 8, 8)), rng.random((3, 8, 8))
    a[1] = 0.0  # a map with no ranking at all
    rho = spearman(a, b)
    assert rho.shape == (3,) and rho[1] == 0.0 and np.all(np.isfinite(rho))
    assert spearman(a[1:2], b[1:2]).tolist() == [0.0]
    assert spearman(a, a)[0] == pytest.approx(1.0)


def test_deletion_is_quantus_pixel_flipping_in_the_insertion_passes():
    """Deletion is written by hand so that its canvases share full passes with insertion's: at every step where
    Quantus' PixelFlipping has removed whole pixels it gives the same probabilities; an all-negative map (which
    Quantus refuses) is read in its own order; and the model sees 2k + 1 canvases per image."""
    from xai_audit.judge.trust import _curves, _quantus

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(7)).eval()
    module(torch.zeros(1, 3, 8, 8))
    seen = []
    module.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))

    class Adapter:
        device = "cpu"

    adapter = Adapter()
    adapter.module = module
    adapter.forward = module
    images = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    maps = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    targets = np.array([0, 1])
    deletion, insertion = _curves(adapter, images, targets, maps, k=12, batch=50)
    assert deletion.shape == insertion.shape == (2, 13) and seen == [50]  # both images' 25 canvases, one pass
    metric = _quantus().PixelFlipping(features_in_step=3 * 64 // 12, perturb_baseline=0.0, normalise=False,
                                      abs=False, disable_warnings=True, display_progressbar=False)
    reference = np.asarray(metric(model=module, x_batch=images, y_batch=targets, a_batch=maps[:, None],
                                  channel_first=True, softmax=True, device="cpu", batch_size=2))
    whole = [3, 6, 9, 12]  # 16 values a step: whole pixels after every third step
    np.testing.assert_allclose(deletion[:, whole], reference[:, [j - 1 for j in whole]], atol=1e-6)
    with torch.no_grad():
        full = torch.softmax(module(torch.as_tensor(images)), 1).numpy()[[0, 1], targets]
    np.testing.assert_allclose(deletion[:, 0], full, atol=1e-6)
    np.testing.assert_allclose(insertion[:, -1], full, atol=1e-6)
    negative, _ = _curves(adapter, images, targets, maps - 2.0, k=12, batch=50)
    np.testing.assert_allclose(negative, deletion)


# --------------------------------------------------------------------------- what the trust step costs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 12, 24, 100])
def test_the_default_sanity_check_re_explains_at_most_a_third_of_the_explained_images(n):
    samples, stages = trust.sanity_size(n, None, None)
    assert samples >= 1 and stages >= 1 and samples * stages <= max(1, n // 3)
    assert samples <= trust.SANITY_MAX_SAMPLES
    assert trust.sanity_size(n, 3, 2) == (3, 2)  # what the plan says stands
    given_samples, chosen_stages = trust.sanity_size(n, 2, None)
    assert given_samples == 2 and 1 <= chosen_stages <= 3
    assert trust.sanity_size(12, None, None) == (2, 2)  # the default audit: 12 images, 4 re-explanations
    assert trust.sanity_size(27, None, None) == (3, 3)


def test_the_trust_step_costs_the_passes_it_states(registry, monkeypatch):
    """Every image through the model in one explainer's trust step, counted, equals what results.json states
    (trust.budget.passes, trust.model_passes): the curves' 2k + 1 canvases per scored image, the random order's
    2k - 2 more, and the sanity re-explanations at the explainer's own passes; and it is at most the explainer's.
    A second explainer scored at the same steps reuses the random order's curves."""
    monkeypatch.setenv("XAI_AUDIT_BATCH_SIZE", "32")  # no probe passes among the counted ones
    model, samples = LinearAdapter(), _samples(8)
    seen: list[int] = []
    model.module.register_forward_hook(lambda _m, args, _out: seen.append(int(args[0].shape[0])))
    session = _session(model, samples, steps=None, sanity_samples=None, sanity_stages=None)
    info = registry.get("explainer", "occlusion")
    occlusion = info.cls(info.cls.Options(window=4, stride=4))
    maps = occlusion.explain_maps(model, samples, session.targets, 0)
    explainer = sum(seen)
    assert explainer == 8 * (16 + 1) == occlusion.model_passes(model, 8, (3, SIZE, SIZE)).weighed  # 16 windows + the image
    seen.clear()
    data, _ = trust.explainer_trust(session, occlusion, maps)
    budget, stated = data["budget"], data["model_passes"]
    # 12 steps (8 x 47 canvases) or 6 (8 x 23) do not fit in 136 passes with the sanity check's 2 x 17: 3 do
    assert (budget["mode"], budget["images"], budget["of"], budget["steps"]) == ("explainer", 8, 8, 3)
    assert (budget["sanity_samples"], budget["sanity_stages"]) == (2, 1)  # a third of 8, one layer: one stage
    assert stated["curve_forward_images"] == 8 * 7 and stated["random_order_forward_images"] == 8 * 4
    assert stated["sanity_re_explanations"] == 2 and stated["sanity_passes"] == 2 * 17
    assert sum(seen) == budget["passes"] == stated["total"] == 8 * 11 + 34 <= explainer == budget["explainer_passes"]
    assert budget["within"] is True
    assert min(seen) >= 2  # the curves' passes are full batches: never one canvas alone
    seen.clear()
    trust.explainer_trust(session, occlusion, maps)  # the random order's curves are kept: only the map's run
    assert sum(seen) == budget["passes"] - stated["random_order_forward_images"]


class CountingCNN(ModelAdapter):
    """A tiny CNN whose every image through the model is counted: forward, and forward + backward."""

    def __init__(self, size: int = 24) -> None:
        torch.manual_seed(0)
        self.module = torch.nn.Sequential(
            torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 3)).eval()
        self.classes = ["a", "b", "c"]
        self.default_layer = "2"
        counts = self.counts = [0, 0]  # images forward, of which a backward pass followed

        def count(_module, args, output) -> None:  # a function: the sanity check's deep copies count here too
            n = int(args[0].shape[0])
            counts[0] += n
            if output.requires_grad:
                output.register_hook(lambda grad: counts.__setitem__(1, counts[1] + n))

        self.module.register_forward_hook(count)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images)

    def fingerprint(self) -> str:
        return "counting-cnn"

    def take(self) -> int:
        """Passes counted since the last call, weighed as the trust budget weighs them."""
        forward, backward = self.counts
        self.counts[:] = [0, 0]
        return forward - backward + trust.BACKWARD_WEIGHT * backward


def _faces(n: int, size: int = 24) -> list[Sample]:
    rng = np.random.default_rng(3)
    return [Sample(id=f"f{i}", image=rng.random((3, size, size)).astype(np.float32), label=None) for i in range(n)]


@pytest.mark.parametrize("name, n", [("integrated-gradients", 12), ("occlusion", 12), ("gradcam", 12),
                                     ("saliency", 12), ("neuron-maps", 12), ("gradcam", 6), ("lime", 3),
                                     pytest.param("feature-visualisation", 12, marks=pytest.mark.slow)])
def test_by_default_each_built_in_explainer_costs_at_least_its_trust_step(name, n, registry, monkeypatch):
    """Counted on a tiny CNN, with the explainer's default options and the default 12 explained images (LIME on
    3, for time: it spends 1,000 passes an image; feature visualisation, whose 400-odd optimisation steps take
    half a minute on a loaded machine, is a slow test): the passes its trust step runs (curves, the random
    order's, the sanity check) are at most the explainer's, and both are what they state (the plugin's
    model_passes, results.json's trust.budget; feature visualisation states a floor)."""
    monkeypatch.setenv("XAI_AUDIT_BATCH_SIZE", "32")  # no probe passes among the counted ones
    model, samples = CountingCNN(), _faces(n)
    targets = np.array([i % 3 for i in range(n)])
    info = registry.get("explainer", name)
    plugin = info.cls(info.cls.Options())
    maps = plugin.explain(model, samples, targets, 0).maps
    explainer = model.take()
    stated = plugin.model_passes(model, n, samples[0].image.shape).weighed
    if name == "feature-visualisation":  # a floor: its channel images depend on the layer
        assert stated <= explainer
    else:
        assert explainer == stated
    explainer = stated  # what the trust step is sized by
    session = trust.TrustSession(model=model, samples=samples, targets=targets, classes=model.classes, seed=0)
    data, _ = trust.explainer_trust(session, plugin, maps)
    spent = model.take()
    assert spent <= data["budget"]["passes"] <= explainer == data["budget"]["explainer_passes"], data["budget"]
    if name != "feature-visualisation":  # its sanity re-runs are stated as a floor too
        assert spent == data["budget"]["passes"]
    assert data["budget"]["within"] is True and data["budget"]["mode"] == "explainer"
    assert data["faithfulness"]["images"] == data["budget"]["images"] >= 1
    if data["budget"]["images"] < n:  # thinner scores say so, in the verdict too
        assert f"{data['budget']['images']} of the {n} explained images" in data["verdict"]["text"]


class NoiseExplainer(ExplainerPlugin):
    """A one-pass method whose maps are noise drawn from the model's weights: it changes when they are
    randomised (so it passes the sanity check) but knows nothing of the image."""

    name = "noise"

    def explain(self, model, samples, targets, seed):
        weights = model.module.weight.detach().numpy()
        rng = np.random.default_rng(int(abs(weights).sum() * 1e6) % 2**32)
        maps = rng.random((len(samples), SIZE, SIZE)).astype(np.float32)
        x = torch.as_tensor(np.stack([s.image for s in samples])).requires_grad_(True)
        model.forward(x).sum().backward()  # one forward + backward pass an image, as saliency
        return Explanation(self.name, [s.id for s in samples], np.asarray(targets), maps, signed=False)

    def model_passes(self, model, n, image_shape, maps_only=False):
        from xai_audit.api import ModelPasses

        return ModelPasses(backward=n)


def test_the_reduced_default_still_tells_a_faithful_map_from_noise(registry, monkeypatch):
    """With the default budget of a one-pass method (saliency: one forward + backward an image), the trust
    step scores a few images at 3 steps and still rates the map of the true evidence trusted and a map of
    noise weak; each verdict says on how many images it rests, with the interval."""
    monkeypatch.setenv("XAI_AUDIT_BATCH_SIZE", "32")
    model, samples = LinearAdapter(), _samples(12)
    session = _session(model, samples, steps=None, sanity_samples=None, sanity_stages=None)
    info = registry.get("explainer", "saliency")
    saliency = info.cls(info.cls.Options())
    good, _ = trust.assess(session, saliency, saliency.explain_maps(model, samples, session.targets, 0))
    noise = NoiseExplainer()
    weak, _ = trust.assess(session, noise, noise.explain_maps(model, samples, session.targets, 0))
    for data in (good, weak):
        assert data["budget"]["steps"] == 3 and 1 < data["budget"]["images"] < 12 and data["budget"]["within"]
        assert data["sanity"]["verdict"] == "passes"
    assert good["verdict"]["level"] == "trusted", good["verdict"]
    assert weak["verdict"]["level"] == "weak", weak["verdict"]
    faith = good["faithfulness"]
    assert faith["gain_ci"][0] > 0 and "95 % CI" in good["verdict"]["text"]
    assert f"{faith['images']} of the 12 explained images at 3 steps" in good["verdict"]["text"]
    full, _ = trust.assess(_session(model, samples, steps=None, sanity_samples=None, sanity_stages=None,
                                    budget="full"), saliency, saliency.explain_maps(model, samples, session.targets, 0))
    assert (full["budget"]["images"], full["budget"]["steps"], full["budget"]["mode"]) == (12, 12, "full")
    assert "thin evidence" not in full["verdict"]["text"]

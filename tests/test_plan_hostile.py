"""Hostile plans, second round (issue 21): alias bombs, huge files and strings, keys given twice, ``true`` for a
number, seeds numpy or torch refuse; and a report whose strings are megabytes long.

The promise for each: one line ``error: ...`` naming the file and line (and field where there is one), exit
status 2, no traceback, nothing written; and a report that stays quick to render, cutting what it shows
while results.json keeps every string whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from conftest import EMOTIONS, TINY_MODEL, plan_text
from xai_audit.cli import app
from xai_audit.errors import PlanError
from xai_audit.plan import load_plan, parse_plan
from xai_audit.plan.parse import MAX_PLAN_BYTES, MAX_PLAN_DEPTH, MAX_PLAN_VALUES
from xai_audit.plan.schema import MAX_SEED
from xai_audit.report.display import DISPLAY_LIMIT, RUN_LIMIT, TITLE_LIMIT


def problems_of(text: str, registry) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(text, registry, filename="plan.yaml")
    problems = info.value.problems
    assert problems and all(p.startswith("plan.yaml") and "\n" not in p for p in problems), problems
    return problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def laughs(levels: int = 9, width: int = 9, name: str = "lol") -> str:
    """A "billion laughs": each anchor a list of ``width`` aliases to the one before (``width**levels`` values)."""
    lines = [f'{name}0: &{name}0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        items = ", ".join([f"*{name}{level - 1}"] * width)
        lines.append(f"{name}{level}: &{name}{level} [{items}]")
    return "\n".join(lines) + "\n"


# -- 1. alias bombs and huge plans ------------------------------------------------------------------------


def test_a_billion_laughs_is_refused_at_the_alias_that_crosses_the_limit(registry):
    text = laughs() + plan_text()
    start = time.perf_counter()
    (problem,) = problems_of(text, registry)
    assert time.perf_counter() - start < 10  # it used to hang ~90 s
    assert f"more than {MAX_PLAN_VALUES:,} values through YAML aliases" in problem
    line = int(problem.split(":")[1])
    assert text.splitlines()[line - 1].startswith("lol")  # the line of an alias that crossed the limit


def test_an_alias_bomb_inside_a_field_is_refused_without_building_it(registry):
    # Before: a MemoryError traceback (the error message repr'd the expanded list).
    items = ["&f0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&f{level} [" + ", ".join([f"*f{level - 1}"] * 9) + "]" for level in range(1, 8)]
    text = plan_text().replace(f"classes: [{', '.join(EMOTIONS)}]", f"classes: [{', '.join(items)}]")
    (problem,) = problems_of(text, registry)
    assert problem.startswith(f"plan.yaml:{line_of(text, '&f0')}: ") and "values through YAML aliases" in problem


def test_an_alias_inside_its_own_anchor_is_refused(registry):
    text = plan_text() + "checks: &loop [*loop]\n"
    (problem,) = problems_of(text, registry)
    assert problem.startswith(f"plan.yaml:{line_of(text, '&loop')}: ") and "inside its own anchor" in problem


def test_strings_that_aliases_multiply_past_the_limit_are_refused(registry):
    # Few values, but each alias repeats a megabyte: the characters are counted too.
    text = f'big: &big "{"x" * 2**20}"\n' + "copies: [" + ", ".join(["*big"] * 12) + "]\n" + plan_text()
    (problem,) = problems_of(text, registry)
    assert "characters through YAML aliases" in problem


def test_aliases_within_the_limit_still_work(registry):
    classes = ", ".join(EMOTIONS)
    text = (
        "models:\n"
        f"  - {{name: a, adapter: torch, module: tiny_model.py:make, classes: &classes [{classes}]}}\n"
        "  - {name: b, adapter: torch, module: tiny_model.py:make, classes: *classes}\n"
        "dataset: {loader: synthetic-faces, n: 8, size: 32}\n"
    )
    plan = parse_plan(text, registry, filename="plan.yaml")
    assert [step.options.classes for _, step in plan.models] == [EMOTIONS, EMOTIONS]


def test_nesting_too_deep_is_refused(registry):
    depth = MAX_PLAN_DEPTH + 5
    text = plan_text() + "checks: " + "[" * depth + "]" * depth + "\n"
    (problem,) = problems_of(text, registry)
    assert f"nested more than {MAX_PLAN_DEPTH} deep" in problem


def test_a_plan_over_the_size_limit_is_refused_before_it_is_parsed(write_plan, registry):
    plan = write_plan(plan_text() + "# " + "x" * MAX_PLAN_BYTES + "\n")
    start = time.perf_counter()
    with pytest.raises(PlanError) as info:
        load_plan(plan, registry)
    assert time.perf_counter() - start < 5
    (problem,) = info.value.problems
    assert problem.startswith(f"{plan}: the plan is larger than {MAX_PLAN_BYTES:,} bytes")
    with pytest.raises(PlanError, match="a plan may be at most"):  # the same for text given directly
        parse_plan(plan.read_text(), registry, filename="plan.yaml")


def test_a_plan_that_never_ends_is_read_no_further_than_the_limit(registry):
    with pytest.raises(PlanError, match="larger than"):
        load_plan("/dev/zero", registry)


@pytest.mark.parametrize("case", ["bomb", "huge", "duplicate", "seed"])
def test_the_cli_says_one_line_exits_2_and_writes_nothing(write_plan, tmp_path, case):
    text = {
        "bomb": laughs() + plan_text(),
        "huge": plan_text() + "# " + "x" * MAX_PLAN_BYTES + "\n",
        "duplicate": plan_text() + "seed: 4\n",
        "seed": plan_text().replace("seed: 3", "seed: 99999999999999999999"),
    }[case]
    plan = write_plan(text)
    for command in (["validate", str(plan)], ["run", str(plan), "--out", str(tmp_path / "out"), "--no-cache", "-q"]):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {plan}"), lines
        assert len(lines[0]) < 600
    assert not (tmp_path / "out").exists()


# -- 2. keys given twice -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "section", "plugin option", "list item"])
def test_a_key_given_twice_is_refused_at_its_second_line(registry, where):
    text = {
        "top": plan_text() + "seed: 4\n",
        "section": plan_text().replace("  n: 28\n", "  n: 28\n  split: train\n"),
        "plugin option": plan_text("  - integrated-gradients:\n      steps: 4\n      steps: 8\n"),
        "list item": plan_text("", "  - {grayscale: {}, grayscale: {}}\n"),
    }[where]
    field, second = {
        "top": ("seed", "seed: 4"),
        "section": ("dataset.split", "split: train"),
        "plugin option": ("explainers[0].integrated-gradients.steps", "steps: 8"),
        "list item": ("hypotheses[0].grayscale", "grayscale"),
    }[where]
    problems = problems_of(text, registry)
    expected = f"plan.yaml:{line_of(text, second)}: {field}: given twice (first on line "
    assert any(p.startswith(expected) for p in problems), problems


def test_a_merge_key_is_not_a_key_given_twice(registry):
    text = plan_text().replace("explain: {samples: 4}", "defaults: &d {samples: 4}\nexplain: {<<: *d, samples: 2}")
    problems = problems_of(text, registry)  # 'defaults' is not a plan key, but nothing is "given twice"
    assert not any("given twice" in p for p in problems) and any("defaults" in p for p in problems), problems


# -- 3. true where a number goes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("seed: 3", "seed: true"), "seed"),
        (("n: 28", "n: true"), "dataset.n"),
        (("{samples: 4}", "{samples: false}"), "explain.samples"),
        (("{samples: 4}", "{samples: 4, trust: {steps: true}}"), "explain.trust.steps"),
        (("report:", "runtime: {batch_size: true}\nreport:"), "runtime.batch_size"),
        (("report:", "runtime: {step_timeout: true}\nreport:"), "runtime.step_timeout"),
        (("report:", "runtime: {ray: {workers: true}}\nreport:"), "runtime.ray.workers"),
        (("report:", "runtime: {ray: {num_gpus_per_worker: false}}\nreport:"), "runtime.ray.num_gpus_per_worker"),
    ],
)
def test_a_boolean_for_a_number_is_refused_naming_the_field(registry, edit, field):
    text = plan_text("  - integrated-gradients\n").replace(*edit)
    (problem,) = problems_of(text, registry)
    assert f": {field}: must be a number, not " in problem, problem


def test_a_boolean_for_a_plugin_option_number_is_refused(registry):
    text = plan_text("  - integrated-gradients: {steps: true}\n", "  - group-accuracy: {min_group_size: false}\n")
    problems = problems_of(text, registry)
    assert any("explainers[0].integrated-gradients.steps: must be a number, not true" in p for p in problems)
    assert any("hypotheses[0].group-accuracy.min_group_size: must be a number, not false" in p for p in problems)


def test_booleans_and_paths_still_go_where_they_belong(write_plan, registry):
    text = plan_text("  - integrated-gradients: {steps: 8}\n").replace(
        "{samples: 4}", "{samples: 4, test_suggestions: true, trust: {enabled: false, steps: 5}}")
    plan = load_plan(write_plan(text), registry)
    assert plan.explain.test_suggestions is True and plan.explain.trust.enabled is False
    assert plan.explain.trust.steps == 5 and plan.explainers[0].options.steps == 8


def test_a_plugins_options_refuse_booleans_for_numbers_and_convert_the_rest_as_before():
    from pydantic import ValidationError

    from xai_audit.api import Options

    class Mine(Options):
        path: Path = Path(".")
        size: tuple[int, int] | None = None
        rate: float = 0.5
        flag: bool = False
        either: bool | int = 0

    mine = Mine.model_validate({"path": "a/b", "size": [3, "4"], "rate": 1, "flag": "yes", "either": True})
    assert mine.path == Path("a/b") and mine.size == (3, 4) and mine.rate == 1.0 and mine.flag is True
    assert mine.either is True
    with pytest.raises(ValidationError, match="must be a number, not true"):
        Mine.model_validate({"size": [3, True]})


# -- 4. seeds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", str(2**63), "1.5", "'seven'"])
def test_a_seed_numpy_or_torch_would_refuse_is_a_located_error(registry, seed):
    (problem,) = problems_of(plan_text().replace("seed: 3", f"seed: {seed}"), registry)
    assert problem.startswith("plan.yaml:1: seed: "), problem


def test_the_largest_seed_works_with_numpy_and_torch(registry):
    from xai_audit.load.loading import seed_everything

    plan = parse_plan(plan_text().replace("seed: 3", f"seed: {MAX_SEED}"), registry)
    assert plan.seed == MAX_SEED == 2**63 - 1
    seed_everything(plan.seed)
    np.random.default_rng(plan.seed + 1000)  # a plugin's seed + i still fits both
    torch.Generator().manual_seed(plan.seed + 1000)


# -- long strings in messages --------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [
    ("seed: 3", "seed: '" + "9" * 200_000 + "'"),
    ("seed: 3", "seed: 3\n" + "k" * 200_000 + ": 1"),
    ("  - integrated-gradients\n", "  - " + "e" * 200_000 + "\n"),
    ("seed: 3", "seed: 3\nexplain: {samples: [" + ", ".join(["1"] * 5000) + "]}"),
    ("seed: 3", 'seed: "three\\nerror: forged second line"'),
])
def test_a_huge_or_multi_line_value_gives_a_short_one_line_message(registry, edit):
    problems = problems_of(plan_text("  - integrated-gradients\n").replace(*edit), registry)
    assert all(len(p) < 1200 for p in problems), [len(p) for p in problems]


# -- 5. very long strings in the report ----------------------------------------------------------------------


@pytest.fixture
def long_audit(tmp_path):
    """An audit of four images whose title is 1 MiB and whose seven class names are 100 kB each."""
    from xai_audit.audit import run_audit
    from xai_audit.registry import make_plugin_manager
    from xai_audit.report import ReportArtifacts
    from xai_audit.run.cache import Cache

    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")
    data = tmp_path / "data"
    data.mkdir()
    classes = [f"class{i}-" + "x" * 100_000 for i in range(7)]
    rows = ["path,label,group"]
    for i in range(4):
        Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(data / f"i{i}.png")
        rows.append(f"i{i}.png,{classes[i]},{'g' * 50_000}{i % 2}")
    (data / "meta.csv").write_text("\n".join(rows) + "\n")
    title = "T" * 2**20
    registry = make_plugin_manager()
    plan = parse_plan(json.dumps({
        "model": {"adapter": "torch", "module": "tiny_model.py:make", "weights": "weights.pt", "classes": classes},
        "dataset": {"loader": "image-folder", "path": "data", "metadata": "data/meta.csv", "classes": classes},
        "explainers": [{"integrated-gradients": {"steps": 2}}],
        "hypotheses": [{"group-accuracy": {"min_group_size": 1}}],
        "report": {"title": title},
    }), registry, base_dir=tmp_path)
    outcome = run_audit(plan, registry, cache=Cache(None))
    artifacts = ReportArtifacts(images=outcome.images, explanations=outcome.explanations, hypotheses=outcome.hypotheses,
                                predictions=outcome.predictions, labels=outcome.labels)
    return outcome.results, artifacts, title, classes, tmp_path / "out"


def test_megabyte_strings_render_quickly_cut_for_display_and_whole_in_results(long_audit):
    from pypdf import PdfReader

    from xai_audit.report import write_report

    results, artifacts, title, classes, out = long_audit
    start = time.perf_counter()
    write_report(results, artifacts, out, formats=["html", "pdf", "json"])
    took = time.perf_counter() - start
    print(f"html+pdf+json with a 1 MiB title and 100 kB class names: {took:.1f} s")
    assert took < 120  # a sanity bound only: it took more than four minutes before (about 10 s now)

    saved = json.loads((out / "results.json").read_text())
    assert saved["title"] == title and saved["classes"] == classes  # results.json keeps every string whole

    html = (out / "report.html").read_text()
    assert len(html) < 2_000_000
    assert "T" * (TITLE_LIMIT + 1) not in html and "T" * TITLE_LIMIT + "… [1,048,576 characters in all" in html
    assert "x" * (RUN_LIMIT + 1) not in html and "g" * (RUN_LIMIT + 1) not in html
    assert "class0-" in html and "…" in html
    pages = PdfReader(out / "report.pdf").pages
    assert len(pages) < 60
    text = "".join(page.extract_text() for page in pages[:1])
    assert "TTTT" in text and "characters in all" in text.replace("\n", " ")


def test_what_a_page_shows_is_cut_wherever_the_template_data_came_from(tmp_path):
    from xai_audit.report.display import DataURI, LongText, for_display
    from xai_audit.report.render import render_html

    long = "<b>" + "y" * 5000
    shown = for_display({"a": [long, (long,)], "b": DataURI("data:" + "z" * 5000), "c": LongText("w" * 5000), "n": 3})
    assert len(shown["a"][0]) < DISPLAY_LIMIT + 80 and shown["a"][0].endswith("characters in all; whole in results.json]")
    assert isinstance(shown["a"][1], tuple) and shown["b"].endswith("z" * 10) and len(shown["c"]) == 5000
    assert shown["n"] == 3
    words = "word " * 200  # prose is cut at DISPLAY_LIMIT, an unbroken run (a name, an id) at RUN_LIMIT
    assert for_display(words).startswith(words[:DISPLAY_LIMIT] + "… [1,000 characters in all")
    assert for_display("short " * 10) == "short " * 10
    sentence = f"the class {'n' * 300} is confused with sad"
    assert for_display(sentence) == (f"the class {'n' * RUN_LIMIT}… is confused with sad "
                                     f"[{len(sentence)} characters in all; whole in results.json]")
    # a user's own template gets the same cut strings: the bound is where every page is rendered
    (tmp_path / "mine.html").write_text("{{ title }}|{% for row in rows %}{{ row.name }}{% endfor %}")
    html = render_html({"title": long, "rows": [{"name": long}]}, [tmp_path], page="mine.html")
    assert "y" * (DISPLAY_LIMIT + 1) not in html and html.count("5,003 characters in all") == 2
    assert "&lt;b&gt;" in html  # and still escaped


# -- 6. fuzzed plan text -------------------------------------------------------------------------------------


BASE = plan_text("  - integrated-gradients\n", "  - grayscale\n")
BASE_LINES = BASE.splitlines()
KEYS = st.sampled_from(["seed", "model", "dataset", "explain", "report", "runtime", "checks", "x", "title", "n"])


@st.composite
def bombs(draw) -> str:
    levels, width = draw(st.integers(2, 9)), draw(st.integers(2, 12))
    name = draw(st.sampled_from(["a", "lol", "b_"]))
    return laughs(levels, width, name)


@st.composite
def huge_strings(draw) -> str:
    size = draw(st.sampled_from([10, 1_000, 100_000, 2**20, MAX_PLAN_BYTES + 1]))
    char = draw(st.sampled_from(["x", "é", "'", " ", "\\n", "{"]))
    quote = draw(st.sampled_from(["'", '"', ""]))
    value = char * (size // len(char))
    if quote == "'":
        value = "'" + value.replace("'", "''") + "'"
    elif quote == '"':
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{draw(KEYS)}: {value}\n"


@st.composite
def duplicated(draw) -> str:
    key = draw(KEYS)
    return f"{key}: {draw(st.sampled_from(['1', 'true', 'x', '{a: 1}', '[1]']))}\n"


@st.composite
def plan_texts(draw) -> str:
    lines = list(BASE_LINES)
    for _ in range(draw(st.integers(1, 3))):
        fragment = draw(st.one_of(bombs(), huge_strings(), duplicated(), st.sampled_from([
            "seed: true", "seed: 99999999999999999999", "seed: -5", "report: {title: &t [*t]}",
            "runtime: {batch_size: true}", "explain: {samples: *nowhere}", "checks: " + "[" * 80 + "]" * 80,
            "<<: {seed: 1}", "? [1, 2]\n: 3", "x: &a 1\ny: &a 2", "report: {title: !!python/object:os.system ls}",
        ]).map(lambda s: s + "\n")))
        top = [i for i in range(len(lines) + 1) if i == len(lines) or not lines[i].startswith(" ")]
        inside = [i + 1 for i, line in enumerate(lines) if line in ("model:", "dataset:")]
        where = draw(st.sampled_from(["top"] * 6 + ["inside"] * 3 + ["anywhere"]))
        at = draw(st.sampled_from(top if where == "top" else inside)) if where != "anywhere" else \
            draw(st.integers(0, len(lines)))
        indent = "  " if where == "inside" else ""
        lines[at:at] = [indent + line for line in fragment.splitlines()]
    return "\n".join(lines) + "\n"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=plan_texts())
def test_fuzzed_plan_text_never_crashes_and_always_says_where(registry, text):
    start = time.perf_counter()
    try:
        parse_plan(text, registry, filename="fuzz.yaml")
    except PlanError as exc:
        assert exc.problems, text[:200]
        for problem in exc.problems:
            assert problem.startswith("fuzz.yaml") and "\n" not in problem and len(problem) < 1200, problem[:300]
    assert time.perf_counter() - start < 30

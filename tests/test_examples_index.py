"""``examples/`` holds one plan per published study (issue 18), each explained, and the README lists them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["fer-vit-topology", "topology-explanatory", "vgg-label-spaces", "digits-occlusion-ig",
           "fer2013-mini-xception-lime"]


def test_examples_holds_the_five_studies_and_nothing_unexplained():
    folders = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())
    assert folders == sorted(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_each_study_has_a_plan_and_a_readme_saying_what_differs_and_how_to_run_it(study):
    folder = ROOT / "examples" / study
    assert (folder / "plan.yaml").is_file()
    readme = (folder / "README.md").read_text()
    assert "differs" in readme.lower() and f"xai-audit run examples/{study}/plan.yaml" in readme
    if (folder / "train.py").is_file():  # the models are trained offline by a script beside the plan
        assert f"python examples/{study}/train.py" in readme


def test_the_top_level_readme_lists_every_example():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Examples", 1)[1].split("\n## ", 1)[0]
    for study in STUDIES:
        assert f"`{study}`" in section and f"examples/{study}/plan.yaml" in section

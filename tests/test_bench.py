"""The benchmark's pure helpers: fits, ratios, tables, the plan it audits. No timing."""

from __future__ import annotations

import argparse
import math

import pytest
import yaml

from bench import common
from bench.common import Row, Section


def test_growth_exponent_recovers_a_power_law():
    sizes = [200, 400, 800, 1600]
    assert common.growth_exponent(sizes, [3e-6 * n**2.5 for n in sizes]) == pytest.approx(2.5, abs=1e-9)
    assert common.growth_exponent(sizes, [0.01 * n for n in sizes]) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError):
        common.growth_exponent([100], [1.0])


def test_topology_bench_uses_the_shared_fit():
    from bench import topology

    assert topology.growth_exponent is common.growth_exponent
    assert topology.LIMIT_S == common.TOPOLOGY_LIMIT_S == 60.0


def test_ratio_is_limit_over_measured():
    assert common.ratio(0.9, 1.0) == pytest.approx(0.9)
    assert common.ratio(60.0, 30.0) == pytest.approx(2.0)  # the one-minute limit, met twice over
    assert math.isnan(common.ratio(1.0, 0.0))
    assert common.fmt_ratio(common.ratio(1.0, 0.0)) == "n/a"
    assert common.fmt_ratio(0.856) == "0.86"
    assert common.fmt_ratio(0.8451, bar=0.85) == "0.845"  # a miss never prints as the target itself
    assert common.fmt_ratio(0.8496, bar=0.85) == "0.849" and common.fmt_ratio(0.8450, bar=0.845) == "0.845"
    assert common.fmt_ratio(0.8449, bar=0.84) == "0.84" and common.fmt_ratio(0.8551, bar=0.85) == "0.86"


def test_slope_and_flatness_of_memory():
    counts = [500, 1000, 2000, 4000]
    growing = [600 + 0.1 * n for n in counts]  # 0.1 MiB per image
    assert common.slope_per_1000(counts, growing) == pytest.approx(100.0)
    assert common.flatness(counts, growing) == pytest.approx(650 / 1000)
    flat = [700, 702, 699, 701]
    assert abs(common.slope_per_1000(counts, flat)) < 1
    assert common.flatness(counts, flat) >= common.FLAT_TARGET
    # the order of the runs does not matter: fewest images against most
    assert common.flatness(counts[::-1], growing[::-1]) == pytest.approx(650 / 1000)


def test_cpu_model_from_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu\n"
    assert common.cpu_model(text) == "AMD EPYC 7B13"
    assert common.cpu_model("processor : 0\n")  # falls back to something non-empty


def test_summary_table_text_and_markdown():
    rows = [
        Row("Integrated Gradients", "demo CNN (64 px)", "1.20 s", "1.08 s", 0.9, anchor=0.55, target="≥ 0.85", met=True),
        Row("Occlusion", "ViT | base", "2.00 s", "1.00 s", 0.5, anchor=0.4, target="≥ 0.85", met=False),
        Row("growth", "N = 200-800", "N^2.10", "-", None),
    ]
    text = common.summary_text(rows).splitlines()
    assert text[0].split()[:2] == ["benchmark", "on"]
    assert set(text[1]) <= {"-", " "}
    assert len(text) == 2 + len(rows)
    assert "0.90" in text[2] and "0.55" in text[2] and text[2].rstrip().endswith("yes")
    assert text[3].rstrip().endswith("NO")
    # the ratio columns are right-aligned: every row's ratio ends at the same column
    ends = {line.index(cell) + len(cell) for line, cell in zip(text[2:4], ("0.90", "0.50"))}
    assert len(ends) == 1

    md = common.summary_markdown(rows).splitlines()
    assert md[0].startswith("| benchmark | on |")
    assert md[1].count("---:") == 2
    assert "ViT \\| base" in md[3]  # a pipe inside a cell cannot break the table
    assert all(line.count(" | ") + 2 == md[0].count("|") or "\\|" in line for line in md[2:])
    assert md[4].split(" | ")[4] == "-"  # no ratio for an informational row


def test_section_renders_notes():
    s = Section("Title", ["a", "b"], [["1", "2"]], notes=["a note"], right=(1,))
    assert s.text().splitlines()[0] == "Title" and s.text().endswith("a note")
    assert s.markdown().startswith("### Title\n\n| a | b |\n|---|---:|\n| 1 | 2 |")


def test_memory_plan_is_a_valid_audit_plan(registry, tmp_path):
    from bench import memory
    from xai_audit.plan import load_plan

    text = memory.plan_text(1234, 48)
    raw = yaml.safe_load(text)
    assert raw["dataset"]["n"] == 1234 and raw["dataset"]["size"] == 48
    assert raw["explain"] == {"samples": 8, "trust": {"enabled": False}}
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    plan = load_plan(path, registry)
    assert [s.name for s in plan.explainers] == ["integrated-gradients", "gradcam"]
    assert [s.name for s in plan.hypotheses] == ["luminance", "grayscale"]


def test_memory_results_from_made_up_runs():
    from bench import memory

    runs = [memory.Run(n, 64, 600 + 0.2 * n, 10.0, 0) for n in (500, 1000, 2000, 4000)]
    rows, sections = memory.results(runs)
    assert rows[0].met is False and rows[0].ratio == pytest.approx(700 / 1400)
    assert "+200 MiB/1k images" in rows[0].measured
    assert "grows" in sections[0].notes[-1]
    flat = [memory.Run(n, 64, 700.0, 10.0, 0) for n in (500, 1000, 2000, 4000)]
    rows, sections = memory.results(flat)
    assert rows[0].met is True and sections[0].notes[-1].endswith("flat.")
    failed = [memory.Run(500, 64, 0.0, 1.0, 2, "boom")]
    rows, _ = memory.results(failed)
    assert rows[0].met is False and rows[0].measured == "failed"


def test_attribution_results_rows():
    from bench import attribution

    measured = [{"model": "demo CNN (64 px)", "method": "Saliency", "passes": 256, "limit_s": 0.9, "ours_s": 1.0,
                 "ours": 0.9, "default_s": 3.0, "default": 0.3, "batch": "64 (128)", "probe_s": 1.0}]
    rows, sections = attribution.results(measured)
    assert rows[0].ratio == 0.9 and rows[0].anchor == 0.3 and rows[0].met is True
    assert sections[0].rows[0][:3] == ["demo CNN (64 px)", "Saliency", "256"]


def test_only_parses_parts():
    from bench.run import parse_only

    assert parse_only("attribution") == ["attribution"]
    assert parse_only("memory, topology") == ["memory", "topology"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_only("speed")


def test_ray_scaling_plan_is_a_valid_audit_plan(registry, tmp_path):
    from bench import ray_scaling
    from xai_audit.plan import load_plan

    path = tmp_path / "ray.yaml"
    path.write_text(ray_scaling.PLAN.format(n=8, lime=100, workers=2))
    if not __import__("importlib").util.find_spec("ray"):
        pytest.skip("ray is not installed")
    plan = load_plan(path, registry)
    assert plan.runtime.executor == "ray" and plan.runtime.ray.workers == 2
    assert [s.name for s in plan.explainers] == ["occlusion", "lime"]


def test_report_rows_compare_with_their_targets():
    from bench import report

    reruns = [(6.5, 7.9), (6.0, 7.5), (11.0, 11.0)]  # the median run is the number: one slow run moves nothing
    rows, sections = report.results(reruns, {"audit_wall": 100.0, "audit_cpu": 150.0, "render_wall": 20.0,
                                             "render_cpu": 24.0})
    rerun, share = rows
    assert rerun.met and rerun.ratio == pytest.approx(10.0 / 6.5)
    assert share.met and share.measured == "0.16" and share.ratio == pytest.approx(0.2 / 0.16)
    slow, _ = report.results([(12.0, 12.0), (9.0, 9.0), (10.5, 10.5)], {
        "audit_wall": 100.0, "audit_cpu": 100.0, "render_wall": 30.0, "render_cpu": 30.0})[0]
    assert slow.met is False
    text = sections[0].text()
    assert "cached re-run" in text and "median of 3" in text and "11.0" in text  # every run is shown
    assert "one more, writing no bytecode" not in text
    rows_, sections = report.results(reruns, {"audit_wall": 100.0, "audit_cpu": 150.0, "render_wall": 20.0,
                                              "render_cpu": 24.0}, no_bytecode=(13.5, 14.0))
    assert rows_[0].ratio == pytest.approx(10.0 / 6.5)  # shown beside the re-runs, not one of them
    assert "one more, writing no bytecode" in sections[0].text() and "13.5" in sections[0].text()


def test_the_report_bench_child_reads_or_never_writes_python_bytecode(tmp_path, monkeypatch):
    from bench import report

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    compiled = report._python_env(tmp_path / "b")
    assert "PYTHONDONTWRITEBYTECODE" not in compiled and compiled["PYTHONPYCACHEPREFIX"] == str(tmp_path / "b")
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(tmp_path / "elsewhere"))
    never = report._python_env(None)
    assert never["PYTHONDONTWRITEBYTECODE"] == "1" and "PYTHONPYCACHEPREFIX" not in never


def test_robustness_rows_scale_to_1000_images_and_judge_each_limit():
    from bench.robustness import Part, _rows

    parts = [Part("corruptions", 2.0, 1.8, 0.5), Part("adversarial", 4.0, 2.0, 2.0), Part("calibration", 0.1)]
    rows, table = _rows(parts, "ResNet-18, 8 faces", 8, scale=1000 / 8)
    corr, adv, whole = rows
    assert corr.ratio == pytest.approx(0.9) and corr.met and adv.ratio == pytest.approx(0.5) and not adv.met
    # corruptions and calibration are linear in the images; the attack covers at most 64 of them
    assert table[0][-1] == "250 s" and table[1][-1] == "32.00 s" and table[2][-1] == "12.50 s"
    assert whole.measured == "294 s (scaled from 8)" and whole.ratio is None


def test_the_render_share_counts_the_cpu_of_child_processes():
    """The PDF's parts are laid out in a child Python (report/pdfparts.py): its CPU is rendering's too."""
    import subprocess
    import sys

    from bench import report

    before, children = report._cpu(), report._child_cpu()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert report._child_cpu() - children > 0.05
    assert report._cpu() - before >= report._child_cpu() - children

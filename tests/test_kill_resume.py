"""SIGKILL at moments picked across the whole run, the report stage included, then a re-run: the same
results.json as an uninterrupted run, byte for byte outside ``run`` (issues 21 and 23).

Each moment gets a fresh cache and a fresh report folder. ``xai-audit run`` starts in its own process
group; the test watches the cache and the report folder and kills the whole group when the moment comes
(the first cache entry, half the steps, every step cached so the report is being rendered, the first
report file, report.html written, or a seeded random delay). Then it checks that nothing half-written
reads as complete (a results.json only beside its report; every cache entry verifies or is ignored),
re-runs into the same folders, and compares. The default suite kills at two moments; the slow variant
at every moment, and with the Ray executor at 1 and 2 workers.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import plan_text
from xai_audit import files
from xai_audit.files import PathError, write_together
from xai_audit.run.cache import Cache

XAI_AUDIT = Path(sys.executable).with_name("xai-audit")
EXPLAINERS = "  - integrated-gradients: {steps: 3}\n  - gradcam\n"
HYPOTHESES = "  - grayscale\n"
REPORT = "report: {title: Killed and resumed, formats: [html, pdf, json]}"
#: a moment that never comes (a run that ends first) is not a hang
MOMENT_TIMEOUT_S = 240


def _plan(folder: Path, runtime: str = "") -> Path:
    text = plan_text(EXPLAINERS, HYPOTHESES, extra=runtime, n=16).replace("report: {title: Test audit}", REPORT)
    text = text.replace("explain: {samples: 4}", "explain: {samples: 2}")  # a short report: the PDF is most of a run
    assert REPORT in text and "samples: 2" in text
    (folder / "plan.yaml").write_text(text)
    return folder / "plan.yaml"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XAI_AUDIT_CACHE", "XAI_AUDIT_BATCH_SIZE")}
    # no git checkout: work others commit while the test runs must not show as a difference in provenance
    env["GIT_DIR"] = str(tmp_path / "no-git")
    return env


def _start(plan: Path, out: Path, cache: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "ab")
    with log:
        return subprocess.Popen([str(XAI_AUDIT), "run", str(plan), "--out", str(out), "--cache-dir", str(cache), "-q"],
                                cwd=plan.parent, env=env, stdout=log, stderr=log, start_new_session=True)


def _finish(plan: Path, out: Path, cache: Path, env: dict[str, str]) -> dict:
    proc = _start(plan, out, cache, env)
    try:
        rc = proc.wait(timeout=600)
    finally:
        _kill_group(proc)
    assert rc == 0, (out.parent / f"{out.name}.log").read_text(errors="replace")[-3000:]
    return json.loads((out / "results.json").read_text())


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _found(results: dict) -> str:
    """Everything outside ``run``, as the bytes a reader compares."""
    return json.dumps({k: v for k, v in results.items() if k != "run"}, sort_keys=True, ensure_ascii=False)


def _entries(cache: Path) -> list[Path]:
    """Cache entries that are visible: their folder holds a meta.json (temporary folders start with a dot)."""
    steps = cache / "steps"
    return [p for p in steps.glob("*/*") if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").exists()]


# -- the moments ----------------------------------------------------------------------


@dataclass
class Reference:
    results: dict
    seconds: float
    n_entries: int


@dataclass(frozen=True)
class Moment:
    name: str
    #: (seconds since start, cache folder, report folder, the reference run) -> kill now?
    due: Callable[[float, Path, Path, Reference], bool]
    #: the run must still be going when it comes (a moment within the last file writes may come too late)
    must_land: bool = True


def _random_delay(seed: int) -> Moment:
    def due(elapsed: float, cache: Path, out: Path, ref: Reference) -> bool:
        return elapsed >= random.Random(seed).uniform(0.3, 0.9) * ref.seconds

    return Moment(f"random delay (seed {seed})", due, must_land=False)


FIRST_ENTRY = Moment("first cache entry", lambda t, cache, out, ref: len(_entries(cache)) >= 1)
HALF_THE_STEPS = Moment("half the steps", lambda t, cache, out, ref: len(_entries(cache)) >= ref.n_entries // 2)
RENDERING = Moment("every step cached: judging and rendering the report",
                   lambda t, cache, out, ref: len(_entries(cache)) >= ref.n_entries)
FIRST_REPORT_FILE = Moment("first report file written", lambda t, cache, out, ref: out.exists() and any(out.iterdir()),
                           must_land=False)
HTML_WRITTEN = Moment("report.html written", lambda t, cache, out, ref: (out / "report.html").exists(), must_land=False)
PDF_WRITTEN = Moment("report.pdf written", lambda t, cache, out, ref: (out / "report.pdf").exists(), must_land=False)

DEFAULT_MOMENTS = [FIRST_ENTRY, RENDERING]
ALL_MOMENTS = [FIRST_ENTRY, HALF_THE_STEPS, RENDERING, FIRST_REPORT_FILE, HTML_WRITTEN, PDF_WRITTEN,
               _random_delay(1), _random_delay(2), _random_delay(3)]


# -- the checks -----------------------------------------------------------------------


def _kill_at(moment: Moment, plan: Path, out: Path, cache: Path, env: dict[str, str], ref: Reference) -> bool:
    """Run until ``moment``, then SIGKILL the run's process group; whether the kill came before the run ended."""
    proc = _start(plan, out, cache, env)
    start = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - start < MOMENT_TIMEOUT_S:
            if moment.due(time.monotonic() - start, cache, out, ref):
                break
            time.sleep(0.002)
    finally:
        ended = proc.poll() is not None
        _kill_group(proc)
    assert not ended or proc.returncode == 0, (out.parent / f"{out.name}.log").read_text(errors="replace")[-3000:]
    assert not moment.must_land or not ended, f"the run ended before the moment '{moment.name}' came"
    return not ended


def _nothing_half_written_reads_as_complete(out: Path, cache: Path, ref: Reference) -> None:
    if (out / "results.json").exists():  # a results.json is there only when its report is whole
        formats = ref.results["plan"]["report"]["formats"]
        wanted = [f"report.{f}" for f in ("html", "pdf") if f in formats] + ["results.schema.json",
                                                                            "finetune_manifest.csv"]
        missing = [name for name in wanted if not (out / name).is_file()]
        assert not missing, f"results.json without {missing}"
        assert _found(json.loads((out / "results.json").read_text())) == _found(ref.results)
    store = Cache(cache)
    for entry in _entries(cache):  # a torn entry is ignored (and recomputed), never read back
        got = store.get(entry.name)
        assert got is None or isinstance(got[0], dict), entry


def _tidy_and_whole(out: Path, cache: Path, ref: Reference) -> None:
    """After a completed run: no temporary file or folder, no lock file, every entry verifies."""
    assert not [p for p in out.rglob(".*")], "temporary files left in the report folder"
    leftovers = [p for p in (cache / "steps").rglob("*") if p.name.startswith(".") or p.suffix == ".lock"]
    assert not leftovers, f"left in the cache: {leftovers}"
    store = Cache(cache)
    entries = _entries(cache)
    assert len(entries) == ref.n_entries
    assert all(store.get(entry.name) is not None for entry in entries)


def _reference(tmp_path: Path, plan: Path, env: dict[str, str]) -> Reference:
    start = time.monotonic()
    results = _finish(plan, tmp_path / "reference", tmp_path / "reference-cache", env)
    ref = Reference(results, time.monotonic() - start, len(_entries(tmp_path / "reference-cache")))
    assert not results["failures"] and ref.n_entries >= 5  # baseline, each explainer and its trust, the hypothesis
    assert set(results["explainers"]) == {"integrated-gradients", "gradcam"}
    return ref


def _kill_and_resume(tmp_path: Path, plan: Path, moments: list[Moment]) -> list[str]:
    env = _env(tmp_path)
    ref = _reference(tmp_path, plan, env)
    landed = []
    for i, moment in enumerate(moments):
        out, cache = tmp_path / f"out-{i}", tmp_path / f"cache-{i}"
        if _kill_at(moment, plan, out, cache, env, ref):
            landed.append(moment.name)
        _nothing_half_written_reads_as_complete(out, cache, ref)
        resumed = _finish(plan, out, cache, env)  # the same folders: a killed run's leftovers must not refuse it
        assert _found(resumed) == _found(ref.results), f"killed at '{moment.name}', the re-run differs"
        _tidy_and_whole(out, cache, ref)
    return landed


# -- the pieces, one at a time ---------------------------------------------------------


def _dead_pid() -> int:
    """The id of a process that has ended (it may be reused, rarely: then its files are left, never wrongly removed)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_report_set_is_renamed_into_place_only_when_every_file_is_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("report.html", "old html"), ("results.json", "old results")):
        (out / name).write_text(text)
    new = {out / "report.html": b"new html", out / "tables" / "a.csv": b"a", out / "results.json": b"new results"}
    renamed: list[str] = []
    real_replace = os.replace

    def killed_at_the_second_rename(src, dst):
        if len(renamed) == 1:
            raise KeyboardInterrupt  # stands for a kill: no cleanup the write could count on
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        write_together(new, last=out / "results.json", folders="report folder")
    # the first file is new; results.json, which says the report is whole, is gone until the last rename
    assert renamed == ["report.html"] and not (out / "results.json").exists()
    monkeypatch.setattr(os, "replace", real_replace)

    write_together(new, last=out / "results.json", folders="report folder")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == {
        "report.html": b"new html", "tables/a.csv": b"a", "results.json": b"new results"}


def test_a_failed_write_changes_nothing_and_a_dead_writers_temporary_files_are_removed(tmp_path, monkeypatch):
    (tmp_path / "results.json").write_text("old")
    (tmp_path / "report.html").write_text("old")
    host = files._owner().split("-")[0]
    dead = tmp_path / f".report.html.{host}-{_dead_pid()}.abcd.tmp"
    living = tmp_path / f".report.html.{host}-{os.getppid()}.abcd.tmp"
    other_host = tmp_path / f".report.html.0000zzzz-{_dead_pid()}.abcd.tmp"
    for leftover in (dead, living, other_host):
        leftover.write_text("half")
    real_fsync = os.fsync
    calls = []

    def disk_full_on_the_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_on_the_second_file)
    with pytest.raises(PathError, match=r"cannot write .*results\.json: No space left on device"):
        write_together({tmp_path / "report.html": b"new", tmp_path / "results.json": b"new"},
                       last=tmp_path / "results.json")
    assert (tmp_path / "results.json").read_text() == (tmp_path / "report.html").read_text() == "old"
    # the dead writer's file went; a live process's and another host's stay
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([living.name, other_host.name])


def test_run_log_and_checks_xml_are_renamed_into_place_with_the_report(model_dir, monkeypatch):
    """run.log and checks.xml belong to the report set: a kill while the set is renamed into place leaves no
    results.json, and a re-run that has neither removes those an earlier run left, with the same write."""
    from typer.testing import CliRunner

    from xai_audit.cli import app

    failing = "  - transform: {callable: 'json:loads', description: parsed as JSON}\n"  # fails: a run.log
    (model_dir / "first.yaml").write_text(plan_text("", failing, extra="checks:\n  - accuracy >= 0\n", n=8))
    (model_dir / "second.yaml").write_text(plan_text("", "  - grayscale\n", n=8))
    out = model_dir / "out"
    run = ["run", "--out", str(out), "--no-cache", "-q", "--formats", "html,json"]
    first = CliRunner().invoke(app, [*run, str(model_dir / "first.yaml")])
    assert first.exit_code == 1, first.output  # the transform did not run (on_step_failure: fail)
    assert {"run.log", "checks.xml", "results.json"} <= {p.name for p in out.iterdir()}

    real_replace = os.replace

    def killed_at_the_first_rename_into_the_report(src, dst):
        if Path(dst).parent == out:
            raise KeyboardInterrupt  # stands for a kill
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_first_rename_into_the_report)
    killed = CliRunner().invoke(app, [*run, str(model_dir / "second.yaml")])
    assert killed.exit_code != 0  # click reads the interrupt as an abort
    # the first run's results.json is gone (its set is no longer whole), and so are its log and checks,
    # which the second run has none of
    assert not {"results.json", "run.log", "checks.xml"} & {p.name for p in out.iterdir()}
    monkeypatch.setattr(os, "replace", real_replace)

    second = CliRunner().invoke(app, [*run, str(model_dir / "second.yaml")])
    assert second.exit_code == 0, second.output
    names = {p.name for p in out.iterdir()}
    assert "results.json" in names and not {"run.log", "checks.xml"} & names
    again = CliRunner().invoke(app, [*run, str(model_dir / "first.yaml")])
    assert again.exit_code == 1 and {"run.log", "checks.xml"} <= {p.name for p in out.iterdir()}


def test_a_write_removes_the_files_of_the_set_it_no_longer_holds(tmp_path):
    for name in ("results.json", "run.log", "checks.xml"):
        (tmp_path / name).write_text("old")
    write_together({tmp_path / "results.json": b"new", tmp_path / "checks.xml": b"new"}, last=tmp_path / "results.json",
                   remove=[tmp_path / "run.log", tmp_path / "checks.xml", tmp_path / "never-there"])
    # a file the set holds is written, not removed; one it does not hold is gone; one never there is no error
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"results.json": "new", "checks.xml": "new"}


def test_a_claim_removes_what_a_killed_holder_left_and_its_own_lock_file(tmp_path):
    cache = Cache(tmp_path)
    key = "ab" + "1" * 62
    folder = tmp_path / "steps" / "ab"
    folder.mkdir(parents=True)
    (folder / f"{key}.lock").write_text("")  # a holder killed mid-step: the system freed the lock, the file stayed
    (folder / f".{key}-x1y2").mkdir()  # and the entry it was filling
    (folder / f".{key}-x1y2" / "arrays.npz").write_bytes(b"half")
    other = folder / (".ab" + "2" * 62 + "-z9")  # another key's writer, alive: not ours to remove
    other.mkdir()
    with cache.claim(key):
        assert not (folder / f".{key}-x1y2").exists() and other.exists()
        cache.put(key, {"n": 1}, {"a": np.arange(3)})
    assert sorted(p.name for p in folder.iterdir()) == sorted([key, other.name])  # no lock file, no temporary folder
    data, arrays = cache.get(key)
    assert data == {"n": 1} and arrays["a"].tolist() == [0, 1, 2]


def test_claims_on_one_key_never_overlap_while_lock_files_come_and_go(tmp_path):
    key = "cd" + "3" * 62
    inside, most, rounds = [0], [0], 40
    guard = threading.Lock()

    def worker():
        cache = Cache(tmp_path)  # each thread its own open file, as each run has
        for _ in range(rounds):
            with cache.claim(key):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.0005)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert not list((tmp_path / "steps").rglob("*.lock"))


# -- the tests ------------------------------------------------------------------------


def test_killed_at_moments_across_the_run_a_rerun_gives_the_same_results(model_dir):
    plan = _plan(model_dir)
    landed = _kill_and_resume(model_dir, plan, DEFAULT_MOMENTS)
    assert landed == [m.name for m in DEFAULT_MOMENTS]


@pytest.mark.slow
def test_killed_at_every_moment_including_the_file_writes(model_dir):
    plan = _plan(model_dir)
    landed = _kill_and_resume(model_dir, plan, ALL_MOMENTS)
    assert {m.name for m in ALL_MOMENTS if m.must_land} <= set(landed)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_with_the_ray_executor_a_rerun_gives_the_same_results(model_dir, workers):
    pytest.importorskip("ray")
    plan = _plan(model_dir, f"runtime: {{executor: ray, ray: {{workers: {workers}}}}}\n")
    moments = [FIRST_ENTRY, HALF_THE_STEPS, RENDERING, _random_delay(workers)]
    landed = _kill_and_resume(model_dir, plan, moments)
    assert {m.name for m in moments if m.must_land} <= set(landed)


# -- killed every T seconds, re-run each time (issue 23 item 5) -------------------------

#: the demo's stages on a small scale: four explainers with their trust, discovery, hypotheses, the report
EVERY_PLAN_STEPS = (
    "explainers:\n  - integrated-gradients: {steps: 16}\n  - gradcam\n  - occlusion: {window: 8, stride: 4}\n"
    "  - lime: {samples: 200}\n"
    "hypotheses:\n  - grayscale\n  - luminance: {factor: 0.2}\n"
    + "".join(f"  - transform: {{as: slow-{k}, callable: 'slow_steps.py:haze', description: haze {k}, "
              f"kwargs: {{amount: 0.{k}, seconds: 4}}}}\n" for k in range(1, 5))
    + "discoverers:\n  - property-slices\ndiscover: {held_out: 0.5}\n"
)
#: steps of a known length: each hazes the images after one wait of ``seconds`` in a process (a step that
#: is cached never waits); they stand for the long steps of a real audit, whatever the load on the machine
SLOW_STEPS = """
import time

_waited = set()


def haze(images, amount, seconds):
    if amount not in _waited:
        _waited.add(amount)
        time.sleep(seconds)
    return images * (1 - amount) + amount
"""


def _every_plan(folder: Path) -> Path:
    (folder / "slow_steps.py").write_text(SLOW_STEPS)
    text = plan_text(extra=EVERY_PLAN_STEPS, n=96).replace("report: {title: Test audit}", REPORT)
    assert REPORT in text
    (folder / "plan.yaml").write_text(text)
    return folder / "plan.yaml"


def _timed_finish(plan: Path, out: Path, cache: Path, env: dict[str, str]) -> tuple[dict, float]:
    start = time.monotonic()
    results = _finish(plan, out, cache, env)
    return results, time.monotonic() - start


@pytest.mark.slow
def test_killed_every_t_seconds_and_rerun_each_time_it_finishes_with_the_same_results(model_dir):
    """A run killed every T seconds and started again each time finishes: every step and every figure a killed
    attempt finished is kept by content, so each attempt gets further, and the last one, with everything
    cached, needs less than T. T is measured, not guessed: longer than a fully cached re-run (C), shorter than
    a re-run whose steps are cached but whose figures are not (so an attempt is killed while rendering)."""
    plan = _every_plan(model_dir)
    env = _env(model_dir)
    reference_cache = model_dir / "reference-cache"
    results, cold = _timed_finish(plan, model_dir / "reference", reference_cache, env)
    n_entries = len(_entries(reference_cache))
    assert not results["failures"] and n_entries >= 14 and results["discovery"]
    _, cached = _timed_finish(plan, model_dir / "cached", reference_cache, env)
    shutil.rmtree(reference_cache / "figures")
    _, no_figures = _timed_finish(plan, model_dir / "no-figures", reference_cache, env)
    every = max(1.25 * cached, min(1.5 * cached, (cached + no_figures) / 2))
    # each attempt but the last makes at least (T - C) of progress, and the whole run is under R of work
    most_attempts = math.ceil(cold / (every - cached)) + 2
    ref = Reference(results, cold, n_entries)

    out, cache = model_dir / "out", model_dir / "cache"
    kills: list[tuple[float, int, int]] = []  # (seconds, step entries, figures) when each kill came
    for attempt in range(1, most_attempts + 1):
        proc = _start(plan, out, cache, env)
        try:
            rc = proc.wait(timeout=every)
        except subprocess.TimeoutExpired:
            rc = None
            figures = len(list((cache / "figures").rglob("*.png"))) if (cache / "figures").is_dir() else 0
            kills.append((every, len(_entries(cache)), figures))
        finally:
            _kill_group(proc)
        if rc is not None:
            break
        _nothing_half_written_reads_as_complete(out, cache, ref)
    else:
        pytest.fail(f"not finished after {most_attempts} attempts killed every {every:.1f} s "
                    f"(cold run {cold:.1f} s, cached re-run {cached:.1f} s): {kills}")
    assert rc == 0, (out.parent / f"{out.name}.log").read_text(errors="replace")[-3000:]
    assert len(kills) >= 2, f"T = {every:.1f} s left too few kills: {kills}"
    assert any(entries == n_entries for _, entries, _ in kills), f"no kill while rendering the report: {kills}"
    resumed = json.loads((out / "results.json").read_text())
    assert _found(resumed) == _found(results)
    _tidy_and_whole(out, cache, ref)

"""Hostile input, second round: the file system, the data folder and the command line's errors.

The promise, for every case: one line ``error: ...`` naming the file, field or sample, exit
status 2, no Python traceback without ``--debug``, nothing half-written and nothing lost; with
``on_bad_sample: skip`` the audit goes on and lists each sample it left out. Listed with what
each case gets in docs/bad-input.md ("The file system" and "Folders and paths").

The tests run as root, whom permission bits do not stop: a folder that cannot be written is made
by a path under a file (``file/sub``), by ``/sys`` (which refuses root too; skipped where it does
not) and by a refusal injected where the file is created.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import EMOTIONS, TINY_MODEL
from corpus.folders import (
    NON_UTF8_SHOWN,
    dangling_link,
    folder_loop,
    link_outside,
    named_pipe,
    non_utf8_broken,
    non_utf8_image,
    self_loop,
)
from corpus.images import _rgb, empty, one_pixel
from xai_audit.cli import app
from xai_audit.errors import DataError
from xai_audit.files import PathError, atomic_write, check_folder, shown
from xai_audit.load.loading import dataset_length
from xai_audit.registry import make_plugin_manager
from xai_audit.run.cache import Cache

runner = CliRunner()
CLASSES = "[" + ", ".join(EMOTIONS) + "]"


# -- helpers ----------------------------------------------------------------------------


def _model(tmp_path: Path) -> None:
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    namespace: dict = {}
    exec(TINY_MODEL, namespace)
    torch.manual_seed(0)
    torch.save(namespace["make"]().state_dict(), tmp_path / "weights.pt")


def _plan(tmp_path: Path, dataset: str) -> Path:
    (tmp_path / "plan.yaml").write_text(
        f"model: {{adapter: torch, module: tiny_model.py:make, weights: weights.pt, classes: {CLASSES}}}\n"
        f"dataset: {dataset}\n"
        "hypotheses:\n  - grayscale\n"
        "report: {formats: [json]}\n"
    )
    return tmp_path / "plan.yaml"


def _classes(tmp_path: Path, n: int = 4) -> Path:
    """data/<class>/ok<i>.png, 32x32; returns data/."""
    data = tmp_path / "data"
    for i in range(n):
        (data / EMOTIONS[i]).mkdir(parents=True, exist_ok=True)
        _rgb(i).save(data / EMOTIONS[i] / f"ok{i}.png")
    return data


def _folder_plan(tmp_path: Path, on_bad: str = "fail", extra: str = "") -> Path:
    _model(tmp_path)
    _classes(tmp_path)
    return _plan(tmp_path, f"{{loader: image-folder, path: data, on_bad_sample: {on_bad}{extra}}}")


def _run(plan: Path, out: Path, *extra: str):
    """``xai-audit run PLAN --out OUT``, with ``extra`` options or else ``--no-cache``."""
    return runner.invoke(app, ["run", str(plan), "--out", str(out), *(extra or ("--no-cache",)), "-q"])


def _one_error_line(result, *names: str) -> str:
    """The run stopped with exit 2 and one line ``error: ...`` naming each of ``names``; no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _skipped(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["skipped_samples"]


def _sys_is_read_only() -> bool:
    """Whether /sys refuses even root a new file (it does in most containers and machines)."""
    try:
        handle, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return True
    os.close(handle)  # pragma: no cover - a /sys that takes files: the /sys cases are skipped
    os.unlink(probe)  # pragma: no cover
    return False  # pragma: no cover


READ_ONLY = pytest.mark.skipif(not _sys_is_read_only(), reason="/sys accepts new files here")


# -- 1. the file system: plan, data, cache and output paths --------------------------------


def test_an_output_folder_that_is_a_file_is_refused_before_any_work_and_kept(tmp_path):
    plan = _folder_plan(tmp_path)
    out = tmp_path / "report.txt"
    out.write_text("someone's notes")
    line = _one_error_line(_run(plan, out), str(out), "is a file, not a folder", "--out")
    assert line.startswith("error: report folder ")
    assert out.read_text() == "someone's notes"  # nothing lost


def test_an_output_folder_under_a_file_is_refused(tmp_path):
    plan = _folder_plan(tmp_path)
    (tmp_path / "afile").write_text("x")
    _one_error_line(_run(plan, tmp_path / "afile" / "sub"), str(tmp_path / "afile"), "is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("command", ["compare", "demo"])
def test_compare_and_demo_refuse_an_output_folder_that_is_a_file_before_any_work(tmp_path, command):
    out = tmp_path / "afile"
    out.write_text("x")
    args = {"compare": ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)],
            "demo": ["demo", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q"]}[command]
    _one_error_line(runner.invoke(app, args), str(out), "is a file, not a folder")
    assert out.read_text() == "x" and not (tmp_path / "cache").exists()


@READ_ONLY
def test_an_output_folder_that_cannot_be_written_even_by_root(tmp_path):
    plan = _folder_plan(tmp_path)
    _one_error_line(_run(plan, Path("/sys/xai-audit-report")), "/sys/xai-audit-report", "not writable")


def test_a_write_refused_while_the_report_is_written_names_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    plan = _folder_plan(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}\n')
    real_mkstemp = tempfile.mkstemp

    def refuse(*args, **kwargs):  # what a read-only mount answers root when a file is created
        if Path(kwargs.get("dir", ".")) == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(kwargs["dir"]))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    # the check before the run passes (it is the moment of writing that is refused)
    monkeypatch.setattr("xai_audit.files.check_folder", lambda *a, **k: None)
    _one_error_line(_run(plan, out), "cannot write", str(out / "results.schema.json"), "Permission denied")
    assert (out / "results.json").read_text() == '{"earlier": true}\n'  # the earlier report is not lost
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_a_disk_full_while_a_new_report_folder_is_written_leaves_no_folder_behind(tmp_path, monkeypatch):
    """The report folder and its tables/ are made as the files are staged: a write that fails removes them."""
    from xai_audit.files import write_together

    real_mkstemp = tempfile.mkstemp

    def full(*args, **kwargs):  # the disk fills up at the second file
        if Path(kwargs.get("dir", ".")).name == "tables":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    out = tmp_path / "new" / "report"
    files = {out / "report.html": b"<html>", out / "tables" / "a.csv": b"a,b\n", out / "results.json": b"{}"}
    with pytest.raises(PathError, match=r"tables/a\.csv: .*No space left on device"):
        write_together(files, last=out / "results.json", folders="report folder")
    assert sorted(tmp_path.iterdir()) == []  # neither report/, nor tables/, nor new/ above them
    (tmp_path / "kept").mkdir()
    with pytest.raises(PathError):
        write_together({tmp_path / "kept" / "tables" / "a.csv": b""}, folders="report folder")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not list((tmp_path / "kept").iterdir())


def test_atomic_write_under_a_file_or_onto_a_folder_names_the_path(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PathError, match=r"afile/report\.html: .*afile is a file, not a folder"):
        atomic_write(tmp_path / "afile" / "report.html", b"<html>")
    (tmp_path / "report.html").mkdir()
    with pytest.raises(PathError, match=r"cannot write .*report\.html: Is a directory"):
        atomic_write(tmp_path / "report.html", b"<html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    check_folder(tmp_path / "new" / "deeper", "report folder")  # creatable: passes, and creates nothing
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["file", "under-file", "env-file", "env-under-file"])
def test_a_cache_folder_that_is_a_file_or_under_one_is_refused_before_any_work(tmp_path, where):
    plan = _folder_plan(tmp_path)
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "afile" if where.endswith("-file") and "under" not in where else tmp_path / "afile" / "sub"
    out = tmp_path / "out"
    if where.startswith("env"):
        result = runner.invoke(app, ["run", str(plan), "--out", str(out), "-q"], env={"XAI_AUDIT_CACHE": str(cache)})
        line = _one_error_line(result, str(cache), "$XAI_AUDIT_CACHE", "--no-cache")
    else:
        line = _one_error_line(_run(plan, out, "--cache-dir", str(cache)), str(cache), "--cache-dir")
    assert line.startswith("error: cache folder ") and "is a file, not a folder" in line
    assert (tmp_path / "afile").read_text() == "x" and not out.exists()


@READ_ONLY
def test_a_cache_folder_that_cannot_be_written_even_by_root(tmp_path):
    plan = _folder_plan(tmp_path)
    _one_error_line(_run(plan, tmp_path / "out", "--cache-dir", "/sys/xai-audit-cache"), "/sys/xai-audit-cache")
    assert not (tmp_path / "out").exists()


def test_a_cache_that_fails_while_a_step_is_stored_keeps_the_result_and_says_so(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    cache.check()
    assert not (tmp_path / "cache").exists()  # checked, not created: the first entry makes it
    real_mkdtemp = tempfile.mkdtemp

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    key = "ab" + "0" * 62
    cache.put(key, {"x": 1}, {})  # the step's result is the caller's: storing it may fail, never lose it
    (error,) = cache.errors
    assert "cannot store a step in the cache" in error and "steps/ab" in error and "No space left" in error
    assert cache.get(key) is None
    monkeypatch.setattr(tempfile, "mkdtemp", real_mkdtemp)
    (tmp_path / "cache" / "steps" / "cd").write_text("not a folder")
    ran = []
    with cache.claim("cd" + "0" * 62):  # no lock can be made: the step still runs
        ran.append(True)
    assert ran and "cannot lock a step" in cache.errors[-1] and "steps/cd" in cache.errors[-1]


def test_a_cache_that_fails_during_a_run_gives_the_report_and_a_warning(tmp_path, monkeypatch):
    plan = _folder_plan(tmp_path)
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    out = tmp_path / "out"
    result = _run(plan, out, "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    assert (out / "results.json").is_file()
    (warning,) = [line for line in result.stderr.splitlines() if "cache" in line]
    assert warning.startswith("warning: ") and "No space left on device" in warning


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_plan_path_that_is_a_folder_or_under_a_file(tmp_path, command):
    (tmp_path / "afile").write_text("x")
    for plan in (tmp_path, tmp_path / "afile" / "plan.yaml"):
        args = [command, str(plan)] + (["--out", str(tmp_path / "out"), "--no-cache"] if command == "run" else [])
        _one_error_line(runner.invoke(app, args), str(plan), "cannot read plan")
    assert not (tmp_path / "out").exists()


def test_an_unreadable_plan(tmp_path, monkeypatch):
    plan = _folder_plan(tmp_path)
    real_open, real_read_text = Path.open, Path.read_text

    def refusing(real):
        def refuse(self, *args, **kwargs):  # root reads any file: the refusal a user would get is injected
            if self == plan:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)
        return refuse

    monkeypatch.setattr(Path, "open", refusing(real_open))
    monkeypatch.setattr(Path, "read_text", refusing(real_read_text))
    _one_error_line(_run(plan, tmp_path / "out"), str(plan), "Permission denied")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc/self/mem (reads fail with EIO)")
@pytest.mark.parametrize("what", ["plan", "metadata", "weights"])
def test_a_file_that_fails_to_read_is_named_with_the_reason(tmp_path, what):
    """/proc/self/mem: it exists, opens, and every read at offset 0 fails with an I/O error."""
    plan = _csv_case(tmp_path, "ok2.png")
    if what == "plan":
        os.symlink("/proc/self/mem", tmp_path / "mem.yaml")
        plan = tmp_path / "mem.yaml"
    elif what == "metadata":
        (tmp_path / "data" / "meta.csv").unlink()
        os.symlink("/proc/self/mem", tmp_path / "data" / "meta.csv")
    else:
        plan.write_text(plan.read_text().replace("weights: weights.pt", "weights: /proc/self/mem"))
    result = runner.invoke(app, ["validate", str(plan)])
    _one_error_line(result, "Input/output error")
    assert ("mem" if what != "metadata" else "/proc/") in result.stderr


def test_with_debug_the_traceback_is_shown(tmp_path):
    plan = _folder_plan(tmp_path)
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["--debug", "run", str(plan), "--out", str(tmp_path / "afile"), "--no-cache"])
    assert isinstance(result.exception, PathError) and "is a file, not a folder" in str(result.exception)


@pytest.mark.parametrize(
    "dataset, says",
    [
        ("{loader: image-folder, path: afile}", "it is a file, not a folder of images"),
        ("{loader: image-folder, path: afile/sub}", "image folder not found"),
        ("{loader: image-folder, path: gone}", "a dangling symbolic link"),
        ("{loader: image-folder, path: data, metadata: data}", "it is a folder, not a CSV file"),
        ("{loader: image-folder, path: data, metadata: afile/meta.csv}", "metadata file not found"),
    ],
)
def test_a_data_folder_that_is_a_file_and_a_metadata_csv_that_is_a_folder(tmp_path, dataset, says):
    _model(tmp_path)
    _classes(tmp_path)
    (tmp_path / "afile").write_text("x")
    os.symlink("nowhere", tmp_path / "gone")
    plan = _plan(tmp_path, dataset)
    _one_error_line(runner.invoke(app, ["validate", str(plan)]), says)


# -- 2. a file name that is not UTF-8 -----------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_shown_escaped(tmp_path):
    plan = _folder_plan(tmp_path)
    plan.write_text(plan.read_text().replace("formats: [json]", "formats: [json, html]"))
    non_utf8_image(tmp_path / "data" / "happy")
    out = tmp_path / "out"
    result = _run(plan, out)
    assert result.exit_code == 0, result.output
    raw = (out / "results.json").read_bytes()
    raw.decode("utf-8")  # the file is UTF-8 throughout
    results = json.loads(raw)
    assert results["samples"]["n"] == 5 and results["skipped_samples"] == []
    assert f"happy/{NON_UTF8_SHOWN}" in (out / "report.html").read_text(encoding="utf-8")
    # the manifest keeps the file's real name (a JSON \udcff escape): verify finds the very file
    manifest = [p for p, _ in results["provenance"]["dataset"]["files"]]
    assert any(Path(p).is_file() and os.fsencode(p).endswith(b"bad\xff.png") for p in manifest)


@pytest.mark.parametrize("on_bad", ["fail", "skip"])
def test_a_broken_image_whose_name_is_not_utf8_is_named_escaped(tmp_path, on_bad):
    _model(tmp_path)
    _classes(tmp_path)
    non_utf8_broken(tmp_path / "data" / "happy")
    plan = _plan(tmp_path, f"{{loader: image-folder, path: data, on_bad_sample: {on_bad}}}")
    out = tmp_path / "out"
    result = _run(plan, out)
    if on_bad == "fail":
        _one_error_line(result, NON_UTF8_SHOWN)
        assert not out.exists()
    else:
        assert result.exit_code == 0, result.output
        (skipped,) = _skipped(out)
        assert NON_UTF8_SHOWN in skipped["error"]


def test_shown_escapes_only_what_is_not_utf8():
    assert shown("plain/é.png") == "plain/é.png"
    assert shown(os.fsdecode(b"a\xffb.png")) == "a\\xffb.png"
    assert shown("\ud800 lone") == "\\ud800 lone"


# -- 3. skip that skips: the image size comes from the first sample that reads -------------


@pytest.mark.parametrize("writer, says", [(empty, "cannot read image"), (one_pixel, "too small to audit")])
def test_with_skip_a_bad_image_that_sorts_first_is_skipped_and_the_size_comes_from_the_next(tmp_path, writer, says):
    plan = _folder_plan(tmp_path, "skip")  # no size option: every image must match the first that reads
    writer(tmp_path / "data" / "angry" / "aaa.png")  # angry/ sorts first, aaa.png first in it
    out = tmp_path / "out"
    result = _run(plan, out)
    assert result.exit_code == 0, result.output
    (skipped,) = _skipped(out)
    assert skipped["index"] == 0 and "aaa.png" in skipped["error"] and says in skipped["error"]
    assert json.loads((out / "results.json").read_text())["samples"]["n"] == 4


@pytest.mark.parametrize("writer", [empty, one_pixel])
def test_with_fail_a_bad_first_image_is_named_as_sample_0(tmp_path, writer):
    plan = _folder_plan(tmp_path)
    writer(tmp_path / "data" / "angry" / "aaa.png")
    line = _one_error_line(_run(plan, tmp_path / "out"), "aaa.png", "sample 0", "on_bad_sample: skip")
    assert "ok" not in line  # the good images are not blamed for the bad one's size


def test_the_reference_size_is_the_first_readable_whatever_is_read_first(tmp_path):
    from xai_audit.api import LoadContext
    from xai_audit_datasets.image_folder import ImageFolderPlugin

    data = _classes(tmp_path)
    one_pixel(data / "angry" / "a0.png")
    empty(data / "angry" / "a1.png")
    ds = ImageFolderPlugin(ImageFolderPlugin.Options(path="data")).load(LoadContext(base_dir=tmp_path))
    assert ds[5].image.shape == (3, 32, 32)  # read before the bad ones: they do not set the size
    for bad in (0, 1):
        with pytest.raises(DataError):
            ds[bad]
    assert ds[2].image.shape == (3, 32, 32)


def test_with_skip_a_folder_of_nothing_but_bad_images_says_so(tmp_path):
    _model(tmp_path)
    data = tmp_path / "data" / "happy"
    data.mkdir(parents=True)
    empty(data / "a.png")
    one_pixel(data / "b.png")
    plan = _plan(tmp_path, "{loader: image-folder, path: data, on_bad_sample: skip}")
    _one_error_line(_run(plan, tmp_path / "out"), "every one of the 2 samples was unreadable", "a.png")


# -- 4. symbolic links that dangle or loop ----------------------------------------------


def test_with_skip_dangling_links_and_loops_are_listed_as_skipped(tmp_path):
    plan = _folder_plan(tmp_path, "skip")
    happy = tmp_path / "data" / "happy"
    dangling_link(happy)
    self_loop(happy)
    folder_loop(happy)
    (happy / "notes").mkdir()
    os.symlink("nowhere.txt", happy / "notes.txt")  # a broken link that was never an image: ignored
    out = tmp_path / "out"
    result = _run(plan, out)
    assert result.exit_code == 0, result.output
    errors = {Path(s["error"].split(":")[0]).name: s["error"] for s in _skipped(out)}
    assert set(errors) == {"dangling.png", "loop.png", "again"}
    assert "dangling symbolic link" in errors["dangling.png"] and "nowhere.png" in errors["dangling.png"]
    assert "symbolic link loop" in errors["loop.png"] and "symbolic link loop" in errors["again"]
    assert json.loads((out / "results.json").read_text())["samples"]["n"] == 4  # the loop added no copies


@pytest.mark.parametrize("writer, name", [(dangling_link, "dangling.png"), (self_loop, "loop.png"),
                                          (folder_loop, "again")])
def test_with_fail_a_broken_link_is_named_in_the_error(tmp_path, writer, name):
    plan = _folder_plan(tmp_path)
    writer(tmp_path / "data" / "happy")
    _one_error_line(_run(plan, tmp_path / "out"), name, "symbolic link", "on_bad_sample: skip")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("on_bad", ["fail", "skip"])
def test_a_named_pipe_named_like_an_image_is_a_bad_sample_never_opened(tmp_path, on_bad):
    """Opening a FIFO blocks until something writes to it: it is named, or listed as skipped, unread."""
    plan = _folder_plan(tmp_path, on_bad)
    named_pipe(tmp_path / "data" / "happy", "aaa.png")  # sorts first
    out = tmp_path / "out"
    result = _run(plan, out)
    if on_bad == "fail":
        _one_error_line(result, "aaa.png", "a named pipe (FIFO), not an image file")
        assert not out.exists()
    else:
        assert result.exit_code == 0, result.output
        (skipped,) = _skipped(out)
        assert "aaa.png: a named pipe (FIFO), not an image file" in skipped["error"]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_metadata_path_to_a_pipe_or_a_folder_names_the_csv_line(tmp_path, kind):
    plan = _csv_case(tmp_path, "odd.png")
    data = tmp_path / "data"
    if kind == "fifo":
        named_pipe(data, "odd.png")
    else:
        (data / "odd.png").mkdir()
    says = "a named pipe (FIFO), not an image file" if kind == "fifo" else "a folder, not an image file"
    _one_error_line(_run(plan, tmp_path / "out"), "meta.csv: line 4, column 'path'", "odd.png", says)


def test_a_broken_link_where_a_class_folder_would_be(tmp_path):
    plan = _folder_plan(tmp_path)
    os.symlink("missing-class", tmp_path / "data" / "sad-old")
    _one_error_line(_run(plan, tmp_path / "out"), "sad-old", "dangling symbolic link")


def test_a_link_to_a_folder_inside_the_data_folder_is_followed(tmp_path):
    from xai_audit.api import LoadContext
    from xai_audit_datasets.image_folder import ImageFolderPlugin

    data = _classes(tmp_path)
    (data / ".pool").mkdir()
    _rgb(7).save(data / ".pool" / "x.png")
    os.symlink("../.pool", data / "happy" / "more")
    ds = ImageFolderPlugin(ImageFolderPlugin.Options(path="data")).load(LoadContext(base_dir=tmp_path))
    assert "happy/more/x.png" in [ds[i].id for i in range(len(ds))]


# -- 5. paths that leave the data folder ------------------------------------------------


def _csv_case(tmp_path: Path, path_cell: str, allow: bool = False) -> Path:
    _model(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        _rgb(i).save(data / f"ok{i}.png")
    (tmp_path / "elsewhere").mkdir()
    _rgb(5).save(tmp_path / "elsewhere" / "img.png")
    os.symlink(tmp_path / "elsewhere" / "img.png", data / "inner-link.png")
    (data / "meta.csv").write_text("path,label\nok0.png,happy\nok1.png,sad\n" f"{path_cell},sad\nok2.png,happy\n")
    allow_outside = ", allow_outside: true" if allow else ""
    return _plan(tmp_path, f"{{loader: image-folder, path: data, metadata: data/meta.csv, size: 32{allow_outside}}}")


@pytest.mark.parametrize("cell", ["../elsewhere/img.png", "ABSOLUTE", "inner-link.png", "../../x/../elsewhere/img.png"])
def test_a_metadata_path_that_leaves_the_data_folder_is_refused_naming_the_csv_line(tmp_path, cell):
    cell = str(tmp_path / "elsewhere" / "img.png") if cell == "ABSOLUTE" else cell
    if cell.startswith("../../"):  # climbs above the data folder's parent, then back down
        cell = "../../" + tmp_path.name + "/elsewhere/img.png"
    plan = _csv_case(tmp_path, cell)
    out = tmp_path / "out"
    line = _one_error_line(_run(plan, out), "meta.csv: line 4, column 'path'", "outside the data folder",
                           "allow_outside: true")
    assert str(tmp_path / "elsewhere" / "img.png") in line
    assert not out.exists()


def test_allow_outside_reads_it(tmp_path):
    plan = _csv_case(tmp_path, "../elsewhere/img.png", allow=True)
    result = _run(plan, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["samples"]["n"] == 4


def test_allow_outside_leaves_the_fingerprint_of_an_ordinary_folder_as_it_was(tmp_path):
    from xai_audit.api import LoadContext
    from xai_audit_datasets.image_folder import ImageFolderPlugin

    _classes(tmp_path)
    prints = {
        ImageFolderPlugin(ImageFolderPlugin.Options(path="data", allow_outside=allow)).load(
            LoadContext(base_dir=tmp_path)).fingerprint()
        for allow in (False, True)
    }
    assert len(prints) == 1


@pytest.mark.parametrize("on_bad", ["fail", "skip"])
def test_a_link_in_a_class_folder_that_points_outside(tmp_path, on_bad):
    plan = _folder_plan(tmp_path, on_bad)
    (tmp_path / "elsewhere").mkdir()
    _rgb(5).save(tmp_path / "elsewhere" / "img.png")
    link_outside(tmp_path / "data" / "sad", tmp_path / "elsewhere" / "img.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "happy" / "more")  # a folder out, too
    out = tmp_path / "out"
    result = _run(plan, out)
    if on_bad == "fail":
        _one_error_line(result, "more", "outside the data folder", "allow_outside: true")
    else:
        assert result.exit_code == 0, result.output
        names = sorted(Path(s["error"].split(":")[0]).name for s in _skipped(out))
        assert names == ["link.png", "more"]
    plan.write_text(plan.read_text().replace("on_bad_sample", "allow_outside: true, on_bad_sample"))
    result = _run(plan, tmp_path / "out2")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out2" / "results.json").read_text())["samples"]["n"] == 6


# -- 6. seeds and sample counts numpy refuses -------------------------------------------------


@pytest.mark.parametrize("dataset, field", [
    ("{loader: synthetic-faces, n: 100000000000000000000000000000, size: 32}", "dataset.n"),
    ("{loader: synthetic-faces, n: 10000000000000000000, size: 32}", "dataset.n"),
    ("{loader: synthetic-faces, n: 0, size: 32}", "dataset.n"),
    ("{loader: synthetic-faces, n: 8, size: 32, seed: -1}", "dataset.seed"),
    ("{loader: digits, seed: -5}", "dataset.seed"),
    ("{loader: digits, seed: 1.5}", "dataset.seed"),
])
def test_a_data_set_count_or_seed_out_of_range_is_a_located_plan_error(tmp_path, dataset, field):
    _model(tmp_path)
    plan = _plan(tmp_path, dataset)
    _one_error_line(runner.invoke(app, ["validate", str(plan)]), "plan.yaml:2:", field)


def test_a_huge_data_set_seed_numpy_takes_is_used(tmp_path):
    _model(tmp_path)
    plan = _plan(tmp_path, "{loader: synthetic-faces, n: 8, size: 32, seed: 100000000000000000000000000000}")
    result = runner.invoke(app, ["validate", str(plan)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("seed", ["-1", str(2**63), "100000000000000000000000000000"])
def test_a_demo_seed_numpy_refuses_is_refused_before_any_training(tmp_path, seed):
    out = tmp_path / "out"
    result = runner.invoke(app, ["demo", "--seed", seed, "--out", str(out), "--cache-dir", str(tmp_path / "c"), "-q"])
    _one_error_line(result, "--seed", seed)
    assert not out.exists() and not (tmp_path / "c").exists()


def test_a_data_set_whose_length_python_cannot_hold():
    class Huge:
        def __len__(self):
            return 10**30

    with pytest.raises(DataError, match="loader 'huge'.*no usable length.*OverflowError"):
        dataset_length(Huge(), "huge")


def test_the_image_folder_options_are_documented():
    registry = make_plugin_manager()
    options = registry.get("dataset", "image-folder").cls.Options
    assert "outside" in options.model_fields["allow_outside"].description
    text = (Path(__file__).resolve().parents[1] / "docs" / "bad-input.md").read_text()
    assert "allow_outside" in text and "XAI_AUDIT_CACHE" in text


@pytest.mark.parametrize("what", ["missing", "file"])
def test_templates_that_are_no_folder_are_refused_before_any_work(tmp_path, what):
    plan = _folder_plan(tmp_path)
    templates = tmp_path / "mine"
    if what == "file":
        templates.write_text("x")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan), "--out", str(out), "--no-cache", "-q",
                                 "--templates", str(templates)])
    _one_error_line(result, "--templates", str(templates), "no such folder" if what == "missing" else "a file")
    assert not out.exists()
    result = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out",
                                 str(tmp_path / "cmp"), "--templates", str(templates)])
    _one_error_line(result, "--templates")

"""The command line: run, validate, plugins, demo.

Exit status: 0 the audit ran, 1 the audit ran and a check failed,
2 bad input (plan, model, data, plugin): one clear line, no traceback
unless ``--debug``.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from xai_audit.errors import PlanError, XaiAuditError
from xai_audit.files import shown

app = typer.Typer(
    name="xai-audit",
    help="Audit what an image classifier looks at, and write it down.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: debug: --debug was given; exits: the process ends with the command (:func:`run`, the ``xai-audit`` command;
#: tests call :data:`app` and go on)
_state = {"debug": False, "exits": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    """Audit what an image classifier looks at, and write it down."""
    _state["debug"] = debug
    _log_to_stderr()


#: the longest line the command line prints about data (an error, a warning, a finding); an unbroken run (a
#: class name, an id) keeps its first ``_RUN_LIMIT`` characters. The files written keep every string whole.
_LINE_LIMIT = 2000
_RUN_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONG_RUN = re.compile(rf"\S{{{_RUN_LIMIT + 1},}}")


def one_line(text: str) -> str:
    """``text`` as one printable line of bounded length: a line break in a model's message is escaped, a
    class name of 100 kB in an error or a finding is cut, with an ellipsis."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], shown(text))
    text = _LONG_RUN.sub(lambda m: m.group()[:_RUN_LIMIT] + "…", text)
    return text if len(text) <= _LINE_LIMIT else f"{text[:_LINE_LIMIT]}… [{len(text):,} characters]"


def _err(message: str) -> None:
    typer.echo(one_line(message), err=True)


def _say(message: str) -> None:
    typer.echo(one_line(message))


class _WarningLines(logging.Handler):
    """xai-audit's own log warnings as ``warning: ...`` lines on stderr. Other libraries' records are shown
    only with ``--debug``: WeasyPrint's notes on the report's stylesheet say nothing about the audit."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.name == "xai_audit" or record.name.startswith("xai_audit."):
                _err(f"warning: {record.getMessage()}")
            elif _state["debug"]:
                _err(f"warning: {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never stop the audit
            self.handleError(record)


def _log_to_stderr() -> None:
    """Give the root logger our handler, once: then a library that calls ``logging.basicConfig`` (or logs
    through the root logger, which does) cannot add its own, and nothing else prints log records."""
    root = logging.getLogger()
    if not any(isinstance(h, _WarningLines) for h in root.handlers):
        root.addHandler(_WarningLines())


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlanError as exc:
            if _state["debug"]:
                raise
            for problem in exc.problems:
                _err(f"error: {problem}")
            raise typer.Exit(2) from None
        except XaiAuditError as exc:
            if _state["debug"]:
                raise
            _err(f"error: {exc}")  # one line: a file name that is not UTF-8 with its bytes escaped, long names cut
            raise typer.Exit(2) from None

    return wrapper


def _registry(strict: bool = False):
    from xai_audit.registry import PluginLoadWarning, make_plugin_manager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginLoadWarning)
        registry = make_plugin_manager(strict=strict)
    for w in caught:
        if issubclass(w.category, PluginLoadWarning):
            _err(f"warning: {w.message}")
    return registry


def _cache(cache_dir: Optional[Path], no_cache: bool):
    """The step cache, its folder checked now (a file, or read-only, stops the run before any work)."""
    import os

    from xai_audit.run.cache import Cache, default_cache_dir

    cache = Cache(None if no_cache else (cache_dir or default_cache_dir()))
    from_env = cache_dir is None and bool(os.environ.get("XAI_AUDIT_CACHE"))
    cache.check("cache folder", hint="; " + ("it comes from $XAI_AUDIT_CACHE: set another" if from_env else
                                             "choose another with --cache-dir") + ", or run with --no-cache")
    return cache


def _check_templates(templates: Optional[Path]) -> None:
    """Refuse ``--templates`` that is no folder before any work (the built-in templates would be used
    silently in its place)."""
    if templates is None or templates.is_dir():
        return
    why = "it is a file, not a folder" if templates.exists() else "no such folder"
    raise XaiAuditError(f"--templates {shown(templates)}: {why}; give a folder of templates that override the "
                        "built-in ones")


def _check_out(out: Path) -> None:
    """Refuse an output folder that cannot be created or written before any work (nothing is created here)."""
    from xai_audit.files import check_folder

    check_folder(out, "report folder", hint="; choose another with --out")


def _write(outcome, registry, out: Path, formats: list[str], templates: Optional[Path],
           checks: bool = True, last: bool = False, pdf_worker=None) -> dict[str, Path]:
    """Write the report; with it, in one set (a kill leaves either all of them or no results.json), the
    fine-tuning manifest, run.log (whole tracebacks of the steps that failed; the report and results.json keep
    one line each) and, with ``checks``, checks.xml (the plan's checks as JUnit). A run.log or checks.xml that
    an earlier run left and this one has none of is removed with the same write. ``last``: the command's last
    report; where the process ends with the command, its garbage is left to the exit (write_report's
    ``then_exit``). ``pdf_worker``: the process that makes its PDF (:func:`_pdf_worker`)."""
    from xai_audit.judge.checks import junit_xml
    from xai_audit.judge.recommend import MANIFEST_NAME
    from xai_audit.report import ReportArtifacts, write_report

    template_dirs = ([templates] if templates else []) + registry.template_dirs()
    artifacts = ReportArtifacts(
        images=outcome.images, explanations=outcome.explanations, hypotheses=outcome.hypotheses,
        predictions=outcome.predictions, labels=outcome.labels,
    )
    rows = outcome.results.get("checks") or []
    extra = {
        "run.log": ("\n".join(outcome.log) + "\n").encode("utf-8") if outcome.log else None,
        "checks.xml": junit_xml(rows, outcome.results.get("title", "")).encode() if checks and rows else None,
    }
    written = write_report(outcome.results, artifacts, out, formats=formats, template_dirs=template_dirs,
                           extra=extra if checks else {"run.log": extra["run.log"]},
                           then_exit=last and _state["exits"], pdf_worker=pdf_worker)
    written["manifest"] = out / MANIFEST_NAME  # written with the report (the PDF embeds it)
    if outcome.log:
        written["log"] = out / "run.log"
        if _state["debug"]:
            for entry in outcome.log:  # whole tracebacks, as they are
                typer.echo(shown(entry), err=True)
    return written


CacheDir = typer.Option(None, "--cache-dir", help="Step cache folder (default: $XAI_AUDIT_CACHE or ./.xai-audit-cache).")
NoCache = typer.Option(False, "--no-cache", help="Compute every step afresh and store nothing.")
Templates = typer.Option(None, "--templates", help="A folder of templates that override the built-in ones.")
Strict = typer.Option(False, "--strict-plugins", help="Fail when a third-party plugin cannot be imported.")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bar.")


@app.command()
@handles_errors
def run(
    ctx: typer.Context,
    plan: Path = typer.Argument(..., help="The audit plan (YAML)."),
    out: Path = typer.Option(Path("xai-audit-report"), "--out", "-o", help="Folder for the report."),
    cache_dir: Optional[Path] = CacheDir,
    no_cache: bool = NoCache,
    templates: Optional[Path] = Templates,
    strict_plugins: bool = Strict,
    quiet: bool = Quiet,
    batch_sizes_from: Optional[Path] = typer.Option(
        None, "--batch-sizes-from", help="An earlier report folder: batch the model's passes as its run did "
        "(run.batching). The results do not depend on it; it makes the run compute exactly what that one did."),
    formats: Optional[str] = typer.Option(
        None, "--formats", help="What to write, comma-separated, instead of the plan's report.formats: html, pdf, "
        "json, card (a Hugging Face model card, README.md)."),
) -> None:
    """Run the audit PLAN and write report.html, report.pdf and results.json."""
    worker = _pdf_worker()
    if batch_sizes_from is not None:
        from xai_audit.verify.rerun import batch_sizes_from as recorded, read_results

        sizes = ctx.with_resource(recorded(read_results(batch_sizes_from)[1]))  # until the command ends
        typer.echo(f"batch sizes from {batch_sizes_from}: {sizes or 'none recorded (probed as usual)'}")
    from xai_audit.audit import run_audit
    from xai_audit.plan import load_plan

    registry = _registry(strict_plugins)
    validated = load_plan(plan, registry)
    if formats is not None:
        validated.report.formats = _formats(formats)
    _check_out(out)
    _check_templates(templates)
    cache = _cache(cache_dir, no_cache)
    show = not quiet and sys.stderr.isatty()
    if len(validated.models) == 1:
        outcome = run_audit(validated, registry, cache=cache, progress=show)
        _summarise(outcome.results, _write(outcome, registry, out, validated.report.formats, templates, last=True,
                                           pdf_worker=worker))
        failed = _gate(outcome.results)
        failed = _incomplete(outcome.results) or failed
    else:
        failed = _run_several(validated, registry, cache, out, templates, show)
    _cache_warnings(cache)
    if failed:
        raise typer.Exit(1)


def _pdf_worker():
    """A process that makes the report's PDF (report/pdfworker.py), forked now, before the audit imports
    torch (which starts threads), so WeasyPrint is imported while the audit runs and the PDF is laid out in
    a small process while this one writes the rest. Only for the ``xai-audit`` command, whose process ends
    with it (:func:`run`); tests and library use make the PDF in-process. A worker the command did not use
    (it failed first, or wrote no PDF) is a daemon process: the exit handlers :func:`run` runs end it."""
    if not _state["exits"]:
        return None
    from xai_audit.report.pdfworker import PdfWorker

    return PdfWorker.start()


def _formats(text: str) -> list[str]:
    """``--formats html,pdf,card`` as a list; an unknown or empty one is bad input."""
    from xai_audit.report.render import FILENAMES

    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FILENAMES]
    if unknown or not chosen:
        raise XaiAuditError(f"--formats: {'unknown format ' + repr(unknown[0]) if unknown else 'nothing chosen'}; "
                            f"choose from {', '.join(sorted(FILENAMES))}, comma-separated")
    return list(dict.fromkeys(chosen))


def _cache_warnings(cache) -> None:
    """Entries the cache could not store during the run: the results were kept, the next run recomputes them."""
    if cache.errors:
        more = f" (and {len(cache.errors) - 1} more)" if len(cache.errors) > 1 else ""
        _err(f"warning: {shown(cache.errors[0])}{more}; the results were kept, the next run computes them again")


def _gate(results: dict) -> bool:
    """Print the checks (checks.xml, their JUnit file, is written with the report); True when one FAILs."""
    rows = results.get("checks") or []
    for row in rows:
        _say(f"check {row['status']}: {row['check']}" + (f" ({row['reason']})" if row["reason"] else ""))
    return any(r["status"] == "FAIL" for r in rows)


def _incomplete(results: dict, model: str = "") -> bool:
    """Say so when a planned step did not run; True when that fails the run (``on_step_failure: fail``).

    Called after the whole report is written: exit status 1 then means the audit ran and is complete on disk,
    but a step the plan asked for is missing from it (2 stays for bad input)."""
    completeness = results.get("completeness") or {}
    not_run = completeness.get("not_run") or []
    if not not_run:
        return False
    fail = completeness.get("on_step_failure", "fail") != "warn"
    steps = ", ".join(str(r.get("step")) for r in not_run)
    _err(f"INCOMPLETE{f' ({model})' if model else ''}: {len(not_run)} planned step(s) did not run: {steps}"
         + ("; exit status 1 (on_step_failure: fail)" if fail else " (on_step_failure: warn)"))
    return fail


def _run_several(validated, registry, cache, out: Path, templates: Optional[Path], show: bool) -> bool:
    """A several-model plan: one report per model in out/<name>/, and the comparison in out/."""
    from xai_audit.audit import run_audit
    from xai_audit.judge.compare import compare_results
    from xai_audit.report import ReportArtifacts
    from xai_audit.report.comparison import write_comparison

    outcomes = {}
    explain_ids = None
    for name, _ in validated.models:
        typer.echo(f"model {name}:")
        outcome = run_audit(validated.for_model(name), registry, cache=cache, progress=show, explain_ids=explain_ids)
        explain_ids = explain_ids or outcome.explained_ids
        _summarise(outcome.results, _write(outcome, registry, out / name, validated.report.formats, templates))
        outcomes[name] = outcome
    comparison = compare_results([(n, o.results) for n, o in outcomes.items()], seed=validated.seed)
    artifacts = {
        n: ReportArtifacts(images=o.images, explanations=o.explanations, hypotheses=o.hypotheses,
                           predictions=o.predictions, labels=o.labels)
        for n, o in outcomes.items()
    }
    template_dirs = ([templates] if templates else []) + registry.template_dirs()
    written = write_comparison(comparison, artifacts, out, validated.report.formats, template_dirs)
    for kind, path in written.items():
        typer.echo(f"comparison {kind}: {path}")
    failed = False
    for name, outcome in outcomes.items():
        failed = _gate(outcome.results) or failed
        failed = _incomplete(outcome.results, name) or failed
    return failed


@app.command()
@handles_errors
def compare(
    results: list[Path] = typer.Argument(..., help="Two or more results.json files of earlier audits."),
    out: Path = typer.Option(Path("xai-audit-comparison"), "--out", "-o", help="Folder for the comparison."),
    templates: Optional[Path] = Templates,
) -> None:
    """Compare earlier audits (e.g. before and after fine-tuning) from their results.json files."""
    import json

    from xai_audit.errors import DataError
    from xai_audit.judge.compare import compare_results
    from xai_audit.report.comparison import write_comparison

    _check_out(out)
    _check_templates(templates)
    named = []
    for path in results:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable results.json: {exc}") from None
        if not isinstance(data, dict) or "provenance" not in data or "samples" not in data:
            raise DataError(f"{path}: not an xai-audit results.json")
        name = path.parent.name or path.stem
        while name in {n for n, _ in named}:
            name += "'"
        named.append((name, data))
    written = write_comparison(compare_results(named), {}, out, template_dirs=[templates] if templates else [])
    for kind, path in written.items():
        typer.echo(f"comparison {kind}: {path}")


def _summarise(results: dict, written: dict[str, Path]) -> None:
    acc = results.get("accuracy")
    if acc:
        lo, hi = acc["ci"]
        typer.echo(f"accuracy: {100 * acc['value']:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %, n = {acc['n']})")
    for finding in results.get("findings", [])[:5]:
        _say(f"finding [{finding['severity']}]: {finding['title']}")
    run = results.get("run") or {}
    if run:  # how the audit ran: the run facts, never a result
        cache = run.get("cache") or {}
        typer.echo(f"ran in {run.get('seconds', 0):.0f} s; {cache.get('hits', 0)} step(s) reused from the cache, "
                   f"{cache.get('misses', 0)} computed")
    if results.get("failures"):
        typer.echo(f"{len(results['failures'])} step(s) could not run; see the report's last section "
                   "(run.log beside it has their tracebacks; --debug prints them)")
    for kind, path in written.items():
        typer.echo(f"{kind}: {path}")


@app.command()
@handles_errors
def validate(
    plan: Path = typer.Argument(..., help="The audit plan (YAML)."),
    load: bool = typer.Option(True, help="Also load the model and data and check they fit (--no-load: the plan only)."),
    strict_plugins: bool = Strict,
) -> None:
    """Check PLAN: every problem with its file, line and field; then that the model and data fit, and that each
    step can get what it reads from the data (region masks, group columns): what `run` would refuse."""
    from xai_audit.load.loading import load_inputs
    from xai_audit.plan import load_plan

    registry = _registry(strict_plugins)
    validated = load_plan(plan, registry)
    if load:  # the run's own loading stage, up to its first step
        for name, _ in validated.models:
            load_inputs(validated.for_model(name), registry)
    typer.echo(
        f"{plan}: valid ({len(validated.explainers)} explainer(s), {len(validated.hypotheses)} hypothesis(es))"
    )


@app.command()
@handles_errors
def plugins(strict_plugins: bool = Strict) -> None:
    """List every plugin by kind, name, version and the package it came from."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry(strict_plugins)
    table = Table("kind", "name", "version", "package", "description")
    for info in registry.all():
        table.add_row(info.kind, info.name, info.version, info.package, info.cls.description)
    Console(width=160).print(table)


@app.command()
@handles_errors
def verify(
    folder: Path = typer.Argument(..., help="A report folder (or its results.json)."),
    load: bool = typer.Option(True, help="Also reload the model and data and compare content fingerprints."),
    rerun: bool = typer.Option(False, "--rerun", help="Run the plan the report recorded again and compare every "
                               "field outside `run` with it (byte for byte on the same machine)."),
    cache_dir: Optional[Path] = CacheDir,
    no_cache: bool = typer.Option(False, "--no-cache", help="With --rerun: compute every step afresh."),
    tolerance: bool = typer.Option(False, "--tolerance", help="With --rerun: compare floats within a tolerance "
                                   "even on the same machine (another machine always does)."),
    trusted_keys: Optional[Path] = typer.Option(
        None, "--trusted-keys", help="Public keys (a file of OpenSSH lines or PEM, or a folder of *.pub / *.pem) "
        "the report's signatures must be made with; without it any valid signature passes, its key shown."),
) -> None:
    """Recompute the hashes: do the model and data still match the report? Exit 1 when not.
    Every sign-off under signatures/ is checked too: its signature, and every byte of every file it signed.
    With --rerun: run the report's plan again; "reproduced", or every field that differs (exit 1)."""
    if rerun:
        _rerun(folder, _cache(cache_dir, no_cache), tolerance)
        return
    from xai_audit.verify import verify_report
    from xai_audit.verify.files import OK

    rows = verify_report(folder, _registry(), load=load, trusted_keys=trusted_keys)
    for row in rows:
        where = f" {row['path']}" if row["path"] else ""
        typer.echo(f"{row['status']:>9}  {row['what']}{where}")
    bad = [r for r in rows if r["status"] not in OK]
    if bad:
        typer.echo(f"{len(bad)} of {len(rows)} no longer match the report.")
        raise typer.Exit(1)
    typer.echo(f"all {len(rows)} match the report.")


@app.command()
@handles_errors
def sign(
    folder: Path = typer.Argument(..., help="A report folder (the one results.json, report.html and report.pdf are in)."),
    name: str = typer.Option(..., "--name", help="Who signs (shown by verify)."),
    role: str = typer.Option(..., "--role", help="As what, e.g. 'model risk reviewer'."),
    key: Path = typer.Option(..., "--key", help="Your private key: Ed25519 in PEM, or an OpenSSH key (ssh-keygen signs)."),
    statement: Optional[str] = typer.Option(None, "--statement", help="A sentence the signature covers, e.g. "
                                            "'Approved for the pilot only'."),
) -> None:
    """Sign the report in FOLDER: an in-toto statement over the SHA-256 of its results.json, HTML, PDF, manifest,
    model card and plan, in a DSSE envelope under FOLDER/signatures/ (one file per signer). verify checks it."""
    from xai_audit.verify.signing import sign_report

    signed = sign_report(folder, name=name, role=role, key=key, text=statement)
    predicate = signed.statement["predicate"]
    typer.echo(f"signed by {predicate['name']} ({predicate['role']}) at {predicate['signed_at']}, "
               f"key {signed.keyid[:16]}:")
    for subject in signed.statement["subject"]:
        typer.echo(f"  {subject['digest']['sha256'][:16]}  {subject['name']}")
    typer.echo(f"signature: {signed.envelope}")
    typer.echo(f"public key: {signed.public_key}")


#: differing fields ``verify --rerun`` prints before it only counts the rest
_SHOWN_DIFFERENCES = 40


def _rerun(folder: Path, cache, tolerance: bool) -> None:
    from xai_audit.audit import run_audit
    from xai_audit.verify.rerun import rerun_report, shown

    found = rerun_report(folder, _registry(), run_audit, cache=cache, tolerance=tolerance)
    typer.echo(f"compared: {found.how}")
    if not found.differences:
        typer.echo("reproduced" + (": byte for byte" if found.mode == "bytes" else ": within the tolerance"))
        return
    for d in found.differences[:_SHOWN_DIFFERENCES]:
        _say(f"differs  {d.path}: report {shown(d.report)}, rerun {shown(d.rerun)}")
    more = len(found.differences) - _SHOWN_DIFFERENCES
    typer.echo((f"... and {more} more; " if more > 0 else "") + f"{len(found.differences)} field(s) differ from the report.")
    raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    out: Path = typer.Option(Path("xai-audit-report"), "--out", "-o", help="Folder for the report."),
    data: str = typer.Option("faces", help="faces (synthetic faces with planted shortcuts) or digits (scikit-learn's digits)."),
    seed: int = typer.Option(0, help="Seed for the data, training and audit."),
    shortcuts: bool = typer.Option(True, help="Plant the shortcuts in the training split (--no-shortcuts: clean)."),
    verify: bool = typer.Option(
        False, "--verify", help="Fine-tune on the recommended data, audit again, and show before and after."
    ),
    cache_dir: Optional[Path] = CacheDir,
    quiet: bool = Quiet,
) -> None:
    """Draw synthetic faces (or load the bundled digits), train a small CNN on the CPU, audit it, write the report."""
    import time

    worker = _pdf_worker()
    from xai_audit.audit import run_audit
    from xai_audit.demo.plan import demo_plan, digits_plan, write_demo_plan
    from xai_audit.demo.train import train_demo_model
    from xai_audit.plan import load_plan

    start = time.perf_counter()
    if data not in ("faces", "digits"):
        raise XaiAuditError(f"--data must be 'faces' or 'digits', not {data!r}")
    if not 0 <= seed <= 2**63 - 1:  # the plan's seed range (numpy and torch both take it): refused before training
        raise XaiAuditError(f"--seed must be a whole number from 0 to 2**63 - 1 ({2**63 - 1}), not {seed}")
    _check_out(out)
    registry = _registry()
    cache = _cache(cache_dir, False)
    trained = train_demo_model(registry, cache, data=data, seed=seed, shortcuts=shortcuts, log=typer.echo)
    typer.echo(
        "demo model: reused from the cache" if trained.cached else f"demo model trained in {trained.seconds:.0f} s"
    )
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.yaml"
    plan_data = (digits_plan(trained.weights, seed=seed) if data == "digits"
                 else demo_plan(trained.weights, seed=seed, shortcuts=shortcuts))
    write_demo_plan(plan_path, plan_data)
    validated = load_plan(plan_path, registry)
    outcome = run_audit(validated, registry, cache=cache, progress=not quiet and sys.stderr.isatty())
    if verify:
        _verify(outcome, trained, registry, cache, out, plan_data, seed=seed, quiet=quiet, data=data)
    written = _write(outcome, registry, out, validated.report.formats, None, checks=False, last=True,
                     pdf_worker=worker)
    acc = outcome.results.get("accuracy")
    if acc:
        what = "held-out digits" if data == "digits" else "clean synthetic faces"
        typer.echo(f"test accuracy on {what}: {100 * acc['value']:.1f} %")
    _summarise({**outcome.results, "accuracy": None}, written)
    _cache_warnings(cache)
    typer.echo(f"done in {time.perf_counter() - start:.0f} s. Open {written.get('html', out)} in a browser.")
    if _incomplete(outcome.results):  # the demo must run cleanly: a step of it that did not run is not hidden
        raise typer.Exit(1)


def _verify(outcome, trained, registry, cache, out: Path, plan_data: dict, *, seed: int, quiet: bool, data: str) -> None:
    """Fine-tune on the first audit's recommendations, audit again into out/after, add the comparison."""
    from xai_audit.audit import run_audit
    from xai_audit.demo.plan import write_demo_plan
    from xai_audit.demo.verify import fine_tune, verification_summary
    from xai_audit.plan import load_plan

    if data != "faces":
        raise XaiAuditError("--verify needs the synthetic faces demo (--data faces)")
    tuned = fine_tune(registry, cache, trained, outcome.results.get("recommendations") or [], seed=seed, log=typer.echo)
    typer.echo("fine-tuned model: reused from the cache" if tuned.cached else f"fine-tuned in {tuned.seconds:.0f} s")
    after_dir = out / "after"
    after_dir.mkdir(parents=True, exist_ok=True)
    plan_after = {**plan_data, "model": {**plan_data["model"], "weights": str(tuned.weights.resolve())},
                  "report": {**plan_data["report"], "title": plan_data["report"]["title"] + " (after fine-tuning)"}}
    if plan_data.get("system"):
        system = plan_data["system"]
        plan_after["system"] = {**system, "model_version": f"{system.get('model_version')}, fine-tuned on the audit's "
                                                           "recommended data"}
    write_demo_plan(after_dir / "plan.yaml", plan_after)
    validated = load_plan(after_dir / "plan.yaml", registry)
    after = run_audit(validated, registry, cache=cache, progress=not quiet and sys.stderr.isatty())
    _write(after, registry, after_dir, validated.report.formats, None, checks=False)
    outcome.results["verification"] = verification_summary(outcome.results, after.results, tuned, "after/report.html")
    outcome.results["run"]["fine_tune"] = {"seconds": round(tuned.seconds, 3), "cached": tuned.cached}
    for row in outcome.results["verification"]["comparisons"]:
        change = "" if row.get("shrunk_by") is None else f" ({100 * row['shrunk_by']:.0f} % smaller)"
        b, a = row["before"].get("effect"), row["after"].get("effect")
        typer.echo(
            f"verify: {row['title']} {'n/a' if b is None else f'{100 * b:.1f}'} -> "
            f"{'n/a' if a is None else f'{100 * a:.1f}'} pp{change}"
        )


def run() -> None:
    """The ``xai-audit`` command: :data:`app`, then an exit that skips tearing the interpreter down.

    Once a command has returned, every file it wrote is whole and closed (reports are written atomically);
    what is left is unloading torch, WeasyPrint and matplotlib and collecting the audit's garbage, 0.6-0.8 s
    of a cached demo re-run for nothing (and the report's PDF leaves its garbage to this exit: ``_state["exits"]``,
    write_report's ``then_exit``). So the exit handlers run (Ray's shutdown, multiprocessing's,
    logging's flush, temporary folders' removal), stdout and stderr are flushed, and the process ends with
    the command's status. An exception that escapes a command ends the process as Python would (traceback,
    teardown). Tests call :data:`app` itself."""
    import atexit
    import os

    _state["exits"] = True
    try:
        app()
        status: object = 0
    except SystemExit as exc:
        status = exc.code
    if status is not None and not isinstance(status, int):  # sys.exit("message"): printed, status 1
        print(status, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers Python itself would run at exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(status or 0)


if __name__ == "__main__":  # pragma: no cover
    run()

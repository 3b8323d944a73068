"""What the audit could not establish, and why, read from its own results (issue 19).

Every entry is ``{kind, subject, text, source}``: ``source`` is the dotted path in ``results.json`` the
entry rests on, so a reviewer can check it. The kinds, in the order the report lists them:

``not run``          a planned step failed or did not run (its error), or discovery had too few images
``skipped samples``  images the data set could not read, left out (``on_bad_sample: skip``)
``no labels``        the data have no labels: accuracy and per-group accuracy cannot be measured
``not applicable``   a hypothesis whose change cannot reach the model, or whose labels or regions the data lack
``inconclusive``     a test that could not be run on these data (e.g. fewer than two groups large enough)
``estimate``         a group analysis resting on an estimate from the images (the ITA skin-tone estimate)
``too small``        groups too small for the test to judge them
``cannot tell``      groups not shown equivalent: the data cannot tell whether they are equally accurate
``explainer trust``  an explainer whose maps failed their sanity check or do no better than a random order
``not confirmed``    a discovery candidate the held-back images did not confirm

``completeness`` says how many of the plan's steps did not run: what ``xai-audit run`` exits 1 on (with
``on_step_failure: fail``) and what turns the report's verdict into "INCOMPLETE".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the kinds of limitation, in the order the report lists them
KINDS = ("not run", "skipped samples", "no labels", "not applicable", "inconclusive", "estimate", "too small",
         "cannot tell", "explainer trust", "not confirmed")
#: failures that are not a step of the plan: a third-party plugin the plan does not use failed to import
NOT_A_STEP = ("load plugins",)


def completeness(results: Mapping[str, Any], on_step_failure: str) -> dict[str, Any]:
    """``{on_step_failure, planned, not_run: [{step, reason, source}]}``: the plan's steps that failed or did
    not run. ``planned`` counts the steps the plan lists (explainers, discoverers, hypotheses)."""
    plan = results.get("plan") or {}
    planned = sum(len(plan.get(key) or []) for key in ("explainers", "discoverers", "hypotheses"))
    not_run = [
        {"step": str(f.get("step", "")), "reason": str(f.get("error", "")), "source": f"failures[{i}]"}
        for i, f in enumerate(results.get("failures") or []) if f.get("step") not in NOT_A_STEP
    ]
    discovery = results.get("discovery") or {}
    if plan.get("discoverers") and str(discovery.get("note", "")).startswith("not run"):
        for entry in plan["discoverers"]:
            name = next(iter(entry)) if isinstance(entry, Mapping) and entry else str(entry)
            not_run.append({"step": f"discoverer {name}", "reason": discovery["note"], "source": "discovery.note"})
    return {"on_step_failure": on_step_failure, "planned": planned, "not_run": not_run}


def derive_limitations(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Everything the audit could not establish, each with the path in results.json it rests on."""
    out: list[dict[str, str]] = []
    for row in (results.get("completeness") or {}).get("not_run") or []:
        out.append(_entry("not run", row["step"], f"{row['step']} did not run: {row['reason']}. Nothing it would "
                          "have measured is in this report.", row["source"]))
    skipped = results.get("skipped_samples") or []
    if skipped:
        out.append(_entry("skipped samples", "data set", f"{len(skipped)} image(s) could not be read and were left "
                          "out of every step (on_bad_sample: skip).", "skipped_samples"))
    if not (results.get("samples") or {}).get("labelled", True):
        out.append(_entry("no labels", "data set", "The audited data have no labels: how often the model is right, "
                          "overall or per group, and whether any change makes it wrong cannot be measured. Every test "
                          "compares the model with its own predictions on the clean images.", "samples.labelled"))
    hypotheses = results.get("hypotheses") or {}
    for name, entry in hypotheses.items():
        if entry.get("status") == "ok" and not entry.get("discovered"):
            out += _hypothesis_limits(name, entry)
    for name, entry in (results.get("explainers") or {}).items():
        verdict = ((entry.get("trust") or {}).get("verdict") or {}) if entry.get("status") == "ok" else {}
        if verdict.get("level") in ("not trusted", "weak"):
            out.append(_entry("explainer trust", f"explainer {name}",
                              f"The maps of {name} are rated {verdict['level']}: "
                              f"{_sentence(verdict.get('text'))} What they seem to show is not established.",
                              f"explainers.{name}.trust.verdict"))
    out += _unconfirmed(results.get("discovery") or {}, hypotheses)
    out.sort(key=lambda e: KINDS.index(e["kind"]))  # stable: within a kind, the results' order
    return out


def _hypothesis_limits(name: str, entry: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    source = f"hypotheses.{name}"
    details = entry.get("details") or {}
    tests = [("", entry, details)] + [(f" / {t.get('name')}", t, t.get("details") or {})
                                      for t in entry.get("tests") or [] if isinstance(t, Mapping)]
    for key, test, d in tests:
        verdict = test.get("verdict")
        where = f"{name}{key}"
        if verdict == "not applicable":
            why = d.get("reason") or test.get("test") or "the data or the model do not allow it"
            out.append(_entry("not applicable", where, f"{where} could not be tested: {_sentence(why)}", source))
        elif verdict == "inconclusive":
            why = str(test.get("test") or "").removeprefix("not tested: ") or "the data do not allow the test"
            out.append(_entry("inconclusive", where, f"{where} was not tested: {_sentence(why)}", source))
        equivalence = d.get("equivalence")
        if isinstance(equivalence, Mapping) and not equivalence.get("equivalent") and verdict != "supported":
            out.append(_entry("cannot tell", where, str(equivalence.get("reading", "")),
                              f"{source}.details.equivalence" if not key else f"{source}.tests"))
    for column in details.get("estimated_columns") or []:
        out.append(_entry("estimate", f"{name} / {column}", f"The groups '{column}' are an estimate from image "
                          "colour (the individual typology angle of skin pixels), not a person's skin type; lighting "
                          "and white balance shift it. Per-group results by it are results for the estimate.",
                          f"{source}.details.estimated_columns"))
    for column, rows in (entry.get("breakdown") or {}).items():
        small = [r for r in rows if isinstance(r, Mapping) and r.get("too small")] if isinstance(rows, list) else []
        if small:
            groups = ", ".join(f"{r.get('group')} (n = {r.get('n')})" for r in small)
            least = details.get("min_group_size")
            out.append(_entry("too small", f"{name} / {column}", f"Too small for the test to judge: {groups}"
                              + (f", below {least} images" if least else "") + ". Nothing is said about "
                              f"{'this group' if len(small) == 1 else 'these groups'}.",
                              f"{source}.breakdown.{column}"))
    return out


def _unconfirmed(discovery: Mapping[str, Any], hypotheses: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for i, row in enumerate(discovery.get("candidates") or []):
        tested = hypotheses.get(row.get("tested_as") or "") or {}
        if tested.get("status") != "ok" or tested.get("verdict") == "supported":
            continue  # a failed confirmation is listed as a step that did not run
        subject = f"discoverer {row.get('discoverer')} / {row.get('name')}"
        what = "slice" if row.get("confirmation") == "slice" else "cue"
        out.append(_entry("not confirmed", subject, f"Candidate {what} proposed on the discovery images, not "
                          f"confirmed on the held-back images ({tested.get('verdict')}): "
                          f"{_sentence(row.get('description') or row.get('cue') or row.get('name'))}",
                          f"discovery.candidates[{i}]"))
    return out


def _entry(kind: str, subject: str, text: str, source: str) -> dict[str, str]:
    return {"kind": kind, "subject": subject, "text": text, "source": source}


def _sentence(text: Any) -> str:
    text = str(text or "").strip()
    return text if text.endswith((".", "!", "?")) else text + "."

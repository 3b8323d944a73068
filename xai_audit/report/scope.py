"""Template data for the report's first pages: the system audited, as the plan states it.

The ``system`` of ``results.json`` is the plan's ``system:`` section word for word; a field the plan leaves
out is shown as "not stated", never filled in from anything else. Like the rest of the report layer,
nothing here is HTML: the templates escape every string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: what the report shows for a field the plan leaves out
NOT_STATED = "not stated"

#: the system's fields in the order the first page shows them: (key, label)
SYSTEM_FIELDS: tuple[tuple[str, str], ...] = (
    ("intended_purpose", "Intended purpose"),
    ("intended_users", "Intended users"),
    ("deployment_context", "Deployment context"),
    ("out_of_scope_uses", "Out-of-scope uses"),
    ("provider", "Provider"),
    ("model_version", "Model version"),
    ("responsible_persons", "Responsible persons"),
    ("known_limitations", "Known limitations (declared by the provider)"),
)


def system(results: Mapping[str, Any]) -> dict[str, Any]:
    """Each field of the plan's ``system:`` as ``{label, text, entries, stated}``: ``text`` for a sentence,
    ``entries`` for a list; a field left out (or the whole section) reads "not stated"."""
    stated = results.get("system")
    stated = stated if isinstance(stated, Mapping) else {}
    rows = []
    for key, label in SYSTEM_FIELDS:
        value = stated.get(key)
        items: list[str] = []
        text = ""
        if key == "responsible_persons" and isinstance(value, list):
            items = [_person(p) for p in value if isinstance(p, Mapping)]
        elif isinstance(value, list):
            items = [str(v) for v in value]
        elif value is not None:
            text = str(value)
        given = bool(text or items) or (isinstance(value, list) and value == [])
        if isinstance(value, list) and not value:
            text = "none"  # stated as an empty list: the provider says there are none
        rows.append({"key": key, "label": label, "text": text if given else NOT_STATED, "entries": items,
                     "stated": given})
    n_stated = sum(r["stated"] for r in rows)
    persons = stated.get("responsible_persons")
    signers = [
        {"name": str(p.get("name") or ""), "role": str(p.get("role") or "")}
        for p in (persons if isinstance(persons, list) else []) if isinstance(p, Mapping) and p.get("name")
    ]
    return {
        "rows": rows,
        # the sign-off block: one line per responsible person the plan names, or blank lines to fill in
        "signers": signers or [{"name": "", "role": ""}, {"name": "", "role": ""}],
        "stated": bool(results.get("system")),
        "note": (
            "As the plan's system: section states it; the audit carries these words, it does not check them."
            if n_stated else
            "The plan has no system: section, so nothing is stated about what the model is for or who answers "
            "for it. Add one to the plan (see the README) before this report is reviewed."
        ),
    }


def _person(person: Mapping[str, Any]) -> str:
    name, role = str(person.get("name") or ""), person.get("role")
    return f"{name} ({role})" if role else f"{name} (role {NOT_STATED})"


# -- what the audit could not establish ------------------------------------------------------------------------

#: how the first page names each kind of limitation
LIMITATION_LABELS = {
    "not run": "Did not run",
    "skipped samples": "Images left out",
    "no labels": "No labels",
    "not applicable": "Not applicable",
    "inconclusive": "Not tested",
    "estimate": "Estimated groups",
    "too small": "Groups too small",
    "cannot tell": "Cannot tell",
    "explainer trust": "Explainer in doubt",
    "not confirmed": "Not confirmed",
}


def limitations(results: Mapping[str, Any]) -> dict[str, Any]:
    """results.json's ``limitations`` for the "What this audit could not establish" block, and the equivalence
    results it can state (a "no difference between groups" is only ever said as one of those)."""
    entries = [
        {"kind": str(e.get("kind", "")), "label": LIMITATION_LABELS.get(str(e.get("kind")), str(e.get("kind", ""))),
         "subject": str(e.get("subject", "")), "text": str(e.get("text", "")), "source": str(e.get("source", ""))}
        for e in results.get("limitations") or [] if isinstance(e, Mapping)
    ]
    return {
        "entries": entries,
        "empty_text": ("Nothing: every planned step ran, every hypothesis could be tested on these data, and every "
                       "explainer passed its checks." if "limitations" in results else
                       "Not recorded: this results.json predates the list (schema 2.1)."),
        "equivalence": equivalence_lines(results),
    }


def equivalence_lines(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every group equivalence test of the audit as a sentence: "equivalent within ±5 points (TOST p = …, power …)"
    or "the data cannot tell (… power …)", with its source."""
    out = []
    for name, entry in (results.get("hypotheses") or {}).items():
        if not isinstance(entry, Mapping) or entry.get("status") != "ok":
            continue
        tests = [("", entry)] + [(f".tests[{i}]", t) for i, t in enumerate(entry.get("tests") or [])
                                 if isinstance(t, Mapping)]
        for where, test in tests:
            eq = (test.get("details") or {}).get("equivalence")
            if test.get("verdict") == "supported":
                continue  # the groups differ, and the finding says so
            if isinstance(eq, Mapping) and eq.get("reading"):
                out.append({"text": str(eq["reading"]), "equivalent": bool(eq.get("equivalent")),
                            "source": f"hypotheses.{name}{where}.details.equivalence"})
    return out


def incomplete(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """The banner over the verdict when a planned step did not run (None when every one ran)."""
    done = results.get("completeness")
    if not isinstance(done, Mapping):  # a results.json from before 2.1: its failures are the steps that did not run
        done = {"not_run": [f for f in results.get("failures") or [] if isinstance(f, Mapping)
                            and f.get("step") != "load plugins"]}
    not_run = [r for r in done.get("not_run") or [] if isinstance(r, Mapping)]
    if not not_run:
        return None
    n = len(not_run)
    gate = ("`xai-audit run` exits with status 1 (on_step_failure: fail)" if done.get("on_step_failure") != "warn"
            else "the plan says on_step_failure: warn, so `xai-audit run` exits 0")
    return {
        "label": f"INCOMPLETE: {n} planned step{'' if n == 1 else 's'} did not run",
        "steps": [str(r.get("step", "")) for r in not_run],
        "text": f"Nothing below covers {'it' if n == 1 else 'them'}; {gate}.",
    }

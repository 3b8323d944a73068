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
    return {
        "rows": rows,
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


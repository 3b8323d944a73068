"""The audit plan: YAML in, a validated :class:`Plan` out.

Every problem is reported at once, each with the file, the line and the
field, and the nearest valid name for a typo.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from xai_audit.errors import PlanError
from xai_audit.plan.checks import parse_plan_checks
from xai_audit.plan.schema import RAY_MISSING, Plan, PlanSchema, Step, ray_installed
from xai_audit.registry import Registry, suggest


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records the line of every mapping key and sequence item."""


def _compose_lines(text: str) -> dict[tuple, int]:
    """Map each path (tuple of keys / indices) to its 1-based line in ``text``."""
    lines: dict[tuple, int] = {}
    root = yaml.compose(text, Loader=_LineLoader)

    def walk(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


class _Problems:
    def __init__(self, filename: str, lines: dict[tuple, int]):
        self.filename = filename
        self.lines = lines
        self.items: list[str] = []

    def add(self, path: tuple, message: str) -> None:
        line = None
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                line = self.lines[path[:cut]]
                break
        where = f"{self.filename}:{line}" if line else self.filename
        field_name = _format_path(path)
        self.items.append(f"{where}: {field_name}: {message}" if field_name else f"{where}: {message}")


def _format_path(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# --------------------------------------------------------------------------- loading


def load_plan(path: str | Path, registry: Registry) -> Plan:
    """Read, parse and validate a plan file. Raises :class:`PlanError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError([f"{path}: plan file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([f"{path}: cannot read plan: {exc}"]) from None
    return parse_plan(text, registry, filename=str(path), base_dir=path.resolve().parent)


def parse_plan(text: str, registry: Registry, *, filename: str = "<plan>", base_dir: Path | None = None) -> Plan:
    try:
        data = yaml.safe_load(text)
        lines = _compose_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError([f"{where}: not valid YAML: {problem}"]) from None
    problems = _Problems(filename, lines)
    if not isinstance(data, dict):
        problems.add((), "a plan must be a YAML mapping with at least 'model' and 'dataset'")
        raise PlanError(problems.items)

    schema: PlanSchema | None = None
    try:
        schema = PlanSchema.model_validate(data)
    except ValidationError as exc:
        _add_pydantic_errors(problems, (), exc, PlanSchema)

    # the plugin sections are checked even when the top level has problems, so every problem shows at once
    model = dataset = None
    models: list[tuple[str, Step]] = []
    if ("model" in data) == ("models" in data):
        problems.add((), "give either 'model' (one model) or 'models' (a list, compared side by side)")
    if isinstance(data.get("model"), dict):
        model = _plugin_step(problems, registry, "model-adapter", ("model",), data["model"], key="adapter")
        if model is not None:
            models = [(model.name, model)]
    elif isinstance(data.get("models"), list):
        models = _model_list(problems, registry, data["models"])
        model = models[0][1] if models else None
    sample = None
    on_bad_sample = "fail"
    if isinstance(data.get("dataset"), dict):
        dataset_options = dict(data["dataset"])
        sample = dataset_options.pop("sample", None)
        on_bad_sample = dataset_options.pop("on_bad_sample", "fail")
        if on_bad_sample not in ("fail", "skip"):
            problems.add(("dataset", "on_bad_sample"), f"must be 'fail' or 'skip', got {on_bad_sample!r}")
        if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 1):
            problems.add(("dataset", "sample"), f"must be a positive whole number, got {sample!r}")
            sample = None
        dataset = _plugin_step(problems, registry, "dataset", ("dataset",), dataset_options, key="loader")
    regions = None
    if isinstance(data.get("regions"), dict):
        regions = _plugin_step(problems, registry, "region-source", ("regions",), data["regions"], key="source")
    checks = parse_plan_checks(data.get("checks"), problems.add)
    if schema is not None and schema.runtime.executor == "ray":
        if not ray_installed():
            problems.add(("runtime", "executor"), RAY_MISSING)
    lists = {}
    for section, kind in (("explainers", "explainer"), ("hypotheses", "hypothesis")):
        entries = data.get(section) or []
        lists[section] = _plugin_list(problems, registry, kind, section, entries) if isinstance(entries, list) else []
    for model_name, step in models if len(models) > 1 else [("", model)] if model is not None else []:
        if step.plugin.cls.provides_gradients:
            continue
        need = [s.name for s in lists["explainers"] if getattr(s.plugin.cls, "needs_gradients", True)]
        for i, entry in enumerate(data.get("explainers") or []):
            name = entry if isinstance(entry, str) else next(iter(entry), None) if isinstance(entry, dict) else None
            if name in need:
                problems.add(
                    ("explainers", i),
                    f'"{name}" needs gradients, and the {step.name} adapter'
                    + (f' (model "{model_name}")' if model_name else "")
                    + " runs the model as a black box "
                    f"(methods here that need gradients: {', '.join(need)}); use a perturbation method such as occlusion or lime",
                )
    if problems.items or schema is None or model is None or dataset is None:
        raise PlanError(problems.items or [f"{filename}: invalid plan"])
    explainers, hypotheses = lists["explainers"], lists["hypotheses"]
    return Plan(
        path=Path(filename) if filename != "<plan>" else None,
        base_dir=base_dir or Path.cwd(),
        seed=schema.seed,
        model=model,
        dataset=dataset,
        sample=sample,
        on_bad_sample=on_bad_sample,
        regions=regions,
        explainers=explainers,
        hypotheses=hypotheses,
        explain=schema.explain,
        report=schema.report,
        runtime=schema.runtime,
        raw=data,
        models=models,
        checks=checks,
    )


def _plugin_step(
    problems: _Problems, registry: Registry, kind: str, path: tuple, options: Any, *, key: str
) -> Step | None:
    if not isinstance(options, dict):
        problems.add(path, "must be a mapping")
        return None
    options = dict(options)
    name = options.pop(key, None)
    if not isinstance(name, str):
        problems.add(path, f"missing '{key}': the {kind} plugin to use{suggest('', registry.names(kind))}")
        return None
    return _validate_step(problems, registry, kind, path, name, options, name_path=path + (key,))


def _model_list(problems: _Problems, registry: Registry, entries: list) -> list[tuple[str, Step]]:
    models: list[tuple[str, Step]] = []
    names: set[str] = set()
    if not entries:
        problems.add(("models",), "lists no model")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.add(("models", i), "each model is a mapping with 'name', 'adapter' and the adapter's options")
            continue
        options = dict(entry)
        name = options.pop("name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
            problems.add(("models", i, "name"), "each model needs a 'name' of letters, digits, '.', '_' or '-' (it names its report folder)")
            continue
        if name in names:
            problems.add(("models", i, "name"), f'"{name}" is used twice')
            continue
        names.add(name)
        step = _plugin_step(problems, registry, "model-adapter", ("models", i), options, key="adapter")
        if step is not None:
            models.append((name, step))
    return models


def _plugin_list(problems: _Problems, registry: Registry, kind: str, section: str, entries: list) -> list[Step]:
    steps: list[Step] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        path = (section, i)
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            options = {} if options is None else options
        else:
            problems.add(path, f"each entry is a {kind} name, or one '{kind}-name: {{options}}' mapping")
            continue
        if not isinstance(options, dict):
            problems.add(path + (name,), "options must be a mapping")
            continue
        if name in seen:
            problems.add(path + (name,), f'"{name}" is listed twice')
            continue
        seen.add(name)
        options = dict(options)
        timeout = options.pop("timeout", None)  # reserved for every step: its time limit in seconds
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            problems.add(path + (name, "timeout"), f"must be a positive number of seconds, got {timeout!r}")
            continue
        step = _validate_step(problems, registry, kind, path + (name,), str(name), options, name_path=path)
        if step is not None:
            step.timeout = float(timeout) if timeout is not None else None
            steps.append(step)
    return steps


def _validate_step(
    problems: _Problems, registry: Registry, kind: str, path: tuple, name: str, options: dict, *, name_path: tuple
) -> Step | None:
    names = registry.names(kind)
    if name not in names:
        broken = registry.load_errors
        why = (f"; {len(broken)} plugin(s) failed to import and may be the one that provides it: " + " | ".join(broken)
               if broken else "")
        problems.add(name_path, f'unknown {kind} "{name}"{suggest(name, names)}{why}')
        return None
    info = registry.get(kind, name)
    try:
        validated = info.cls.Options.model_validate(options)
    except ValidationError as exc:
        _add_pydantic_errors(problems, path, exc, info.cls.Options)
        return None
    return Step(kind=kind, name=name, plugin=info, options=validated)


def _add_pydantic_errors(problems: _Problems, base: tuple, exc: ValidationError, model: type[BaseModel]) -> None:
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = list(parent.model_fields) if parent is not None else []
            message = f"unknown option{suggest(str(loc[-1]), valid)}"
        elif error["type"] == "missing":
            message = "required option is missing"
        elif "input" in error and error["type"] not in ("missing",):
            message = f"{message} (got {error['input']!r})"
        problems.add(base + loc, message)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field_info = getattr(current, "model_fields", {}).get(part)
        if field_info is None:
            return None
        current = field_info.annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None

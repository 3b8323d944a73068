"""The audit plan: YAML in, a validated :class:`Plan` out.

Every problem is reported at once, each with the file, the line and the
field, and the nearest valid name for a typo.
"""

from __future__ import annotations

import re
import reprlib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer

from xai_audit.errors import PlanError
from xai_audit.plan.checks import parse_plan_checks
from xai_audit.plan.schema import RAY_MISSING, Plan, PlanSchema, Step, ray_installed
from xai_audit.registry import Registry, suggest

#: a plan file larger than this (bytes) is refused before it is parsed; a plan is a few kB, and even a report
#: title or class names of a megabyte each leave room
MAX_PLAN_BYTES = 4 * 2**20
#: values (scalars, lists, mappings) in the plan once every YAML alias is written out in full
MAX_PLAN_VALUES = 100_000
#: characters of the plan's strings once every alias is written out: twice the largest file
MAX_PLAN_CHARS = 2 * MAX_PLAN_BYTES
#: lists and mappings nested in one another (the composer and the checks recurse)
MAX_PLAN_DEPTH = 64

# The C parser (libyaml) makes the events when PyYAML has it, four times faster on a long plan; the composer
# is always PyYAML's Python one, so every node passes through _PlanLoader.compose_node and is counted.
_Base: type = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class _Refused(Exception):
    """The plan is too large, too deep or expands too far; ``mark`` is where (or None)."""

    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.mark = mark
        self.message = message


class _PlanLoader(_Base):  # type: ignore[misc, valid-type]
    """A safe loader that bounds what the plan expands to.

    Aliases are allowed (``classes: &classes [...]`` shared by the models of ``models:`` is a fair use), but
    the plan they expand to is counted as it is composed: more than :data:`MAX_PLAN_VALUES` values or
    :data:`MAX_PLAN_CHARS` characters of strings (a "billion laughs"), an alias inside its own anchor, or
    nesting deeper than :data:`MAX_PLAN_DEPTH` is refused at the alias or node that crosses the line,
    before anything is built from it.
    """

    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    compose_scalar_node = Composer.compose_scalar_node
    compose_sequence_node = Composer.compose_sequence_node
    compose_mapping_node = Composer.compose_mapping_node

    def __init__(self, stream: str):
        super().__init__(stream)
        self.anchors: dict[str, yaml.Node] = {}
        self._values = 0  # values composed so far, every alias counted as what it stands for
        self._chars = 0
        self._aliases = 0
        self._depth = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, characters) of a finished node

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = Composer.compose_node(self, parent, index)  # an undefined alias is a ComposerError
            size = self._sizes.get(id(node))
            if size is None:  # its anchor is still open: the alias is inside what it names
                raise _Refused(event.start_mark, f"the alias *{event.anchor} is inside its own anchor &{event.anchor}"
                                                 " (a plan that contains itself)")
            self._aliases += 1
            self._count(*size, event.start_mark)
            return node
        self._depth += 1
        if self._depth > MAX_PLAN_DEPTH:
            raise _Refused(event.start_mark, f"lists and mappings nested more than {MAX_PLAN_DEPTH} deep")
        values, chars = self._values, self._chars
        node = Composer.compose_node(self, parent, index)
        self._depth -= 1
        self._count(1, len(node.value) if isinstance(node, yaml.ScalarNode) else 0, event.start_mark)
        self._sizes[id(node)] = (self._values - values, self._chars - chars)
        return node

    def _count(self, values: int, chars: int, mark: Any) -> None:
        self._values += values
        self._chars += chars
        how = " through YAML aliases (*name)" if self._aliases else ""
        if self._values > MAX_PLAN_VALUES:
            raise _Refused(mark, f"the plan expands to more than {MAX_PLAN_VALUES:,} values{how}; "
                                 "write out what the aliases stand for, or use fewer")
        if self._chars > MAX_PLAN_CHARS:
            raise _Refused(mark, f"the plan's strings expand to more than {MAX_PLAN_CHARS:,} characters{how}")


def _read_yaml(text: str, filename: str) -> tuple[Any, dict[tuple, int], list[tuple[tuple, str, int]]]:
    """The plan's data, the line of each path in it, and the keys given twice (path, message, line).

    Raises :class:`PlanError` for a plan too large, YAML that is not valid, or that expands too far.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PLAN_BYTES:
        raise PlanError([f"{filename}: the plan is {size:,} bytes; a plan may be at most {MAX_PLAN_BYTES:,} bytes"])
    loader = _PlanLoader(text)
    try:
        root = loader.get_single_node()
        lines, twice = _node_lines(root)  # before constructing: that merges '<<' keys into the nodes
        data = loader.construct_document(root) if root is not None else None
    except _Refused as exc:
        where = f"{filename}:{exc.mark.line + 1}" if exc.mark is not None else filename
        raise PlanError([f"{where}: {exc.message}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError([f"{where}: not valid YAML: {_one_line(str(problem), 200)}"]) from None
    finally:
        loader.dispose()
    return data, lines, twice


def _node_lines(root: yaml.Node | None) -> tuple[dict[tuple, int], list[tuple[tuple, str, int]]]:
    """Map each path (tuple of keys / indices) to its 1-based line; and list each key given twice."""
    lines: dict[tuple, int] = {}
    twice: list[tuple[tuple, str, int]] = []
    reported: set[int] = set()

    def walk(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):  # a list as a key: constructing it says so
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key_node.tag != "tag:yaml.org,2002:merge":
                    ident = (key_node.tag, key)
                    if ident in first and id(key_node) not in reported:  # an aliased mapping is walked again
                        reported.add(id(key_node))
                        message = f"given twice (first on line {first[ident]}); YAML would keep only the last, so remove one"
                        twice.append((path + (key,), message, line))
                    first.setdefault(ident, line)
                lines[path + (key,)] = line
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines, twice


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def _one_line(text: str, limit: int = 60) -> str:
    """``text`` on one line (control characters escaped), cut to ``limit`` characters with an ellipsis."""
    text = str(text)
    shown = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text[:limit])
    return shown + "…" if len(text) > limit else shown


def _short_repr(value: Any) -> str:
    """A bounded repr: a megabyte string or a list that aliases expanded stays a short message."""
    return _one_line(_SHORT.repr(value), 120)


class _Problems:
    def __init__(self, filename: str, lines: dict[tuple, int], base_dir: Path | None = None):
        self.filename = filename
        self.lines = lines
        #: the plan's folder, handed to every plugin's options validator as ``info.context["base_dir"]``
        self.base_dir = base_dir or Path.cwd()
        self.items: list[str] = []

    def add(self, path: tuple, message: str, line: int | None = None) -> None:
        for cut in range(len(path), -1, -1):
            if line is not None:
                break
            line = self.lines.get(path[:cut])
        where = f"{self.filename}:{line}" if line else self.filename
        field_name = _format_path(path)
        message = _one_line(message, 1000)  # one line each, however long the names in it
        self.items.append(f"{where}: {field_name}: {message}" if field_name else f"{where}: {message}")


def _format_path(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _one_line(str(part), 60)
    return out


# --------------------------------------------------------------------------- loading


def load_plan(path: str | Path, registry: Registry) -> Plan:
    """Read, parse and validate a plan file. Raises :class:`PlanError`."""
    path = Path(path)
    try:
        with path.open("rb") as stream:  # read no more than the limit: the "file" may be /dev/zero or a pipe
            raw = stream.read(MAX_PLAN_BYTES + 1)
        if len(raw) > MAX_PLAN_BYTES:
            raise PlanError([f"{path}: the plan is larger than {MAX_PLAN_BYTES:,} bytes, the most a plan may be"])
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise PlanError([f"{path}: plan file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError([f"{path}: cannot read plan: {exc}"]) from None
    return parse_plan(text, registry, filename=str(path), base_dir=path.resolve().parent)


def parse_plan(text: str, registry: Registry, *, filename: str = "<plan>", base_dir: Path | None = None) -> Plan:
    data, lines, twice = _read_yaml(text, filename)
    problems = _Problems(filename, lines, base_dir)
    for path, message, line in twice:
        problems.add(path, message, line)
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
            problems.add(("dataset", "on_bad_sample"), f"must be 'fail' or 'skip', got {_short_repr(on_bad_sample)}")
        if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 1):
            problems.add(("dataset", "sample"), f"must be a positive whole number, got {_short_repr(sample)}")
            sample = None
        dataset = _plugin_step(problems, registry, "dataset", ("dataset",), dataset_options, key="loader")
    regions = None
    if isinstance(data.get("regions"), dict):
        regions = _plugin_step(problems, registry, "region-source", ("regions",), data["regions"], key="source")
    checks = parse_plan_checks(data.get("checks"), problems.add)
    if schema is not None and schema.runtime.executor == "ray" and not ray_installed():
        problems.add(("runtime", "executor"), RAY_MISSING)
    lists = {}
    for section, kind in (("explainers", "explainer"), ("hypotheses", "hypothesis"), ("discoverers", "discoverer")):
        entries = data.get(section) or []
        lists[section] = _plugin_list(problems, registry, kind, section, entries) if isinstance(entries, list) else []
    for model_name, step in models if len(models) > 1 else [("", model)] if model is not None else []:
        if step.plugin.cls.provides_gradients:
            continue
        need = list(dict.fromkeys(s.plugin.name for s in lists["explainers"]
                                  if getattr(s.plugin.cls, "needs_gradients", True)))
        for i, entry in enumerate(data.get("explainers") or []):
            name = entry_plugin(entry)
            if name in need:
                problems.add(
                    ("explainers", i),
                    f'"{name}" needs gradients, and the {step.name} adapter'
                    + (f' (model "{model_name}")' if model_name else "")
                    + " runs the model as a black box "
                    f"(methods here that need gradients: {', '.join(need)}); use a perturbation method such as occlusion or lime",
                )
    _refuse_layer_hooks(problems, data, lists["explainers"], models if len(models) > 1 else
                        [("", model)] if model is not None else [])
    _check_reference_models(problems, data, lists["hypotheses"], [name for name, _ in models] if len(models) > 1 else [])
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
        discoverers=lists["discoverers"],
        discover=schema.discover,
        system=schema.system,
        on_step_failure=schema.on_step_failure,
    )


def _refuse_layer_hooks(problems: _Problems, data: dict, explainers: list[Step], models: list[tuple[str, Step]]) -> None:
    """Explainers that read a layer, refused by name for a model whose layers cannot be hooked (with the reason).

    An explainer already refused for gradients (a black box) is not named twice."""
    for model_name, step in models:
        why = getattr(step.plugin.cls, "no_hooks_reason", None)
        reason = why(step.options) if callable(why) else None
        if reason is None:
            continue
        black_box = not step.plugin.cls.provides_gradients
        need = list(dict.fromkeys(s.plugin.name for s in explainers if getattr(s.plugin.cls, "needs_layer_hooks", False)
                                  and not (black_box and getattr(s.plugin.cls, "needs_gradients", True))))
        for i, entry in enumerate(data.get("explainers") or []):
            name = entry_plugin(entry)
            if name in need:
                problems.add(
                    ("explainers", i),
                    f'"{name}" reads a layer of the model through forward hooks, and the {step.name} adapter'
                    + (f' (model "{model_name}")' if model_name else "")
                    + f" cannot give it one: {reason} (methods here that need layer hooks: {', '.join(need)}); "
                    "occlusion, lime, integrated-gradients and saliency need no hooks",
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


def _check_reference_models(problems: _Problems, data: dict, hypotheses: list[Step], names: list[str]) -> None:
    """A step's ``reference_model`` (the model a comparison divides the others' errors by) names a model of the
    plan's ``models:``."""
    entries = data.get("hypotheses") or []
    for step in hypotheses:
        wanted = getattr(step.options, "reference_model", None)
        if wanted is None or wanted in names:
            continue
        index = next((i for i, e in enumerate(entries) if entry_plugin(e) == step.plugin.name), 0)
        problems.add(("hypotheses", index, "reference_model"),
                     f'names "{wanted}", which is not a model of this plan'
                     + (f" ({', '.join(names)})" if names else ": it compares several models of 'models:'"))


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


#: an ``as:`` name: it names the step in results.json, the report, the cache and the checks
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/-]{0,199}")


def _entry_parts(entry: Any) -> tuple[Any, Any] | None:
    """(plugin name, options) of one list entry: ``name``, ``name: {options}``, or the flat mapping
    ``{name: plugin, as: ..., option: ...}``; None when the entry is none of these."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and _is_flat(entry):
        options = dict(entry)
        return options.pop("name"), options
    if isinstance(entry, dict) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        return name, {} if options is None else options
    return None


def _is_flat(entry: dict) -> bool:
    """``{name: <plugin>, as: ..., <option>: ...}``: the plugin under a 'name' key, its options beside it."""
    return isinstance(entry.get("name"), str)


def entry_plugin(entry: Any) -> Any:
    """The plugin name a plan list entry uses (None when the entry is malformed)."""
    parts = _entry_parts(entry)
    return parts[0] if parts else None


def _plugin_list(problems: _Problems, registry: Registry, kind: str, section: str, entries: list) -> list[Step]:
    """The steps of one plan list. A plugin may be listed several times, each under its own name:
    ``as: <name>``, or ``layers: [a, b]`` (an explainer with a ``layer`` option), one step per layer
    named ``<as or plugin>@<layer>``; a name given twice is an error that names both entries."""
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        path = (section, i)
        parts = _entry_parts(entry)
        if parts is None:
            problems.add(path, f"each entry is a {kind} name, one '{kind}-name: {{options}}' mapping, "
                               f"or a mapping with 'name: <{kind}>' and its options")
            continue
        name, options = parts
        if not isinstance(name, str):
            problems.add(path, f"the {kind} name must be a string, got {_short_repr(name)}")
            continue
        flat = isinstance(entry, dict) and _is_flat(entry)
        opath = path if flat else path + (name,)  # where the options live
        if not isinstance(options, dict):
            problems.add(opath, "options must be a mapping")
            continue
        options = dict(options)
        timeout = options.pop("timeout", None)  # reserved for every step: its time limit in seconds
        alias = options.pop("as", None)  # reserved: the step's own name, for a plugin listed several times
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            problems.add(opath + ("timeout",), f"must be a positive number of seconds, got {_short_repr(timeout)}")
            continue
        if alias is not None and (not isinstance(alias, str) or not _INSTANCE_NAME.fullmatch(alias)):
            problems.add(opath + ("as",), "must be a name of letters, digits and '.', '_', '@', ':', '/' or '-' "
                                          f"(at most 200, starting with a letter or digit), got {_short_repr(alias)}")
            continue
        named = [(alias or name, options, opath + ("as",) if alias else path)]
        layers = options.get("layers")
        if layers is not None and name in registry.names(kind):
            fields = registry.get(kind, name).cls.Options.model_fields
            if "layer" in fields and "layers" not in fields:  # a plugin with its own 'layers' keeps it
                if (not isinstance(layers, list) or not layers
                        or not all(isinstance(x, str) and _INSTANCE_NAME.fullmatch(f"{alias or name}@{x}") for x in layers)):
                    problems.add(opath + ("layers",), f"must be a list of layer names, got {_short_repr(layers)}")
                    continue
                if "layer" in options:
                    problems.add(opath + ("layers",), "give 'layer' (one step) or 'layers' (one step per layer), not both")
                    continue
                base = {k: v for k, v in options.items() if k != "layers"}
                named = [(f"{alias or name}@{layer}", base | {"layer": layer}, opath + ("layers", k))
                         for k, layer in enumerate(layers)]
        for step_name, step_options, where in named:
            if step_name in seen:
                hint = ("" if alias or len(named) > 1 else
                        f"; to list {kind} \"{name}\" again, give the second its own name with 'as:' "
                        "(or list its layers under 'layers:')")
                problems.add(where, f'"{step_name}" is listed twice (first as {section}[{seen[step_name]}]){hint}')
                continue
            seen[step_name] = i
            step = _validate_step(problems, registry, kind, opath, name, dict(step_options),
                                  name_path=path + ("name",) if flat else path)
            if step is None:
                break  # the entry's problem is the same for each of its layers: said once
            step.name = step_name
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
        problems.add(name_path, f'unknown {kind} "{_one_line(name)}"{suggest(name, names)}{why}')
        return None
    info = registry.get(kind, name)
    try:
        validated = info.cls.Options.model_validate(options, context={"base_dir": problems.base_dir})
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
        elif "input" in error and error["type"] != "bool_is_not_a_number":  # that one says what it got
            message = f"{message} (got {_short_repr(error['input'])})"
        problems.add(base + loc, message)


def _section_model(annotation: Any) -> Any:
    """The model inside an optional section or a list of them (``SystemSpec | None``, ``list[Person] | None``)."""
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _section_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field_info = getattr(current, "model_fields", {}).get(part)
        if field_info is None:
            return None
        current = _section_model(field_info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None

"""The shape of the code: the host's folders follow the path of one audit, and plugins use the public API only.

Imports point back along the path (a stage reads only what earlier stages
define), the host has no import circles, and a built-in plugin imports from
``xai_audit.api`` and its own package, exactly as a third-party plugin must.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "xai_audit"

#: the floors of the host, in the order of one audit; a module may import from its own floor or below
FLOORS = [
    ("xai_audit", "xai_audit.errors", "xai_audit.files", "xai_audit.limits", "xai_audit.contract"),
    ("xai_audit.registry",),
    ("xai_audit.plan",),
    ("xai_audit.load",),
    ("xai_audit.run",),
    ("xai_audit.judge",),
    ("xai_audit.report",),
    ("xai_audit.verify",),
    ("xai_audit.audit", "xai_audit.api", "xai_audit.testing", "xai_audit.demo", "xai_audit.cli"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", "") == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(path: Path) -> set[str]:
    """Every xai_audit module ``path`` imports at run time, at module level or inside a function."""
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # ``from pkg import submodule`` imports the submodule, not the package's names
                sub = f"{node.module}.{a.name}"
                out.add(sub if (HOST.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
    return {m for m in out if m == "xai_audit" or m.startswith("xai_audit.")}


HOST_MODULES = {_module_name(p): p for p in HOST.rglob("*.py")}


def _floor(module: str) -> int:
    best, floor = -1, None
    for k, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), k
    assert floor is not None, f"{module} is on no floor of the host: add it to FLOORS"
    return floor


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in HOST_MODULES and m != name} for name, path in HOST_MODULES.items()}


@pytest.mark.parametrize("module", sorted(HOST_MODULES))
def test_imports_point_back_along_the_path_of_an_audit(module):
    here = _floor(module)
    ahead = sorted(m for m in _graph()[module] if _floor(m) > here)
    assert not ahead, f"{module} (floor {here}) imports from a later stage: {ahead}"


def test_the_host_has_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_top_level_folders_name_the_stages():
    folders = sorted(p.name for p in HOST.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    for stage in ("contract", "plan", "load", "run", "judge", "report", "verify"):
        assert stage in folders


PLUGIN_FILES = sorted((ROOT / "plugins").rglob("*.py"))


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_built_in_plugins_import_only_the_public_api(path):
    own = path.relative_to(ROOT / "plugins").parts[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "xai_audit":
                assert name == "xai_audit.api", f"{path.name} imports {name}: plugins import from xai_audit.api only"
            elif top.startswith("xai_audit_"):
                assert top == own, f"{path.name} imports another plugin package ({name})"

"""The plugin guide and the tests keep the hook contract honest."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from xai_audit.contract import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and name.startswith("register_")]


def _signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    return f"{name}{sig}".replace("'", "")


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    guide = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### `{_signature(hook)}`" in guide


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
    sources = "".join(p.read_text() for p in (ROOT / "plugins").rglob("*.py"))
    sources += "".join(p.read_text() for p in (ROOT / "docs" / "examples").glob("*/*/*.py"))
    assert f"def {hook}(" in sources or f"{hook} =" in tests, f"no plugin implements {hook}"
    assert hook in tests, f"no test mentions {hook}"


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme

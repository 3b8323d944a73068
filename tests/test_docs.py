"""The plugin guide and the tests keep the hook contract honest."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import xai_audit.api
from xai_audit.contract import hookspecs

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
EXAMPLES = ROOT / "docs" / "examples"
HOOKS = [name for name, fn in vars(hookspecs).items() if inspect.isfunction(fn) and name.startswith("register_")]
#: a code block the guide says comes from a file: a line "File: `path`", a blank line, then the fenced block
QUOTED = re.compile(r"^File: `([^`]+)`\n\n```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    return f"{name}{sig}".replace("'", "")


def _example_sources() -> list[Path]:
    return sorted(
        p for p in EXAMPLES.rglob("*.py")
        if not {"build", "__pycache__"} & set(p.parts) and not any(part.endswith(".egg-info") for part in p.parts)
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    guide = GUIDE.read_text()
    assert f"### `{_signature(hook)}`" in guide


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_docs.py")
    sources = "".join(p.read_text() for p in (ROOT / "plugins").rglob("*.py"))
    sources += "".join(p.read_text() for p in _example_sources())
    assert f"def {hook}(" in sources or f"{hook} =" in tests, f"no plugin implements {hook}"
    assert hook in tests, f"no test mentions {hook}"


@pytest.mark.parametrize("name", xai_audit.api.__all__)
def test_every_public_name_is_documented(name):
    assert f"`{name}`" in GUIDE.read_text(), f"docs/plugins.md does not document xai_audit.api.{name}"


def test_every_code_block_quoted_from_a_file_is_that_file():
    guide = GUIDE.read_text()
    quoted = QUOTED.findall(guide)
    assert quoted, "docs/plugins.md quotes no file"
    for path, block in quoted:
        assert (ROOT / path).is_file(), f"docs/plugins.md quotes {path}, which does not exist"
        assert block == (ROOT / path).read_text(), f"the block under File: `{path}` in docs/plugins.md differs from it"
    # an announced file whose block did not parse would escape the check above
    assert len(quoted) == guide.count("\nFile: `")


def test_the_guide_quotes_every_example_source():
    quoted = {path for path, _ in QUOTED.findall(GUIDE.read_text())}
    for path in _example_sources():
        assert path.relative_to(ROOT).as_posix() in quoted, f"docs/plugins.md does not quote {path}"


def test_readme_quick_start_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme

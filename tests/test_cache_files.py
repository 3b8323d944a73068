"""A step whose options name a file: the file's bytes, not its path, decide whether a cached result holds."""

from __future__ import annotations

from types import SimpleNamespace

from xai_audit.run.steps import named_files, step_key


class _Plugin:
    pass


def _step(options: dict) -> SimpleNamespace:
    plugin = SimpleNamespace(package="p", version="1", cls=_Plugin)
    return SimpleNamespace(name="topology", plugin=plugin, options_dict=lambda: options)


def test_overwriting_a_named_weight_file_changes_the_step_key(tmp_path):
    weights = tmp_path / "seed-1" / "epoch-3.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"first training run")
    step = _step({"checkpoints": [str(weights)], "nested": {"other": "not a path"}})
    before = step_key("explainer", step, {"model": "m"})
    assert step_key("explainer", step, {"model": "m"}) == before  # same bytes, same key
    weights.write_bytes(b"retrained to the same path")
    assert step_key("explainer", step, {"model": "m"}) != before


def test_only_existing_absolute_files_are_hashed(tmp_path):
    real = tmp_path / "mask.png"
    real.write_bytes(b"x")
    found = named_files({"a": str(real), "b": "relative/name.png", "c": str(tmp_path / "missing"), "d": [1, None]})
    assert list(found) == [str(real)]
    assert step_key("explainer", _step({"b": "relative"}), {}) == step_key("explainer", _step({"b": "relative"}), {})

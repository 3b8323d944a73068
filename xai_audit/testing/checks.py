"""The conformance checks, kind by kind, and the three ways to run them.

Every check is a callable that takes no argument, returns None when the plugin
conforms, raises ``AssertionError`` naming the plugin, the check and what is
wrong when it does not, and raises ``unittest.SkipTest`` (a skip under pytest)
when it does not apply (e.g. the ViT checks without ``transformers``). The checks
of one plugin share its expensive results (the first explanation, the loaded
data set, ...), computed once, when the first check that needs them runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import random
import unittest
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_audit.api import (
    Dataset,
    DatasetPlugin,
    ExplainerPlugin,
    Explanation,
    HypothesisContext,
    HypothesisPlugin,
    HypothesisResult,
    LoadContext,
    ModelAdapter,
    ModelAdapterPlugin,
    ModelPasses,
    Options,
    RegionSource,
    RegionSourcePlugin,
    Sample,
    XaiAuditError,
    check_figure,
)
from xai_audit.testing.models import CLASSES, TinyDataset, black_box, tiny_cnn, tiny_samples, tiny_vit

#: the models an explainer is checked on, by name
MODELS = ("cnn", "vit")
#: the seed every explainer and hypothesis run gets
SEED = 5
#: verdicts a hypothesis may return, and the kinds of claim it may name (results.schema.json)
VERDICTS = ("supported", "not supported", "inconclusive")
CLAIM_KINDS = ("", "fragility", "reliance", "shortcut", "bias", "shift")
#: a data set check reads every sample of a data set this small, and this many spread samples of a larger one
MAX_SCANNED = 256

#: the exception a check raises when it does not apply; pytest reports it as a skip
SkipCheck = unittest.SkipTest

_BASES: dict[str, type] = {
    "explainer": ExplainerPlugin,
    "hypothesis": HypothesisPlugin,
    "dataset": DatasetPlugin,
    "model-adapter": ModelAdapterPlugin,
    "region-source": RegionSourcePlugin,
}
try:  # a newer kind: only the checks every kind shares, so far
    from xai_audit.api import DiscovererPlugin

    _BASES["discoverer"] = DiscovererPlugin
except ImportError:  # pragma: no cover - an older host
    pass
_EXPLAIN_SAMPLES = 3
_EXPLAIN_TARGETS = np.array([1, 4, 6], dtype=np.int64)
_EXPLAIN_SIZE = 32
_HYPOTHESIS_SAMPLES = 28
_HYPOTHESIS_SIZE = 24
_NO_SUCH_OPTION = "xai_audit_conformance_no_such_option"


class Check:
    """One conformance check of one plugin: call it with no argument.

    ``name`` is the check's name (e.g. ``check_batch_independent@cnn``), ``plugin``
    the plugin class, ``options`` its options. A failure is an AssertionError whose
    message starts with the plugin and the check.
    """

    def __init__(self, subject: _Subject, name: str, fn: Callable[[], None]):
        self._subject = subject
        self.name = name
        self.plugin = subject.cls
        self.options = dict(subject.options)
        self._fn = fn
        self.__name__ = name

    def __call__(self) -> None:
        try:
            self._fn()
        except SkipCheck:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{self._subject.label} failed {self.name}: {exc}") from None
        except Exception as exc:  # a crash inside the plugin is a failure of the check, named as such
            raise AssertionError(f"{self._subject.label} failed {self.name}: {_raised(exc)}") from exc

    def __repr__(self) -> str:
        return f"<{self.name} of {self._subject.label}>"


def checks_for(
    cls: type,
    options: Mapping[str, Any] | None = None,
    *,
    models: Sequence[str] = MODELS,
    base_dir: str | Path | None = None,
    image_size: int = _EXPLAIN_SIZE,
) -> Iterator[tuple[str, Check]]:
    """``(check_name, check)`` for every check of ``cls``'s kind (``cls.kind``).

    ``options`` are plan-style options, validated through ``cls.Options(**options)``.
    ``models`` are the tiny models an explainer is checked on (``"cnn"``, ``"vit"``).
    ``base_dir`` is where a data set, model adapter or region source resolves relative
    paths in its options (default: the current directory). ``image_size`` is the display
    size a model adapter or region source is checked at.
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    subject = _Subject(cls, options, tuple(models), base_dir, image_size)
    for name, fn in _CHECKERS.get(getattr(cls, "kind", ""), _Common)(subject).checks():
        yield name, Check(subject, name, fn)


def check_plugin(
    cls: type,
    options: Mapping[str, Any] | None = None,
    *,
    models: Sequence[str] = MODELS,
    base_dir: str | Path | None = None,
    image_size: int = _EXPLAIN_SIZE,
) -> None:
    """Run every check of ``cls``'s kind; raise one AssertionError naming the plugin and each failed check.

    A check that does not apply (e.g. the ViT checks without ``transformers``) is
    skipped with a warning. The arguments are those of :func:`checks_for`.
    """
    failures: list[str] = []
    first: BaseException | None = None
    total = 0
    for name, check in checks_for(cls, options, models=models, base_dir=base_dir, image_size=image_size):
        total += 1
        try:
            check()
        except SkipCheck as exc:
            warnings.warn(f"{_label(cls)}: {name} skipped: {exc}", stacklevel=2)
        except AssertionError as exc:
            failures.append(f"  {name}: {str(exc).split(' failed ' + name + ': ', 1)[-1]}")
            first = first or exc
    if failures:
        raise AssertionError(
            f"{_label(cls)} failed {len(failures)} of {total} conformance checks:\n" + "\n".join(failures)
        ) from first


def parametrize_with_checks(
    plugins: Iterable[type | tuple[type, Mapping[str, Any] | None]],
    *,
    models: Sequence[str] = MODELS,
    base_dir: str | Path | None = None,
    image_size: int = _EXPLAIN_SIZE,
    expected_failures: Mapping[str, str] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize`` over every (plugin, check): one test each, with ids like
    ``saliency-check_batch_independent@cnn``. Each entry is a plugin class or ``(class, options)``.

    ``expected_failures`` maps such an id to the reason it fails: that test is marked
    ``xfail(strict=True)``, so it fails again once the plugin is fixed. An id that names
    no test is an error. The other arguments are those of :func:`checks_for`. ::

        @parametrize_with_checks([MyExplainer, (MyHypothesis, {"factor": 0.5})])
        def test_conformance(check):
            check()
    """
    import pytest

    expected = dict(expected_failures or {})
    entries = [p if isinstance(p, tuple) else (p, None) for p in plugins]
    seen: dict[str, int] = {}
    params = []
    for cls, options in entries:
        base = getattr(cls, "name", "") or cls.__name__
        seen[base] = seen.get(base, 0) + 1
        prefix = base if seen[base] == 1 else f"{base}#{seen[base]}"
        for name, check in checks_for(cls, options, models=models, base_dir=base_dir, image_size=image_size):
            test_id = f"{prefix}-{name}"
            reason = expected.pop(test_id, None)
            marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)] if reason else []
            params.append(pytest.param(check, id=test_id, marks=marks))
    if expected:
        raise ValueError(f"expected_failures names no test: {', '.join(sorted(expected))}")
    return pytest.mark.parametrize("check", params)


# --------------------------------------------------------------------------- shared state of one plugin


class _Subject:
    """One plugin class with its options, and the results its checks share."""

    def __init__(self, cls: type, options: Mapping[str, Any] | None, models: tuple[str, ...],
                 base_dir: str | Path | None, image_size: int):
        self.cls = cls
        self.options = dict(options or {})
        self.models = models
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.image_size = int(image_size)
        self.label = _label(cls)
        self._memo: dict[Any, tuple[bool, Any]] = {}

    def validated(self) -> Options:
        try:
            return self.cls.Options(**self.options)
        except Exception as exc:
            raise AssertionError(f"the options {self.options!r} do not validate: {_first_line(exc)}") from None

    def plugin(self) -> Any:
        """A fresh instance, built as the host builds it: ``cls(cls.Options(**options))``."""
        options = self.validated()
        with _in_plugin():
            return self.cls(options)

    def load(self, which: int = 0) -> Any:
        """``load()`` of a fresh instance (a data set, model adapter or region source), once per ``which``."""

        def compute() -> Any:
            plugin = self.plugin()
            with _in_plugin():
                return plugin.load(LoadContext(self.base_dir, seed=0))

        return self.memo(("loaded", which), compute)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key; a failure is remembered and raised again for every check that needs it."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except BaseException as exc:
                self._memo[key] = (False, exc)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value


def _label(cls: type) -> str:
    kind = getattr(cls, "kind", "") or "plugin"
    name = getattr(cls, "name", "") or "?"
    return f"{kind} {name!r} ({cls.__module__}.{cls.__qualname__})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class _PluginAssertion(Exception):
    """An AssertionError raised by the plugin's own code (not a failed check), carried as a crash."""

    def __init__(self, original: AssertionError):
        super().__init__(str(original))
        self.original = original


@contextlib.contextmanager
def _in_plugin() -> Iterator[None]:
    """Around a call into the plugin: its own failed ``assert`` is a crash, not a failed check."""
    try:
        yield
    except AssertionError as exc:
        raise _PluginAssertion(exc) from exc


def _raised(exc: BaseException) -> str:
    exc = exc.original if isinstance(exc, _PluginAssertion) else exc
    first = _first_line(exc)
    return f"raised {type(exc).__name__}" + (f": {first}" if first else "")


@contextlib.contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global random state set to ``seed``, restored afterwards.

    Two runs that should agree get different global states: a plugin must draw from
    the seed it is given, not from whatever the global state happens to be.
    """
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def _scale(a: np.ndarray) -> float:
    m = float(np.abs(a).max()) if np.size(a) else 0.0
    return m if m > 0 and math.isfinite(m) else 1.0


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) if np.size(a) else 0.0


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two results differ (floats to 1e-6 relative, NaN equal to NaN), or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return f"{where or 'the result'} has keys {sorted(map(str, a))} once and {sorted(map(str, b))} once"
        for key in a:
            found = _first_difference(a[key], b[key], f"{where}[{key!r}]" if where else str(key))
            if found:
                return found
        return None
    if isinstance(a, (np.ndarray, torch.Tensor)) or isinstance(b, (np.ndarray, torch.Tensor)):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return f"{where}: shape {x.shape} once and {y.shape} once"
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            same = np.allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True)
        else:
            same = np.array_equal(x, y)
        return None if same else f"{where}: the arrays differ"
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: {len(a)} items once and {len(b)} once"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if _is_number(a) and _is_number(b):
        x, y = float(a), float(b)
        if (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12):
            return None
        return f"{where}: {a!r} once and {b!r} once"
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and not isinstance(a, type):
        return _first_difference(dataclasses.asdict(a), dataclasses.asdict(b), where)
    return None if a == b else f"{where}: {a!r} once and {b!r} once"


# --------------------------------------------------------------------------- every kind


class _Common:
    """Checks every plugin kind must pass: its identity and its options."""

    def __init__(self, subject: _Subject):
        self.s = subject

    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("check_kind", self.check_kind),
            ("check_name_and_description", self.check_name_and_description),
            ("check_options_class", self.check_options_class),
            ("check_options_round_trip", self.check_options_round_trip),
            ("check_unknown_option_refused", self.check_unknown_option_refused),
        ]

    def check_kind(self) -> None:
        cls = self.s.cls
        kind = getattr(cls, "kind", "")
        if kind not in _BASES:
            raise AssertionError(f"kind is {kind!r}; a plugin's kind is one of {', '.join(_BASES)}")
        if not (isinstance(cls, type) and issubclass(cls, _BASES[kind])):
            raise AssertionError(f"a {kind} plugin must subclass xai_audit.api.{_BASES[kind].__name__}")

    def check_name_and_description(self) -> None:
        for attr in ("name", "description"):
            value = getattr(self.s.cls, attr, None)
            if not (isinstance(value, str) and value.strip()):
                raise AssertionError(f"{attr} must be a non-empty string, got {value!r}")
        name = self.s.cls.name
        if not (name == name.strip() and not any(c.isspace() for c in name)):
            raise AssertionError(f"name {name!r} holds white space; plans name plugins by it")

    def check_options_class(self) -> None:
        options_cls = getattr(self.s.cls, "Options", None)
        if not (isinstance(options_cls, type) and issubclass(options_cls, Options)):
            raise AssertionError(f"Options is {options_cls!r}, not a subclass of xai_audit.api.Options")

    def check_options_round_trip(self) -> None:
        opts = self.s.validated()
        for mode in ("python", "json"):
            dumped = opts.model_dump(mode=mode)
            try:
                again = self.s.cls.Options.model_validate(dumped)
            except Exception as exc:
                raise AssertionError(
                    f"model_dump(mode={mode!r}) of the options does not validate again: {_first_line(exc)} "
                    f"(the host records options this way and re-reads them)") from None
            if again != opts:
                raise AssertionError(
                    f"model_dump(mode={mode!r}) validates to {again!r}, not to the options it came from ({opts!r})")

    def check_unknown_option_refused(self) -> None:
        self.s.validated()
        try:
            self.s.cls.Options(**{**self.s.options, _NO_SUCH_OPTION: 1})
        except (ValueError, TypeError):
            return
        raise AssertionError(
            f"Options accepted an unknown option {_NO_SUCH_OPTION!r}: a misspelt option in a plan would be "
            "ignored silently (keep xai_audit.api.Options' extra='forbid')")


# --------------------------------------------------------------------------- explainers


class _ExplainerChecks(_Common):
    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        out = super().checks()
        for m in self.s.models:
            out += [
                (f"check_explanation@{m}", lambda m=m: self.check_explanation(m)),
                (f"check_deterministic@{m}", lambda m=m: self.check_deterministic(m)),
                (f"check_explain_maps@{m}", lambda m=m: self.check_explain_maps(m)),
                (f"check_batch_independent@{m}", lambda m=m: self.check_batch_independent(m)),
                (f"check_figures@{m}", lambda m=m: self.check_figures(m)),
                (f"check_model_passes@{m}", lambda m=m: self.check_model_passes(m)),
            ]
        out.append(("check_black_box", self.check_black_box))
        return out

    @property
    def joint(self) -> bool:
        return bool(getattr(self.s.cls, "wants_all_samples", False))

    def samples(self) -> list[Sample]:
        return self.s.memo("samples", lambda: tiny_samples(_EXPLAIN_SAMPLES, _EXPLAIN_SIZE))

    def model(self, name: str) -> ModelAdapter:
        def build() -> ModelAdapter:
            if name == "vit":
                try:
                    return tiny_vit()
                except ImportError as exc:
                    raise SkipCheck(f"the ViT checks need transformers, which does not import here ({exc})") from None
            return tiny_cnn()

        return self.s.memo(("model", name), build)

    def instance(self, name: str) -> Any:
        return self.s.memo(("instance", name), self.s.plugin)

    def explain(self, plugin: Any, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray,
                rng: int) -> Explanation:
        with _global_rng(rng), _in_plugin():
            return plugin.explain(model, list(samples), targets.copy(), SEED)

    def first(self, name: str) -> Explanation:
        """The explanation every other check compares with: the tiny samples on model ``name``."""
        model = self.model(name)
        if getattr(self.s.cls, "needs_gradients", True) and model.module is None:  # pragma: no cover - tiny models
            raise SkipCheck("needs gradients")
        exp = self.s.memo(("first", name), lambda: self.explain(
            self.instance(name), model, self.samples(), _EXPLAIN_TARGETS, rng=1))
        return exp

    def validate(self, exp: Any, samples: Sequence[Sample], targets: np.ndarray) -> None:
        if not isinstance(exp, Explanation):
            raise AssertionError(f"explain() returned {type(exp).__name__}, not an Explanation")
        ids = [s.id for s in samples]
        height, width = samples[0].image.shape[1:]
        if not isinstance(exp.maps, np.ndarray):
            raise AssertionError(f"maps is a {type(exp.maps).__name__}, not a numpy array")
        got_ids = list(exp.sample_ids)
        if exp.maps.shape != (len(got_ids), height, width):
            raise AssertionError(
                f"maps have shape {exp.maps.shape}; expected (N, H, W) = ({len(got_ids)}, {height}, {width}): "
                "one map per sample id, in display space")
        if not np.all(np.isfinite(exp.maps)):
            raise AssertionError(f"{int((~np.isfinite(exp.maps)).sum())} map values are NaN or infinite")
        got_targets = np.asarray(exp.targets).reshape(-1)
        if len(got_targets) != len(got_ids):
            raise AssertionError(f"{len(got_targets)} targets for {len(got_ids)} sample ids")
        if not isinstance(exp.signed, (bool, np.bool_)):
            raise AssertionError(f"signed is {exp.signed!r}, not a bool")
        if self.joint:
            unknown = [i for i in got_ids if i not in ids]
            if unknown:
                raise AssertionError(f"sample_ids names {unknown[0]!r}, which it was not given")
            if len(set(got_ids)) != len(got_ids):
                raise AssertionError("sample_ids repeats an id")
        else:
            if got_ids != ids:
                raise AssertionError(f"sample_ids are {got_ids}; expected the samples' ids in order, {ids}")
            if not np.array_equal(got_targets, targets):
                raise AssertionError(
                    f"targets are {got_targets.tolist()}; expected the targets given, {targets.tolist()}")

    def check_explanation(self, name: str) -> None:
        self.validate(self.first(name), self.samples(), _EXPLAIN_TARGETS)

    def check_deterministic(self, name: str) -> None:
        first = self.first(name)
        again = self.explain(self.instance(name), self.model(name), self.samples(), _EXPLAIN_TARGETS, rng=2)
        if list(again.sample_ids) != list(first.sample_ids):
            raise AssertionError(f"two runs with seed {SEED} explain different samples: {list(first.sample_ids)} and "
            f"{list(again.sample_ids)}")
        if not _close(again.maps, first.maps, rtol=1e-5, atol=1e-6 * _scale(first.maps)):
            raise AssertionError(
                f"two runs with seed {SEED} gave different maps "
                f"(max |difference| {_max_diff(again.maps, first.maps):.3g}, "
                f"max |map| {_scale(first.maps):.3g}): draw random numbers from the seed given to explain() "
                "(np.random.default_rng(seed), torch.Generator().manual_seed(seed)), not from the global random state")

    def check_explain_maps(self, name: str) -> None:
        first = self.first(name)
        with _global_rng(3), _in_plugin():
            maps = self.instance(name).explain_maps(self.model(name), self.samples(), _EXPLAIN_TARGETS.copy(), SEED)
        maps = np.asarray(maps)
        diff = _max_diff(maps, first.maps) if maps.shape == first.maps.shape else float("nan")
        if not _close(maps, first.maps, rtol=1e-5, atol=1e-6 * _scale(first.maps)):
            raise AssertionError(
                f"explain_maps() returned maps of shape {maps.shape} that differ from explain()'s {first.maps.shape} "
                f"(max |difference| {diff:.3g}); "
                "the trust metrics re-run explain_maps() and compare it with explain()")

    def check_batch_independent(self, name: str) -> None:
        if self.joint:
            raise SkipCheck("wants_all_samples: it explains the audited set jointly, so a map may depend on the "
                            "other images by design")
        first = self.first(name)
        samples = self.samples()
        alone_plugin = self.s.plugin()
        for i, sample in enumerate(samples):
            alone = self.explain(alone_plugin, self.model(name), [sample], _EXPLAIN_TARGETS[i : i + 1], rng=10 + i)
            if np.asarray(alone.maps).shape != (1,) + first.maps.shape[1:]:
                raise AssertionError(f"sample {i} explained alone gave maps of shape {np.asarray(alone.maps).shape}")
            if not _close(alone.maps[0], first.maps[i], rtol=1e-4, atol=1e-5 * _scale(first.maps)):
                raise AssertionError(
                    f"sample {i} explained alone differs from its map in a batch of {len(samples)} (max |difference| "
                    f"{_max_diff(alone.maps[0], first.maps[i]):.3g}, max |map| {_scale(first.maps):.3g}): "
                    "a map must not depend on the other images of the batch (no normalising by the batch's maximum, "
                    "no statistics across the batch, no random draws shared by the batch)")

    def check_figures(self, name: str) -> None:
        _check_figures(self.first(name))

    def check_model_passes(self, name: str) -> None:
        """What ``model_passes`` states is at most what ``explain`` and ``explain_maps`` run (counted on one
        image, after the batch-size probe): the host sizes the trust step by it, so a method that states more
        than it spends gets a trust step that costs more than it does."""
        self.first(name)  # the model's batch sizes are probed there, not among the counted passes
        model, sample = self.model(name), self.samples()[:1]
        plugin = self.instance(name)
        for maps_only in (False, True):
            stated = plugin.model_passes(model, 1, tuple(sample[0].image.shape), maps_only=maps_only)
            if stated is None:
                raise SkipCheck("model_passes states nothing: the host gives its trust step the full size")
            if model.module is None:  # pragma: no cover - the tiny models are torch modules
                raise SkipCheck("the model is a black box: its passes cannot be counted")
            counts = [0, 0]

            def count(_module: Any, args: tuple, kwargs: dict, output: Any, counts: list[int] = counts) -> None:
                given = [x for x in (*args, *kwargs.values()) if isinstance(x, torch.Tensor)]  # a hub model: keywords
                n = int(given[0].shape[0]) if given else 0
                counts[0] += n
                out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "logits", output)
                if isinstance(out, torch.Tensor) and out.requires_grad:
                    out.register_hook(lambda grad: counts.__setitem__(1, counts[1] + n))

            handle = model.module.register_forward_hook(count, with_kwargs=True)
            try:
                with _global_rng(5), _in_plugin():
                    if maps_only:
                        plugin.explain_maps(model, sample, _EXPLAIN_TARGETS[:1].copy(), SEED)
                    else:
                        plugin.explain(model, sample, _EXPLAIN_TARGETS[:1].copy(), SEED)
            finally:
                handle.remove()
            forward, backward = counts[0] - counts[1], counts[1]
            if stated.forward > forward + backward or stated.weighed > ModelPasses(forward, backward).weighed:
                raise AssertionError(
                    f"model_passes(maps_only={maps_only}) states {stated.forward} forward and {stated.backward} "
                    f"forward + backward images for one image, but {'explain_maps' if maps_only else 'explain'}() "
                    f"ran {forward} forward and {backward} forward + backward: state at most what it runs, or None")

    def check_black_box(self) -> None:
        if getattr(self.s.cls, "needs_gradients", True):
            raise SkipCheck("needs_gradients: the host refuses it for a black-box model")
        if getattr(self.s.cls, "needs_layer_hooks", False):
            raise SkipCheck("needs_layer_hooks: the host refuses it for a model whose layers cannot be hooked")
        model = self.s.memo("black-box", lambda: black_box(tiny_cnn()))
        exp = self.explain(self.s.plugin(), model, self.samples(), _EXPLAIN_TARGETS, rng=4)
        try:
            self.validate(exp, self.samples(), _EXPLAIN_TARGETS)
        except AssertionError as exc:
            raise AssertionError(f"on a black-box model (module None): {exc}") from None


def _check_figures(step: Any) -> None:
    figures = getattr(step, "figures", [])
    if not isinstance(figures, list):
        raise AssertionError(f"figures is a {type(figures).__name__}, not a list")
    for k, spec in enumerate(figures):
        if not isinstance(spec, Mapping):
            raise AssertionError(f"figure {k} is a {type(spec).__name__}, not a dict")
        try:
            check_figure(spec, step.arrays)
        except ValueError as exc:
            raise AssertionError(f"figure {k} ({spec.get('kind')!r}, {spec.get('title', '')!r}): {exc}") from None


# --------------------------------------------------------------------------- hypotheses


class _HypothesisChecks(_Common):
    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        return super().checks() + [
            ("check_result", self.check_result),
            ("check_deterministic", self.check_deterministic),
            ("check_figures", self.check_figures),
            ("check_leaves_samples_unchanged", self.check_leaves_samples_unchanged),
            ("check_unlabelled", self.check_unlabelled),
        ]

    def context(self, labelled: bool = True) -> HypothesisContext:
        """A fresh context: the tiny CNN, drawn faces with regions and a skin_tone group, seed SEED."""
        model = self.s.memo("model", tiny_cnn)
        samples = tiny_samples(_HYPOTHESIS_SAMPLES, _HYPOTHESIS_SIZE, labelled=labelled)
        images = np.stack([s.image for s in samples])

        def load_dataset(options: dict[str, Any]) -> Dataset:  # any loader: the tiny faces of another seed
            return TinyDataset(tiny_samples(16, _HYPOTHESIS_SIZE, seed=1, prefix="other"), CLASSES)

        return HypothesisContext(model=model, samples=samples, probs=model.predict_proba(images),
                                 classes=list(model.classes), seed=SEED, predict=model.predict_proba,
                                 load_dataset=load_dataset)

    def run(self, context: HypothesisContext, rng: int) -> HypothesisResult:
        with _global_rng(rng):
            plugin = self.s.plugin()
            with _in_plugin():
                return plugin.test(context)

    def first(self) -> tuple[HypothesisResult, list[str]]:
        def compute() -> tuple[HypothesisResult, list[str]]:
            context = self.context()
            before = [(s.id, s.image.copy(), {k: np.array(v) for k, v in (s.regions or {}).items()})
                      for s in context.samples]
            result = self.run(context, rng=1)
            changed = [i for (i, image, regions), s in zip(before, context.samples)
                       if not np.array_equal(image, s.image)
                       or any(not np.array_equal(m, (s.regions or {}).get(k)) for k, m in regions.items())]
            return result, changed

        return self.s.memo("first", compute)

    def check_result(self) -> None:
        _validate_result(self.first()[0])

    def check_deterministic(self) -> None:
        first, _ = self.first()
        again = self.run(self.context(), rng=2)
        fields = [f.name for f in dataclasses.fields(HypothesisResult)]
        for name in fields:
            found = _first_difference(getattr(first, name), getattr(again, name), name)
            if found is not None:
                raise AssertionError(
                    f"two runs with seed {SEED} differ: {found}; draw random numbers from context.seed, "
                    "not from the global random state")

    def check_figures(self) -> None:
        _check_figures(self.first()[0])

    def check_leaves_samples_unchanged(self) -> None:
        _, changed = self.first()
        if changed:
            raise AssertionError(
                f"test() changed the images or region masks of {len(changed)} samples in place "
                f"(first: {changed[0]!r}); "
                "intervene on copies: the same samples go on to the next hypothesis")

    def check_unlabelled(self) -> None:
        context = self.context(labelled=False)
        try:
            result = self.run(context, rng=1)
        except XaiAuditError as exc:
            if not str(exc).strip():
                raise AssertionError(
                    f"without labels it raised {type(exc).__name__} with no message saying why") from exc
            return
        except Exception as exc:
            raise AssertionError(
                f"without labels it {_raised(exc)}; return a result (e.g. on the predictions alone) or raise an "
                "xai_audit.api.XaiAuditError subclass (DataError) saying why") from exc
        try:
            _validate_result(result)
        except AssertionError as exc:
            raise AssertionError(f"without labels: {exc}") from None


def _validate_result(result: Any) -> None:
    if not isinstance(result, HypothesisResult):
        raise AssertionError(f"test() returned {type(result).__name__}, not a HypothesisResult")
    if not (isinstance(result.claim, str) and result.claim.strip()):
        raise AssertionError(f"claim is {result.claim!r}, not a sentence")
    if not isinstance(result.metric, str):
        raise AssertionError(f"metric is {result.metric!r}, not a string")
    _validate_test({k: getattr(result, k) for k in ("verdict", "p_value", "ci", "n", "effect")}, "the result")
    if result.kind not in CLAIM_KINDS:
        raise AssertionError(f"kind is {result.kind!r}; one of {CLAIM_KINDS}")
    for name in ("before", "after"):
        value = getattr(result, name)
        if not (value is None or _is_number(value)):
            raise AssertionError(f"{name} is {value!r}, not a number or None")
    if not (isinstance(result.warnings, list) and all(isinstance(w, str) for w in result.warnings)):
        raise AssertionError("warnings must be a list of strings")
    if not isinstance(result.tests, list):
        raise AssertionError(f"tests is a {type(result.tests).__name__}, not a list")
    required = ("name", "kind", "claim", "effect", "ci", "p_value", "verdict", "n")
    for k, test in enumerate(result.tests):
        if not isinstance(test, Mapping):
            raise AssertionError(f"tests[{k}] is a {type(test).__name__}, not a dict")
        missing = [f for f in required if f not in test]
        if missing:
            raise AssertionError(
                f"tests[{k}] has no {', '.join(missing)} (each further test needs {', '.join(required)})")
        _validate_test(test, f"tests[{k}] ({test.get('name')!r})")


def _validate_test(test: Mapping[str, Any], where: str) -> None:
    verdict, p, ci, n, effect = (test.get(k) for k in ("verdict", "p_value", "ci", "n", "effect"))
    if verdict not in VERDICTS:
        raise AssertionError(f"{where}: verdict is {verdict!r}; one of {', '.join(map(repr, VERDICTS))}")
    if not (p is None or (_is_number(p) and 0.0 <= float(p) <= 1.0)):
        raise AssertionError(f"{where}: p_value is {p!r}, not None or in [0, 1]")
    if ci is not None:
        if not (isinstance(ci, (tuple, list)) and len(ci) == 2):
            raise AssertionError(f"{where}: ci is {ci!r}, not None or (low, high)")
        low, high = ci
        if not all(v is None or _is_number(v) for v in ci):
            raise AssertionError(f"{where}: ci is {ci!r}; its ends are numbers or None")
        if low is not None and high is not None and not float(low) <= float(high):
            raise AssertionError(f"{where}: ci is {ci!r}: low > high (or NaN)")
    if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0):
        raise AssertionError(f"{where}: n is {n!r}, not a count >= 0")
    if not (effect is None or _is_number(effect)):
        raise AssertionError(f"{where}: effect is {effect!r}, not a number or None")


# --------------------------------------------------------------------------- data sets


class _DatasetChecks(_Common):
    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        return super().checks() + [
            ("check_loads", self.check_loads),
            ("check_unique_ids", self.check_unique_ids),
            ("check_images", self.check_images),
            ("check_labels", self.check_labels),
            ("check_groups", self.check_groups),
            ("check_regions", self.check_regions),
            ("check_reload_identical", self.check_reload_identical),
        ]

    def load(self, which: int = 0) -> Dataset:
        return self.s.load(which)

    def scan(self) -> dict[str, Any]:
        """Read the samples once (all of a small data set, MAX_SCANNED spread ones of a larger one)."""

        def compute() -> dict[str, Any]:
            ds = self.load()
            n = len(ds)
            indices = range(n) if n <= MAX_SCANNED else sorted(set(np.linspace(0, n - 1, MAX_SCANNED).astype(int)))
            found: dict[str, Any] = {"ids": [], "digests": [], "images": [], "labels": [], "groups": [], "regions": []}
            for i in indices:
                with _in_plugin():
                    sample = ds[int(i)]
                if not isinstance(sample, Sample):
                    raise AssertionError(f"dataset[{i}] is a {type(sample).__name__}, not a Sample")
                found["ids"].append((int(i), sample.id))
                found["digests"].append(_digest(sample))
                _sample_problems(ds, int(i), sample, found)
            return found

        return self.s.memo("scan", compute)

    def problems(self, what: str) -> None:
        found = self.scan()[what]
        if found:
            raise AssertionError(f"{len(found)} problem(s) in the samples read; first: {found[0]}")

    def check_loads(self) -> None:
        ds = self.load()
        if not isinstance(ds, Dataset):
            raise AssertionError(f"load() returned {type(ds).__name__}, not an xai_audit.api.Dataset")
        if len(ds) == 0:
            raise AssertionError("the data set is empty")
        classes = ds.classes
        named = isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
        if not (classes is None or named):
            raise AssertionError(f"classes is {classes!r}; a non-empty list of names, or None when unlabelled")
        for attr in ("group_names", "region_names"):
            value = getattr(ds, attr)
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise AssertionError(f"{attr} is {value!r}")

    def check_unique_ids(self) -> None:
        where: dict[str, int] = {}
        for i, sample_id in self.scan()["ids"]:
            if not (isinstance(sample_id, str) and sample_id):
                raise AssertionError(f"sample {i} has id {sample_id!r}, not a non-empty string")
            if sample_id in where:
                raise AssertionError(f"samples {where[sample_id]} and {i} have the same id {sample_id!r}")
            where[sample_id] = i

    def check_images(self) -> None:
        self.problems("images")

    def check_labels(self) -> None:
        self.problems("labels")

    def check_groups(self) -> None:
        self.problems("groups")

    def check_regions(self) -> None:
        self.problems("regions")

    def check_reload_identical(self) -> None:
        ds, again = self.load(), self.load(1)
        with _in_plugin():
            fp, fp_again = ds.fingerprint(), again.fingerprint()
        if not (isinstance(fp, str) and fp):
            raise AssertionError(f"fingerprint() is {fp!r}, not a non-empty string")
        if fp_again != fp:
            raise AssertionError(
                "two loads with the same options give different fingerprints; the cache and the report's provenance "
                "rely on a stable one")
        if len(again) != len(ds):
            raise AssertionError(f"two loads give {len(ds)} and {len(again)} samples")
        for k, (i, sample_id) in enumerate(self.scan()["ids"][:8]):
            with _in_plugin():
                other = again[i]
            if not (other.id == sample_id and _digest(other) == self.scan()["digests"][k]):
                raise AssertionError(f"sample {i} ({sample_id!r}) differs between two loads with the same options")


def _digest(sample: Sample) -> str:
    h = hashlib.sha256(str(sample.id).encode())
    h.update(np.ascontiguousarray(np.asarray(sample.image)).tobytes())
    h.update(repr((sample.label, sorted(dict(sample.groups or {}).items()))).encode())
    return h.hexdigest()


def _sample_problems(ds: Dataset, i: int, s: Sample, found: dict[str, list[str]]) -> None:
    where = f"sample {i} ({s.id!r})"
    image = s.image
    if not isinstance(image, np.ndarray):
        found["images"].append(f"{where}: image is a {type(image).__name__}, not a numpy array")
        return
    if image.dtype != np.float32:
        found["images"].append(f"{where}: image is {image.dtype}, not float32")
    if image.ndim != 3 or image.shape[0] != 3 or 0 in image.shape:
        found["images"].append(f"{where}: image has shape {image.shape}, not (3, H, W)")
        return
    if not np.all(np.isfinite(image)):
        found["images"].append(f"{where}: image holds NaN or infinite values")
    elif image.min() < 0 or image.max() > 1:
        found["images"].append(f"{where}: image values span [{image.min():.3g}, {image.max():.3g}], not [0, 1]")
    label, classes = s.label, ds.classes
    if label is not None:
        if not isinstance(label, (int, np.integer)) or isinstance(label, (bool, np.bool_)):
            found["labels"].append(f"{where}: label {label!r} is not an int class index")
        elif classes is None:
            found["labels"].append(f"{where}: label {label!r}, but the data set names no classes")
        elif not 0 <= int(label) < len(classes):
            found["labels"].append(
                f"{where}: label {label!r} is outside 0..{len(classes) - 1} ({len(classes)} classes)")
    groups = dict(s.groups or {})
    if set(groups) != set(ds.group_names):
        found["groups"].append(f"{where}: groups has keys {sorted(groups)}, but group_names is {list(ds.group_names)}")
    height, width = image.shape[1:]
    for name, mask in (s.regions or {}).items():
        mask = np.asarray(mask) if not isinstance(mask, np.ndarray) else mask
        if mask.dtype != bool or mask.shape != (height, width):
            found["regions"].append(
                f"{where}: region {name!r} is {mask.dtype} {mask.shape}, not bool ({height}, {width})")
        elif name not in ds.region_names:
            found["regions"].append(f"{where}: region {name!r} is not in region_names {list(ds.region_names)}")


# --------------------------------------------------------------------------- model adapters


class _AdapterChecks(_Common):
    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        return super().checks() + [
            ("check_loads", self.check_loads),
            ("check_forward", self.check_forward),
            ("check_check", self.check_check),
            ("check_batch_independent", self.check_batch_independent),
            ("check_fingerprint_stable", self.check_fingerprint_stable),
            ("check_gradients", self.check_gradients),
            ("check_layers", self.check_layers),
        ]

    def load(self, which: int = 0) -> ModelAdapter:
        return self.s.load(which)

    def images(self, model: ModelAdapter) -> torch.Tensor:
        size = self.s.image_size
        generator = torch.Generator().manual_seed(0)
        return torch.rand(3, 3, size, size, generator=generator).to(model.device)

    def check_loads(self) -> None:
        model = self.load()
        if not isinstance(model, ModelAdapter):
            raise AssertionError(f"load() returned {type(model).__name__}, not a ModelAdapter")
        classes = model.classes
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise AssertionError(f"classes is {classes!r}, not a non-empty list of names")

    def logits(self, model: ModelAdapter, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _in_plugin():
            return model.forward(images)

    def check_forward(self) -> None:
        model = self.load()
        logits = self.logits(model, self.images(model))
        if not isinstance(logits, torch.Tensor):
            raise AssertionError(f"forward() returned {type(logits).__name__}, not a torch tensor")
        if tuple(logits.shape) != (3, len(model.classes)):
            raise AssertionError(
                f"forward() of 3 images returned shape {tuple(logits.shape)}; expected (3, {len(model.classes)}): "
                "one score per class")
        if not bool(torch.isfinite(logits).all()):
            raise AssertionError("forward() returned NaN or infinite scores")

    def check_check(self) -> None:
        size = self.s.image_size
        model = self.load()
        with _in_plugin():
            model.check(size, size)

    def check_batch_independent(self) -> None:
        model = self.load()
        images = self.images(model)
        batch = self.logits(model, images).detach().cpu().numpy()
        for i in range(len(images)):
            alone = self.logits(model, images[i : i + 1]).detach().cpu().numpy()
            if not _close(alone[0], batch[i], rtol=1e-4, atol=1e-5 * _scale(batch)):
                raise AssertionError(
                    f"image {i} alone gets other scores than in a batch of {len(images)} (max |difference| "
                    f"{_max_diff(alone[0], batch[i]):.3g}): is the module in eval mode?")

    def check_fingerprint_stable(self) -> None:
        model, again = self.load(), self.load(1)
        with _in_plugin():
            fps = model.fingerprint(), model.fingerprint(), again.fingerprint()
        fp = fps[0]
        if not (isinstance(fp, str) and fp):
            raise AssertionError(f"fingerprint() is {fp!r}, not a non-empty string")
        if fps[1] != fp:
            raise AssertionError("two calls of fingerprint() disagree")
        if fps[2] != fp:
            raise AssertionError("two loads with the same options give different fingerprints")

    def check_gradients(self) -> None:
        model = self.load()
        if model.module is None:
            if getattr(self.s.cls, "provides_gradients", True):
                raise AssertionError(
                    "the adapter's module is None (a black box), but the plugin declares provides_gradients=True: the "
                    "host would let gradient explainers through validation and they would fail at run time")
            raise SkipCheck("module is None: a black box has no gradients to check")
        images = self.images(model).clone().requires_grad_(True)
        with _in_plugin():
            logits = model.forward(images)
        logits[:, 0].sum().backward()
        grad = images.grad
        if grad is None:
            raise AssertionError("no gradient reaches the input images: forward() must stay differentiable")
        if not bool(torch.isfinite(grad).all()):
            raise AssertionError("the input gradient holds NaN or infinite values")
        if not bool((grad != 0).any()):
            raise AssertionError("the input gradient is zero everywhere")

    def check_layers(self) -> None:
        model = self.load()
        if model.module is None:
            raise SkipCheck("module is None: a black box has no layers")
        with _in_plugin():
            layers = model.layers()
        if not (isinstance(layers, dict) and layers):
            raise AssertionError("layers() is empty; Grad-CAM and the activation methods need them")
        if model.default_layer is None:
            return
        if model.default_layer not in layers:
            raise AssertionError(f"default_layer {model.default_layer!r} is not among layers()")
        why = getattr(self.s.cls, "no_hooks_reason", None)
        if callable(why) and why(self.s.validated()) is not None:
            return  # the host refuses the methods that hook a layer for this model
        seen: list[Any] = []
        handle = layers[model.default_layer].register_forward_hook(lambda *_: seen.append(True))
        try:
            self.logits(model, self.images(model))
        finally:
            handle.remove()
        if not seen:
            raise AssertionError(
                f"a forward hook on default_layer {model.default_layer!r} never fires during forward(); if the model's "
                "layers cannot be hooked (TorchScript, torch.export), say so in the plugin's no_hooks_reason()")


# --------------------------------------------------------------------------- region sources


class _RegionChecks(_Common):
    def checks(self) -> list[tuple[str, Callable[[], None]]]:
        return super().checks() + [
            ("check_loads", self.check_loads),
            ("check_masks", self.check_masks),
            ("check_deterministic", self.check_deterministic),
            ("check_fingerprint_stable", self.check_fingerprint_stable),
        ]

    def load(self, which: int = 0) -> RegionSource:
        return self.s.load(which)

    def images(self) -> np.ndarray:
        return np.stack([s.image for s in tiny_samples(2, self.s.image_size)])

    def ids(self) -> list[str]:
        """The sample ids of :meth:`images` (the host gives them to ``regions_for``)."""
        return [s.id for s in tiny_samples(2, self.s.image_size)]

    def masks(self) -> list[dict[str, np.ndarray]]:
        def compute() -> list[dict[str, np.ndarray]]:
            source = self.load()
            with _in_plugin():
                return source.regions_for(self.images(), self.ids())

        return self.s.memo("masks", compute)

    def check_loads(self) -> None:
        source = self.load()
        if not isinstance(source, RegionSource):
            raise AssertionError(f"load() returned {type(source).__name__}, not a RegionSource")

    def check_masks(self) -> None:
        images = self.images()
        masks = self.masks()
        if not (isinstance(masks, list) and len(masks) == len(images)):
            raise AssertionError(
                f"regions_for() of {len(images)} images returned {len(masks) if hasattr(masks, '__len__') else masks!r} "
                "entries; expected a list with one dict per image")
        size = tuple(images.shape[-2:])
        for i, regions in enumerate(masks):
            if not isinstance(regions, Mapping):
                raise AssertionError(f"entry {i} is a {type(regions).__name__}, not a dict")
            for name, mask in regions.items():
                if not isinstance(name, str):
                    raise AssertionError(f"image {i}: region name {name!r} is not a string")
                if not (isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == size):
                    raise AssertionError(f"image {i}: region {name!r} is {getattr(mask, 'dtype', type(mask).__name__)} "
                    f"{getattr(mask, 'shape', '')}; expected a bool numpy array of the image's size {size}")

    def check_deterministic(self) -> None:
        first = self.masks()
        source = self.load()
        with _in_plugin():
            again = source.regions_for(self.images(), self.ids())
        found = _first_difference(first, again, "regions")
        if found is not None:
            raise AssertionError(f"two calls on the same images differ: {found}")

    def check_fingerprint_stable(self) -> None:
        first, again = self.load(), self.load(1)
        with _in_plugin():
            fp, fp_again = first.fingerprint(), again.fingerprint()
        if not (isinstance(fp, str) and fp):
            raise AssertionError(f"fingerprint() is {fp!r}, not a non-empty string")
        if fp_again != fp:
            raise AssertionError("two loads with the same options give different fingerprints")


_CHECKERS: dict[str, type[_Common]] = {
    "explainer": _ExplainerChecks,
    "hypothesis": _HypothesisChecks,
    "dataset": _DatasetChecks,
    "model-adapter": _AdapterChecks,
    "region-source": _RegionChecks,
}

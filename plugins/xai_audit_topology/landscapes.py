"""Activation landscapes (Wheeler, Bouza and Bubenik, 2021) and latent landscapes, over several networks.

Wheeler et al. summarise how data changes through a network by the persistence landscapes of each layer's
activations: the images' activation vectors at one layer are a point cloud, its Vietoris–Rips persistence a
diagram, and the diagram's landscape — every level λ1, λ2, … λn, not only the first — a function that can be
averaged. They average the landscapes of networks of one architecture trained from different seeds, and follow
the landscape's norm along training.

Here, for each layer (conv or linear) and each group of images (all images, and the images of each class):

* the points are the group's activation vectors (pooled as the explainer's ``pool`` says for a conv layer);
* ``landmarks`` of them are chosen by farthest-point sampling on a PCA of the points, and Rips persistence is
  computed on those landmarks' own (unreduced) activation vectors, so distances are the network's;
* each network gives a diagram; the landscapes of every level are averaged pointwise over the networks (the
  model and ``networks``), and the norm of the average and of each network's landscape is exact (the levels are
  piecewise linear, :func:`~xai_audit_topology.summaries.landscape_norms`);
* along ``checkpoints`` the norm of each layer's landscape (all images) is recomputed at every checkpoint.

A latent landscape is the same summary of a conv layer's channel vectors: each spatial position of each image
is one point (the cloud the explainer's ``cloud: latent`` uses), so it describes what the layer sees at a place
rather than per image.

Other weights are loaded into the model's own module for the time they are read and the model's weights are
put back afterwards, even when a file fails to load.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from xai_audit.api import ModelAdapter
from xai_audit_topology.activations import activation_clouds
from xai_audit_topology.cloud import fit_reduction, landmarks
from xai_audit_topology.persistence import rips
from xai_audit_topology.summaries import landscape, landscape_breakpoints, piecewise_norms

#: the group of every image, beside one group per class
ALL = "all images"
#: a class with fewer images than this has no landscape (a Rips diagram of two points says nothing)
MIN_GROUP = 4


class WeightsError(ValueError):
    pass


def load_state(path: Path, device: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (.pt / .pth read with ``weights_only``, or .safetensors)."""
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device=device)
        else:
            state = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read weights: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


@contextmanager
def network_weights(model: ModelAdapter, path: Path | None) -> Iterator[None]:
    """Inside the block, ``model`` runs with the weights in ``path`` (None: its own); its own are restored after."""
    if path is None:
        yield
        return
    module = model.module
    if not isinstance(module, torch.nn.Module):
        raise WeightsError("other networks' weights need a torch model (this model has no torch module)")
    own = {name: t.detach().clone() for name, t in module.state_dict().items()}
    try:
        state = load_state(path, model.device)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise WeightsError(f"{path}: does not fit the model's architecture: "
                               f"{' '.join(s.strip() for s in first[:3])}") from None
        module.eval()
        yield
    finally:
        module.load_state_dict(own, strict=True)


@dataclass
class NetworkDiagrams:
    """One network's diagrams: ``activation[(layer, group)][k]`` and ``latent[layer][k]`` (finite pairs)."""

    name: str
    activation: dict[tuple[str, str], dict[int, np.ndarray]] = field(default_factory=dict)
    latent: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    #: what each layer gives per image: "conv" (C, h, w) or "linear" (D,) and its size
    kinds: dict[str, str] = field(default_factory=dict)
    latent_info: dict[str, dict[str, int]] = field(default_factory=dict)


def group_rows(classes: Sequence[str], by: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of every image, and of the images of each class (``by``: one class index per image)."""
    by = np.asarray(by)
    groups = {ALL: np.arange(len(by))}
    for c, name in enumerate(classes):
        rows = np.flatnonzero(by == c)
        if len(rows) >= MIN_GROUP:
            groups[name] = rows
    return groups


def diagram_of(points: np.ndarray, dims: Sequence[int], *, n_landmarks: int, method: str, pca_dims: int, seed: int,
               n_threads: int) -> dict[int, np.ndarray]:
    """Finite Rips pairs of ``points`` in each of ``dims``: landmarks chosen on a PCA, distances unreduced."""
    points = np.asarray(points, dtype=np.float32)
    if len(points) > n_landmarks:
        reduced = fit_reduction(points, pca_dims, seed).project(points)
        points = points[landmarks(reduced, n_landmarks, method, seed)]
    dgms = rips(points, dims, n_threads=n_threads, generators=False)
    return {k: dgms.finite(k) for k in dims}


def network_diagrams(
    model: ModelAdapter, images: Any, layers: Sequence[str], groups: dict[str, np.ndarray], dims: Sequence[int], *,
    name: str, pool: str, latent: bool, n_landmarks: int, method: str, pca_dims: int, points: int, seed: int,
    n_threads: int,
) -> NetworkDiagrams:
    """Every diagram of one network (the weights the model runs with now)."""
    out = NetworkDiagrams(name)
    clouds = activation_clouds(model, images, layers, cloud="images", pool=pool)
    for layer in layers:
        cloud = clouds[layer]
        d = int(cloud.points.shape[1])
        if cloud.grid is not None:
            h, w = cloud.grid
            channels = d // (h * w) if pool == "flatten" else d
            out.kinds[layer] = f"conv ({channels} channels × {h}×{w})"
        else:
            out.kinds[layer] = f"linear ({d} units)"
        for group, rows in groups.items():
            out.activation[(layer, group)] = diagram_of(
                cloud.points[rows], dims, n_landmarks=n_landmarks, method=method, pca_dims=pca_dims, seed=seed,
                n_threads=n_threads)
    convs = [layer for layer in layers if clouds[layer].grid is not None]
    if latent and convs:
        for layer, cloud in activation_clouds(model, images, convs, cloud="latent").items():
            kept = np.arange(len(cloud.points))
            if len(kept) > points:
                kept = np.sort(np.random.default_rng(seed).choice(len(kept), points, replace=False))
            out.latent[layer] = diagram_of(cloud.points[kept], dims, n_landmarks=n_landmarks, method=method,
                                           pca_dims=pca_dims, seed=seed, n_threads=n_threads)
            out.latent_info[layer] = {"channels": int(cloud.points.shape[1]),
                                      "positions": int(cloud.grid[0] * cloud.grid[1]),
                                      "points": int(len(cloud.points)), "points used": int(len(kept))}
    return out


# -- averaging and norms --------------------------------------------------------------------------------------


def levels_of(dgms: Sequence[np.ndarray]) -> int:
    """Every level of every diagram: as many as the largest diagram has finite features (at least one)."""
    return max([1] + [len(d) for d in dgms])


def mean_landscape(dgms: Sequence[np.ndarray], sampling: np.ndarray) -> np.ndarray:
    """(levels, len(sampling)): the pointwise mean over ``dgms`` of every level of their landscapes."""
    n = levels_of(dgms)
    return np.mean([landscape(d, sampling, n) for d in dgms], axis=0)


def mean_landscape_norms(dgms: Sequence[np.ndarray], p: float = 2.0) -> np.ndarray:
    """The exact L^p norm of every level of the mean landscape of ``dgms`` (linear between the union of their
    breakpoints, so the piecewise formula of :func:`~xai_audit_topology.summaries.landscape_norms` holds)."""
    knots = np.unique(np.concatenate([landscape_breakpoints(d) for d in dgms] + [np.zeros(0)]))
    if len(knots) < 2:
        return np.zeros(levels_of(dgms))
    return piecewise_norms(mean_landscape(dgms, knots), knots, p)


def total_norm(level_norms: np.ndarray) -> float:
    """‖λ‖₂ from the L² norms of its levels."""
    return float(np.sqrt(np.sum(np.square(level_norms))))


# -- the whole study -------------------------------------------------------------------------------------------


@dataclass
class LandscapeStudy:
    """What :func:`study` found, as the explainer hands it on: tables for results.json, figures, notes."""

    tables: dict[str, list[dict[str, Any]]]
    figures: list[dict[str, Any]]
    notes: list[str]
    scalars: dict[str, float]


def study(
    model: ModelAdapter, images: Any, layers: Sequence[str], by: np.ndarray, classes: Sequence[str], grouped_by: str,
    dims: Sequence[int], *, networks: Sequence[Path], checkpoints: Sequence[Path], pool: str, latent: bool,
    n_landmarks: int, method: str, pca_dims: int, points: int, seed: int, n_threads: int,
) -> LandscapeStudy:
    """Activation landscapes of ``layers`` per class, averaged over the model and ``networks``; latent landscapes
    of the conv layers among them; the norm of each layer's landscape at every one of ``checkpoints``."""
    from xai_audit_topology import figures

    groups = group_rows(classes, by)
    common = dict(pool=pool, n_landmarks=n_landmarks, method=method, pca_dims=pca_dims, points=points, seed=seed,
                  n_threads=n_threads)
    nets: list[NetworkDiagrams] = []
    for name, path in [("the model", None)] + [(_short(p), p) for p in networks]:
        with network_weights(model, path):
            nets.append(network_diagrams(model, images, layers, groups, dims, name=name, latent=latent, **common))
    along: list[NetworkDiagrams] = []
    for path in checkpoints:
        with network_weights(model, path):
            along.append(network_diagrams(model, images, layers, {ALL: groups[ALL]}, dims, name=_short(path),
                                          latent=False, **common))

    rows = [_row(layer, group, k, [n.activation[(layer, group)][k] for n in nets], nets[0].kinds[layer])
            for layer in layers for group in groups for k in dims]
    convs = [layer for layer in layers if layer in nets[0].latent]
    latent_rows = [
        _row(layer, ALL, k, [n.latent[layer][k] for n in nets], nets[0].kinds[layer]) | nets[0].latent_info[layer]
        for layer in convs for k in dims
    ]
    along_rows = [
        {"checkpoint": i + 1, "file": n.name, "layer": layer, "dim": f"H{k}",
         "norm": _round(total_norm(mean_landscape_norms([n.activation[(layer, ALL)][k]])))}
        for i, n in enumerate(along) for layer in layers for k in dims
    ]
    tables = {"activation landscapes": rows}
    if latent_rows:
        tables["latent landscapes"] = latent_rows
    if along_rows:
        tables["landscape norm per checkpoint"] = along_rows

    shown = 1 if 1 in dims else min(dims)  # figures of loops when computed, as the per-layer summaries
    specs: list[dict[str, Any]] = []
    for layer in layers:
        dgms = [n.activation[(layer, ALL)][shown] for n in nets]
        specs.append(figures.landscape_levels(_sampled(dgms), layer, shown, len(nets), ALL, "activation"))
    specs.append(figures.landscape_norms_per_class(rows, layers, list(groups), shown))
    specs.append(figures.landscape_norms_across_networks(rows, layers, dims, len(nets)))
    for layer in convs:
        specs.append(figures.landscape_levels(_sampled([n.latent[layer][shown] for n in nets]), layer, shown,
                                              len(nets), ALL, "latent"))
    if along:
        specs.extend(figures.landscape_norm_along_training(along_rows, layers, dims, [n.name for n in along]))

    files = ", ".join(_short(p) for p in networks)
    notes = [
        f"Activation landscapes (Wheeler, Bouza and Bubenik 2021): for each of {len(layers)} layer(s), the "
        f"activation vectors of all {len(by)} images and of the images of each class ({grouped_by}; classes with "
        f"fewer than {MIN_GROUP} images left out), Rips persistence in H{', H'.join(str(k) for k in dims)} on at most "
        f"{n_landmarks} farthest-point landmarks (chosen on a PCA, distances unreduced), and every level of the "
        "persistence landscape; "
        + (f"averaged over {len(nets)} networks of one architecture (the model and {files})" if networks else
           "of the model alone (no other networks were given to average over)")
        + ". Norms are L² norms of the whole landscape, computed exactly."
        + (f" Latent landscapes: the channel vectors at every position of the conv layer(s) {', '.join(convs)}, "
           f"at most {points:,} of them, one cloud per layer." if convs else "")
        + (f" Along training: the landscape norm of each layer (all images) at each of {len(along)} checkpoints."
           if along else "")
    ]
    scalars = {"landscape networks": float(len(nets)), "landscape checkpoints": float(len(along))}
    return LandscapeStudy(tables, specs, notes, scalars)


def _row(layer: str, group: str, k: int, dgms: list[np.ndarray], kind: str) -> dict[str, Any]:
    level_norms = mean_landscape_norms(dgms)
    each = [total_norm(mean_landscape_norms([d])) for d in dgms]
    return {
        "layer": layer, "layer gives": kind, "images": group, "dim": f"H{k}", "networks": len(dgms),
        "levels": levels_of(dgms), "norm of the mean landscape": _round(total_norm(level_norms)),
        "norm per network: mean": _round(float(np.mean(each))),
        "norm per network: sd": _round(float(np.std(each, ddof=1))) if len(each) > 1 else None,
        "norm per network: min": _round(min(each)), "norm per network: max": _round(max(each)),
        "level norms": [_round(float(v)) for v in level_norms],
    }


def _sampled(dgms: list[np.ndarray], n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """The mean landscape of ``dgms`` (every level) on ``n`` filtration values from 0 to the last death."""
    top = max([float(d[:, 1].max()) for d in dgms if len(d)] + [1e-9])
    grid = np.linspace(0.0, top, n)
    return grid, mean_landscape(dgms, grid)


def _short(path: Path) -> str:
    """A weight file as the report names it: its folder and name (``seed-1/epoch-6.pt``)."""
    return "/".join(path.parts[-2:])


def _round(value: float) -> float:
    return float(f"{value:.6g}")

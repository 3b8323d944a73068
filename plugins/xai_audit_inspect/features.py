"""Feature visualisation: what excites a layer's top channels and each class, and rubbish images.

* Activation maximisation (Erhan et al., 2009; Olah et al., 2017): start from
  seeded noise and climb the gradient of one channel's mean activation (the
  layer's most active channels over the explained images) or of one class's
  logit, with jitter, a total-variation penalty and pixels kept in [0, 1]
  through a sigmoid. All objectives are optimised together, one batch (the
  total-variation weight follows the batch's mean objective, so the batch is
  :func:`fixed_batch_size`, from the model's memory, never a timing: the
  images are the same on every run).
* Learned filters (``filters: true``): the weights of the top channels' convolution
  kernels. A filter that reads the image (the model's first convolution) is drawn
  as one colour (or grey) picture; a deeper filter by its kernels on the input
  channels it weighs most, grey, mid-grey being zero.
* Rubbish images (Nguyen et al., 2015, "fooling images"; the MNIST attribution
  study's "rubbish" class examples): from uniform noise, projected gradient
  ascent on each class's log-probability while every pixel stays within
  ``rubbish_eps`` of the noise, so the image still looks like noise. A class
  the model then scores above ``confidence`` is a warning sign of brittle
  features: the model is certain of something that is not there.

The map returned per image shows where the image holds the layer's features
that the target class relies on: the channels' activations (clipped at 0)
weighted by how much each channel raises the class's logit on a plain grey
image (the mean gradient, clipped at 0), upsampled. The weights depend on the
model only, so an image's map is the same whatever else is explained with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from pydantic import Field

from xai_audit.api import (
    ExplainerPlugin,
    Explanation,
    ModelAdapter,
    ModelPasses,
    Options,
    Sample,
    as_feature_map,
    best_batch_size,
    first_tensor,
    fixed_batch_size,
    layer_activations,
    resolve_layer,
)


class FeatureVisualisationOptions(Options):
    layer: str | None = Field(None, description="layer name; default: the model's default layer")
    channels: int = Field(4, ge=0, le=64, description="top channels of the layer to visualise")
    classes: bool = Field(True, description="also visualise each class (maximise its logit)")
    max_classes: int = Field(16, ge=1, le=1000, description="classes visualised and searched for rubbish images: "
                             "the explained classes first")
    steps: int = Field(64, ge=1, le=2000, description="gradient steps of activation maximisation")
    lr: float = Field(0.05, gt=0, description="Adam learning rate on the pre-sigmoid pixels")
    tv: float = Field(0.05, ge=0, description="total-variation penalty (smoother images)")
    filters: bool = Field(False, description="also draw the learned filters (convolution weights) of the top channels; "
                          "the layer must be a Conv2d, or a block whose last Conv2d gives its channels")
    filter_inputs: int = Field(4, ge=1, le=16, description="a deeper layer's filter: its kernels on this many input "
                               "channels, those of largest weight")
    rubbish: bool = Field(True, description="search for rubbish images (confident predictions on noise)")
    rubbish_steps: int = Field(40, ge=1, le=2000)
    rubbish_eps: float = Field(0.1, gt=0, le=0.5, description="largest change per pixel from the starting noise")
    confidence: float = Field(0.99, gt=0, lt=1, description="probability above which a noise image is 'rubbish'")


class FeatureVisualisationExplainer(ExplainerPlugin):
    name = "feature-visualisation"
    description = "Activation maximisation of a layer's top channels and of each class; rubbish images scored with certainty."
    Options = FeatureVisualisationOptions
    needs_gradients = True
    needs_layer_hooks = True

    def explain(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> Explanation:
        opts: FeatureVisualisationOptions = self.options
        name, _ = resolve_layer(model, opts.layer)
        images = np.stack([s.image for s in samples]).astype(np.float32)
        acts = self._activations(model, images)
        channels = _top_channels(acts, opts.channels)
        maps = _class_feature_maps(model, name, acts, targets, images.shape[1:])
        shape = images.shape[1:]
        chosen = _chosen_classes(targets, len(model.classes), opts.max_classes)
        classes = [model.classes[k] for k in chosen]
        batch = fixed_batch_size(model, shape, backward=True)  # shapes the optimisation: never from a timing
        arrays: dict[str, np.ndarray] = {}
        figures: list[dict] = []
        tables: dict[str, list[dict]] = {}
        scalars: dict[str, float] = {}
        generator = torch.Generator().manual_seed(seed)
        filter_note: str | None = None

        if len(channels):
            vis, values = maximise(model, name, shape, [("channel", int(c)) for c in channels], opts, generator, batch)
            arrays["channel_images"] = vis
            figures.append(_images_figure(
                "channel_images", f"Activation maximisation: top {len(channels)} channels of '{name}'",
                [f"ch {int(c)}" for c in channels],
                "Images grown from noise to excite each channel most (channels most active on the explained images).",
            ))
            tables["channels"] = [{"channel": int(c), "mean_activation_reached": float(v)} for c, v in zip(channels, values)]
        if opts.filters and len(channels):
            drawn = learned_filters(model, name, channels, opts.filter_inputs)
            if isinstance(drawn, str):
                filter_note = drawn
            else:
                arrays["filter_images"] = drawn.images
                figures.append({**_images_figure(
                    "filter_images", f"Learned filters: top {len(channels)} channels of '{name}'", drawn.titles,
                    drawn.caption), "columns": drawn.columns})
                tables["filters"] = drawn.rows
        if opts.classes:
            vis, _ = maximise(model, name, shape, [("class", k) for k in chosen], opts, generator, batch)
            reached = _probabilities(model, vis)[np.arange(len(chosen)), chosen]
            arrays["class_images"] = vis
            figures.append(_images_figure(
                "class_images", "Activation maximisation: each class",
                [f"{c} ({p:.2f})" for c, p in zip(classes, reached)],
                "Images grown from noise to raise each class's logit; in brackets the probability the model gives them.",
            ))
            tables["class_images"] = [{"class": c, "probability": float(p)} for c, p in zip(classes, reached)]
        if opts.rubbish:
            noise, rubbish = rubbish_images(model, shape, chosen, opts, generator, batch)
            reached = _probabilities(model, rubbish)[np.arange(len(chosen)), chosen]
            arrays["rubbish_images"] = rubbish
            is_rubbish = reached >= opts.confidence
            figures.append(_images_figure(
                "rubbish_images", f"Rubbish images: noise scored with certainty ({int(is_rubbish.sum())} of {len(classes)} classes)",
                [f"{c}: {p:.3f}" for c, p in zip(classes, reached)],
                f"Uniform noise changed by at most {opts.rubbish_eps:g} per pixel to raise each class. A class scored above "
                f"{opts.confidence:g} on an image that looks like nothing is a warning sign of brittle features.",
            ))
            tables["rubbish_images"] = [
                {"class": c, "probability": float(p), "rubbish": bool(r)} for c, p, r in zip(classes, reached, is_rubbish)
            ]
            scalars["rubbish_classes"] = float(is_rubbish.sum())
            scalars["rubbish_max_probability"] = float(reached.max())
            scalars["noise_max_probability"] = float(_probabilities(model, noise).max())
        notes = [
            f"Layer '{name}'; {opts.steps} steps of Adam (lr {opts.lr:g}) with jitter and a total-variation penalty "
            f"({opts.tv:g}) from seeded noise. The map of each image is its activations weighted by how much each "
            "channel raises the explained class's logit (on a grey image)."
        ]
        if opts.filters and not len(channels):
            filter_note = "No filters drawn: 'channels' is 0 (filters are drawn for the top channels)."
        if filter_note:
            notes.append(filter_note)
        if scalars.get("rubbish_classes"):
            notes.append(
                f"{int(scalars['rubbish_classes'])} class(es) reached {opts.confidence:g} on noise changed by at most "
                f"{opts.rubbish_eps:g} per pixel: the model is certain of things that are not in the image."
            )
        return Explanation(
            method=self.name, sample_ids=[s.id for s in samples], targets=np.asarray(targets), maps=maps,
            signed=False, scalars=scalars, arrays=arrays, tables=tables, notes=notes, figures=figures,
            run={"objectives_per_batch": int(batch)},
        )

    def explain_maps(self, model: ModelAdapter, samples: Sequence[Sample], targets: np.ndarray, seed: int) -> np.ndarray:
        images = np.stack([s.image for s in samples]).astype(np.float32)
        name, _ = resolve_layer(model, self.options.layer)
        return _class_feature_maps(model, name, self._activations(model, images), targets, images.shape[1:])

    def model_passes(self, model: ModelAdapter, n: int, image_shape: tuple[int, ...],
                     maps_only: bool = False) -> ModelPasses:
        """At least: every image forward (its activations) and a grey image per class forward and backward (the
        channels' weights); for the whole explanation also every optimisation step of the class images and the
        rubbish images on each chosen class, and their probabilities. The channel images are left out (how many
        depends on the layer): what is stated is a floor, never more than it runs."""
        classes = len(model.classes)
        if maps_only:
            return ModelPasses(forward=n, backward=classes)
        opts: FeatureVisualisationOptions = self.options
        chosen = min(opts.max_classes, classes)
        steps = (opts.steps if opts.classes else 0) + (opts.rubbish_steps if opts.rubbish else 0)
        probabilities = chosen * ((1 if opts.classes else 0) + (2 if opts.rubbish else 0))
        return ModelPasses(forward=n + probabilities, backward=classes + chosen * steps)

    def _activations(self, model: ModelAdapter, images: np.ndarray) -> np.ndarray:
        size = best_batch_size(model, images.shape[1:], backward=False)
        return layer_activations(model, images, self.options.layer, batch_size=size)


def maximise(
    model: ModelAdapter, layer: str, shape: tuple[int, ...], objectives: list[tuple[str, int]],
    opts: FeatureVisualisationOptions, generator: torch.Generator, batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (K, 3, H, W) maximising each objective, and the objective values reached.

    The objectives are independent: they are optimised ``batch`` at a time (the model's best batch
    size for forward + backward), from start images and jitter drawn once for all of them.
    """
    start = 0.5 + 0.1 * torch.randn((len(objectives), *shape), generator=generator)
    shifts = torch.randint(-2, 3, (opts.steps, 2), generator=generator).tolist()
    images, values = [], []
    for part in range(0, len(objectives), max(1, batch)):
        chunk = slice(part, part + max(1, batch))
        image, value = _maximise(model, layer, shape, objectives[chunk], opts, start[chunk], shifts)
        images.append(image)
        values.append(value)
    return np.concatenate(images), np.concatenate(values)


def _maximise(
    model: ModelAdapter, layer: str, shape: tuple[int, ...], objectives: list[tuple[str, int]],
    opts: FeatureVisualisationOptions, start: torch.Tensor, shifts: list[list[int]],
) -> tuple[np.ndarray, np.ndarray]:
    _, module = resolve_layer(model, layer)
    height, width = shape[-2:]
    k = len(objectives)
    param = torch.logit(start.clamp(0.02, 0.98)).to(model.device).requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=opts.lr)
    kinds = [kind for kind, _ in objectives]
    index = torch.tensor([i for _, i in objectives], device=model.device)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: captured.append(as_feature_map(o, height, width)))
    try:
        for step in range(opts.steps):
            captured.clear()
            image = torch.sigmoid(param)
            jittered = torch.roll(image, shifts=tuple(shifts[step]), dims=(-2, -1))
            logits = model.forward(jittered)
            values = _objective_values(kinds, index, captured[0], logits)
            tv = (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
            loss = -values.sum() + opts.tv * k * tv * values.detach().abs().mean().clamp(min=1.0)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            captured.clear()
            image = torch.sigmoid(param)
            logits = model.forward(image)
            values = _objective_values(kinds, index, captured[0], logits)
    finally:
        handle.remove()
    return image.detach().cpu().numpy().astype(np.float32), values.detach().cpu().numpy()


def _objective_values(kinds: list[str], index: torch.Tensor, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Each image's objective: its class's logit, or its channel's mean activation."""
    rows = torch.arange(len(kinds), device=logits.device)
    out = torch.zeros(len(kinds), device=logits.device)
    is_class = torch.tensor([k == "class" for k in kinds], device=logits.device)
    if is_class.any():
        out = torch.where(is_class, logits[rows, index.clamp(max=logits.shape[1] - 1)], out)
    if (~is_class).any():
        channel_means = features.mean(dim=(2, 3))  # (K, C)
        out = torch.where(~is_class, channel_means[rows, index.clamp(max=channel_means.shape[1] - 1)], out)
    return out


def rubbish_images(
    model: ModelAdapter, shape: tuple[int, ...], classes: Sequence[int], opts: FeatureVisualisationOptions,
    generator: torch.Generator, batch: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(noise, rubbish): uniform noise, and the same noise pushed toward each of ``classes`` within
    ``rubbish_eps`` (projected gradient ascent on the class's log-probability), ``batch`` at a time."""
    noise = torch.rand((len(classes), *shape), generator=generator).to(model.device)
    targets = torch.as_tensor(list(classes), device=model.device)
    step = 2.5 * opts.rubbish_eps / opts.rubbish_steps
    out = []
    for part in range(0, len(classes), max(1, batch)):
        start, target = noise[part : part + max(1, batch)], targets[part : part + max(1, batch)]
        rows = torch.arange(len(target), device=model.device)
        x = start.clone()
        for _ in range(opts.rubbish_steps):
            x = x.detach().requires_grad_(True)
            log_p = torch.log_softmax(model.forward(x), dim=1)[rows, target]
            (grad,) = torch.autograd.grad(log_p.sum(), x)
            x = x + step * grad.sign()
            x = torch.min(torch.max(x, start - opts.rubbish_eps), start + opts.rubbish_eps).clamp(0.0, 1.0)
        out.append(x.detach())
    return noise.cpu().numpy().astype(np.float32), torch.cat(out).cpu().numpy().astype(np.float32)


def _probabilities(model: ModelAdapter, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.as_tensor(images, device=model.device)
        return torch.softmax(model.forward(x), dim=1).cpu().numpy()


def _chosen_classes(targets: np.ndarray, n_classes: int, limit: int) -> np.ndarray:
    """Up to ``limit`` class indices: the explained classes (most explained first), then the others in order."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64).reshape(-1), minlength=n_classes)
    explained = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    others = [k for k in range(n_classes) if k not in set(explained)]
    return np.array(sorted((explained + others)[:limit]), dtype=np.int64)


def _top_channels(acts: np.ndarray, k: int) -> np.ndarray:
    """The k channels with the largest mean activation over the images."""
    return np.argsort(-acts.mean(axis=(0, 2, 3)), kind="stable")[: min(k, acts.shape[1])]


def _class_feature_maps(model: ModelAdapter, layer: str, acts: np.ndarray, targets: np.ndarray,
                        shape: tuple[int, ...]) -> np.ndarray:
    """Per image: its channel activations weighted by each channel's pull on the target class (N, H, W)."""
    weights = channel_class_weights(model, layer, shape)  # (classes, C)
    w = weights[np.asarray(targets, dtype=np.int64).reshape(-1)]  # (N, C)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    mixed = np.einsum("nc,nchw->nhw", w, np.maximum(acts, 0))[:, None]
    up = torch.nn.functional.interpolate(torch.as_tensor(mixed), size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    return up[:, 0].numpy().astype(np.float32)


def channel_class_weights(model: ModelAdapter, layer: str, shape: tuple[int, ...]) -> np.ndarray:
    """(classes, C): mean gradient of each class's logit with respect to each channel, on a grey image, clipped at 0."""
    _, module = resolve_layer(model, layer)
    height, width = shape[-2:]
    n_classes = len(model.classes)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: captured.append(first_tensor(o)))
    try:
        grey = torch.full((n_classes, *shape), 0.5, device=model.device)
        logits = model.forward(grey)
        (grad,) = torch.autograd.grad(logits.diagonal().sum(), captured[0], allow_unused=True)
    finally:
        handle.remove()
    if grad is None:
        grad = torch.zeros_like(captured[0])
    grid = as_feature_map(grad, height, width)  # tokens on the patch grid, like the activations
    return grid.mean(dim=(2, 3)).clamp(min=0).detach().cpu().numpy()


@dataclass(frozen=True)
class DrawnFilters:
    """The filters of some channels as a grid of images: (K, 3, h, w) in [0, 1], a title per tile, one row per channel."""

    images: np.ndarray
    titles: list[str]
    columns: int
    caption: str
    rows: list[dict]


def conv_of_layer(module: torch.nn.Module) -> torch.nn.Conv2d | None:
    """The convolution whose weights give the layer's channels: the layer itself, or a block's last Conv2d."""
    if isinstance(module, torch.nn.Conv2d):
        return module
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else None


def learned_filters(model: ModelAdapter, layer: str, channels: np.ndarray, inputs: int) -> DrawnFilters | str:
    """The weights of ``channels``' filters at ``layer``, drawn; or, where they cannot be, a sentence saying why.

    A filter reads the image when its convolution is the model's first and has one or three input channels:
    it is drawn as one picture (grey or colour). Any other filter is drawn by its kernels on the ``inputs``
    input channels of largest weight (L2 norm), each grey. Each filter is scaled by its own largest |weight|
    to [0, 1], mid-grey being zero, so the tiles of one filter compare and two filters' do not.
    """
    _, module = resolve_layer(model, layer)
    conv = conv_of_layer(module) if isinstance(module, torch.nn.Module) else None
    if conv is None:
        return (f"No filters drawn: layer '{layer}' has no convolution ({type(module).__name__}); name a Conv2d "
                "layer, or a block that ends in one, to see its filters.")
    weight = conv.weight.detach().float().cpu().numpy()  # (C_out, C_in / groups, kh, kw)
    if len(channels) and int(np.max(channels)) >= weight.shape[0]:
        return (f"No filters drawn: layer '{layer}' has more channels than its last convolution has filters "
                f"({weight.shape[0]}).")
    first = next((m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    reads_image = conv is first and weight.shape[1] in (1, 3) and conv.groups == 1
    scale = np.maximum(np.abs(weight).reshape(len(weight), -1).max(axis=1), 1e-12)  # (C_out,)
    images, titles, rows = [], [], []
    if reads_image:
        for c in channels:
            tile = weight[c] / (2 * scale[c]) + 0.5  # (C_in, kh, kw)
            images.append(np.repeat(tile, 3, axis=0) if tile.shape[0] == 1 else tile)
            titles.append(f"ch {int(c)}")
            rows.append(_filter_row(weight, c, []))
        columns = min(8, len(images))
        caption = (f"The weights of each channel's {weight.shape[2]}x{weight.shape[3]} filter on the image's "
                   f"{'colour channels' if weight.shape[1] == 3 else 'pixels'}, scaled by its largest weight: mid-grey "
                   "is 0, brighter (or a colour) raises the channel, darker lowers it.")
    else:
        shown = min(inputs, weight.shape[1])
        for c in channels:
            norms = np.sqrt((weight[c] ** 2).sum(axis=(1, 2)))  # (C_in,)
            strongest = np.argsort(-norms, kind="stable")[:shown]
            for j in strongest:
                images.append(np.repeat((weight[c, j] / (2 * scale[c]) + 0.5)[None], 3, axis=0))
                titles.append(f"ch {int(c)} \u2190 {int(j)}")
            rows.append(_filter_row(weight, c, [int(j) for j in strongest]))
        columns = shown
        caption = (f"One row per channel: its {weight.shape[2]}x{weight.shape[3]} kernels on the {shown} input channels "
                   f"(of {weight.shape[1]}) it weighs most ('ch c \u2190 j': channel c reading input channel j), each "
                   "filter scaled by its largest weight: mid-grey is 0, bright raises the channel, dark lowers it.")
    return DrawnFilters(np.clip(np.stack(images), 0.0, 1.0).astype(np.float32), titles, columns, caption, rows)


def _filter_row(weight: np.ndarray, channel: int, inputs: list[int]) -> dict:
    return {"channel": int(channel), "kernel": f"{weight.shape[2]}x{weight.shape[3]}", "input_channels": int(weight.shape[1]),
            "weight_norm": float(np.sqrt((weight[channel] ** 2).sum())), "max_abs_weight": float(np.abs(weight[channel]).max()),
            "inputs_shown": inputs}


def _images_figure(array: str, title: str, titles: list[str], caption: str) -> dict:
    return {
        "kind": "images", "title": title, "images": {"array": array}, "titles": titles,
        "columns": min(8, len(titles)), "caption": caption, "alt": title,
    }

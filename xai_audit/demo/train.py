"""Train the demo CNN on the synthetic faces' train split (with its planted shortcuts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_audit.contract.types import LoadContext
from xai_audit.demo.model import EMOTIONS, DemoCNN
from xai_audit.registry import Registry
from xai_audit.run.cache import Cache, content_key

#: bump when the architecture or the recipe changes, so cached weights are not reused
RECIPE_VERSION = 3
#: the cues planted for discovery to find without being told (issue 16), in every split as a real watermark
#: would be: a bright mark at the top-left corner of most 'happy' images, and a green-tinted background on
#: some 'surprise' images; the demo plan names neither. Sized so the trained CNN really uses them
CUES: dict[str, Any] = {"stamp_class": "happy", "stamp_fraction": 0.9, "stamp_side": 0.16,
                        "tint_class": "surprise", "tint_fraction": 0.8}
#: share of skin tone VI in the demo's training faces (9 of 3,000): rare enough that the CNN is clearly worse on
#: it on any CPU (the trained weights differ between AVX2 and AVX-512 kernels; at 1 % the gap was 7 points on one
#: and 9 on the other, too close to the test's power to be a demo)
RARE_FRACTION = 0.003


@dataclass(frozen=True)
class Recipe:
    """What the demo trains: a data set plugin's train split, and the CNN's shape."""

    dataset: str
    train_options: dict[str, Any]
    n_classes: int
    in_channels: int
    epochs: int


def recipe_for(data: str, *, seed: int, shortcuts: bool = True, n_train: int = 3000) -> Recipe:
    if data == "digits":
        return Recipe("digits", {"split": "train", "seed": seed, "size": 32}, 10, 1, 12)
    options: dict[str, Any] = {"split": "train", "n": n_train, "seed": seed + 1}
    if shortcuts:
        options.update(CUES, rare_fraction=RARE_FRACTION)
    else:
        options.update(dark_sad=0.0, dark_other=0.0, rare_tone=None)
    return Recipe("synthetic-faces", options, len(EMOTIONS), 3, 8)


@dataclass
class TrainedModel:
    weights: Path
    cached: bool
    seconds: float
    recipe: Recipe


def train_demo_model(
    registry: Registry,
    cache: Cache,
    *,
    data: str = "faces",
    seed: int = 0,
    shortcuts: bool = True,
    log=print,
) -> TrainedModel:
    recipe = recipe_for(data, seed=seed, shortcuts=shortcuts)
    plugin = registry.get("dataset", recipe.dataset).cls
    dataset = plugin(plugin.Options(**recipe.train_options)).load(LoadContext(base_dir=Path.cwd(), seed=seed))
    # the data set's fingerprint covers its generator version: a redrawn data set retrains the model
    key = content_key(
        "demo-model", RECIPE_VERSION, recipe.dataset, recipe.train_options, recipe.epochs, seed, dataset.fingerprint()
    )
    path = cache.file_path(f"demo-model-{key[:16]}.pt")
    if path.exists():
        return TrainedModel(path, True, 0.0, recipe)

    start = time.perf_counter()
    samples = [dataset[i] for i in range(len(dataset))]
    x = torch.as_tensor(np.stack([s.image for s in samples]), dtype=torch.float32)
    if recipe.in_channels == 1:
        x = x.mean(dim=1, keepdim=True)  # the plan's input spec feeds luminance; equal channels here
    y = torch.as_tensor([s.label for s in samples], dtype=torch.long)
    log(f"training the demo CNN on {len(samples)} {recipe.dataset} images ({recipe.epochs} epochs, CPU)...")

    torch.manual_seed(seed)
    model = DemoCNN(n_classes=recipe.n_classes, in_channels=recipe.in_channels)
    epochs = recipe.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start_i in range(0, len(x), 64):
            idx = order[start_i : start_i + 64]
            optimiser.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return TrainedModel(path, False, time.perf_counter() - start, recipe)

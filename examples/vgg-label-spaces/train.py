"""Train the example's three networks (one architecture, three label spaces) and write the shared images.

    python examples/vgg-label-spaces/train.py        # offline, CPU, about a minute on two cores

Writes, next to this file:

* ``models/digits.pt``: TinyVGG trained on scikit-learn's handwritten digits (10 classes, "0" … "9");
* ``models/expressions.pt``: TinyVGG trained on drawn faces' expressions (7 classes, happy … surprise);
* ``models/valence.pt``: TinyVGG trained on the same faces with a coarser label space (3 classes:
  negative = angry, disgust, fear, sad; neutral = neutral, surprise; positive = happy);
* ``data/shared/*.png``: the images all three are audited on, side by side: held-out digits and faces
  that no network was trained on, in one folder without labels (no label names a class of all three).

All three start from the same seed, so they differ only by what they were taught. The images come from
xai-audit's own data set plugins (``digits``, ``synthetic-faces``), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from xai_audit.api import LoadContext
from xai_audit.registry import make_plugin_manager

HERE = Path(__file__).resolve().parent
SIZE = 32
EXPRESSIONS = ["happy", "sad", "neutral", "angry", "disgust", "fear", "surprise"]  # the drawn faces' order
VALENCE = ["negative", "neutral", "positive"]
VALENCE_OF = {"angry": "negative", "disgust": "negative", "fear": "negative", "sad": "negative",
              "neutral": "neutral", "surprise": "neutral", "happy": "positive"}
#: the faces without the demo's planted faults (darkened 'sad' faces, a rare skin tone)
CLEAN_FACES = {"dark_sad": 0.0, "dark_other": 0.0, "rare_tone": None}


def tiny_vgg_class() -> type:
    spec = importlib.util.spec_from_file_location("tiny_vgg", HERE / "tiny_vgg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TinyVGG


def load(name: str, **options):
    plugin = make_plugin_manager().get("dataset", name).cls
    return plugin(plugin.Options(**options)).load(LoadContext(base_dir=HERE))


def as_tensors(data, indices) -> tuple[torch.Tensor, list[int]]:
    samples = [data[int(i)] for i in indices]
    return torch.as_tensor(np.stack([s.image for s in samples]), dtype=torch.float32), [s.label for s in samples]


def train(name: str, x: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int, out: Path) -> None:
    torch.manual_seed(0)  # the same start for all three: they differ by their labels only
    model = tiny_vgg_class()(n_classes=n_classes, size=SIZE)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            optimiser.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x).argmax(dim=1) == y).float().mean())
        print(f"{name} epoch {epoch}: train accuracy {accuracy:.3f}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"{name}.pt")


def write_shared(digits, faces, n_each: int, folder: Path) -> None:
    """``n_each`` held-out digits and faces as PNGs in one flat folder, named by where they come from."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for data, prefix, names in ((digits, "digit", [str(d) for d in range(10)]), (faces, "face", list(faces.classes))):
        step = max(1, len(data) // n_each)
        for k, index in enumerate(range(0, step * n_each, step)):
            sample = data[index]
            pixels = (np.clip(sample.image.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{prefix}-{k:02d}-{names[sample.label]}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--faces", type=int, default=1200, help="drawn faces to train the two face networks on")
    parser.add_argument("--shared", type=int, default=8, help="held-out digits and faces, each, in data/shared")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write models/ and data/ into")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    digits_train = load("digits", split="train", size=SIZE, seed=0)
    x, labels = as_tensors(digits_train, range(len(digits_train)))
    train("digits", x, torch.as_tensor(labels), 10, args.epochs, args.out / "models")

    faces_train = load("synthetic-faces", split="train", n=args.faces, size=SIZE, seed=1, **CLEAN_FACES)
    if list(faces_train.classes) != EXPRESSIONS:
        raise SystemExit(f"the drawn faces' classes changed: {faces_train.classes}; update EXPRESSIONS and the plan")
    x, labels = as_tensors(faces_train, range(len(faces_train)))
    train("expressions", x, torch.as_tensor(labels), len(EXPRESSIONS), args.epochs, args.out / "models")
    valence = [VALENCE.index(VALENCE_OF[EXPRESSIONS[k]]) for k in labels]
    train("valence", x, torch.as_tensor(valence), len(VALENCE), args.epochs, args.out / "models")

    write_shared(load("digits", split="test", size=SIZE, seed=0),
                 load("synthetic-faces", split="test", n=200, size=SIZE, seed=2, **CLEAN_FACES),
                 args.shared, args.out / "data" / "shared")


if __name__ == "__main__":
    main()

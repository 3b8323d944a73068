"""Train the example's networks on the digits' train split and save their checkpoints (offline, CPU, ~1 min).

    python examples/topology-explanatory/train.py            # 3 seeds x 6 epochs into models/ next to this file

Writes ``models/seed-<s>/epoch-<e>.pt`` (state dicts) for every seed and every epoch, ``epoch-0.pt`` being the
untrained network. The plan reads seed 0's last epoch as the model, the other seeds' last epochs as the
networks its activation landscapes are averaged over, and seed 0's epochs as the training checkpoints.
The images come from the same ``digits`` data set plugin and split seed as the plan's test images, so no test
image is trained on.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xai_audit.api import LoadContext
from xai_audit.registry import make_plugin_manager

HERE = Path(__file__).resolve().parent


def tiny_net_class() -> type:
    spec = importlib.util.spec_from_file_location("tiny_net", HERE / "tiny_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TinyNet


def train_images(size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    plugin = make_plugin_manager().get("dataset", "digits").cls
    data = plugin(plugin.Options(split="train", size=size, seed=split_seed)).load(LoadContext(base_dir=HERE))
    samples = [data[i] for i in range(len(data))]
    x = torch.as_tensor(np.stack([s.image for s in samples]), dtype=torch.float32).mean(dim=1, keepdim=True)
    y = torch.as_tensor([s.label for s in samples], dtype=torch.long)
    return x, y


def train(seed: int, epochs: int, x: torch.Tensor, y: torch.Tensor, out: Path, size: int) -> None:
    torch.manual_seed(seed)
    model = tiny_net_class()(size=size)
    folder = out / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "epoch-0.pt")
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
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
        torch.save(model.state_dict(), folder / f"epoch-{epoch}.pt")
        print(f"seed {seed} epoch {epoch}: train accuracy {accuracy:.3f}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="networks trained from seeds 0 … seeds-1")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=16, help="image side; the plan's dataset.size must match")
    parser.add_argument("--split-seed", type=int, default=0, help="the digits split seed; the plan's dataset.seed")
    parser.add_argument("--out", type=Path, default=HERE / "models")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    x, y = train_images(args.size, args.split_seed)
    for seed in range(args.seeds):
        train(seed, args.epochs, x, y, args.out, args.size)


if __name__ == "__main__":
    main()

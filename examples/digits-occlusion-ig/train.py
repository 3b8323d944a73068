"""Train the digits demo's CNN and put its weights where the example plan reads them (offline, CPU).

    python examples/digits-occlusion-ig/train.py        # writes models/digits-cnn.pt next to this file

The network and the recipe are those of ``xai-audit demo --data digits`` (``xai_audit.demo.train``: the
demo CNN, one input channel, 12 epochs on the train split of scikit-learn's bundled digits, split seed 0),
so the plan here audits the model the demo audits. The weights are trained once into xai-audit's cache
($XAI_AUDIT_CACHE or ./.xai-audit-cache, as the demo does; ``--cache-dir`` to choose) and copied.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from xai_audit.demo.train import train_demo_model
from xai_audit.registry import make_plugin_manager
from xai_audit.run.cache import Cache, default_cache_dir

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="training seed and digits split seed (the plan's seed)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the trained weights are kept")
    parser.add_argument("--out", type=Path, default=HERE / "models" / "digits-cnn.pt")
    args = parser.parse_args(argv)
    trained = train_demo_model(make_plugin_manager(), Cache(args.cache_dir or default_cache_dir()), data="digits",
                               seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained.weights, args.out)
    how = "reused from the cache" if trained.cached else f"trained in {trained.seconds:.0f} s"
    print(f"digits CNN {how}: {args.out}")


if __name__ == "__main__":
    main()

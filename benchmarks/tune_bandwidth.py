"""How the default RFF bandwidth scale was chosen: a sweep on one data set, for use on the other.

The default length-scale is ``ℓ = bandwidth_scale · (high − low) · sqrt(d)``
(data-independent). This script sweeps ``bandwidth_scale`` and prints
downstream accuracy on a *validation split of the training records*
(:meth:`mmgen.data.Dataset.validation_split`: 75 % released, 25 % held out),
never on a test split: the value picked on digits is the default, and neither
the digits nor the Fashion-MNIST figures select it by their own test accuracy.

Usage: python benchmarks/tune_bandwidth.py --data digits --epsilon 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mmgen
from mmgen.evaluate import downstream_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--scales", default="0.1,0.25,0.5,1,2")
    ap.add_argument("--n-features", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--out", default="docs/results/tune_bandwidth.json")
    args = ap.parse_args()
    ds = mmgen.data.load(args.data, max_train=args.max_train).validation_split(0.25)
    rows = []
    for scale in [float(s) for s in args.scales.split(",")]:
        fmap = mmgen.features.create("rff", n_features=args.n_features, bandwidth_scale=scale)
        rel = mmgen.release(ds, features=fmap, epsilon=args.epsilon, delta=1e-5)
        trained = mmgen.fit("conv", rel, epochs=args.epochs, progress=False)
        x, y = trained.sample(5000, seed=0)
        acc = downstream_accuracy(x, y, ds.x_test, ds.y_test)
        row = {"data": f"{args.data} (validation split of the training records)", "epsilon": args.epsilon,
               "delta": 1e-5, "neighbouring": "add-remove",
               "bandwidth_scale": scale, "logistic_regression": acc["logistic_regression"], "mlp": acc["mlp"]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else []
    scales = {r["bandwidth_scale"] for r in rows}
    # rows of earlier sweeps scored on a test split are dropped: only validation-split rows are kept
    old = [r for r in old if "validation" in r["data"] and not (r["data"] == rows[0]["data"]
           and r["epsilon"] == args.epsilon and r["bandwidth_scale"] in scales)]  # fmt: skip
    out.write_text(json.dumps(old + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

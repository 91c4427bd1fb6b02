"""How the training defaults were chosen: the loss estimator and batch size, compared on a digits validation split.

For each feature map (``rff``, ``perceptual-first``) a release is made once from
75 % of digits' *training* records at ε = 10, δ = 1e-5 (add/remove); then for
each candidate (biased or unbiased matching loss, batch size) a ``conv``
generator is fitted with the same number of steps, and logistic regression and
an MLP trained on its samples are scored on the other 25 % of the training
records (:meth:`mmgen.data.Dataset.validation_split`). Neither digits' test
split nor Fashion-MNIST is read.

Usage: ``python benchmarks/tune_training.py [--steps 600] [--seeds 2]``.
Writes ``docs/results/tune_training.json`` and prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics as stats
import time
from pathlib import Path

import torch

import mmgen
from mmgen.evaluate import downstream_accuracy
from mmgen.features import statistics

ROOT = Path(__file__).resolve().parents[1]
EPSILON, DELTA = 10.0, 1e-5
MAPS = ("rff", "perceptual-first")
CANDIDATES = [  # (estimator, batch size)
    ("biased", 100), ("unbiased", 100), ("biased", 500), ("unbiased", 500),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=2, help="generator seeds per candidate (mean reported)")
    ap.add_argument("--maps", default=",".join(MAPS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "tune_training.json"))
    args = ap.parse_args()
    val = mmgen.data.load("digits").validation_split(0.25)
    rows = []
    for spec in args.maps.split(","):
        maps = statistics(spec, input_shape=val.input_shape, bounds=(val.low, val.high))
        rel = mmgen.release(val, features=maps, epsilon=EPSILON, delta=DELTA, noise_seed=0)
        for estimator, batch in CANDIDATES:
            accs = {"logistic_regression": [], "mlp": []}
            t0 = time.perf_counter()
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                trained = mmgen.fit("conv", rel, epochs=1, steps_per_epoch=args.steps, batch_size=batch, lr=3e-3,
                                    lr_decay=1.0, seed=seed, unbiased=estimator == "unbiased", progress=False)  # fmt: skip
                x, y = trained.sample(5000, seed=seed)
                acc = downstream_accuracy(x, y, val.x_test, val.y_test, seed=seed)
                for k in accs:
                    accs[k].append(acc[k])
            row = {
                "features": spec, "estimator": estimator, "batch": batch, "steps": args.steps, "seeds": args.seeds,
                "data": "digits, validation split of the training records (per-record hash: "
                        f"{len(val.y_train):,} release / {len(val.y_test):,} held out)",
                "epsilon": EPSILON, "delta": DELTA, "neighbouring": "add-remove",
                **{k: stats.mean(v) for k, v in accs.items()}, "per_seed": accs,
                "seconds": round(time.perf_counter() - t0, 1),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

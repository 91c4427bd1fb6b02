"""How the perceptual feature map's defaults were chosen: candidates compared on digits, validation split only.

Every candidate (layers, grid, image size, moments) is released from 75 % of
digits' *training* records at ε = 10, δ = 1e-5 (add/remove), a ``conv``
generator is fitted, and logistic regression and an MLP trained on its samples
are scored on the other 25 % of the training records
(:meth:`mmgen.data.Dataset.validation_split`). Neither digits' test split nor
Fashion-MNIST is read, so the figures reported for either stay honest.

Usage: ``python benchmarks/tune_perceptual.py [--steps 600] [--only "NAME;..."]``.
Writes ``docs/results/tune_perceptual.json`` and prints one JSON line per candidate.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import mmgen
from mmgen.evaluate import downstream_accuracy
from mmgen.features import statistics

ROOT = Path(__file__).resolve().parents[1]
EPSILON, DELTA = 10.0, 1e-5
BLOCKS_1_4 = ["blocks.1", "blocks.2", "blocks.3", "blocks.4"]

# name -> (statistics spec, options for the perceptual maps)
CANDIDATES = {
    "head, 64 px (pooled 1,280-d)": ("perceptual:1", {"layers": ["head"], "grid": 1, "image_size": 64}),
    "blocks 1-4, grid 4, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4, "grid": 4, "image_size": 32}),
    "blocks 1-4, grid 2, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4, "grid": 2, "image_size": 32}),
    "blocks 1-4, grid 1, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4, "grid": 1, "image_size": 32}),
    "blocks 0-4, grid 4, 32 px": ("perceptual:1", {"layers": ["blocks.0"] + BLOCKS_1_4, "grid": 4, "image_size": 32}),
    "blocks 1-3, grid 4, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4[:3], "grid": 4, "image_size": 32}),
    "blocks 1-4 + head, grid 4, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4 + ["head"], "grid": 4, "image_size": 32}),
    "blocks 1-4, grid 4, 64 px": ("perceptual:1", {"layers": BLOCKS_1_4, "grid": 4, "image_size": 64}),
    "blocks 1-4, grid 4, 32 px, two moments": ("perceptual", {"layers": BLOCKS_1_4, "grid": 4, "image_size": 32}),
    "blocks 1-4, grid 8, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4, "grid": 8, "image_size": 32}),
    "blocks 1-5, grid 4, 32 px": ("perceptual:1", {"layers": BLOCKS_1_4 + ["blocks.5"], "grid": 4, "image_size": 32}),
    "rff alone (reference)": ("rff", {}),
    "rff + blocks 1-4, grid 4, 32 px (first moment)": ("rff,perceptual:1", {"layers": BLOCKS_1_4, "grid": 4, "image_size": 32}),
}


def _maps(spec: str, options: dict, ds):
    """The feature maps of a candidate; ``perceptual:1`` is the first moment alone (one statistic)."""
    maps = []
    for part in spec.split(","):
        if part == "perceptual:1":
            maps.append(mmgen.features.create("perceptual", input_shape=ds.input_shape, bounds=(ds.low, ds.high), **options))
        else:
            opts = {"perceptual": options} if "perceptual" in part else {}
            maps += statistics(part, input_shape=ds.input_shape, bounds=(ds.low, ds.high), options=opts)
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="generator steps per candidate")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--only", default=None, help="candidate names separated by semicolons (default: all)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "tune_perceptual.json"))
    args = ap.parse_args()
    val = mmgen.data.load("digits").validation_split(0.25)
    names = list(CANDIDATES) if args.only is None else [n.strip() for n in args.only.split(";")]
    rows = []
    for name in names:
        spec, options = CANDIDATES[name]
        maps = _maps(spec, options, val)
        t0 = time.perf_counter()
        rel = mmgen.release(val, features=maps, epsilon=EPSILON, delta=DELTA, noise_seed=0)
        t_release = time.perf_counter() - t0
        torch.manual_seed(0)
        t0 = time.perf_counter()
        trained = mmgen.fit("conv", rel, epochs=1, steps_per_epoch=args.steps, batch_size=args.batch, lr=3e-3,
                            lr_decay=1.0, seed=0, progress=False)  # fmt: skip
        t_fit = time.perf_counter() - t0
        x, y = trained.sample(5000, seed=0)
        acc = downstream_accuracy(x, y, val.x_test, val.y_test, seed=0)
        row = {
            "candidate": name, "spec": spec, "options": options, "dims": [s.sums.shape[1] for s in rel.statistics],
            "data": "digits, validation split of the training records (per-record hash: "
                    f"{len(val.y_train):,} release / {len(val.y_test):,} held out)",
            "epsilon": EPSILON, "delta": DELTA, "neighbouring": "add-remove", "steps": args.steps, "batch": args.batch,
            "logistic_regression": acc["logistic_regression"], "mlp": acc["mlp"],
            "seconds": {"release": round(t_release, 1), "fit": round(t_fit, 1)}, "final_loss": trained.losses[-1],
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    old = [r for r in old if r["candidate"] not in names]
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": old + rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How `mmgen evolve`'s defaults were chosen: Private Evolution's settings on validation splits of training records.

For each data set (digits, Fashion-MNIST) 75 % of the *training* records are
the private data and the other 25 % are scored against
(:meth:`mmgen.data.Dataset.validation_split`); no test split is read. A
``rff`` release at the release share (half of μ²) of the total ε is made once
(seeded noise), a ``conv`` generator is fitted to it with the CLI's default
fit, and each candidate PE setting runs at the total ε (δ = 1e-5,
add/remove). Score: logistic-regression accuracy (and, on Fashion-MNIST, the
CNN's) of 5,000 evolved samples on the held-out records, beside the same
generator's samples without PE as the reference.

* digits: the vote embedding (``pixels``, ``release``, ``efficientnet``);
* Fashion-MNIST: rounds T, population, final variation strength, k.

Usage: ``python benchmarks/tune_evolve.py [--data digits,fashion-mnist] [--epsilon 1]``.
Writes ``docs/results/tune_evolve.json`` and prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import mmgen
from mmgen.evaluate import evaluate
from mmgen.evolve import EvolveConfig, evolve, plan
from mmgen.generators import for_release

ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5
SHARE = 0.5
GRIDS = {
    "digits": [{"embedding": e, "rounds": 3, "population": 500} for e in ("pixels", "release", "efficientnet")],
    "fashion-mnist": [
        {"rounds": t, "population": p, "strength_end": s, "k": k}
        for t, p, s, k in [(1, 2000, 0.2, 1), (3, 2000, 0.2, 1), (5, 2000, 0.2, 1), (10, 2000, 0.2, 1),
                           (5, 1000, 0.2, 1), (5, 5000, 0.2, 1), (5, 2000, 0.4, 1), (5, 2000, 0.1, 1),
                           (5, 2000, 0.2, 3)]
    ],
}  # fmt: skip


def _scores(report: dict) -> dict:
    return {k: report[k] for k in ("logistic_regression", "cnn") if k in report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits,fashion-mnist")
    ap.add_argument("--epsilon", type=float, default=1.0, help="total epsilon (release + PE)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "tune_evolve.json"))
    args = ap.parse_args()
    rows = []
    for name in args.data.split(","):
        val = mmgen.data.load(name).validation_split(0.25)
        p = plan(args.epsilon, DELTA, 5, SHARE)
        rel = mmgen.release(val, features="rff", epsilon=p["release_epsilon"], delta=DELTA, noise_seed=0)
        torch.manual_seed(0)
        trained = mmgen.fit(for_release(rel, "conv", width=32), rel, epochs=6, steps_per_epoch=100,
                            batch_size=200, progress=False)  # fmt: skip
        x, y = trained.sample(5000, seed=0)
        metrics = ("lr",) if name == "digits" else ("lr", "cnn")
        ref = _scores(evaluate(x, y, val, metrics=metrics, seed=0))
        base = {"data": f"{name}, validation split of the training records", "epsilon": args.epsilon, "delta": DELTA,
                "neighbouring": "add-remove", "release_epsilon": p["release_epsilon"]}  # fmt: skip
        rows.append({**base, "setting": "release share only, no PE", **ref})
        print(json.dumps(rows[-1]), flush=True)
        for setting in GRIDS[name]:
            t0 = time.perf_counter()
            cfg = EvolveConfig(samples=5000, **setting)
            ev = evolve(trained, val, epsilon=args.epsilon, delta=DELTA, config=cfg, noise_seed=1)
            acc = _scores(evaluate(ev.x, ev.y, val, metrics=metrics, seed=0))
            rows.append({**base, "setting": setting, **acc, "seconds": round(time.perf_counter() - t0, 1),
                         "noise_multiplier": ev.privacy["stages"][-1]["noise_multiplier"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How `mmgen vae`'s defaults were chosen: DP-SGD settings on a validation split of training records.

Fashion-MNIST's *training* records are split 75 / 25 %
(:meth:`mmgen.data.Dataset.validation_split`): the VAE is trained on the 75 %
(about 45,000 records) and its samples are scored by logistic regression against the
held-out 25 %; no test split is read. Total ε = 1, δ = 1e-5, add/remove-one,
seeded noise (seed 0), one run per setting, each a change from the base.

* from scratch: sampling rate and epochs, learning rate, posterior std,
  tighter Lipschitz constants, the unconstrained network;
* warm start (``rff`` release at half of μ², ``conv`` generator with
  ``mmgen fit``'s defaults): the pre-trained VAE alone, and DP-SGD's learning
  rate and length after it.

Usage: ``python benchmarks/tune_vae.py [--only scratch|warm]``.
Writes ``docs/results/tune_vae.json`` (after every run) and prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import mmgen
from mmgen.data.base import iter_batches
from mmgen.evaluate import evaluate
from mmgen.evolve import plan
from mmgen.features import statistics
from mmgen.generators import for_release
from mmgen.release import DEFAULT_COUNT_WEIGHT, accumulate, finalize
from mmgen.vae import TrainedVAE, VAEConfig, train_vae
from mmgen.vae.train import _pretrain

ROOT = Path(__file__).resolve().parents[1]
DELTA, EPSILON = 1e-5, 1.0
SCRATCH = [
    {},
    {"sampling_rate": 0.1, "epochs": 20.0},
    {"epochs": 20.0},
    {"lr": 3e-3},
    {"posterior_std": 1.0},
    {"encoder_lipschitz": 1.0, "decoder_lipschitz": 8.0},
    {"lipschitz": False},
]
WARM_SHARE = 0.5
WARM = [{}, {"lr": 1e-4}, {"lr": 3e-4}, {"lr": 1e-4, "epochs": 5.0}]  # DP-SGD after the warm start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["scratch", "warm"], default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "tune_vae.json"))
    args = ap.parse_args()
    val = mmgen.data.load("fashion-mnist").validation_split(0.25)
    rows: list[dict] = []
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "data": val.name,
            "epsilon": EPSILON, "delta": DELTA, "neighbouring": "add-remove", "base": VAEConfig().to_dict()}  # fmt: skip

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    def score(model) -> float:
        x, y = model.sample(10000, seed=0)
        return evaluate(x, y, val, metrics=("lr",), seed=0)["logistic_regression"]

    if args.only in (None, "scratch"):
        for change in SCRATCH:
            t = time.perf_counter()
            vae = train_vae(val, epsilon=EPSILON, delta=DELTA, noise_seed=0, config=VAEConfig(**change))
            record({"mode": "scratch", "change": change, "lr_accuracy": score(vae),
                    "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
    if args.only in (None, "warm"):
        maps = statistics("rff", input_shape=val.input_shape, bounds=(val.low, val.high))
        sums, counts = accumulate(iter_batches(val.x_train, val.y_train, 2000), maps, val.n_classes, val.input_shape,
                                  (val.low, val.high))  # fmt: skip
        t = time.perf_counter()
        rel_eps = plan(EPSILON, DELTA, 1, WARM_SHARE)["release_epsilon"]
        rel = finalize(sums, counts, maps, epsilon=rel_eps, delta=DELTA, neighbouring="add-remove",
                       budget_split=[1.0], count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=1000, schema=val.schema())  # fmt: skip
        torch.manual_seed(0)
        trained = mmgen.fit(for_release(rel, "conv", width=32), rel, epochs=6, steps_per_epoch=100, batch_size=200,
                            seed=0, progress=False)  # fmt: skip
        x, y = trained.sample(10000, seed=0)
        generator_lr = evaluate(x, y, val, metrics=("lr",), seed=0)["logistic_regression"]
        fit_s = time.perf_counter() - t
        cfg = VAEConfig()  # the warm start alone: the VAE pre-trained on the generator's samples, no DP-SGD
        torch.manual_seed(0)
        model = cfg.build(math.prod(val.input_shape), val.n_classes)
        public = {"name": val.name, "input_shape": list(val.input_shape), "n_classes": val.n_classes,
                  "low": val.low, "high": val.high}  # fmt: skip
        _pretrain(model, trained, cfg, public, False)
        pre = TrainedVAE(model.eval(), cfg, public, {}, trained.class_proportions.double(), cfg.steps)
        record({"mode": "warm", "release_share": WARM_SHARE, "change": "pretrain only", "generator_lr_accuracy": generator_lr,
                "lr_accuracy": score(pre)})  # fmt: skip
        for change in WARM:
            t = time.perf_counter()
            vae = train_vae(val, epsilon=EPSILON, delta=DELTA, noise_seed=0, warm_start=trained, config=VAEConfig(**change))
            record({"mode": "warm", "release_share": WARM_SHARE, "change": change, "generator_lr_accuracy": generator_lr,
                    "lr_accuracy": score(vae), "seconds": round(time.perf_counter() - t + fit_s, 1)})  # fmt: skip


if __name__ == "__main__":
    main()

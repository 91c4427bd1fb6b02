"""The Lipschitz VAE with DP-SGD against moment matching, on Fashion-MNIST and digits.

One total budget per row, ε ∈ {1, 10}, δ = 1e-5, **add/remove-one**
neighbouring relation, all training records private, scored on the real test
split with the project's evaluator (CNN accuracy, the CNN selected on synthetic
data only; logistic regression; on Fashion-MNIST FD-EfficientNetLite0 on 2,000
records per side). 10,000 samples per row (digits: 2,000).

* (a) ``LVAE``: the Lipschitz VAE trained with DP-SGD from scratch at the total
  ε (``mmgen vae``'s defaults, chosen on a validation split by
  ``benchmarks/tune_vae.py``).
* (b) ``VAE, no Lipschitz``: the same without the constraint.
* (c) ``LVAE, warm start``: an ``rff`` release at half of μ² of the total, a
  ``conv`` generator fitted to it (``mmgen fit``'s defaults), the VAE
  pre-trained on its samples, then DP-SGD with what is left of the total
  (learning rate 1e-4, chosen on the validation split).
* (d) ``release``: moment matching alone, an ``rff`` release at the total ε and
  the same fit.
* Per-record mode (replace-one, seed 0): a model trained with DP-SGD at ε = 10,
  then the seed's mechanism at per-record ε ∈ {1, 10, 100}; its encoder constant
  is set so that the posterior std is 0.5 at that ε. The model's own prior
  samples are the reference.

Seeds drive the release noise, DP-SGD's sampling and noise (seeded: these
outputs are marked unfit for publication), the initial weights, the samples and
the classifiers. No hyper-parameter was chosen on a test split.

Usage: ``python benchmarks/vae.py [--quick] [--data fashion-mnist,digits] [--seeds 3] [--epsilons 1,10]
[--per-record 1,10,100]``. Writes ``docs/results/vae.json`` (after every row) and the results block of
``docs/vae.md``; ``--quick`` writes ``out/vae-quick.json`` only.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics as stats
import sys
import time
from pathlib import Path

import torch

import mmgen
from mmgen.data.base import iter_batches
from mmgen.evaluate import evaluate
from mmgen.evolve import plan
from mmgen.features import statistics
from mmgen.generators import for_release
from mmgen.privacy import noise_multiplier_for
from mmgen.release import DEFAULT_COUNT_WEIGHT, accumulate, finalize
from mmgen.vae import VAEConfig, domain_diameter, per_record_samples, per_record_sensitivity, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_block import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5
FIT = {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200, "width": 32}  # mmgen fit's CLI defaults
SHARE = 0.5
WARM_LR = 1e-4  # DP-SGD's learning rate after a warm start: 0.529 against 0.511 at 1e-3 on the validation split (tune_vae.py)
PER_RECORD_TRAIN_EPSILON = 10.0
INTRO = """# The Lipschitz VAE with DP-SGD — `benchmarks/vae.py`

"""


def _fit(rel, seed: int):
    torch.manual_seed(seed)
    gen = for_release(rel, "conv", width=FIT["width"])
    return mmgen.fit(gen, rel, epochs=FIT["epochs"], steps_per_epoch=FIT["steps_per_epoch"],
                     batch_size=FIT["batch_size"], seed=seed, progress=False)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run on 6,000 records, one seed, epsilon 1")
    ap.add_argument("--data", default="fashion-mnist,digits")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epsilons", default="1,10")
    ap.add_argument("--per-record", default="1,10,100", help="per-record epsilons ('' to skip)")
    ap.add_argument("--out", default=None, help="JSON to write (default docs/results/vae.json)")
    ap.add_argument("--table-from", default=None, metavar="JSON,...", help="write the results block from these JSON files and stop")
    args = ap.parse_args()
    if args.table_from:
        parts = [json.loads(Path(f).read_text()) for f in args.table_from.split(",")]
        res = {"meta": parts[0]["meta"], "rows": [r for p in parts for r in p["rows"]]}
        write_results(res, table(res["rows"], res["meta"]), ROOT / "docs" / "results" / "vae.json",
                      ROOT / "docs" / "vae.md", INTRO)  # fmt: skip
        return
    out_json = Path(args.out) if args.out else ROOT / ("out/vae-quick.json" if args.quick else "docs/results/vae.json")
    rows: list[dict] = []
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
            "delta": DELTA, "neighbouring": "add-remove (per-record rows: replace-one)", "vae": VAEConfig().to_dict(),
            "fit": FIT, "release_share": SHARE, "warm_start_lr": WARM_LR, "features": "rff (10,000 features)"}  # fmt: skip

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    for name in args.data.split(","):
        ds = mmgen.data.load(name, **({"max_train": 6000, "max_test": 2000} if args.quick else {}))
        n_samples = 2000 if name == "digits" else 10000
        metrics = ("lr", "cnn") if name == "digits" else ("lr", "cnn", "fd")
        cache: dict = {}

        def score(x, y, seed):
            r = evaluate(x, y, ds, metrics=metrics, cache=cache, seed=seed)
            return {"cnn": r["cnn"], "lr": r["logistic_regression"], "fd": r.get("FD-EfficientNetLite0")}

        maps = statistics("rff", input_shape=ds.input_shape, bounds=(ds.low, ds.high))
        sums, counts = accumulate(iter_batches(ds.x_train, ds.y_train, 2000), maps, ds.n_classes, ds.input_shape,
                                  (ds.low, ds.high))  # fmt: skip

        def release(eps: float, seed: int):
            return finalize(sums, counts, maps, epsilon=eps, delta=DELTA, neighbouring="add-remove", budget_split=[1.0],
                            count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=1000 + seed, schema=ds.schema())  # fmt: skip

        base = {"data": name, "n_private": len(ds.y_train)}
        for eps in [float(e) for e in args.epsilons.split(",") if e][: 1 if args.quick else None]:
            for seed in range(1 if args.quick else args.seeds):
                t = time.perf_counter()  # (d) moment matching alone
                trained = _fit(release(eps, seed), seed)
                x, y = trained.sample(n_samples, seed=seed)
                record({**base, "method": "release", "epsilon": eps, "seed": seed, **score(x, y, seed),
                        "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
                for method, change in (("LVAE", {}), ("VAE, no Lipschitz", {"lipschitz": False})):  # (a), (b)
                    t = time.perf_counter()
                    vae = train_vae(ds, epsilon=eps, delta=DELTA, noise_seed=100 + seed, config=VAEConfig(seed=seed, **change))
                    x, y = vae.sample(n_samples, seed=seed)
                    assert vae.epsilon <= eps * (1 + 1e-6), vae.privacy
                    record({**base, "method": method, "epsilon": eps, "seed": seed, **score(x, y, seed),
                            "noise_multiplier": vae.privacy["stages"][-1]["noise_multiplier"],
                            "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
                t = time.perf_counter()  # (c) warm start from a release at half of mu^2
                rel_eps = plan(eps, DELTA, 1, SHARE)["release_epsilon"]
                trained = _fit(release(rel_eps, seed), seed)
                fit_s = time.perf_counter() - t
                vae = train_vae(ds, epsilon=eps, delta=DELTA, noise_seed=100 + seed, warm_start=trained,
                                config=VAEConfig(seed=seed, lr=WARM_LR))  # fmt: skip
                assert vae.epsilon <= eps * (1 + 1e-6), vae.privacy
                x, y = vae.sample(n_samples, seed=seed)
                record({**base, "method": "LVAE, warm start", "epsilon": eps, "seed": seed, "release_epsilon": rel_eps,
                        **score(x, y, seed), "noise_multiplier": vae.privacy["stages"][-1]["noise_multiplier"],
                        "seconds": round(time.perf_counter() - t, 1), "fit_seconds": round(fit_s, 1)})  # fmt: skip
        for eps_rec in [float(e) for e in args.per_record.split(",") if e][: 1 if args.quick else None]:
            t = time.perf_counter()
            d = math.prod(ds.input_shape)
            lip = 0.5 / (noise_multiplier_for(eps_rec, DELTA) * per_record_sensitivity(1.0, d))  # posterior std 0.5
            cfg = VAEConfig(encoder_lipschitz=lip, posterior_std=0.5)
            vae = train_vae(ds, epsilon=PER_RECORD_TRAIN_EPSILON, delta=DELTA, neighbouring="replace-one",
                            noise_seed=300, config=cfg)  # fmt: skip
            out = per_record_samples(vae, ds, epsilon=eps_rec, noise_seed=400)
            x, y = vae.sample(n_samples, seed=0)
            prior = score(x, y, 0)
            record({**base, "method": "per-record", "per_record_epsilon": eps_rec,
                    "training_epsilon": PER_RECORD_TRAIN_EPSILON, "epsilon": out["privacy"]["epsilon"], "seed": 0,
                    "encoder_lipschitz": lip, "domain_diameter": domain_diameter(d), **score(out["x"], out["y"], 0),
                    "prior": prior, "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
    if not args.quick and not args.out:
        write_results({"meta": meta, "rows": rows}, table(rows, meta), out_json, ROOT / "docs" / "vae.md", INTRO)


def _ms(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(stats.mean(values), fmt)} ± {format(stats.stdev(values), fmt)}"


ORDER = ["release", "LVAE", "VAE, no Lipschitz", "LVAE, warm start"]


def table(rows: list[dict], meta: dict) -> str:
    """The Markdown tables of the results block."""
    lines = [f"δ = {DELTA:g}, add/remove; {meta['machine']}; mean ± std over seeds. CNN and LR: accuracy on the real "
             "test split; FD: FD-EfficientNetLite0 (lower is better; Fashion-MNIST only). Seconds: the whole method "
             "on 2 CPU threads (release fit, VAE training, sampling; not the scoring).", "",
             "| data | method | total ε | CNN | LR | FD | seconds | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    groups: dict = {}
    for r in rows:
        if r["method"] in ORDER:
            groups.setdefault((r["data"], r["epsilon"], r["method"]), []).append(r)
    for (data, eps, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "fashion-mnist", kv[0][0],
                                                                           kv[0][1], ORDER.index(kv[0][2]))):  # fmt: skip
        lines.append(f"| {data} | {method} | {eps:g} | {_ms([r['cnn'] for r in rs], '.3f')} | "
                     f"{_ms([r['lr'] for r in rs], '.3f')} | {_ms([r['fd'] for r in rs], '.0f')} | "
                     f"{_ms([r['seconds'] for r in rs], '.0f')} | {len(rs)} |")  # fmt: skip
    per = [r for r in rows if r["method"] == "per-record"]
    if per:
        lines += ["", f"The seed's per-record mode (replace-one, N public; seed 0): a model trained with DP-SGD at "
                  f"ε = {PER_RECORD_TRAIN_EPSILON:g}, then one output per private record at the per-record ε; "
                  "'total ε' composes both. 'prior' scores the same model's samples from the prior.", "",
                  "| data | per-record ε | total ε | encoder L | CNN | LR | FD | prior CNN | prior LR | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in per:
            fd = "-" if r["fd"] is None else f"{r['fd']:.0f}"
            lines.append(f"| {r['data']} | {r['per_record_epsilon']:g} | {r['epsilon']:.3g} | {r['encoder_lipschitz']:.3g} | "
                         f"{r['cnn']:.3f} | {r['lr']:.3f} | {fd} | {r['prior']['cnn']:.3f} | {r['prior']['lr']:.3f} | "
                         f"{r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Private Evolution on Fashion-MNIST: the release alone, release + PE at several splits, PE alone.

One total budget per row, ε ∈ {1, 10}, δ = 1e-5, **add/remove-one**
neighbouring relation, all 60,000 training records private, scored on the real
10,000-record test split with the project's evaluator (CNN accuracy, the CNN
selected on synthetic data only; FD-EfficientNetLite0 on 2,000 records per
side; logistic regression).

* (a) ``release``: an ``rff`` release at the total ε, a ``conv`` generator
  fitted with ``mmgen fit``'s defaults, 10,000 samples.
* (b) ``release+PE``: an ``rff`` release at a share of μ² (``plan``), the same
  fit, then ``evolve`` at the total ε with the library's default settings
  (chosen on validation splits by ``benchmarks/tune_evolve.py``).
* (c) ``PE alone``: an *untrained* ``conv`` generator (public: random weights)
  as the API and the whole budget for PE — the control that shows what the
  release's generator brings.
* T-curve: release+PE at share 0.5, ε = 1, seed 0, for several T.
* Long fit: the release-only path (ε = 1, seed 0) fitted longer, scored along
  the way: does the generator's training budget or the objective limit it?

Seeds drive the release noise and the PE histogram noise (seeded, so these
figures are reproducible; such outputs are marked unfit for publication), the
generator's initialisation, the latents and the classifiers. The exact sums are
accumulated once and noised per row. No hyper-parameter was chosen on this
test split.

Usage: ``python benchmarks/evolve.py [--quick] [--seeds 3] [--epsilons 1,10] [--long-fit 600,2400]``.
Writes ``docs/results/evolve.json`` (after every row) and the results block of ``docs/evolve.md``;
``--quick`` writes ``out/evolve-quick.json`` only.
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
from mmgen.evaluate import evaluate
from mmgen.evolve import EvolveConfig, GeneratorAPI, evolve, plan
from mmgen.features import statistics
from mmgen.generators import for_release
from mmgen.data.base import iter_batches
from mmgen.release import DEFAULT_COUNT_WEIGHT, accumulate, finalize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_block import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5
NEIGHBOURING = "add-remove"
FIT = {"epochs": 6, "steps_per_epoch": 100, "batch_size": 200}  # mmgen fit's CLI defaults
WIDTH = 32
METRICS = ("lr", "cnn", "fd")
INTRO = """# Private Evolution on top of a release — `benchmarks/evolve.py`

"""


def _fit(rel, seed: int, epochs: int = FIT["epochs"], width: int = WIDTH, lr_decay: float = 0.9, resume=None):
    torch.manual_seed(seed)
    gen = for_release(rel, "conv", width=width)
    return mmgen.fit(gen, rel, epochs=epochs, steps_per_epoch=FIT["steps_per_epoch"], batch_size=FIT["batch_size"],
                     seed=seed, lr_decay=lr_decay, progress=False, resume=resume)  # fmt: skip


def _score(x, y, ds, cache, seed):
    r = evaluate(x, y, ds, metrics=METRICS, cache=cache, seed=seed)
    return {"cnn": r["cnn"], "lr": r["logistic_regression"], "fd": r["FD-EfficientNetLite0"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run on 6,000 records")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epsilons", default="1,10")
    ap.add_argument("--shares", default="0.25,0.5,0.75", help="release shares of mu^2 at epsilon 1 (0.5 elsewhere)")
    ap.add_argument("--rounds-curve", default="1,3,10", help="extra T for the T-curve (the default T is in the table)")
    ap.add_argument("--long-fit", default="600,2400", help="release-only fit lengths in steps ('' to skip)")
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--out", default=None, help="JSON to write (default docs/results/evolve.json)")
    ap.add_argument("--table-from", default=None, metavar="JSON,...", help=(
        "write docs/evolve.md's results block and docs/results/evolve.json from these JSON files (rows merged; "
        "e.g. a main run and a --seeds 0 --long-fit run made side by side) and stop"))  # fmt: skip
    args = ap.parse_args()
    if args.table_from:
        parts = [json.loads(Path(f).read_text()) for f in args.table_from.split(",")]
        res = {"meta": parts[0]["meta"], "rows": [r for p in parts for r in p["rows"]]}
        write_results(res, table(res["rows"], res["meta"]), ROOT / "docs" / "results" / "evolve.json",
                      ROOT / "docs" / "evolve.md", INTRO)  # fmt: skip
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = mmgen.data.load("fashion-mnist", **({"max_train": 6000, "max_test": 2000} if args.quick else {}))
    out_json = Path(args.out) if args.out else ROOT / ("out/evolve-quick.json" if args.quick else "docs/results/evolve.json")
    base_cfg = EvolveConfig(samples=args.samples)
    maps = statistics("rff", input_shape=ds.input_shape, bounds=(ds.low, ds.high))
    t0 = time.perf_counter()
    sums, counts = accumulate(iter_batches(ds.x_train, ds.y_train, 2000), maps, ds.n_classes, ds.input_shape,
                              (ds.low, ds.high))  # fmt: skip
    sums_seconds = time.perf_counter() - t0
    cache: dict = {}
    rows: list[dict] = []
    nn = [] if args.quick or args.seeds == 0 else nn_timing(ds)
    meta = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "torch": torch.__version__,
            "data": f"fashion-mnist, {len(ds.y_train)} private training records, {len(ds.y_test)} test records",
            "delta": DELTA, "neighbouring": NEIGHBOURING, "features": "rff (10,000 features)", "fit": {**FIT, "width": WIDTH},
            "evolve": base_cfg.to_dict(), "exact_sums_seconds": round(sums_seconds, 1), "nearest_neighbours": nn}  # fmt: skip

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")

    def release(eps: float, seed: int):
        return finalize(sums, counts, maps, epsilon=eps, delta=DELTA, neighbouring=NEIGHBOURING, budget_split=[1.0],
                        count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=1000 + seed, schema=ds.schema())  # fmt: skip

    epsilons = [float(e) for e in args.epsilons.split(",")]
    for eps in epsilons:
        shares = [float(s) for s in args.shares.split(",")] if eps == 1.0 else [0.5]
        for seed in range(args.seeds):
            t = time.perf_counter()  # (a) the release alone at the total budget
            trained = _fit(release(eps, seed), seed)
            x, y = trained.sample(args.samples, seed=seed)
            fit_s = time.perf_counter() - t
            record({"method": "release", "epsilon": eps, "seed": seed, **_score(x, y, ds, cache, seed),
                    "seconds": round(fit_s, 1)})  # fmt: skip
            for share in shares:  # (b) release at a share of mu^2, then PE with the rest
                t = time.perf_counter()
                p = plan(eps, DELTA, base_cfg.rounds, share)
                trained = _fit(release(p["release_epsilon"], seed), seed)
                fit_s = time.perf_counter() - t
                t = time.perf_counter()
                ev = evolve(trained, ds, epsilon=eps, delta=DELTA, config=base_cfg, noise_seed=2000 + seed)
                pe_s = time.perf_counter() - t
                assert abs(ev.epsilon - eps) < 1e-6 * eps, ev.privacy
                record({"method": "release+PE", "share": share, "epsilon": eps, "seed": seed,
                        "release_epsilon": p["release_epsilon"], "rounds": base_cfg.rounds,
                        "pe_noise_multiplier": ev.privacy["stages"][-1]["noise_multiplier"],
                        **_score(ev.x, ev.y, ds, cache, seed), "seconds": round(fit_s + pe_s, 1),
                        "pe_seconds": round(pe_s, 1)})  # fmt: skip
                if eps == 1.0 and share == 0.5 and seed == 0:  # accuracy against T, same release and generator
                    for rounds in (int(r) for r in args.rounds_curve.split(",") if r):
                        t = time.perf_counter()
                        cfg = EvolveConfig(**{**base_cfg.to_dict(), "rounds": rounds})
                        ev = evolve(trained, ds, epsilon=eps, delta=DELTA, config=cfg, noise_seed=3000 + rounds)
                        record({"method": "release+PE (T-curve)", "share": share, "epsilon": eps, "seed": seed,
                                "rounds": rounds, "pe_noise_multiplier": ev.privacy["stages"][-1]["noise_multiplier"],
                                **_score(ev.x, ev.y, ds, cache, seed),
                                "pe_seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
            t = time.perf_counter()  # (c) PE alone from an untrained (public) generator
            torch.manual_seed(seed)
            untrained = for_release(release(eps, seed), "conv", width=WIDTH)  # architecture only: shape, classes
            api = GeneratorAPI(untrained, seed=seed)
            ev = evolve(api, ds, epsilon=eps, delta=DELTA, config=base_cfg, class_proportions=torch.ones(10),
                        noise_seed=4000 + seed)  # fmt: skip
            record({"method": "PE alone (untrained generator)", "epsilon": eps, "seed": seed,
                    "pe_noise_multiplier": ev.privacy["stages"][-1]["noise_multiplier"],
                    **_score(ev.x, ev.y, ds, cache, seed), "seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
    if args.long_fit and 1.0 in epsilons:  # the release-only path, fitted longer
        rel = release(1.0, 0)
        ckpt = ROOT / "out" / "evolve-long-fit.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        done, t = 0, time.perf_counter()
        for steps in (int(s) for s in args.long_fit.split(",")):
            epochs = steps // FIT["steps_per_epoch"]
            trained = _fit(rel, 0, epochs=epochs, width=64, lr_decay=0.98, resume=ckpt if done else None)
            trained.save(ckpt)
            done = steps
            x, y = trained.sample(args.samples, seed=0)
            record({"method": "release, long fit (width 64, lr decay 0.98/epoch)", "epsilon": 1.0, "seed": 0,
                    "steps": steps, **_score(x, y, ds, cache, 0), "fit_seconds": round(time.perf_counter() - t, 1)})  # fmt: skip
    if not args.quick and not args.out:
        write_results({"meta": meta, "rows": rows}, table(rows, meta), out_json, ROOT / "docs" / "evolve.md", INTRO)


def nn_timing(ds, sizes=(1000, 10000)) -> list[dict]:
    """Nearest neighbours of all private records among n candidates: PE's exact search against float ones.

    PE's search (integer codes, float64 products: exact and independent of the batching) beside chunked
    float32 ``torch.cdist`` and faiss's ``IndexFlatL2`` (if installed: the dev extra), which may pick other
    neighbours at near-ties depending on the batching and so cannot carry the vote's sensitivity argument.
    """
    from mmgen.evolve import make_embedding, nearest

    embed = make_embedding("pixels", low=ds.low, high=ds.high)
    q = ds.x_train.reshape(len(ds.x_train), -1).float()
    qc = embed.codes(ds.x_train)
    out = []
    for n in sizes:
        keys = torch.rand(n, q.shape[1], generator=torch.Generator().manual_seed(n))
        row = {"queries": len(q), "candidates": n, "dim": q.shape[1]}
        t = time.perf_counter()
        exact = nearest(qc, embed.codes(keys), 1)[:, 0]
        row["exact_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        found = torch.cat([torch.cdist(q[i : i + 4096], keys).argmin(dim=1) for i in range(0, len(q), 4096)])
        row["cdist_seconds"] = round(time.perf_counter() - t, 2)
        row["cdist_agreement"] = float((found == exact).float().mean())
        try:
            import faiss

            t = time.perf_counter()
            index = faiss.IndexFlatL2(q.shape[1])
            index.add(keys.numpy())
            found = torch.from_numpy(index.search(q.numpy(), 1)[1][:, 0]).long()
            row["faiss_seconds"] = round(time.perf_counter() - t, 2)
            row["faiss_agreement"] = float((found == exact).float().mean())
        except ImportError:
            pass
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _ms(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(stats.mean(values), fmt)} ± {format(stats.stdev(values), fmt)}"


def table(rows: list[dict], meta: dict) -> str:
    """The Markdown tables of the results block."""
    lines = [f"Fashion-MNIST, δ = {DELTA:g}, add/remove; {meta['data']}; {meta['machine']}. "
             "Mean ± std over seeds. CNN and LR: accuracy on the real test split; FD: FD-EfficientNetLite0 "
             "(lower is better).", "",
             "| method | total ε | release share of μ² | T | CNN | LR | FD | fit s | PE s | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    def fit_s(rs):
        if rs[0]["method"].startswith("PE alone"):
            return "-"
        return _ms([r["seconds"] - r.get("pe_seconds", 0.0) for r in rs], ".0f")

    def pe_s(rs):
        if rs[0]["method"] == "release":
            return "-"
        return _ms([r.get("pe_seconds", r["seconds"]) for r in rs], ".0f")

    groups: dict = {}
    for r in rows:
        if r["method"] in ("release", "release+PE", "PE alone (untrained generator)"):
            groups.setdefault((r["epsilon"], r["method"], r.get("share")), []).append(r)
    for (eps, method, share), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or 0)):
        share_s = "1 (all)" if method == "release" else ("0 (none)" if share is None else f"{share:g}")
        rounds = "-" if method == "release" else str(rs[0].get("rounds", meta["evolve"]["rounds"]))
        lines.append(f"| {method} | {eps:g} | {share_s} | {rounds} | {_ms([r['cnn'] for r in rs], '.3f')} | "
                     f"{_ms([r['lr'] for r in rs], '.3f')} | {_ms([r['fd'] for r in rs], '.0f')} | "
                     f"{fit_s(rs)} | {pe_s(rs)} | {len(rs)} |")  # fmt: skip
    curve = [r for r in rows if r["method"].endswith("(T-curve)")]
    curve += [r for r in rows if curve and r["method"] == "release+PE" and r["epsilon"] == 1.0
              and r.get("share") == 0.5 and r["seed"] == 0]  # the default T, same release and generator
    if curve:
        lines += ["", "Accuracy against the number of rounds T (total ε = 1, release share 0.5, seed 0; "
                  "the same release and generator; σ grows with T to keep the total):", "",
                  "| T | PE noise multiplier | CNN | LR | FD | PE s |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in sorted(curve, key=lambda r: r["rounds"]):
            lines.append(f"| {r['rounds']} | {r['pe_noise_multiplier']:.3g} | {r['cnn']:.3f} | {r['lr']:.3f} | "
                         f"{r['fd']:.0f} | {r['pe_seconds']:.0f} |")  # fmt: skip
    if meta.get("nearest_neighbours"):
        lines += ["", "Nearest-neighbour search, all private records against n random candidates (784-d): PE's "
                  "exact integer search against float32 searches, and how often they pick the same neighbour:", "",
                  "| queries | candidates | exact (PE) s | torch.cdist s (same) | faiss s (same) |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in meta["nearest_neighbours"]:
            faiss_s = f"{r['faiss_seconds']:.2f} ({r['faiss_agreement']:.5f})" if "faiss_seconds" in r else "not installed"
            lines.append(f"| {r['queries']} | {r['candidates']} | {r['exact_seconds']:.2f} | {r['cdist_seconds']:.2f} "
                         f"({r['cdist_agreement']:.5f}) | {faiss_s} |")  # fmt: skip
    long = [r for r in rows if r["method"].startswith("release, long fit")]
    if long:
        lines += ["", "The release-only path fitted longer (ε = 1, seed 0, conv width 64):", "",
                  "| steps | CNN | LR | FD | fit s (cumulative) |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in long:
            lines.append(f"| {r['steps']} | {r['cnn']:.3f} | {r['lr']:.3f} | {r['fd']:.0f} | {r['fit_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

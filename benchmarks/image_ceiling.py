"""Where image quality is lost: the noise-free ceiling of each statistic, generator and fit length (issue 23).

For Fashion-MNIST, on a **validation split of the training records** (``Dataset.validation_split``,
one sixth held out by a per-record hash; the real test split is never read), for each statistic
spec (``--specs``: a feature map or bundle, or a comma list of them joined by ``+``), each
generator (``--generators``: ``conv``, ``resnet``) and each fit length (``--lengths``: multiples of
``mmgen fit``'s defaults, 6 epochs × 100 steps of 200 records):

* the exact class sums are accumulated once per spec on the other five sixths;
* releases are noised (δ = 1e-5, add/remove) at each ε of ``--epsilons``; ``ceiling`` is a
  release at ε = 1e7 (noise std per coordinate ~2e-4 in units of one record's row, divided by
  thousands of records per class: noise-free to six digits; **not a zero-noise release**);
  every release here carries seeded test noise and is unfit for publication;
* a generator is fitted (``mmgen.fit``, Adam at the CLI's learning rate), ``--n-syn`` records are
  sampled, and logistic regression and a CNN trained on them are scored on the held-out
  training records (``mmgen.evaluate.evaluate``).

Reading: a low ceiling means the statistic cannot say more; a ceiling the fit does not reach at
ε = 10 means the generator or the optimisation. Writes ``docs/results/image_ceiling.json``, a
plot beside it and its section of ``docs/benchmarks.md`` (``--quick``: ``out/`` only).

Usage::

    python benchmarks/image_ceiling.py --quick                     # smoke test, a few minutes on 2 cores
    python benchmarks/image_ceiling.py --specs rff --generators conv --lengths 1,4   # a CPU slice
    python benchmarks/image_ceiling.py --device cuda               # the whole grid on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmgen  # noqa: E402
from mmgen.cli.common import FIT_DEFAULTS  # noqa: E402
from mmgen.data.base import iter_batches  # noqa: E402
from mmgen.evaluate import evaluate  # noqa: E402
from mmgen.features import default_budget_split, statistics  # noqa: E402
from mmgen.release import DEFAULT_COUNT_WEIGHT, accumulate, finalize  # noqa: E402

DELTA = 1e-5
NEIGHBOURING = "add-remove"
CEILING_EPSILON = 1e7
HEADING = "## Where image quality is lost: noise-free ceilings — `benchmarks/image_ceiling.py`"
SPECS = ["rff", "hermite", "ntk", "perceptual-first", "perceptual", "rff+perceptual-first"]
MAP_OPTIONS = {"rff": {"n_features": 5000}, "ntk": {"width": 32}}  # the rest: library defaults
VALIDATION = 1 / 6  # of the training records, held out by a per-record hash


def _eps(label: str) -> float:
    return CEILING_EPSILON if label == "ceiling" else float(label)


def _spec_maps(spec: str, ds):
    names = spec.replace("+", ",")
    fmaps = statistics(names, input_shape=ds.input_shape, bounds=(ds.low, ds.high))
    used = {f.name for f in fmaps}
    options = {k: v for k, v in MAP_OPTIONS.items() if k in used}
    if options:
        fmaps = statistics(names, input_shape=ds.input_shape, bounds=(ds.low, ds.high), options=options)
    return fmaps, default_budget_split(names)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    full = mmgen.data.load("fashion-mnist", max_train=args.max_train)
    ds = full.validation_split(VALIDATION, seed=0)  # x_test: held-out *training* records
    if args.max_val:
        ds = dataclasses.replace(ds, x_test=ds.x_test[: args.max_val], y_test=ds.y_test[: args.max_val])
    out = {
        "benchmark": "image_ceiling", "data": "fashion-mnist", "evaluated_on": "validation split of the training records",
        "n_fit": len(ds.y_train), "n_validation": len(ds.y_test), "delta": DELTA, "neighbouring": NEIGHBOURING,
        "ceiling_epsilon": CEILING_EPSILON, "fit_defaults": FIT_DEFAULTS, "map_options": MAP_OPTIONS,
        "n_syn": args.n_syn, "device": str(device), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch threads {args.threads}" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "torch": torch.__version__, "results": [],
    }  # fmt: skip
    json_path = ROOT / ("out/image_ceiling-quick.json" if args.quick else "docs/results/image_ceiling.json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    schema = {"name": ds.name, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes, "low": ds.low,
              "high": ds.high, "clip": False}  # fmt: skip
    for spec in args.specs.split(","):
        fmaps, split = _spec_maps(spec, ds)
        t0 = time.perf_counter()
        sums, counts = accumulate(iter_batches(ds.x_train, ds.y_train, 1000), fmaps, ds.n_classes, ds.input_shape,
                                  (ds.low, ds.high))  # fmt: skip
        t_sums = time.perf_counter() - t0
        print(f"{spec}: exact sums of {len(ds.y_train):,} records in {t_sums:.1f} s", flush=True)
        for label in args.epsilons.split(","):
            for seed in range(args.seeds):
                rel = finalize(sums, counts, fmaps, epsilon=_eps(label), delta=DELTA, neighbouring=NEIGHBOURING,
                               budget_split=split, count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=7919 * seed + 17,
                               schema=schema)  # fmt: skip
                for gen_name in args.generators.split(","):
                    for length in [float(v) for v in args.lengths.split(",")]:
                        epochs = max(1, round(args.epochs * length))
                        t0 = time.perf_counter()
                        torch.manual_seed(seed)
                        gen = mmgen.generators.for_release(rel, gen_name, width=args.width)
                        trained = mmgen.fit(gen, rel, epochs=epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                                            seed=seed, device=str(device), progress=False)  # fmt: skip
                        t_fit = time.perf_counter() - t0
                        x, y = trained.sample(args.n_syn, seed=seed)
                        t0 = time.perf_counter()
                        rep = evaluate(x.cpu(), y.cpu(), ds, metrics="lr,cnn", seed=seed, cache=cache,
                                       cnn_options={"max_epochs": args.cnn_epochs, "patience": 3})  # fmt: skip
                        row = {"spec": spec, "generator": gen_name, "length": length, "epochs": epochs,
                               "steps": epochs * args.steps, "epsilon": label, "seed": seed,
                               "lr": rep.get("logistic_regression"), "cnn": rep.get("cnn"),
                               "final_loss": trained.losses[-1], "fit_s": round(t_fit, 1),
                               "eval_s": round(time.perf_counter() - t0, 1), "sums_s": round(t_sums, 1)}  # fmt: skip
                        out["results"].append(row)
                        print(json.dumps(row), flush=True)
                        json_path.write_text(json.dumps(out, indent=2) + "\n")
    if not args.quick:
        write_markdown(out)
    print(markdown(out))
    return out


def _mean(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)


def markdown(out: dict) -> str:
    lines = [
        HEADING, "",
        f"Fashion-MNIST; fitted on {out['n_fit']:,} training records, scored on {out['n_validation']:,} **held-out "
        "training records** (a per-record hash; the test split is not read). δ = 1e-5, add/remove neighbours; "
        f"`ceiling` = a release at ε = {CEILING_EPSILON:g} (noise-free to six digits, not a zero-noise release); "
        f"seeded test noise (unfit for publication). Fit lengths are multiples of `mmgen fit`'s default "
        f"({out['fit_defaults']['epochs']} epochs × {out['fit_defaults']['steps_per_epoch']} steps of "
        f"{out['fit_defaults']['batch_size']}); {out['n_syn']:,} synthetic records; LR and CNN "
        f"(`mmgen.evaluate`) accuracy, mean over seeds. Machine: {out['machine']}.", "",
        "| statistic | generator | fit length | ε | LR | CNN | fit s | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    keys = []
    for r in out["results"]:
        k = (r["spec"], r["generator"], r["length"], r["epsilon"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rows = [r for r in out["results"] if (r["spec"], r["generator"], r["length"], r["epsilon"]) == k]
        lr, n = _mean([r["lr"] for r in rows])
        cnn, _ = _mean([r["cnn"] for r in rows])
        fit, _ = _mean([r["fit_s"] for r in rows])
        f = (lambda v: "–" if v is None else f"{v:.3f}")
        lines.append(f"| {k[0]} | {k[1]} | {k[2]:g}× | {k[3]} | {f(lr)} | {f(cnn)} | {fit:.0f} | {n} |")
    return "\n".join(lines) + "\n"


def write_markdown(out: dict) -> None:
    path = ROOT / "docs/benchmarks.md"
    text = path.read_text()
    block = markdown(out)
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + block + ("" if nxt < 0 else text[nxt:])
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test (writes out/ only)")
    p.add_argument("--specs", default=",".join(SPECS))
    p.add_argument("--generators", default="conv,resnet")
    p.add_argument("--lengths", default="1,4,16", help="multiples of the default fit length")
    p.add_argument("--epsilons", default="ceiling,1,10")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.epochs, args.steps, args.batch = FIT_DEFAULTS["epochs"], FIT_DEFAULTS["steps_per_epoch"], FIT_DEFAULTS["batch_size"]
    args.width, args.n_syn, args.cnn_epochs, args.max_train, args.max_val = FIT_DEFAULTS["conv_width"], 10_000, 10, None, None
    if args.quick:
        args.epochs, args.steps, args.batch, args.n_syn, args.cnn_epochs = 1, 20, 64, 500, 2
        args.max_train, args.max_val = 3000, 500
        if args.specs == ",".join(SPECS):
            args.specs = "rff"
        if args.lengths == "1,4,16":
            args.lengths = "1,2"
        if args.generators == "conv,resnet":
            args.generators = "conv"
    run(args)


if __name__ == "__main__":
    main()

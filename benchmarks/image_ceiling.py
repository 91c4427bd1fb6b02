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
plot beside it (``.png``: accuracy against ε, the ceiling as a line) and its section of
``docs/benchmarks.md`` (``--quick``, or ``--json`` elsewhere: that file only, no section).

Invocations **merge**: a run keeps the rows already in the JSON file (same data, fit and
validation sizes) and replaces only those it measures again (same spec, generator, length, ε
and seed), so the grid can be filled slice by slice. Each row records its torch threads, the
1-minute load average before and after its fit (other work on the machine) and when it ran.
Text in the Markdown section from a line starting ``Reading`` (or ``**Reading``) onwards is kept
when the section is rewritten.

Usage::

    python benchmarks/image_ceiling.py --quick                     # smoke test, a few minutes on 2 cores
    python benchmarks/image_ceiling.py --specs rff --generators conv --lengths 1,4   # a CPU slice
    python benchmarks/image_ceiling.py --specs rff --epsilons 10 --first-seed 1      # add a second seed
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
from datetime import datetime, timezone
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
DEFAULT_JSON = ROOT / "docs/results/image_ceiling.json"
SPECS = ["rff", "hermite", "ntk", "perceptual-first", "perceptual", "rff+perceptual-first"]
MAP_OPTIONS = {"rff": {"n_features": 5000}, "ntk": {"width": 32}}  # the rest: library defaults
VALIDATION = 1 / 6  # of the training records, held out by a per-record hash
KEY = ("spec", "generator", "length", "epsilon", "seed")  # a row's identity when runs merge
SAME_RUN = ("data", "evaluated_on", "n_fit", "n_validation", "delta", "neighbouring", "ceiling_epsilon")


def _eps(label: str) -> float:
    return CEILING_EPSILON if label == "ceiling" else float(label)


def _spec_maps(spec: str, ds):
    """The statistics of a spec: map names joined by "+", then optionally "@MAP.KEY=VALUE" pairs joined by
    ";" (e.g. ``rff@rff.bandwidth_scale=0.125``) over ``MAP_OPTIONS``; the whole string labels the rows."""
    spec, _, extra = spec.partition("@")
    names = spec.replace("+", ",")
    fmaps = statistics(names, input_shape=ds.input_shape, bounds=(ds.low, ds.high))
    used = {f.name for f in fmaps}
    options = {k: dict(v) for k, v in MAP_OPTIONS.items() if k in used}
    for item in filter(None, extra.split(";")):
        key, _, value = item.partition("=")
        name, _, field = key.partition(".")
        if name not in used or not field or not value:
            raise SystemExit(f"--specs: {item!r} must be MAP.KEY=VALUE for a map of {spec!r}")
        try:
            value = json.loads(value)
        except ValueError:
            pass  # a plain string
        options.setdefault(name, {})[field] = value
    if options:
        fmaps = statistics(names, input_shape=ds.input_shape, bounds=(ds.low, ds.high), options=options)
    return fmaps, default_budget_split(names)


def _key(row: dict) -> tuple:
    return tuple(float(row[k]) if k == "length" else row[k] for k in KEY)


def _threads_of(machine: str):
    """The torch thread count in an older file's ``machine`` line (rows before per-row threads)."""
    tail = machine.split("torch threads ")[-1] if "torch threads " in machine else ""
    digits = tail.split(",")[0].strip()
    return int(digits) if digits.isdigit() else None


def load_previous(path: Path, out: dict) -> list:
    """The rows of an earlier run in ``path`` that this run may keep (same data and split), else ``[]``.

    Rows written before rows carried their own machine fields get them from the file's header.
    """
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"warning: {path} is not JSON; starting a new file", flush=True)
        return []
    differ = [k for k in SAME_RUN if old.get(k) != out.get(k)]
    if differ:
        print(f"warning: {path} was made with other {', '.join(differ)}; its rows are dropped", flush=True)
        return []
    rows = []
    for r in old.get("results", []):
        r = dict(r)
        r.setdefault("machine", old.get("machine"))
        r.setdefault("threads", _threads_of(old.get("machine", "")))
        r.setdefault("n_syn", old.get("n_syn"))
        rows.append(r)
    return rows


def merge(previous: list, new: list) -> list:
    """``previous`` with each row that ``new`` measures again replaced in place, then ``new``'s other rows."""
    fresh = {_key(r): r for r in new}
    merged = [fresh.pop(_key(r), r) for r in previous]
    return merged + [r for r in new if _key(r) in fresh]


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


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
    machine = out["machine"]
    json_path = Path(args.json) if args.json else ROOT / ("out/image_ceiling-quick.json" if args.quick else DEFAULT_JSON)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    previous, new = load_previous(json_path, out), []
    out["machine"] = "per row (`machine`, `threads`, `load_before`/`load_after`)"
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
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                rel = finalize(sums, counts, fmaps, epsilon=_eps(label), delta=DELTA, neighbouring=NEIGHBOURING,
                               budget_split=split, count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=7919 * seed + 17,
                               schema=schema)  # fmt: skip
                for gen_name in args.generators.split(","):
                    for length in [float(v) for v in args.lengths.split(",")]:
                        epochs = max(1, round(args.epochs * length))
                        started, load_before = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MZ"), _load()
                        t0 = time.perf_counter()
                        torch.manual_seed(seed)
                        gen = mmgen.generators.for_release(rel, gen_name, width=args.width)
                        trained = mmgen.fit(gen, rel, epochs=epochs, steps_per_epoch=args.steps, batch_size=args.batch,
                                            seed=seed, device=str(device), progress=False)  # fmt: skip
                        t_fit, load_after = time.perf_counter() - t0, _load()
                        x, y = trained.sample(args.n_syn, seed=seed)
                        t0 = time.perf_counter()
                        rep = evaluate(x.cpu(), y.cpu(), ds, metrics="lr,cnn", seed=seed, cache=cache,
                                       cnn_options={"max_epochs": args.cnn_epochs, "patience": 3})  # fmt: skip
                        row = {"spec": spec, "generator": gen_name, "length": length, "epochs": epochs,
                               "steps": epochs * args.steps, "epsilon": label, "seed": seed,
                               "lr": rep.get("logistic_regression"), "cnn": rep.get("cnn"),
                               "final_loss": trained.losses[-1], "fit_s": round(t_fit, 1),
                               "eval_s": round(time.perf_counter() - t0, 1), "sums_s": round(t_sums, 1),
                               "n_syn": args.n_syn, "threads": args.threads, "machine": machine,
                               "load_before": load_before, "load_after": load_after, "started": started}  # fmt: skip
                        new.append(row)
                        out["results"] = merge(previous, new)
                        print(json.dumps(row), flush=True)
                        _write_json(json_path, out)
    out["results"] = merge(previous, new)
    if out["results"]:
        _write_json(json_path, out)
        png = plot(out, json_path.with_suffix(".png"))
        if png:
            print(f"wrote {json_path} and {png}", flush=True)
    if not args.quick and json_path == DEFAULT_JSON:
        write_markdown(out)
    print(markdown(out))
    return out


def _write_json(path: Path, out: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)


def plot(out: dict, path: Path):
    """Accuracy against ε per (statistic, generator, length), the ceiling as a dashed line; the path, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups: dict = {}
    for r in out["results"]:
        groups.setdefault((r["spec"], r["generator"], float(r["length"])), []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for (spec, gen, length), rows in groups.items():
        for ax, metric in zip(axes, ("lr", "cnn")):
            eps = sorted({r["epsilon"] for r in rows if r["epsilon"] != "ceiling"}, key=float)
            ys = [_mean([r[metric] for r in rows if r["epsilon"] == e])[0] for e in eps]
            pts = [(float(e), y) for e, y in zip(eps, ys) if y is not None]
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{spec}, {gen}, {length:g}×")[0]
            ceil = _mean([r[metric] for r in rows if r["epsilon"] == "ceiling"])[0]
            if ceil is not None:
                ax.axhline(ceil, color=line.get_color(), linestyle="--", linewidth=1)
    for ax, name in zip(axes, ("logistic regression", "CNN")):
        ax.set_xscale("log")
        ax.set_xlabel("ε (δ = 1e-5); dashed: noise-free ceiling")
        ax.set_ylabel(f"{name} accuracy (validation)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: accuracy against ε and the ceiling (benchmarks/image_ceiling.py)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _mean(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)


def _fmt(vals) -> str:
    """The mean of a metric over seeds, with the range when there are several."""
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    mean = f"{sum(vals) / len(vals):.3f}"
    return mean if len(vals) == 1 else f"{mean} ({min(vals):.3f}–{max(vals):.3f})"


def _row_order(out: dict) -> list:
    specs, gens = [], []
    for r in out["results"]:
        specs += [r["spec"]] if r["spec"] not in specs else []
        gens += [r["generator"]] if r["generator"] not in gens else []
    keys = {(r["spec"], r["generator"], float(r["length"]), r["epsilon"]) for r in out["results"]}
    eps_rank = (lambda e: -1.0 if e == "ceiling" else float(e))
    return sorted(keys, key=lambda k: (specs.index(k[0]), gens.index(k[1]), k[2], eps_rank(k[3])))


def markdown(out: dict) -> str:
    """The Markdown section: the header note and one table row per (statistic, generator, length, ε)."""
    lines = [
        HEADING, "",
        f"Fashion-MNIST; fitted on {out['n_fit']:,} training records, scored on {out['n_validation']:,} **held-out "
        "training records** (a per-record hash; the test split is not read). δ = 1e-5, add/remove neighbours; "
        f"`ceiling` = a release at ε = {CEILING_EPSILON:g} (noise-free to six digits, not a zero-noise release); "
        f"seeded test noise (unfit for publication). Fit lengths are multiples of `mmgen fit`'s default "
        f"({out['fit_defaults']['epochs']} epochs × {out['fit_defaults']['steps_per_epoch']} steps of "
        f"{out['fit_defaults']['batch_size']}); {out['n_syn']:,} synthetic records; evaluator: `mmgen.evaluate` "
        "(logistic regression and its small CNN, trained on the synthetic records), accuracy as the mean over "
        "seeds (range in brackets). Wall seconds of the fit (generator training only), the torch threads and the "
        "machine's 1-minute load average before/after the fit (other jobs share the cores). Plot: "
        "`docs/results/image_ceiling.png`.", "",
        "| statistic | generator | fit length | ε | LR | CNN | fit s | threads | load | seeds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    machines = []
    for k in _row_order(out):
        rows = [r for r in out["results"] if (r["spec"], r["generator"], float(r["length"]), r["epsilon"]) == k]
        fit, n = _mean([r["fit_s"] for r in rows])
        threads = "/".join(sorted({str(r.get("threads") or "?") for r in rows}))
        loads = [v for r in rows for v in (r.get("load_before"), r.get("load_after")) if v is not None]
        load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"
        for m in (r["machine"].split(", torch threads")[0] for r in rows if r.get("machine")):
            machines += [m] if m not in machines else []
        lines.append(f"| {k[0]} | {k[1]} | {k[2]:g}× | {k[3]} | {_fmt([r['lr'] for r in rows])} | "
                     f"{_fmt([r['cnn'] for r in rows])} | {fit:.0f} | {threads} | {load} | {n} |")  # fmt: skip
    if machines:
        lines += ["", "Machine: " + "; ".join(machines) + "."]
    return "\n".join(lines) + "\n"


def _kept_reading(section: str) -> str:
    """The part of an old section from its first line starting with ``Reading`` / ``**Reading`` (or "")."""
    lines = section.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(("Reading", "**Reading")):
            return "\n".join(lines[i:]).rstrip("\n") + "\n"
    return ""


def write_markdown(out: dict, path: Path | None = None) -> None:
    """Replace (or append) this benchmark's section of ``docs/benchmarks.md``, keeping its reading."""
    path = path or ROOT / "docs/benchmarks.md"
    text = path.read_text()
    block = markdown(out)
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        old = text[start:] if nxt < 0 else text[start : nxt + 1]
        kept = _kept_reading(old)
        block = block + ("\n" + kept if kept else "")
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
    p.add_argument("--seeds", type=int, default=1, help="how many seeds")
    p.add_argument("--first-seed", type=int, default=0, help="the first seed (seeds run from it upwards)")
    p.add_argument("--json", default=None, help="write (and merge into) this file instead; no Markdown section")
    p.add_argument("--render", action="store_true", help="only redraw the plot and the Markdown section from the JSON")
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
    if args.render:
        render(Path(args.json) if args.json else DEFAULT_JSON)
    else:
        run(args)


def render(json_path: Path) -> None:
    """Redraw the plot and (for the default file) the Markdown section from a JSON file, running nothing."""
    out = json.loads(json_path.read_text())
    plot(out, json_path.with_suffix(".png"))
    if json_path == DEFAULT_JSON:
        write_markdown(out)
    print(markdown(out))


if __name__ == "__main__":
    main()

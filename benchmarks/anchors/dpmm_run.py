"""Run dpmm's AIM or MST pipeline (PrivTree discretisation + Private-PGM) on RAW rows with a DECLARED domain.

Runs INSIDE the dpmm venv (``.venv-dpmm``, see ``env.py``); it imports nothing from mmgen and no torch.

Input: DATA.csv, the raw training rows (numbers as numbers, categories as the strings of the
declared list, an empty field where a value is missing); DOMAIN.json ``{"columns": [...]}``, one
entry per column in order, each ``{"name", "type": "numeric"|"integer"|"categorical",
"missing": bool}`` plus ``"lower"``/``"upper"`` (the schema's PUBLIC bounds) for a number or
``"categories"`` (the schema's PUBLIC list, strings, the missing value left out) for a category.
Output: OUT.csv with ``--rows`` synthetic raw rows (same columns; empty where missing) and one
JSON line on stdout (the record, the same keys as ``smartnoise_run.py``'s plus the budget split).

Privacy accounting (total ε, δ; add/remove neighbours)
------------------------------------------------------
dpmm's pipeline takes two budgets that it ADDS UP: ``proc_epsilon`` (pure ε-DP, the discretiser)
and ``epsilon``/``delta`` (the generator: AIM/MST are ρ-zCDP with ρ = ``cdp_rho(epsilon, delta)``,
i.e. (epsilon, delta)-DP). Its ``epsilon`` is therefore NOT the total. This runner splits the
total: ε_domain = ``--domain-share`` × ε (default 0.1, dpmm's own default of 0.1 at ε = 1) to
the discretiser and ε − ε_domain to the generator, so that by basic composition the whole fit
is (ε, δ)-DP. dpmm's ``TableBinner`` divides ε_domain evenly over the numeric columns; with
the declared bounds passed in, each column's PrivTree spends all of its share on the tree
(Laplace noise of scale (2β − 1)/((β − 1) ε_col) = 3/ε_col on node counts, β = 2) and none
on estimating bounds. Categorical columns get the declared category lists (no budget).

What is kept PUBLIC here (dpmm would otherwise read it off the rows)
--------------------------------------------------------------------
* Bounds and categories come from DOMAIN.json (without them dpmm spends budget on bounds, or
  reads the category set off the data with a "PrivacyLeakage" warning).
* Missing values are handled HERE from the declared ``missing`` flag, not by dpmm: dpmm adds
  a "<col>_NaN" indicator only where the data has gaps and fills them with one value SAMPLED
  FROM THE PRIVATE ROWS. Here a declared-missing category gets an extra category, and a
  declared-missing number an indicator column (``no``/``yes``), its gaps filled with draws
  uniform in the declared bounds (seeded by ``--seed``; independent of every value).
* dpmm drops a column holding a single value and releases that value, and treats a number
  with one distinct value as static; the script checks after the fit that dpmm dropped
  nothing and binned exactly the declared numbers, and fails otherwise.

What dpmm still reads off the rows without noise: the row count n. PrivTree's split
threshold is θ = n / n_bins, and dpmm's default ``n_bins="auto"`` is
⌈2 n^(1/3) / (1 + e^(−ε_col))⌉ (at least 5). Under add/remove neighbours n is itself private,
so the PrivTree step is ε_domain-DP only for a fixed n (replace-one neighbours); this is a
property of dpmm 0.1.9 and is reported, not patched.

Seeding: dpmm's ``random_state`` (numpy) drives the exponential mechanism, the domain
compression and the sampler; the Laplace (PrivTree) and Gaussian (AIM/MST) noise is drawn by
OpenDP's unseedable CSPRNG, so runs are NOT bit-reproducible for a fixed ``--seed``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np
import pandas as pd

MISSING_CATEGORY = "<missing>"
INDICATOR_SUFFIX = "__missing"
INDICATOR_CATEGORIES = ["no", "yes"]
NUMERIC_TYPES = ("numeric", "integer")


def read_domain(path: str) -> list[dict]:
    """The declared columns of DOMAIN.json, checked: names, types, bounds, categories."""
    with open(path) as f:
        spec = json.load(f)
    cols = spec.get("columns") if isinstance(spec, dict) else None
    if not isinstance(cols, list) or not cols:
        raise SystemExit(f"{path}: expected {{'columns': [...]}} with at least one column")
    problems = []
    for c in cols:
        name, kind = c.get("name"), c.get("type")
        if kind in NUMERIC_TYPES:
            lo, hi = c.get("lower"), c.get("upper")
            if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi):
                problems.append(f"column {name!r}: needs numeric lower < upper, got {lo!r}, {hi!r}")
        elif kind == "categorical":
            cats = c.get("categories")
            if not (isinstance(cats, list) and cats and all(isinstance(v, str) and v for v in cats)):
                problems.append(f"column {name!r}: needs a non-empty list of non-empty string categories")
            elif MISSING_CATEGORY in cats or len(set(cats)) != len(cats):
                problems.append(f"column {name!r}: categories repeat or use the reserved {MISSING_CATEGORY!r}")
        else:
            problems.append(f"column {name!r}: type must be numeric, integer or categorical, got {kind!r}")
    names = [c.get("name") for c in cols]
    if len(set(names)) != len(names):
        problems.append(f"repeated column names: {names}")
    clash = [n for n in names if isinstance(n, str) and n.endswith(INDICATOR_SUFFIX)]
    if clash:
        problems.append(f"column names ending in the reserved {INDICATOR_SUFFIX!r}: {clash}")
    if problems:
        raise SystemExit("DOMAIN.json: " + "; ".join(problems))
    return cols


def read_rows(path: str, cols: list[dict]) -> pd.DataFrame:
    """DATA.csv with each column typed by its declaration (an empty field is missing)."""
    names = [c["name"] for c in cols]
    dtypes = {c["name"]: (str if c["type"] == "categorical" else np.float64) for c in cols}
    df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={n: [""] for n in names})
    missing = [n for n in names if n not in df.columns]
    extra = [n for n in df.columns if n not in names]
    if missing or extra:
        raise SystemExit(f"DATA/DOMAIN column mismatch: missing={missing} extra={extra}")
    return df[names]


def to_dpmm(df: pd.DataFrame, cols: list[dict], rng: np.random.RandomState) -> tuple[pd.DataFrame, dict]:
    """The rows as dpmm will see them, and dpmm's domain dict; every decision from the declaration.

    Raises ``SystemExit`` on a gap in a column not declared ``missing``, a category outside the
    declared list or a number outside the declared bounds (a refusal, as mmgen's own loader refuses).
    """
    out, domain, problems = {}, {}, []
    for c in cols:
        name, s = c["name"], df[c["name"]]
        gaps = s.isna().to_numpy()
        if gaps.any() and not c.get("missing"):
            problems.append(f"column {name!r} has missing values but is not declared missing")
            continue
        if c["type"] == "categorical":
            cats = list(c["categories"]) + ([MISSING_CATEGORY] if c.get("missing") else [])
            v = s.where(~gaps, MISSING_CATEGORY) if c.get("missing") else s
            bad = sorted(set(v.unique()) - set(cats))
            if bad:
                problems.append(f"column {name!r} has values outside the declared categories: {bad[:5]}")
            out[name] = v.astype(object)
            domain[name] = {"categories": cats}
        else:
            lo, hi = float(c["lower"]), float(c["upper"])
            v = s.to_numpy(dtype=np.float64).copy()
            present = v[~gaps]
            if ((present < lo) | (present > hi)).any():
                problems.append(f"column {name!r} has values outside the declared bounds [{lo:g}, {hi:g}]")
            if c.get("missing"):
                fill = rng.uniform(lo, hi, size=int(gaps.sum()))  # data-independent filler
                if c["type"] == "integer":
                    fill = np.clip(np.round(fill), np.ceil(lo), np.floor(hi))
                v[gaps] = fill
                out[name + INDICATOR_SUFFIX] = pd.Series(np.where(gaps, "yes", "no"), dtype=object)
                domain[name + INDICATOR_SUFFIX] = {"categories": list(INDICATOR_CATEGORIES)}
            out[name] = v.astype(np.int64) if c["type"] == "integer" and not c.get("missing") else v
            domain[name] = {"lower": lo, "upper": hi}
    if problems:
        raise SystemExit("DATA.csv: " + "; ".join(problems))
    return pd.DataFrame(out), domain


def from_dpmm(synth: pd.DataFrame, cols: list[dict]) -> pd.DataFrame:
    """dpmm's synthetic rows back to the declared columns: gaps restored, integers rounded, bounds clipped."""
    out = {}
    for c in cols:
        name = c["name"]
        if c["type"] == "categorical":
            v = synth[name].astype(object)
            out[name] = v.where(v != MISSING_CATEGORY, None)
            continue
        v = pd.to_numeric(synth[name], errors="raise").to_numpy(dtype=np.float64)
        v = np.clip(v, float(c["lower"]), float(c["upper"]))
        if c["type"] == "integer":
            v = np.clip(np.round(v), np.ceil(c["lower"]), np.floor(c["upper"]))
        if c.get("missing"):
            v = np.where(synth[name + INDICATOR_SUFFIX].astype(str).to_numpy() == "yes", np.nan, v)
        out[name] = v
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["aim", "mst"], required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--epsilon", type=float, required=True, help="the TOTAL epsilon (discretisation + model)")
    ap.add_argument("--delta", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--domain-share", type=float, default=0.1,
                    help="share of epsilon spent by PrivTree on the numeric columns' bins (default 0.1)")
    ap.add_argument("--max-model-size", type=float, default=80.0,
                    help="AIM's model size cap in MB (the AIM paper's and smartnoise's 80; dpmm's pipeline: none)")
    args = ap.parse_args(argv)
    if not args.epsilon > 0 or not 0 < args.delta < 1:
        raise SystemExit(f"need epsilon > 0 and 0 < delta < 1, got {args.epsilon}, {args.delta}")
    if not 0 < args.domain_share < 1:
        raise SystemExit(f"--domain-share must lie in (0, 1), got {args.domain_share}")

    cols = read_domain(args.domain)
    rng = np.random.RandomState(args.seed)
    frame, dom = to_dpmm(read_rows(args.data, cols), cols, rng)
    numeric = [c["name"] for c in cols if c["type"] in NUMERIC_TYPES]
    eps_domain = args.domain_share * args.epsilon if numeric else 0.0
    eps_model = args.epsilon - eps_domain

    # dpmm/opendp may print; keep stdout a single JSON line
    with contextlib.redirect_stdout(sys.stderr):
        from importlib.metadata import version

        from dpmm.pipelines import AIMPipeline, MSTPipeline

        pipeline_cls = AIMPipeline if args.method == "aim" else MSTPipeline
        kwargs = dict(epsilon=eps_model, delta=args.delta, n_jobs=1, binner_type="priv-tree", n_bins="auto",
                      proc_epsilon=eps_domain if numeric else 1.0)  # 1.0: unused when no column is binned
        if args.method == "aim":
            kwargs["max_model_size"] = args.max_model_size
        pipe = pipeline_cls(**kwargs)

        t0 = time.perf_counter()
        pipe.fit(frame, domain=dom, random_state=args.seed)
        fit_seconds = time.perf_counter() - t0

        proc = pipe.proc
        problems = []
        if proc.static_columns:
            problems.append(f"dpmm dropped columns as static (it would release their value): {list(proc.static_columns)}")
        if proc.nan_columns:
            problems.append(f"dpmm handled gaps itself: {list(proc.nan_columns)}")
        if sorted(proc.num_cols) != sorted(numeric):
            problems.append(f"dpmm binned {sorted(proc.num_cols)}, declared numbers are {sorted(numeric)}")
        spent = {k: float(v) for k, v in proc.spent_epsilon.items()}
        if numeric and abs(sum(spent.values()) - eps_domain) > 1e-9 * max(1.0, eps_domain):
            problems.append(f"PrivTree spent {sum(spent.values())}, expected {eps_domain}")
        if problems:
            raise RuntimeError("; ".join(problems))
        gen = pipe.gen.generator

        t0 = time.perf_counter()
        synth = pipe.generate(n_records=int(args.rows), random_state=args.seed)
        sample_seconds = time.perf_counter() - t0

    out = from_dpmm(synth, cols)
    if len(out) != args.rows:
        raise RuntimeError(f"dpmm returned {len(out)} rows, asked for {args.rows}")
    out.to_csv(args.out, index=False)

    print(json.dumps({
        "method": args.method,
        "epsilon": float(args.epsilon),
        "delta": float(args.delta),
        "seed": int(args.seed),
        "fit_seconds": round(fit_seconds, 3),
        "sample_seconds": round(sample_seconds, 3),
        "rows": int(len(out)),
        "dpmm_version": version("dpmm"),
        "domain_epsilon": eps_domain,
        "model_epsilon": eps_model,
        "model_rho": float(gen.rho),
        "domain_epsilon_per_column": spent,
        "bins_per_column": {k: int(v) for k, v in proc.n_bins.items()},
        "max_model_size": args.max_model_size if args.method == "aim" else None,
        "cliques": [list(cl) for cl in (gen.cliques or [])],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

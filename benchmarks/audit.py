"""Empirical privacy audit of every registered feature map (and bundle) at ε = 1 and ε = 10.

For each map: the audit of a correct release at ε = 1 and ε = 10, and of a release
whose noise was halved (the ``noise_scale=0.5`` test hook) at ε = 1, which must be
caught. D is the first 500 training images of scikit-learn's digits (public data).
Writes ``docs/results/audit.json`` and the table in ``docs/audit.md``.

Feature maps are kept small (``SMALL`` options where a map has the field): the
guarantee does not depend on the output dimension (every map bounds ‖φ(x)‖ ≤ 1),
and each trial costs one Gaussian draw per released coordinate of the canary's row.

Usage:
    python benchmarks/audit.py [--trials 200000] [--only rff,hermite]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import mmgen
from mmgen.audit import audit
from mmgen.errors import MMGenError
from mmgen.features import BUNDLES

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_features": 256, "order": 4, "n_subsets": 2, "width": 16, "image_size": 32}
DELTA = 1e-5


def _options(name: str, bundle: bool) -> dict:
    names = [m for m, _, _ in BUNDLES[name]] if bundle else [name]
    fields = set()
    for n in names:
        fields |= set(mmgen.features.get_class(n).Config.__dataclass_fields__)
    return {k: v for k, v in SMALL.items() if k in fields}


def _targets(only):
    singles = [f"map:{n}" for n in mmgen.features.list()]
    bundles = [f"bundle:{n}" for n in sorted(BUNDLES)]
    out = singles + bundles
    return [t for t in out if only is None or t.split(":")[1] in only]


def run(trials: int, only) -> list[dict]:
    torch.set_num_threads(2)
    data = mmgen.data.load("digits")
    rows = []
    for target in _targets(only):
        kind, name = target.split(":")
        opts = _options(name, kind == "bundle")
        for epsilon, scale, n in ((1.0, 1.0, trials), (10.0, 1.0, int(1.5 * trials)), (1.0, 0.5, 2 * trials)):
            if kind == "map":
                features = mmgen.features.create(name, **opts)
                kwargs = {}
            else:
                features, kwargs = name, {"feature_options": opts}
            try:
                r = audit(features, epsilon=epsilon, delta=DELTA, data=data, n_records=500, trials=n,
                          noise_scale=scale, confidence=0.95, **kwargs)  # fmt: skip
            except MMGenError as exc:
                rows.append({"target": target, "epsilon": epsilon, "noise_scale": scale, "error": str(exc)})
                print(f"{target} eps={epsilon} scale={scale}: cannot run: {exc}", flush=True)
                continue
            row = {"target": target, "options": opts, **r.to_dict()}
            rows.append(row)
            print(f"{target:24s} eps={epsilon:<4g} scale={scale:<4g} lb={r.epsilon_lower_bound:.3f} "
                  f"mu_hat={r.mu_hat:.4f}/{r.mu_theory:.4f} violated={r.violated} ({r.seconds:.0f} s)", flush=True)  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| statistic | options | claimed ε | noise | ε lower bound (95%) | violated | trials/side | μ measured / calibrated | canary |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['target']} | | {r['epsilon']:g} | ×{r['noise_scale']:g} | not run: {r['error']} | | | | |")
            continue
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(
            f"| {r['target']} | {opts} | {r['epsilon']:g} | ×{r['noise_scale']:g} | {r['epsilon_lower_bound']:.3f} | "
            f"{'**yes**' if r['violated'] else 'no'} | {r['trials']} | {r['mu_hat']:.4f} / {r['mu_theory']:.4f} | {r['canary']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200_000)
    parser.add_argument("--only", default=None, help="comma-separated map or bundle names")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite docs/audit.md from the JSON, run nothing")
    args = parser.parse_args()
    results = ROOT / "docs" / "results"
    if args.markdown_only:
        doc = json.loads((results / "audit.json").read_text())
        write_markdown(doc["meta"], doc["rows"])
        return
    only = None if args.only is None else set(args.only.split(","))
    t0 = time.time()
    rows = run(args.trials, only)
    results.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "torch": torch.__version__, "mmgen": mmgen.__version__,
            "delta": DELTA, "data": "digits (first 500 training images)", "seconds": time.time() - t0}  # fmt: skip
    (results / "audit.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    write_markdown(meta, rows)


def write_markdown(meta: dict, rows: list[dict]) -> None:
    md = ROOT / "docs" / "audit.md"
    md.write_text(
        "# Empirical privacy audit: results\n\n"
        "Written by `python benchmarks/audit.py` (method: `docs/privacy.md`, section *Empirical audit*).\n"
        f"D = {meta['data']}, δ = {DELTA:g}, {meta['machine']}, {meta['seconds']:.0f} s in all.\n"
        "A correct release must show a lower bound ≤ its claimed ε; the halved-noise rows (×0.5, a simulated\n"
        "bug via the audit's `noise_scale` test hook) must be caught (lower bound > claimed ε).\n"
        "\"μ calibrated\" is the separation the claimed noise gives the chosen canary: the mechanism's own μ\n"
        "(0.268 at ε = 1, 2.000 at ε = 10, δ = 1e-5) when the canary reaches the sensitivity. In the `perceptual`\n"
        "bundle it stays below (0.19 at ε = 1): the second moment φ₁ ⊙ φ₁ has norm ≤ 1, reached only if φ₁ sat on\n"
        "one coordinate; every candidate canary gives it a much smaller norm, so no canary uses that statistic's\n"
        "full sensitivity and its audit has less power (the guarantee is calibrated to the bound, not to the canary).\n\n"
        + table(rows) + "\n"
    )
    print(f"wrote {md}")


if __name__ == "__main__":
    main()

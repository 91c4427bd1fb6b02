"""How far one record moves a release, before and after the exact-sum release path; writes
docs/results/sensitivity.json and docs/sensitivity.md.

Three measurements on real data (scikit-learn's digits), each for the path a release
took before this change and for today's, in the same process:

1. **Neighbouring npz files.** Two ``npz:`` files of digits records (uint8, no test
   arrays, ``n_classes`` stored) that differ by one appended record. Before: the
   loader released the 80 % of ``x`` picked by a permutation of N (public seed 0),
   so one appended record reshuffled which records were released. Today: every
   record of ``x`` is released. Figure: the L2 norm of the difference of the two
   noiseless RFF sums (D = 10,000), against the sensitivity 1.
2. **Worst ‖φ(x)‖ − 1** per feature map over adversarial inputs (corners of the
   domain, checkerboards, near-boundary values) and real records: the map's float32
   output (what was summed before) and the row the release sums today (capped in
   float64, rounded to the fixed-point grid).
3. **Front canary.** A record of all ones put at the front of the data (every later
   batch shifts by one record, batches of 4,096 — or of 1 for the NTK): the L2 norm of
   the change of the noiseless class sums. Before: float32 class sums per batch
   (``FeatureMap.class_sums``) added in float64; today:
   :func:`mmgen.release.accumulate` (exact fixed-point sums).

Usage::

    python benchmarks/sensitivity.py           # about two minutes on 2 cores
    python benchmarks/sensitivity.py --quick   # seconds; prints, writes to out/
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

import mmgen
from mmgen.data import iter_batches
from mmgen.features import create
from mmgen.privacy.bounds import fixed_point, from_fixed_point
from mmgen.privacy.mechanism import NORM_SLACK
from mmgen.release import accumulate

ROOT = Path(__file__).resolve().parents[1]


def configs(quick: bool) -> dict:
    return {
        "rff": {"n_features": 10_000 if not quick else 1000},
        "hermite": {"order": 20},
        "hermite-product": {},
        "ntk": {"width": 1024, "depth": 2, "n_outputs": 10, "chunk_size": 1} if not quick else {"width": 64},
        "perceptual": {"image_size": 32},
    }


def adversarial(shape, n_random=4, seed=0):
    d = math.prod(shape)
    g = torch.Generator().manual_seed(seed)
    rows = [torch.zeros(d), torch.ones(d), torch.full((d,), 0.5), (torch.arange(d) % 2).float(),
            1 - (torch.arange(d) % 2).float(), torch.full((d,), 1e-7), torch.full((d,), 1 - 1e-7)]  # fmt: skip
    rows += [torch.rand(d, generator=g) for _ in range(n_random)]
    return torch.stack(rows).reshape(-1, *shape)


def old_split_train(n: int) -> np.ndarray:
    """The loader's former rule for a file without test arrays: a permutation of N with seed 0, 80 % kept."""
    perm = np.random.default_rng(0).permutation(n)
    return np.sort(perm[int(round(n * 0.2)) :])


def neighbouring_files(ds, n: int, quick: bool) -> dict:
    x = ds.x_train[:n]
    y = ds.y_train[:n]
    xb = torch.cat([x, torch.ones(1, *x.shape[1:])])
    yb = torch.cat([y, torch.tensor([3])])
    fmap = create("rff", input_shape=x.shape[1:], n_features=configs(quick)["rff"]["n_features"])

    def sums(xs, ys):
        return accumulate(iter_batches(xs, ys, 4096), [fmap], 10, x.shape[1:], (0.0, 1.0))[0][0]

    ia, ib = old_split_train(len(x)), old_split_train(len(xb))
    before = float((sums(xb[ib], yb[ib]) - sums(x[ia], y[ia])).norm())
    after = float((sums(xb, yb) - sums(x, y)).norm())
    return {"records": n, "before": before, "after": after}


def norm_excess(fmap, x) -> dict:
    phi32 = fmap(x)
    rows = from_fixed_point(fixed_point(fmap.release_features(x), fmap.max_norm))
    return {
        "float32_worst": float((phi32.double().norm(dim=1) - 1).max()),
        "release_worst": float((rows.norm(dim=1) - 1).max()),
    }


def front_canary(fmap, x, y, batch) -> dict:
    xc, yc = torch.cat([torch.ones(1, *x.shape[1:]), x]), torch.cat([torch.zeros(1, dtype=torch.long), y])

    def old(xs, ys):
        acc = torch.zeros(10, fmap.output_dim, dtype=torch.float64)
        with torch.no_grad():
            for xb, yb in iter_batches(xs, ys, batch):
                acc += fmap.class_sums(xb, yb, 10).double()
        return acc

    def new(xs, ys):
        return accumulate(iter_batches(xs, ys, batch), [fmap], 10, x.shape[1:], (0.0, 1.0))[0][0]

    return {"before": float((old(xc, yc) - old(x, y)).norm()), "after": float((new(xc, yc) - new(x, y)).norm()),
            "records": len(x), "batch": batch}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small maps; writes to out/ instead of docs/")
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = mmgen.data.load("digits")
    t0 = time.time()
    result = {"data": f"digits (scikit-learn, {len(ds.y_train):,} training records of 1×8×8)", "norm_slack": NORM_SLACK,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "maps": {}}  # fmt: skip
    result["neighbouring_files"] = neighbouring_files(ds, len(ds.y_train), args.quick)
    print("neighbouring npz files (rff):", result["neighbouring_files"])
    for name, opts in configs(args.quick).items():
        fmap = create(name, input_shape=(1, 8, 8), **opts)
        big_ntk = name == "ntk" and not args.quick
        x = torch.cat([adversarial((1, 8, 8)), ds.x_train[: 4 if big_ntk else 200]])
        row = {"options": opts, "D": fmap.output_dim, **norm_excess(fmap, x)}
        n = 6 if big_ntk else (200 if name == "perceptual" else len(ds.y_train))
        row["front_canary"] = front_canary(fmap, ds.x_train[:n], ds.y_train[:n], 1 if big_ntk else 4096)
        result["maps"][name] = row
        print(f"{name:16s} D={row['D']:>9d}  worst |phi|-1: float32 {row['float32_worst']:+.2e}, release "
              f"{row['release_worst']:+.2e}   front canary: before {row['front_canary']['before']:.7f}, "
              f"after {row['front_canary']['after']:.7f}")  # fmt: skip
    result["seconds"] = round(time.time() - t0, 1)
    write(result, ROOT / ("out" if args.quick else "docs"), args.quick)


def write(result: dict, folder: Path, quick: bool) -> None:
    (folder / "results").mkdir(parents=True, exist_ok=True)
    (folder / "results" / "sensitivity.json").write_text(json.dumps(result, indent=2) + "\n")
    nf = result["neighbouring_files"]
    lines = [
        "# One record's effect on a release, before and after exact sums",
        "",
        "Written by `python benchmarks/sensitivity.py` (see its docstring for the method). Data: "
        f"{result['data']}; {result['machine']}. Neighbouring relation: add/remove one record; the declared "
        f"sensitivity is 1 and the release adds a relative slack of {result['norm_slack']:g}, so a record may move "
        f"the noiseless sums by at most {1 + result['norm_slack']:.5f}. No noise is involved (these are the exact "
        "sums the Gaussian mechanism is applied to), so no ε applies.",
        "",
        f"**Neighbouring npz files** ({nf['records']} vs {nf['records'] + 1} records, one appended; RFF, "
        f"D = {result['maps']['rff']['D']:,}): noiseless sums differ by **{nf['before']:.2f}** with the former "
        f"permutation-of-N split, **{nf['after']:.7f}** now (every record released).",
        "",
        "| map | D | worst ‖φ‖ − 1, float32 map output | worst ‖row‖ − 1, release path | front canary, before (float32 batch sums) | front canary, after (exact sums) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in result["maps"].items():
        fc = row["front_canary"]
        lines.append(
            f"| {name} | {row['D']:,} | {row['float32_worst']:+.2e} | {row['release_worst']:+.2e} | "
            f"{fc['before']:.9f} | {fc['after']:.9f} |"
        )
    lines += ["", f"Front canary: a record of all ones at the front of the first N training records (N = "
              + ", ".join(f"{n}: {r['front_canary']['records']}" for n, r in result["maps"].items())
              + "), batches of 4,096 (1 for the large NTK). Run time "
              f"{result['seconds']} s.", ""]  # fmt: skip
    if quick:
        print("\n".join(lines))
    (folder / "sensitivity.md").write_text("\n".join(lines))
    print(f"wrote {folder / 'sensitivity.md'}")


if __name__ == "__main__":
    main()

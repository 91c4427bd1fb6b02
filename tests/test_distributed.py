"""A release over 2 processes (gloo, CPU) equals the one-process release up to summation order."""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mmgen
from mmgen.distributed import release_distributed
from mmgen.errors import MMGenError

WORLD = 2
SETTINGS = dict(epsilon=2.0, delta=1e-5, n_classes=10, noise_seed=7, data_name="digits")


def _fmap(seed=3):
    return mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=200, seed=seed, backend="torch")


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        ds = mmgen.data.load_digits()
        x, y = ds.x_train[rank::WORLD], ds.y_train[rank::WORLD]  # disjoint shards (719 and 718 records)
        rel = release_distributed(x, y, _fmap(), path=f"{out_dir}/dist.mmgen" if rank == 0 else None, **SETTINGS)
        result = {"is_none": rel is None}
        try:  # every rank must refuse settings that differ between ranks
            release_distributed(x, y, _fmap(seed=rank), **SETTINGS)
            result["mismatch"] = "accepted"
        except MMGenError as exc:
            result["mismatch"] = str(exc)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_release_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["is_none"] for r in results] == [False, True]  # only rank 0 holds the release
    assert all("different public settings" in r["mismatch"] for r in results)

    got = mmgen.Release.load(tmp_path / "dist.mmgen")
    ds = mmgen.data.load_digits()
    want = mmgen.release(ds, features=_fmap(), **{k: v for k, v in SETTINGS.items() if k != "data_name"})
    assert got.metadata["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert got.metadata["privacy"] == want.metadata["privacy"]
    assert got.schema["n_classes"] == want.schema["n_classes"] and got.input_shape == want.input_shape
    (g,), (w,) = got.statistics, want.statistics
    assert g.noise_std == w.noise_std and g.feature_spec == w.feature_spec
    # Same seeded noise; the exact sums differ only by summation order (~1e-13), then both are snapped
    # to a grid of spacing 2^(ceil(log2 σΔ) - 20): allow one grid step (plus float32 storage rounding).
    step = 2.0 ** (math.ceil(math.log2(g.noise_std)) - 20)
    torch.testing.assert_close(g.sums.double(), w.sums.double(), rtol=1e-6, atol=1.01 * step)
    torch.testing.assert_close(g.counts.double(), w.counts.double(), rtol=1e-6, atol=1.01 * step)
    assert not got.for_publication


def test_needs_an_initialised_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised here")
    ds = mmgen.data.load_digits()
    with pytest.raises(MMGenError, match="torch.distributed initialised"):
        release_distributed(ds.x_train, ds.y_train, _fmap(), **SETTINGS)

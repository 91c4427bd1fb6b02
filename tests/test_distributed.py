"""A release over 2 processes (gloo, CPU) equals the one-process release bit for bit (the shards' int64
fixed-point sums add up exactly), and only the noising rank (rank 0) ever holds the exact totals."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mmgen
from mmgen.data.base import as_batches
from mmgen.distributed import release_distributed
from mmgen.errors import MMGenError
from mmgen.privacy.bounds import FRACTION_BITS
from mmgen.release import accumulate_fixed_point

WORLD = 2
SETTINGS = dict(epsilon=2.0, delta=1e-5, n_classes=10, noise_seed=7, data_name="digits")


def _fmap(seed=3):
    return mmgen.features.create("rff", input_shape=(1, 8, 8), n_features=200, seed=seed, backend="torch")


# Every torch.distributed call that moves tensors; the recorder wraps them all, so an implementation that
# switched to another collective (reduce, all_gather, send/recv, ...) is still observed.
_COLLECTIVES = (
    "all_reduce", "reduce", "broadcast", "gather", "all_gather", "all_gather_into_tensor", "scatter",
    "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "send", "recv", "isend", "irecv",
)  # fmt: skip


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


def _record_collectives(log: list) -> None:
    """TEST HOOK (in the spawned worker only): after every collective, copies each tensor it was given.

    What a rank "received" is whatever its tensors hold once the call returns (in-place collectives write
    into their argument; gather writes into ``gather_list``).
    """
    for name in _COLLECTIVES:
        if not hasattr(dist, name):
            continue
        original = getattr(dist, name)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            work = _original(*args, **kwargs)
            if work is not None and hasattr(work, "wait"):
                work.wait()
            for t in _tensors(list(args) + list(kwargs.values())):
                log.append((_name, t.detach().cpu().clone()))
            return work

        setattr(dist, name, wrapped)


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        ds = mmgen.data.load_digits()
        x, y = ds.x_train[rank::WORLD], ds.y_train[rank::WORLD]  # disjoint shards (719 and 718 records)
        # This rank's own exact sums, computed as release_distributed computes them (same batches, same threads).
        sums, counts = accumulate_fixed_point(as_batches((x, y), 4096), [_fmap()], 10, (1, 8, 8), (0.0, 1.0))
        own = torch.cat([s.reshape(-1) for s in sums] + [counts])
        log: list = []
        _record_collectives(log)
        rel = release_distributed(x, y, _fmap(), path=f"{out_dir}/dist.mmgen" if rank == 0 else None, **SETTINGS)
        torch.save({"own": own, "seen": log}, f"{out_dir}/seen{rank}.pt")
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
    # Same seeded noise, and the exact totals are the one-process totals bit for bit (int64 sums add exactly)
    # (the file stores float32: compare in its dtype)
    assert torch.equal(g.sums, w.sums.to(g.sums.dtype)) and torch.equal(g.counts, w.counts.to(g.counts.dtype))
    assert not got.for_publication

    # Only the noising rank (0) may hold the exact totals. Every tensor rank 1 handed to or got back from a
    # collective is either its own shard's exact sums, unchanged, or a small public integer tensor (the
    # settings digest, the "any record?" bit). An all-reduce, or a ring/tree reduce, leaves totals or
    # partial sums of other ranks in rank 1's buffer and fails here.
    sums, counts = accumulate_fixed_point(as_batches((ds.x_train, ds.y_train), 4096), [_fmap()], 10, (1, 8, 8),
                                          (0.0, 1.0))  # fmt: skip
    exact_total = torch.cat([s.reshape(-1) for s in sums] + [counts])
    seen = [torch.load(tmp_path / f"seen{r}.pt") for r in range(WORLD)]
    for name, t in seen[1]["seen"]:
        if t.is_floating_point() or t.numel() > 32:
            assert t.shape == seen[1]["own"].shape and torch.equal(t, seen[1]["own"]), f"rank 1 received data via {name}"
            assert not torch.equal(t, exact_total)
    assert any(name == "gather" for name, _ in seen[1]["seen"])  # the recorder did see the exchange
    # The noising rank did receive both shards' sums, and they add up to the exact totals.
    got_parts = [t for name, t in seen[0]["seen"] if name == "gather" and t.shape == exact_total.shape]
    assert any(torch.equal(t, seen[1]["own"]) for t in got_parts)
    assert torch.equal(seen[0]["own"] + seen[1]["own"], exact_total)


def test_needs_an_initialised_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised here")
    ds = mmgen.data.load_digits()
    with pytest.raises(MMGenError, match="torch.distributed initialised"):
        release_distributed(ds.x_train, ds.y_train, _fmap(), **SETTINGS)


# One class's fixed-point sums on rank 0 (2^53 + 1 grid units, i.e. just above 2^21) and rank 1 (1 unit): their
# exact total 2^53 + 2 is a float64, but rank 0's own total is not (it rounds to 2^53), and 2^53 + 1 rounds back
# to 2^53. Adding per-shard float64 totals loses the 2 units; adding the int64 sums keeps them.
_BIG = [2**53 + 1, 1]


class _Captured(Exception):
    pass


def _rounding_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        release_module, distributed_module = sys.modules["mmgen.release"], sys.modules["mmgen.distributed"]

        def crafted_sums(phi, y, n_classes, max_norm=1.0):  # TEST HOOK: a shard's int64 sums, as if huge
            out = torch.zeros(n_classes, phi.shape[1], dtype=torch.int64)
            out[0, 0] = _BIG[rank]
            return out

        def capture(sums, counts, *args, **kwargs):  # TEST HOOK: the totals the noise would be added to
            torch.save({"sums": [s.clone() for s in sums], "counts": counts.clone()}, f"{out_dir}/totals.pt")
            raise _Captured

        release_module.fixed_point_class_sums = crafted_sums
        distributed_module.finalize = capture
        ds = mmgen.data.load_digits()
        x, y = ds.x_train[rank : rank + 1], ds.y_train[rank : rank + 1]  # one record each: one chunk, one call
        try:
            release_distributed(x, y, _fmap(), **SETTINGS)
        except _Captured:
            pass
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_shard_totals_add_up_exactly_beyond_float64s_integer_range(tmp_path):
    mp.spawn(_rounding_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = torch.load(tmp_path / "totals.pt")
    want = (2**53 + 2) * 2.0**-FRACTION_BITS  # exact in float64
    assert float(got["sums"][0][0, 0]) == want, f"{float(got['sums'][0][0, 0])!r} != {want!r}"
    assert float((2**53 + 1) * 2.0**-FRACTION_BITS) + 2.0**-FRACTION_BITS != want  # the old way rounds
    assert int(got["counts"].sum()) == 2 and float(got["sums"][0].abs().sum()) == want  # nothing else

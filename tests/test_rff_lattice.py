"""Lattice frequencies for rff (issue 24, item 2): the release's product is exact in float32, by arithmetic.

Each frequency is ``k/(16ℓ)`` with an integer ``|k| ≤ 63``; the release path reads each value as an
integer ``p`` in [0, 255] on the domain, so ``Σ_i p_i k_i`` over at most ``BLOCK`` inputs is an integer
below 2²⁴ and a float32 product computes it exactly in any order. These tests check the arithmetic at
its extremes, that the blocks are needed (a single float32 product past ``BLOCK`` rounds), that a row
depends on its record alone without any padding, the probe and its float64 fallback, the value grid,
and that specs written before the option rebuild the Gaussian frequencies they were made with.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from mmgen.data import iter_batches
from mmgen.features import create, from_spec
from mmgen.features import rff as rff_module
from mmgen.features.rff import BLOCK, LATTICE_MAX, LATTICE_STEP, LEVELS
from mmgen.kernels import rff_features

release_module = importlib.import_module("mmgen.release")


def test_block_is_the_largest_input_length_whose_products_stay_below_2_24():
    assert BLOCK * LATTICE_MAX * LEVELS < 2**24 <= (BLOCK + 1) * LATTICE_MAX * LEVELS
    assert BLOCK == 1044


def test_lattice_frequencies_are_integers_over_16_ell_and_gaussian_ones_are_not():
    f = create("rff", input_shape=(1, 28, 28), n_features=2000, seed=3)
    k = f.lattice_
    assert f.config.frequencies == "lattice"
    assert torch.equal(k, k.round()) and float(k.abs().max()) == LATTICE_MAX
    assert torch.equal(f.weights_, (k.double() / (LATTICE_STEP * f.bandwidth_)).float())
    # the discretised N(0, 1): its variance is 1 + 1/(12·16²) up to the sample's spread
    assert abs(float((k.double() / LATTICE_STEP).var()) - 1.0) < 0.01
    g = create("rff", input_shape=(1, 28, 28), n_features=2000, seed=3, frequencies="gaussian")
    assert g.lattice_ is None
    z = torch.randn(784, 1000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(g.weights_, (z / g.bandwidth_).float())


def test_unknown_frequencies_are_refused():
    with pytest.raises(Exception, match="frequencies"):
        create("rff", input_shape=(4,), frequencies="uniform")


@pytest.mark.parametrize("d", [BLOCK, BLOCK + 1, 3 * BLOCK + 7])
def test_the_integer_product_is_exact_at_the_extremes_of_the_grid(d):
    """Every p at 255 and every k at ±63 (the largest sums), and random integers, against float64."""
    gen = torch.Generator().manual_seed(d)
    k = torch.randint(-LATTICE_MAX, LATTICE_MAX + 1, (d, 64), generator=gen).float()
    k[:, 0], k[:, 1] = LATTICE_MAX, -LATTICE_MAX
    p = torch.randint(0, LEVELS + 1, (9, d), generator=gen).float()
    p[0] = LEVELS
    exact = rff_module._integer_product(p, k, float64=True)
    assert float(exact[0, 0]) == d * LATTICE_MAX * LEVELS
    assert torch.equal(rff_module._integer_product(p, k).double(), exact)
    assert rff_module._float32_product_is_exact(k, 9)


def test_without_the_blocks_a_float32_product_past_block_rounds(monkeypatch):
    """The blocks are what keeps the product exact: one float32 product over 8,000 inputs rounds, and the
    probe says so."""
    d = 8000
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(-LATTICE_MAX, LATTICE_MAX + 1, (d, 256), generator=gen).float()
    k[:, 0] = LATTICE_MAX
    assert rff_module._float32_product_is_exact(k, 16)
    monkeypatch.setattr(rff_module, "BLOCK", 10**9)
    assert not rff_module._float32_product_is_exact(k, 16)


def test_a_failed_probe_falls_back_to_the_float64_product_with_the_same_values(monkeypatch, caplog):
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    want = create("rff", input_shape=(1, 8, 8), n_features=300).release_features(x)
    calls = []

    def product(p, k, *, float64=False):
        calls.append(float64)
        return torch.mm(p.double(), k.double()) if float64 else torch.mm(p, k)

    monkeypatch.setattr(rff_module, "_float32_product_is_exact", lambda k, rows: False)
    monkeypatch.setattr(rff_module, "_integer_product", product)
    with caplog.at_level("WARNING", logger="mmgen.features.rff"):
        got = create("rff", input_shape=(1, 8, 8), n_features=300).release_features(x)
    assert calls == [True] and "not exact" in caplog.text
    assert torch.equal(got, want)


def test_the_probe_runs_once_per_shape_and_device(monkeypatch):
    f = create("rff", input_shape=(1, 8, 8), n_features=300)
    seen = []
    real = rff_module._float32_product_is_exact
    monkeypatch.setattr(rff_module, "_float32_product_is_exact", lambda k, rows: seen.append(rows) or real(k, rows))
    for n in (5, 5, 7, 5, 7):
        f.release_features(torch.rand(n, 1, 8, 8))
    assert seen == [5, 7]


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (2.0, 257.0)])
def test_release_features_are_the_map_on_the_value_grid(bounds):
    """On the grid the release features are the float64 map of the record; off it, of its rounded record."""
    low, high = bounds
    gen = torch.Generator().manual_seed(5)
    f = create("rff", input_shape=(3, 5, 5), bounds=bounds, n_features=400)
    p = torch.randint(0, LEVELS + 1, (40, 3, 5, 5), generator=gen).double()
    x = low + p * (high - low) / LEVELS
    w = f.lattice_.double() / (LATTICE_STEP * f.bandwidth_)
    proj = x.reshape(40, -1) @ w
    want = torch.cat([proj.cos(), proj.sin()], 1) / math.sqrt(200)
    got = f.release_features(x.float())
    assert (got - want).abs().max() < 1e-12
    assert (got - rff_features(x.reshape(40, -1).float(), f.weights_).double()).abs().max() < 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(40, dtype=torch.float64), atol=1e-14)
    off = x + (torch.rand(x.shape, generator=gen, dtype=torch.float64) - 0.5) * 0.99 * (high - low) / LEVELS
    assert torch.equal(f.release_features(off.clamp(low, high).float()), got)


def test_a_row_depends_on_its_record_alone_at_every_chunk_size():
    """No padding, no fixed shape: the same record gives the same bits in chunks of 1 to 300 rows."""
    gen = torch.Generator().manual_seed(2)
    f = create("rff", input_shape=(1, 28, 28), n_features=1000)
    x = torch.rand(300, 1, 28, 28, generator=gen)
    alone = torch.cat([f.release_features(x[i : i + 1]) for i in (0, 17, 299)])
    for n in (2, 18, 64, 300):
        rows = f.release_features(torch.cat([x[:n].flip(0), torch.ones(3, 1, 28, 28)]))  # reversed, then others
        for at, i in enumerate((0, 17, 299)):
            if i < n:
                assert torch.equal(rows[n - 1 - i], alone[at]), (n, i)


def test_front_canary_moves_the_lattice_release_by_its_row_even_unpadded(monkeypatch):
    """The release with the last chunk *not* padded (so chunks of several shapes): a front canary still
    moves the exact sums by exactly its own row at every batching."""
    monkeypatch.setattr(release_module, "_chunk_rows", lambda dim, device=None: 64)
    monkeypatch.setattr(release_module, "_pads", lambda f: False)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(200, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (200,), generator=gen)
    canary, label = torch.ones(1, 1, 8, 8), torch.tensor([2])
    fmap = create("rff", input_shape=(1, 8, 8), n_features=600)

    def sums(xs, ys, batch):
        return release_module.accumulate_fixed_point(iter_batches(xs, ys, batch), [fmap], 4, (1, 8, 8), (0.0, 1.0))[0][0]

    alone = sums(canary, label, 1)
    for batch in (1, 13, 64, 201):
        assert torch.equal(sums(torch.cat([canary, x]), torch.cat([label, y]), batch) - sums(x, y, batch), alone)


def test_matmul_precision_is_full_during_the_product_and_restored_after(monkeypatch):
    before = torch.get_float32_matmul_precision()
    seen = []
    real_mm = torch.Tensor.__matmul__

    def spy(a, b):
        seen.append(torch.get_float32_matmul_precision())
        return real_mm(a, b)

    try:
        torch.set_float32_matmul_precision("medium")
        monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
        create("rff", input_shape=(4,), n_features=8).release_features(torch.rand(3, 4))
        assert seen and set(seen) <= {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_a_spec_written_before_lattice_frequencies_rebuilds_the_gaussian_ones():
    g = create("rff", input_shape=(1, 8, 8), n_features=100, seed=4, frequencies="gaussian")
    spec = g.spec()
    del spec["config"]["frequencies"]
    old = from_spec(spec)
    assert old.config.frequencies == "gaussian" and torch.equal(old.weights_, g.weights_)
    new = create("rff", input_shape=(1, 8, 8), n_features=100, seed=4)
    assert from_spec(new.spec()).config.frequencies == "lattice"
    assert torch.equal(from_spec(new.spec()).weights_, new.weights_)


@pytest.mark.parametrize("slices, rows", [(1, 16), (3, 16), (4, 64)])
def test_release_sums_equal_the_sum_of_rows_computed_one_record_at_a_time(slices, rows, monkeypatch):
    """One product per chunk of ``slices × rows`` records, features in slices of ``rows``: the exact sums equal
    those of every record's row computed alone, at every batching."""
    from mmgen.privacy.bounds import fixed_point_class_sums

    monkeypatch.setattr(release_module, "_chunk_rows", lambda dim, device=None: rows)
    monkeypatch.setattr(release_module, "_PRODUCT_SLICES", slices)
    gen = torch.Generator().manual_seed(slices)
    x = torch.rand(150, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (150,), generator=gen)
    fmap = create("rff", input_shape=(1, 8, 8), n_features=600)
    want = torch.zeros(4, 600, dtype=torch.int64)
    for i in range(len(x)):
        want += fixed_point_class_sums(fmap.release_features(x[i : i + 1]), y[i : i + 1], 4, fmap.max_norm)
    for batch in (1, 7, 64, 150):
        (got,), _ = release_module.accumulate_fixed_point(iter_batches(x, y, batch), [fmap], 4, (1, 8, 8), (0.0, 1.0))
        assert torch.equal(got, want), (slices, rows, batch)

"""table-marginals' sparse paths (issue 22, item 4): the release and the fit never build an (N, D) row.

Release: a well-formed row (every column vector one-hot) rounds to q_t on its one cell of each of the
K + P tables, q_t taken from the dense path itself, so the class sums are q_t times integer counts.
These tests check, on real tables (CPS1988, SLID with gaps, a 24-column table made of CPS1988's
rows), that the sparse sums equal the dense path's **bit for bit**, with adversarial rows mixed in
(they go dense), across classes, and with a canary in front. Fit: the matching loss from per-block
class sums equals the dense loss and its gradient.
"""

from __future__ import annotations

import math

import pytest
import torch

from mmgen.data import iter_batches
from mmgen.data.examples import example_table
from mmgen.data.schema import Schema
from mmgen.errors import PrivacyError
from mmgen.features import TableMarginals, create
from mmgen.features.base import class_mean_matching_loss
from mmgen.privacy.bounds import FRACTION_BITS, fixed_point
from mmgen.privacy.mechanism import NORM_SLACK
from mmgen.release import _one_hot_plan, accumulate_fixed_point


class DenseMarginals(TableMarginals):
    """The same map, φ unchanged, but not exactly TableMarginals: the release sums it by the dense path."""


def wide_cps1988(copies: int = 4):
    """CPS1988's six feature columns repeated ``copies`` times (copy k reads the rows shifted by 7k, renamed
    ``name_k``), label parttime: 24 columns at 4 copies. Returns the frame and its schema."""
    import pandas as pd

    frame, spec = example_table("AER/CPS1988")
    feats = [c for c in spec["columns"] if c["name"] != spec["label"]]
    cols, data = [], {}
    for k in range(copies):
        shifted = frame.iloc[[(i + 7 * k) % len(frame) for i in range(len(frame))]].reset_index(drop=True)
        for c in feats:
            cols.append({**c, "name": f"{c['name']}_{k}"})
            data[f"{c['name']}_{k}"] = shifted[c["name"]].to_numpy()
    label = next(c for c in spec["columns"] if c["name"] == spec["label"])
    data[label["name"]] = frame[label["name"]].to_numpy()
    return pd.DataFrame(data), {"columns": [*cols, label], "label": spec["label"]}


def _table(name, rows):
    frame, spec = wide_cps1988() if name == "wide" else example_table(name)
    schema = Schema.from_dict(spec)
    x, y = schema.encode(frame.iloc[:rows])
    return x, y, schema


def _maps(schema, **options):
    layout = schema.layout()
    sparse = create("table-marginals", input_shape=(schema.encoded_dim,), layout=layout, **options)
    dense = DenseMarginals(sparse.config).setup((schema.encoded_dim,))
    return sparse, dense


def _adversarial(n, d, gen):
    """Random vectors in [0, 1]^D, an all-zeros row and an all-ones row: none is well-formed."""
    return torch.cat([torch.rand(n, d, generator=gen, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64),
                      torch.ones(1, d, dtype=torch.float64)])  # fmt: skip


def _sums(fmap, x, y, n_classes, batch_size=97):
    (s,), counts = accumulate_fixed_point(iter_batches(x, y, batch_size), [fmap], n_classes, x.shape[1:], (0.0, 1.0))
    return s, counts


TABLES = [("AER/CPS1988", 3000), ("carData/SLID", 3000), ("wide", 600)]


@pytest.mark.parametrize("name,rows", TABLES)
def test_sparse_release_sums_equal_the_dense_path_bit_for_bit(name, rows):
    x, y, schema = _table(name, rows)
    sparse, dense = _maps(schema)
    gen = torch.Generator().manual_seed(0)
    bad = _adversarial(40, x.shape[1], gen)
    # real and adversarial rows interleaved in one stream, labels over three classes
    xs = torch.cat([x[: rows // 2], bad[:20], x[rows // 2 :], bad[20:]])
    n_classes = 3
    ys = torch.randint(0, n_classes, (len(xs),), generator=gen)
    a, ca = _sums(sparse, xs, ys, n_classes)
    b, cb = _sums(dense, xs, ys, n_classes)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert int(a.abs().sum()) > 0 and all(int(a[c].abs().sum()) > 0 for c in range(n_classes))


def test_real_labels_and_the_batching_do_not_change_the_sums():
    x, y, schema = _table("AER/CPS1988", 4000)
    sparse, dense = _maps(schema)
    ref, _ = _sums(dense, x, y, schema.n_classes, batch_size=500)
    for b in (1, 333, 4000):
        assert torch.equal(_sums(sparse, x, y, schema.n_classes, batch_size=b)[0], ref)


def test_well_formed_rows_never_reach_the_dense_features(monkeypatch):
    x, y, schema = _table("carData/SLID", 2000)  # gaps included: the missing cell is one-hot too
    sparse, _ = _maps(schema)
    ok, _, _ = sparse.one_hot_cells(x)
    assert bool(ok.all())
    bad = _adversarial(5, x.shape[1], torch.Generator().manual_seed(1))
    assert not bool(sparse.one_hot_cells(bad)[0].any())
    seen = []
    original = TableMarginals._features

    def counting(self, v):
        seen.append(len(v))
        return original(self, v)

    monkeypatch.setattr(TableMarginals, "_features", counting)
    xs = torch.cat([x, bad])
    _sums(sparse, xs, torch.zeros(len(xs), dtype=torch.long), 1)
    assert sum(seen) == 1 + len(bad)  # the plan's canonical row, then the adversarial rows alone


@pytest.mark.parametrize("name,rows", TABLES)
def test_front_canary_moves_the_sums_by_its_own_rounded_row(name, rows):
    x, y, schema = _table(name, rows)
    sparse, _ = _maps(schema)
    n_classes = schema.n_classes
    base, counts = _sums(sparse, x, y, n_classes, batch_size=64)
    for canary in (x[-1:], _adversarial(1, x.shape[1], torch.Generator().manual_seed(2))[:1]):
        xc, yc = torch.cat([canary, x]), torch.cat([torch.zeros(1, dtype=torch.long), y])
        moved, counts_c = _sums(sparse, xc, yc, n_classes, batch_size=64)
        assert torch.equal(counts_c - counts, torch.eye(n_classes, dtype=torch.long)[0])
        row = fixed_point(sparse.release_features(canary), sparse.max_norm)[0]  # the dense path's rounded row
        assert torch.equal(moved[0] - base[0], row) and not bool((moved[1:] - base[1:]).any())
        norm = float((row.double() * 2.0**-FRACTION_BITS).norm())
        assert norm <= sparse.max_norm * (1 + NORM_SLACK)


@pytest.mark.parametrize("weighting", ["cells", "equal"])
@pytest.mark.parametrize("name,rows", TABLES)
def test_q_is_the_dense_value_of_every_well_formed_row(name, rows, weighting):
    x, _, schema = _table(name, rows)
    sparse, _ = _maps(schema, weighting=weighting)
    q = _one_hot_plan(sparse)
    sizes = sparse.table_sizes()
    assert q is not None and q.shape == (sparse.output_dim,)
    k = len(sparse.cells_)
    weights = sparse.one_way_weights_ + [sparse.pair_weights_[i] * sparse.pair_weights_[j] for i, j in sparse.pairs_]
    assert len(sizes) == len(weights) == k + k * (k - 1) // 2
    per_table = torch.stack([part[0] for part in q.split(sizes)])
    assert bool((torch.cat([p.eq(p[0]) for p in q.split(sizes)])).all())  # one value per table
    expected = [round(w * sparse.scale_ * 2.0**FRACTION_BITS) for w in weights]
    assert max(abs(int(a) - b) for a, b in zip(per_table.tolist(), expected)) <= 1
    if weighting == "equal":
        assert len(set(per_table.tolist())) == 1  # the map of releases written before the weights
    assert float((per_table.double() * 2.0**-FRACTION_BITS).norm()) <= sparse.max_norm * (1 + NORM_SLACK)
    rounded = fixed_point(sparse.release_features(x[:300]), sparse.max_norm)  # (300, D) dense rows
    hot = rounded != 0
    assert bool((rounded == q * hot).all()) and bool((hot.sum(dim=1) == len(sizes)).all())


def test_a_wrong_plan_raises(monkeypatch):
    _, _, schema = _table("AER/CPS1988", 10)
    sparse, _ = _maps(schema)
    assert _one_hot_plan(_maps(schema)[1]) is None  # a subclass goes dense
    relaxed = torch.full((1, schema.encoded_dim), 0.5, dtype=torch.float64)
    monkeypatch.setattr(sparse, "canonical_row", lambda: relaxed)
    with pytest.raises(PrivacyError):
        _one_hot_plan(sparse)


def test_plain_numeric_slots_without_a_layout():
    """No schema: numeric slots on hat weights; a value on a knot is one-hot, between knots it goes dense."""
    fmap = create("table-marginals", input_shape=(6,), bins=5)
    dense = DenseMarginals(fmap.config).setup((6,))
    gen = torch.Generator().manual_seed(3)
    knots = torch.randint(0, 5, (400, 6), generator=gen).double() / 4
    xs = torch.cat([knots, torch.rand(50, 6, generator=gen, dtype=torch.float64)])
    ys = torch.randint(0, 2, (len(xs),), generator=gen)
    assert bool(fmap.one_hot_cells(knots)[0].all())
    assert torch.equal(_sums(fmap, xs, ys, 2)[0], _sums(dense, xs, ys, 2)[0])


# -- fit ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["AER/CPS1988", "carData/SLID", "wide"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_sparse_matching_loss_equals_the_dense_loss_and_gradient(name, unbiased, monkeypatch):
    _, _, schema = _table(name, 10)
    fmap = create("table-marginals", input_shape=(schema.encoded_dim,), layout=schema.layout())
    gen = torch.Generator().manual_seed(4)
    n_classes = 3
    x = torch.rand(257, schema.encoded_dim, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (257,), generator=gen)  # class 2 absent
    y[0] = 2 if name != "wide" else 0  # a class with a single record (biased term) on two tables
    targets = torch.rand(n_classes, fmap.output_dim, generator=gen, dtype=torch.float64) / fmap.output_dim**0.5
    want = class_mean_matching_loss(fmap(x), y, targets, unbiased=unbiased)
    (g_want,) = torch.autograd.grad(want, x)
    monkeypatch.setattr(fmap, "_features", lambda v: pytest.fail("the sparse loss built the dense features"))
    got = fmap.matching_loss(x, y, targets, unbiased=unbiased)
    (g_got,) = torch.autograd.grad(got, x)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-13)
    assert torch.allclose(g_got, g_want, rtol=1e-8, atol=1e-13)


@pytest.mark.parametrize("two_way", [True, False])
def test_sparse_matching_loss_without_a_layout(two_way):
    fmap = create("table-marginals", input_shape=(5,), bins=4, two_way=two_way)
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(64, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (64,), generator=gen)
    targets = torch.rand(2, fmap.output_dim, generator=gen, dtype=torch.float64) * 0.1
    for unbiased in (False, True):
        want = class_mean_matching_loss(fmap(x), y, targets, unbiased=unbiased)
        got = fmap.matching_loss(x, y, targets, unbiased=unbiased)
        gw, gg = torch.autograd.grad(want, x)[0], torch.autograd.grad(got, x)[0]
        assert torch.allclose(got, want, rtol=1e-10) and torch.allclose(gg, gw, rtol=1e-8, atol=1e-13)

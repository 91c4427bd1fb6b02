"""The faster release path (issue 24, item 1) computes the same exact sums as the plain one, bit for bit.

The reference here is the release path as it was written before: every record's row capped by one
broadcast division ``φ / max(1, ‖φ‖/m)`` in float64, times ``2^FRACTION_BITS``, rounded, converted to
int64 and added per class with an integer ``index_add_``; an entry-by-entry ``isfinite`` check first.
The fast path must give the same int64 sums on random and adversarial rows (norms a few units of 2⁻⁵²
above the bound, far above it, zero, huge, subnormal, half-integer ties on the grid), the same
features (hermite, ntk: in place, fewer copies), and, for the maps built on matrix products, sums that
do not depend on the batching at all: their chunks always have one shape, the last one padded.
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

import mmgen
from mmgen.data import iter_batches
from mmgen.errors import DataError
from mmgen.features import TableMarginals, create
from mmgen.privacy import bounds
from mmgen.privacy.bounds import FRACTION_BITS, NonFiniteFeatures, fixed_point, fixed_point_class_sums

release_module = importlib.import_module("mmgen.release")


def reference_rows(phi: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The rounded rows as the release path computed them before: one broadcast cap, int64."""
    phi = phi.to(torch.float64, copy=True)
    scale = (torch.linalg.vector_norm(phi, dim=1) / max_norm).clamp(min=1.0)
    return (phi / scale[:, None] * 2.0**FRACTION_BITS).round().to(torch.int64)


def reference_sums(phi: torch.Tensor, y: torch.Tensor, n_classes: int, max_norm: float) -> torch.Tensor:
    rows = reference_rows(phi, max_norm)
    return torch.zeros(n_classes, phi.shape[1], dtype=torch.int64).index_add_(0, y, rows)  # exact integer sums


def _near_unit_rows(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """Rows normalised in float64: their float64 norms land a few units of 2⁻⁵² on either side of 1."""
    phi = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return phi / phi.norm(dim=1, keepdim=True)


def _adversarial_rows(d: int, gen: torch.Generator) -> torch.Tensor:
    rows = [
        torch.zeros(d, dtype=torch.float64),
        -torch.zeros(d, dtype=torch.float64),  # negative zeros
        torch.full((d,), 1.0 / math.sqrt(d), dtype=torch.float64),
        torch.full((d,), 3.0, dtype=torch.float64),  # far above the bound
        torch.full((d,), 1e200, dtype=torch.float64),  # finite, but its float64 norm overflows to inf
        torch.full((d,), 5e-324, dtype=torch.float64),  # subnormal
        (torch.arange(d, dtype=torch.float64) + 0.5) * 2.0**-FRACTION_BITS,  # half-integer ties on the grid
        -(torch.arange(d, dtype=torch.float64) + 0.5) * 2.0**-FRACTION_BITS,
        torch.randn(d, generator=gen, dtype=torch.float64) * 1e-3,
    ]
    one_hot = torch.zeros(d, dtype=torch.float64)
    one_hot[d // 2] = 1.0 + 2.0**-52  # just above the bound, in one coordinate
    rows.append(one_hot)
    return torch.stack(rows)


@pytest.mark.parametrize("row_call", [0, 10**9])  # capped rows divided one by one / in one broadcast division
@pytest.mark.parametrize("max_norm", [1.0, 0.5, 2.0**-3 * 3])
@pytest.mark.parametrize("n,d", [(1, 7), (40, 33), (300, 500), (1000, 64)])
def test_fixed_point_class_sums_equal_the_broadcast_cap_bit_for_bit(n, d, max_norm, row_call, monkeypatch):
    monkeypatch.setattr(bounds, "_ROW_CALL", row_call)
    gen = torch.Generator().manual_seed(n * 1000 + d)
    phi = torch.cat([_near_unit_rows(n, d, gen) * max_norm, _adversarial_rows(d, gen), 4 * _near_unit_rows(3, d, gen)])
    y = torch.randint(0, 4, (len(phi),), generator=gen)
    want = reference_sums(phi, y, 5, max_norm)
    got = fixed_point_class_sums(phi.clone(), y, 5, max_norm)
    assert got.dtype == torch.int64 and torch.equal(got, want)
    assert torch.equal(fixed_point(phi, max_norm), reference_rows(phi, max_norm))
    small = phi.abs().amax(dim=1) < 1e30  # float32 rows (1e200 would become inf in float32)
    phi32, y32 = phi[small].float(), y[small]
    assert torch.equal(fixed_point_class_sums(phi32, y32, 5, max_norm), reference_sums(phi32, y32, 5, max_norm))


def test_some_rows_near_the_bound_are_capped_and_both_division_paths_agree(monkeypatch):
    gen = torch.Generator().manual_seed(5)
    phi = _near_unit_rows(200, 300, gen)
    norms = torch.linalg.vector_norm(phi, dim=1)
    assert 0 < int((norms > 1).sum()) < len(phi)  # the cap divides some rows by 1 + k·2⁻⁵², not all
    y = torch.zeros(len(phi), dtype=torch.long)
    want = reference_sums(phi, y, 1, 1.0)
    calls = []
    original = torch.Tensor.div_

    def counting(self, *args, **kwargs):
        calls.append(self.shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "div_", counting)
    monkeypatch.setattr(bounds, "_ROW_CALL", 0)  # capped rows one by one
    assert torch.equal(fixed_point_class_sums(phi.clone(), y, 1), want)
    assert calls == [torch.Size([200])] + [torch.Size([300])] * int((norms > 1).sum())  # the norms / m, then each capped row
    calls.clear()
    monkeypatch.setattr(bounds, "_ROW_CALL", 10**9)  # one broadcast division instead
    assert torch.equal(fixed_point_class_sums(phi.clone(), y, 1), want)
    assert calls == [torch.Size([200]), torch.Size([200, 300])]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rows_are_refused_and_huge_finite_rows_are_not(bad):
    phi = torch.rand(6, 5, dtype=torch.float64)
    phi[3, 2] = bad
    with pytest.raises(NonFiniteFeatures):
        fixed_point_class_sums(phi, torch.zeros(6, dtype=torch.long), 2)
    assert issubclass(NonFiniteFeatures, DataError)
    huge = torch.full((2, 5), 1e300, dtype=torch.float64)  # finite entries, an overflowing norm: capped to 0, as before
    assert not bool(fixed_point_class_sums(huge, torch.zeros(2, dtype=torch.long), 1).any())


# -- the release path against the reference, map by map -----------------------------------------
def _images(n, gen):
    x = torch.rand(n, 1, 8, 8, generator=gen)
    x[:3] = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8), torch.full((1, 8, 8), 0.5)])  # domain corners
    return x, torch.randint(0, 4, (n,), generator=gen)


MAPS = {
    "rff": dict(n_features=600),
    "hermite": dict(order=12),
    "hermite-product": dict(order=3, subset_size=2, n_subsets=8),
    "ntk": dict(width=24, n_outputs=2),
}


def _reference_accumulate(fmap, x, y, n_classes, rows, pad):
    """Chunks of ``rows`` records from the start of the data (the last one padded with 0 when ``pad``), the
    features of each chunk at once, the plain cap and rounding, integer sums."""
    out = torch.zeros(n_classes, fmap.output_dim, dtype=torch.int64)
    for start in range(0, len(x), rows):
        xc, yc = x[start : start + rows], y[start : start + rows]
        n = len(xc)
        if pad and n < rows:
            xc = torch.cat([xc, torch.zeros(rows - n, *x.shape[1:])])
        phi = fmap.release_features(xc)[:n]
        assert bool(torch.isfinite(phi).all())
        out += reference_sums(phi, yc, n_classes, fmap.max_norm)
    return out


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("rows", [32, 64])
def test_release_sums_equal_the_reference_for_every_batching(name, rows, monkeypatch):
    monkeypatch.setattr(release_module, "_chunk_rows", lambda dim, device=None: rows)
    gen = torch.Generator().manual_seed(rows)
    x, y = _images(150, gen)  # 150 records: chunks of `rows` across batch boundaries, a partial last chunk
    fmap = create(name, input_shape=(1, 8, 8), **MAPS[name])
    want = _reference_accumulate(fmap, x, y, 4, rows, pad=release_module._pads(fmap))
    for batch in (1, 7, rows, rows + 1, 150):
        (got,), counts = release_module.accumulate_fixed_point(iter_batches(x, y, batch), [fmap], 4, (1, 8, 8), (0.0, 1.0))
        assert torch.equal(got, want), (name, batch)
        assert torch.equal(counts, torch.bincount(y, minlength=4))


def test_table_maps_dense_path_equals_the_reference():
    from mmgen.data.examples import example_table
    from mmgen.data.schema import Schema

    frame, spec = example_table("AER/CPS1988")
    schema = Schema.from_dict(spec)
    x, y = schema.encode(frame.iloc[:700])
    gen = torch.Generator().manual_seed(3)
    x = torch.cat([x, torch.rand(20, x.shape[1], generator=gen, dtype=x.dtype)])  # rows that are not one-hot
    y = torch.cat([y, torch.zeros(20, dtype=y.dtype)])

    class DenseMarginals(TableMarginals):
        """The same map, summed by the dense path (not exactly TableMarginals: no sparse plan)."""

    for fmap in (
        create("table-rff", input_shape=(schema.encoded_dim,), layout=schema.layout(), n_features=300),
        DenseMarginals(TableMarginals.Config(layout=schema.layout())).setup((schema.encoded_dim,)),
    ):
        rows = release_module._chunk_rows(fmap.output_dim)
        want = _reference_accumulate(fmap, x, y, schema.n_classes, rows, pad=release_module._pads(fmap))
        for batch in (97, len(x)):
            (got,), _ = release_module.accumulate_fixed_point(
                iter_batches(x, y, batch), [fmap], schema.n_classes, x.shape[1:], (0.0, 1.0)
            )
            assert torch.equal(got, want), (fmap.name, batch)


@pytest.mark.parametrize("name, options", [("rff", {}), ("rff", {"frequencies": "gaussian"}), ("ntk", {})])
def test_front_canary_moves_product_maps_by_the_row_it_has_alone(name, options, monkeypatch):
    """With one chunk shape, a record's row is the same wherever the stream puts it: the sums with a
    canary in front minus those without are, bit for bit, the sums of the canary released alone."""
    monkeypatch.setattr(release_module, "_chunk_rows", lambda dim, device=None: 64)
    gen = torch.Generator().manual_seed(11)
    x, y = _images(200, gen)
    canary, label = torch.ones(1, 1, 8, 8), torch.tensor([2])
    fmap = create(name, input_shape=(1, 8, 8), **MAPS[name], **options)
    assert release_module._pads(fmap) and release_module._lattice(fmap) == (name == "rff" and not options)

    def sums(xs, ys, batch):
        return release_module.accumulate_fixed_point(iter_batches(xs, ys, batch), [fmap], 4, (1, 8, 8), (0.0, 1.0))[0][0]

    alone = sums(canary, label, 1)
    for batch in (1, 13, 64, 201):
        assert torch.equal(sums(torch.cat([canary, x]), torch.cat([label, y]), batch) - sums(x, y, batch), alone)


def test_release_of_a_broken_map_names_the_statistic_before_summing():
    class Broken(mmgen.features.FeatureMap):
        name = ""

        def _setup(self):
            pass

        @property
        def output_dim(self):
            return 3

        def _features(self, x):
            out = x[:, :3].clone()
            out[-1, 1] = math.nan
            return out

    fmap = Broken(mmgen.config.Config()).setup((4,))
    with pytest.raises(DataError, match="Statistic '': the feature map produced NaN or inf"):
        release_module.accumulate_fixed_point(iter_batches(torch.rand(9, 4), torch.zeros(9, dtype=torch.long), 4),
                                              [fmap], 2, (4,), (0.0, 1.0))  # fmt: skip


# -- the maps' release features: the same values, computed with fewer copies ----------------------
@pytest.mark.parametrize(
    "name,options,shape,bounds_",
    [
        ("hermite", dict(order=20), (1, 8, 8), (0.0, 1.0)),
        ("hermite", dict(order=0), (5,), (0.0, 1.0)),
        ("hermite", dict(order=1, rho=0.9), (7,), (-2.0, 3.0)),
        ("hermite-product", dict(), (1, 8, 8), (0.0, 1.0)),
        ("hermite-product", dict(order=3, subset_size=2, n_subsets=5, rho=0.3), (6,), (-1.0, 1.0)),
        ("hermite-product", dict(subset_size=1), (3,), (0.0, 1.0)),
    ],
)
def test_hermite_release_features_equal_the_float64_forward(name, options, shape, bounds_):
    fmap = create(name, input_shape=shape, bounds=bounds_, **options)
    gen = torch.Generator().manual_seed(2)
    low, high = bounds_
    x = low + (high - low) * torch.rand(40, *shape, generator=gen)
    x[0], x[1] = low, high
    got = fmap.release_features(x)
    assert got.dtype == torch.float64 and torch.equal(got, fmap(x.to(torch.float64)))
    with pytest.raises(DataError, match="Expected x of shape"):
        fmap.release_features(torch.rand(3, 2))


@pytest.mark.parametrize("options,n", [(dict(), 41), (dict(width=16, depth=2, n_outputs=3, activation="tanh", chunk_size=8), 30),
                                       (dict(chunk_size=7), 5), (dict(activation="softplus", chunk_size=4), 4)])  # fmt: skip
def test_ntk_release_features_equal_the_float64_network(options, n):
    import copy

    fmap = create("ntk", input_shape=(1, 8, 8), **options)
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n))
    net = copy.deepcopy(fmap.network_).to(torch.float64)
    assert torch.equal(fmap.release_features(x), fmap._features(x.reshape(n, -1).to(torch.float64), network=net))


def test_chunks_regroup_batches_in_order_and_pad_the_last():
    chunks = release_module._Chunks(4, fill=-1.0)
    x = torch.arange(11, dtype=torch.float32)[:, None].expand(11, 2)
    y = torch.arange(11) % 3
    seen = []
    for xb, yb in ((x[:3], y[:3]), (x[3:9].double(), y[3:9]), (x[9:], y[9:])):  # a wider dtype midway
        seen += [(xc.clone(), yc.clone(), n) for xc, yc, n in chunks.add(xb, yb)]
    seen += [(xc.clone(), yc.clone(), n) for xc, yc, n in chunks.flush()]
    assert [n for _, _, n in seen] == [4, 4, 3] and all(len(xc) == 4 for xc, _, _ in seen)
    assert torch.equal(torch.cat([xc[:n, 0] for xc, _, n in seen]), torch.arange(11, dtype=torch.float64))
    assert torch.equal(torch.cat([yc[:n] for _, yc, n in seen]), y)
    assert float(seen[-1][0][3, 0]) == -1.0 and int(seen[-1][1][3]) == 0  # padding: the fill value, label 0
    assert list(chunks.flush()) == []


def test_which_maps_are_padded():
    pads = {name: release_module._pads(create(name, input_shape=(1, 8, 8), **MAPS.get(name, {})))
            for name in ("rff", "ntk", "hermite", "hermite-product")}  # fmt: skip
    assert pads == {"rff": True, "ntk": True, "hermite": False, "hermite-product": False}
    assert release_module._chunk_rows(10_000) == 192 and release_module._chunk_rows(50_305) == 41
    assert release_module._chunk_rows(1) == 4096 and release_module._chunk_rows(10**8) == 1
    assert release_module._chunk_rows(628_801) == 128  # ntk at width 800: not 3 records per chunk
    assert release_module._chunk_rows(1_500_000) == 64 and release_module._chunk_rows(200_000) == 128
    assert release_module._chunk_rows(10_000, torch.device("cuda")) == 832  # larger chunks where launches cost more


@pytest.mark.parametrize("width,n", [(300, 128), (64, 192), (64, 1)])
def test_ntk_one_layer_relu_jacobian_equals_the_vmapped_one_bit_for_bit(width, n):
    """The release's written-in-place Jacobian (one hidden ReLU layer, one output: DP-NTK's network) is
    the vmapped ``jacrev``'s, bit for bit, at release-like shapes; release_features takes it."""
    import copy

    fmap = create("ntk", input_shape=(1, 28, 28), width=width)
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(width + n))
    x[0, 0, :4] = 0.0  # some inputs at the domain's edge
    net = copy.deepcopy(fmap.network_).to(torch.float64)
    u = 2.0 * x.reshape(n, -1).to(torch.float64) - 1.0
    fast = fmap._one_layer_relu_jacobian(u, net)
    assert fast.shape == (n, fmap.output_dim) and torch.equal(fast, fmap._jacobian(u, net, None))
    calls = []
    original = type(fmap)._one_layer_relu_jacobian
    fmap._one_layer_relu_jacobian = lambda *a: calls.append(1) or original(*a)
    assert torch.equal(fmap.release_features(x), fast / fast.norm(dim=1, keepdim=True)) and calls == [1]

"""Contract tests for every registered feature map, and the RFF kernel oracle."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmgen
from mmgen.errors import MMGenError, NotFittedError
from mmgen.features import create, list_feature_maps

# Small settings per map so the contract runs in seconds; maps not listed use their defaults.
SMALL = {"rff": {"n_features": 256}, "table-rff": {"n_features": 256}, "table-marginals": {"bins": 3}}
SHAPE = (1, 8, 8)


def _adversarial(shape, low=0.0, high=1.0):
    d = math.prod(shape)
    checker = torch.arange(d) % 2
    rows = [
        torch.full((d,), low), torch.full((d,), high), low + (high - low) * checker,
        high - (high - low) * checker, torch.rand(d) * (high - low) + low,
        torch.where(torch.rand(d) < 0.5, torch.tensor(low), torch.tensor(high)),
    ]  # fmt: skip
    return torch.stack(rows).view(len(rows), *shape)


@pytest.fixture(params=list_feature_maps())
def fmap(request):
    return create(request.param, input_shape=SHAPE, **SMALL.get(request.param, {}))


def test_norm_bound_on_adversarial_inputs(fmap):
    for bounds in [(0.0, 1.0)]:
        x = _adversarial(SHAPE, *bounds)
        norms = fmap(x).norm(dim=1)
        assert torch.isfinite(norms).all()
        assert (norms <= fmap.max_norm + 1e-5).all(), norms


def test_shape_dtype_and_seed(fmap):
    x = torch.rand(7, *SHAPE)
    phi = fmap(x)
    assert phi.shape == (7, fmap.output_dim) and phi.dtype == torch.float32
    again = mmgen.features.from_spec(fmap.spec())
    torch.testing.assert_close(again(x), phi)


def test_not_set_up_raises():
    f = create("rff", n_features=8)
    with pytest.raises(NotFittedError, match="not set up"):
        f(torch.rand(2, *SHAPE))


def test_wrong_shape_raises(fmap):
    with pytest.raises(MMGenError, match="Expected x of shape"):
        fmap(torch.rand(2, 3, 3))


def test_registry_errors():
    with pytest.raises(MMGenError, match="Unknown feature map 'nope'. Known: .*rff"):
        create("nope")
    with pytest.raises(TypeError, match="unknown option.*Valid options"):
        create("rff", n_feature=10)
    with pytest.raises(MMGenError, match="already registered"):
        mmgen.features.register(type("Dup", (mmgen.features.RandomFourierFeatures,), {"name": "rff"}))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=64, max_size=64), st.integers(0, 2**31 - 1))
def test_rff_norm_is_exactly_one(values, seed):
    f = create("rff", input_shape=SHAPE, n_features=64, seed=seed)
    x = torch.tensor(values).view(1, *SHAPE)
    assert abs(float(f(x).norm()) - 1.0) < 1e-5


def test_rff_seed_changes_frequencies():
    a = create("rff", input_shape=SHAPE, n_features=64, seed=1)
    b = create("rff", input_shape=SHAPE, n_features=64, seed=2)
    assert not torch.allclose(a.weights_, b.weights_)


def test_rff_default_bandwidth_is_data_independent():
    f = create("rff", input_shape=(1, 28, 28), n_features=8)
    assert f.bandwidth_ == pytest.approx(mmgen.features.rff.DEFAULT_BANDWIDTH_SCALE * 28.0)
    g = create("rff", input_shape=(1, 28, 28), bounds=(-1.0, 1.0), n_features=8)
    assert g.bandwidth_ == pytest.approx(2 * f.bandwidth_)


def test_rff_inner_products_approximate_gaussian_kernel():
    shape = (1, 4, 4)
    f = create("rff", input_shape=shape, n_features=40_000, bandwidth=1.0, seed=3)
    x = torch.rand(12, *shape) * 0.6
    phi = f(x).double()
    approx = phi @ phi.T
    d2 = torch.cdist(x.view(12, -1).double(), x.view(12, -1).double()) ** 2
    exact = torch.exp(-d2 / 2.0)
    # Monte-Carlo error of an average of 20,000 bounded terms: std ≤ 1/sqrt(2·20000) ≈ 0.005.
    assert (approx - exact).abs().max() < 0.03
    # and the approximation is not trivially good: a different bandwidth is far off
    assert (torch.exp(-d2 / 8.0) - approx).abs().max() > 0.1

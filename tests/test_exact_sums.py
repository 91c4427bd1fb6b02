"""One record moves the release's exact sums by at most the sensitivity, whatever the batching.

The release caps every record's norm in float64, rounds each row to a fixed-point
grid and sums integers (:mod:`mmgen.privacy.bounds`). These tests put a canary at
the *front* of real data (so every later batch shifts by one record) and check
that the noiseless sums move by exactly the canary's own row, of norm ≤ the
declared bound, for every feature map, including the largest NTK the CPU allows
(whose float32 norm is off by far more than the slack the sensitivity adds).
"""

from __future__ import annotations

import math

import pytest
import torch

import mmgen
from mmgen.data import iter_batches
from mmgen.features import create, list_feature_maps
from mmgen.privacy.bounds import FRACTION_BITS, cap_norms, fixed_point, from_fixed_point, rounding_bound
from mmgen.privacy.mechanism import NORM_SLACK
from mmgen.release import accumulate

SMALL = {
    "rff": {"n_features": 2000},
    "hermite": {"order": 20},
    "hermite-product": {"order": 3, "subset_size": 3, "n_subsets": 40},
    "ntk": {"width": 64, "n_outputs": 2},
    "perceptual": {"image_size": 32},
    "table-rff": {"n_features": 2000},
    "table-marginals": {"bins": 3},
}


def _canary(shape):
    return torch.ones(1, *shape)  # a corner of the domain, label 0


def _difference(fmap, x, y, batch_size):
    xc, yc = torch.cat([_canary(x.shape[1:]), x]), torch.cat([torch.zeros(1, dtype=torch.long), y])
    (a,), ca = accumulate(iter_batches(x, y, batch_size), [fmap], 10, x.shape[1:], (0.0, 1.0))
    (b,), cb = accumulate(iter_batches(xc, yc, batch_size), [fmap], 10, x.shape[1:], (0.0, 1.0))
    assert torch.equal(cb - ca, torch.eye(10)[0].double())
    return b - a


@pytest.mark.parametrize("name", list_feature_maps())
def test_front_canary_moves_sums_by_its_own_row_only(name, digits):
    n = 300 if name != "perceptual" else 60
    x, y = digits.x_train[:n], digits.y_train[:n]
    fmap = create(name, input_shape=x.shape[1:], **SMALL.get(name, {}))
    diff = _difference(fmap, x, y, batch_size=64 if name != "perceptual" else 16)
    row = from_fixed_point(fixed_point(fmap.release_features(_canary(x.shape[1:])), fmap.max_norm))
    bound = fmap.max_norm * (1 + NORM_SLACK)
    assert float(diff.norm()) <= bound
    assert float(diff[0].norm()) <= fmap.max_norm + rounding_bound(fmap.output_dim)
    if name != "perceptual":  # float64 maps: the difference is the canary's rounded row, bit for bit
        assert torch.equal(diff[0], row[0]) and float(diff[1:].abs().max()) == 0.0
    else:  # the float32 backbone may round a record differently in another batch: bounded, not exact
        assert float((diff[0] - row[0]).norm()) < 1e-5


def test_sums_are_independent_of_the_batching(digits):
    x, y = digits.x_train[:500], digits.y_train[:500]
    fmap = create("hermite", input_shape=x.shape[1:], order=20)
    sums = [accumulate(iter_batches(x, y, b), [fmap], 10, x.shape[1:], (0.0, 1.0))[0][0] for b in (7, 64, 500)]
    assert torch.equal(sums[0], sums[1]) and torch.equal(sums[1], sums[2])


def test_largest_cpu_ntk_keeps_the_bound_in_float64(digits):
    """Width 1024, depth 2, 10 outputs on 8×8 digits: D ≈ 11.3 million. The float32 norm of the Jacobian
    is off by ~1e-4; capped in float64 and rounded, every record's row stays within the rounding bound."""
    fmap = create("ntk", input_shape=(1, 8, 8), width=1024, depth=2, n_outputs=10, chunk_size=1)
    assert fmap.output_dim > 11_000_000
    x = torch.cat([_canary((1, 8, 8)), torch.zeros(1, 1, 8, 8), digits.x_train[:2]])
    float32_excess = float((fmap(x).double().norm(dim=1) - 1).abs().max())
    rows = fixed_point(fmap.release_features(x), fmap.max_norm)
    norms = (rows.double() * 2.0**-FRACTION_BITS).norm(dim=1)
    assert float((norms - 1).max()) <= rounding_bound(fmap.output_dim) < NORM_SLACK
    assert float32_excess > 1e-6  # float32 alone is far outside what the slack is for
    # exact sums through the release path: a canary in front of two records, batches of one
    y = torch.tensor([0, 3, 5, 7])
    (a,), _ = accumulate(iter_batches(x[1:], y[1:], 1), [fmap], 10, (1, 8, 8), (0.0, 1.0))
    (b,), _ = accumulate(iter_batches(x, y, 1), [fmap], 10, (1, 8, 8), (0.0, 1.0))
    assert float((b - a).norm()) <= 1 + NORM_SLACK


def test_cap_norms_caps_only_rows_above_the_bound():
    phi = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    out = cap_norms(phi, 0.5)
    assert torch.allclose(out.norm(dim=1), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    assert torch.equal(cap_norms(phi[1:2], 1.0), phi[1:2])


def test_non_finite_features_are_refused_naming_the_statistic():
    class Broken(mmgen.features.FeatureMap):
        name = ""

        def _setup(self):
            pass

        @property
        def output_dim(self):
            return 3

        def _features(self, x):
            out = x[:, :3].clone()
            out[0, 0] = math.inf  # a user's weights or an absurd option
            return out

    fmap = Broken(mmgen.config.Config()).setup((4,))
    x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(mmgen.errors.DataError, match="Statistic '': the feature map produced NaN or inf"):
        mmgen.release(x, y, fmap, epsilon=1.0, delta=1e-5, n_classes=2)

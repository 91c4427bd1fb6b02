"""Calibration, composition, sensitivity and measured noise of releases."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.pld import pld_privacy_accountant
from scipy import optimize, stats

import mmgen
from mmgen.errors import PrivacyError
from mmgen.privacy import (
    composed_noise_multiplier,
    delta_for,
    dp_event,
    epsilon_for,
    noise_multiplier_for,
    sensitivity,
    split_noise_multipliers,
)


def _balle_wang_delta(sigma: float, eps: float) -> float:
    """Independent implementation of the analytic Gaussian δ(ε) (Balle & Wang 2018, Thm 8)."""
    mu = 1.0 / sigma
    return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)


# Pinned values of the analytic Gaussian noise multiplier (sensitivity 1).
PINNED = [(1.0, 1e-5, 3.7306), (10.0, 1e-5, 0.4999), (0.2, 1e-5, 16.3041), (1.0, 1e-6, 4.2247), (3.0, 1e-5, 1.3906)]


@pytest.mark.parametrize("eps,delta,sigma", PINNED)
def test_calibration_pinned(eps, delta, sigma):
    got = noise_multiplier_for(eps, delta)
    assert got == pytest.approx(sigma, abs=6e-5)
    # independent formula: exactly δ at the returned σ, more than δ with 0.1% less noise
    assert _balle_wang_delta(got, eps) <= delta * (1 + 1e-6)
    assert _balle_wang_delta(got * 0.999, eps) > delta


@pytest.mark.parametrize("eps,delta", [(0.2, 1e-5), (1.0, 1e-5), (10.0, 1e-5)])
def test_calibration_matches_independent_root(eps, delta):
    root = optimize.brentq(lambda s: _balle_wang_delta(s, eps) - delta, 0.05, 100, xtol=1e-12)
    assert noise_multiplier_for(eps, delta) == pytest.approx(root, rel=1e-6)
    assert delta_for(root, eps) == pytest.approx(delta, rel=1e-4)


def test_pld_accountant_agrees():
    sigma = noise_multiplier_for(1.0, 1e-5)
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dp_event([sigma]))
    assert acc.get_epsilon(1e-5) == pytest.approx(1.0, abs=0.01)


def test_epsilon_roundtrip():
    for eps in (0.5, 1.0, 8.0):
        assert epsilon_for(noise_multiplier_for(eps, 1e-5), 1e-5) == pytest.approx(eps, rel=1e-6)


def test_composition_of_split_budget():
    sigmas = split_noise_multipliers(1.0, 1e-5, [1.0, 3.0])
    # μ² = Σ μ_k²: the composed mechanism is exactly the single-release calibration
    assert composed_noise_multiplier(sigmas) == pytest.approx(noise_multiplier_for(1.0, 1e-5), rel=1e-9)
    assert sigmas[0] > sigmas[1]  # the larger share gets less noise
    assert sigmas[0] ** -2 / sigmas[1] ** -2 == pytest.approx(1 / 3)
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dp_event(sigmas))
    assert acc.get_epsilon(1e-5) == pytest.approx(1.0, abs=0.01)
    # and composing two full-budget releases costs more than ε
    acc2 = pld_privacy_accountant.PLDAccountant()
    acc2.compose(dp_event([noise_multiplier_for(1.0, 1e-5)] * 2))
    assert acc2.get_epsilon(1e-5) > 1.3


@pytest.mark.parametrize("eps,delta", [(0, 1e-5), (-1, 1e-5), (float("inf"), 1e-5), (1, 0), (1, 1), (1, -0.1)])
def test_bad_budget_rejected(eps, delta):
    with pytest.raises(PrivacyError):
        noise_multiplier_for(eps, delta)


def _record_vector(fmap, x, y, n_classes, a, b):
    v = torch.zeros(n_classes, fmap.output_dim + 1, dtype=torch.float64)
    v[y, :-1] = a * fmap(x[None]).double()[0]
    v[y, -1] = b
    return v


@pytest.mark.parametrize("b", [0.1, 0.3, 0.8])
def test_sensitivity_bounds_on_adversarial_pairs(b):
    shape = (1, 4, 4)
    fmap = mmgen.features.create("rff", input_shape=shape, n_features=64, bandwidth=0.05, seed=0)
    a = math.sqrt(1 - b * b)
    # adversarial records: corners, checkerboards, random points; a tiny bandwidth makes φ(x), φ(x') near-orthogonal
    pts = [torch.zeros(shape), torch.ones(shape), (torch.arange(16) % 2).float().view(shape)]
    pts += [torch.rand(shape) for _ in range(20)]
    vecs = [_record_vector(fmap, x, y, 3, a, b) for x in pts for y in range(3)]
    add_remove = sensitivity("add-remove", max_norm=1.0, feature_weight=a, count_weight=b)
    replace = sensitivity("replace-one", max_norm=1.0, feature_weight=a, count_weight=b)
    norms = torch.stack([v.norm() for v in vecs])
    assert norms.max() <= add_remove and norms.max() >= add_remove * (1 - 2e-5)  # tight: RFF norm is exactly 1
    diffs = max(float((u - v).norm()) for u in vecs for v in vecs)
    assert diffs <= replace + 1e-9
    assert diffs >= math.sqrt(2) * add_remove * (1 - 1e-4)  # records of two classes attain the y ≠ y' bound
    assert replace > add_remove


def test_release_noise_matches_recorded_std(digits):
    fmap = mmgen.features.create("rff", n_features=2000, seed=0)
    r1 = mmgen.release(digits, features=fmap, epsilon=1.0, delta=1e-5)
    r2 = mmgen.release(digits, features=fmap, epsilon=1.0, delta=1e-5)
    s1, s2 = r1.statistics[0], r2.statistics[0]
    assert s1.noise_std == pytest.approx(noise_multiplier_for(1.0, 1e-5) * s1.sensitivity)
    diff = torch.cat([(s1.sums - s2.sums).flatten(), s1.counts - s2.counts]).double()
    # two releases of the same data differ by N(0, 2σ²) per coordinate
    expected = math.sqrt(2) * s1.noise_std
    n = diff.numel()
    assert diff.std().item() == pytest.approx(expected, rel=5 / math.sqrt(2 * n) + 0.01)
    assert abs(diff.mean().item()) < 5 * expected / math.sqrt(n)
    assert stats.kstest(diff.numpy() / expected, "norm").pvalue > 1e-4
    assert r1.for_publication and r1.metadata["privacy"]["noise_source"] == mmgen.privacy.NOISE_SOURCE


def test_replace_one_release_has_more_noise(digits):
    fmap = mmgen.features.create("rff", n_features=100)
    ar = mmgen.release(digits, features=fmap, epsilon=1.0, delta=1e-5, noise_seed=0)
    ro = mmgen.release(digits, features=fmap, epsilon=1.0, delta=1e-5, neighbouring="replace-one", noise_seed=0)
    assert ro.statistics[0].noise_std > 1.35 * ar.statistics[0].noise_std
    assert ro.neighbouring == "replace-one" and ro.metadata["privacy"]["neighbouring"] == "replace-one"


def test_no_data_dependent_metadata(digits):
    """Changing, adding or removing one record changes nothing in the metadata."""
    fmap = mmgen.features.create("rff", n_features=100)
    x, y = digits.x_train.clone(), digits.y_train.clone()
    base = mmgen.release(x, y, fmap, epsilon=1.0, delta=1e-5, n_classes=10, noise_seed=0)
    x2 = x.clone()
    x2[0] = 1.0 - x2[0]
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 10
    variants = [
        mmgen.release(x2, y2, fmap, epsilon=1.0, delta=1e-5, n_classes=10, noise_seed=0),
        mmgen.release(x[1:], y[1:], fmap, epsilon=1.0, delta=1e-5, n_classes=10, noise_seed=0),
        mmgen.release(torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), fmap, epsilon=1.0, delta=1e-5, n_classes=10, noise_seed=0),
    ]
    for other in variants:
        assert json.dumps(other.metadata, sort_keys=True) == json.dumps(base.metadata, sort_keys=True)
        assert [t.shape for t in other._tensors().values()] == [t.shape for t in base._tensors().values()]
    # ... while the noisy values do move (the data is in there)
    assert not torch.equal(variants[0].statistics[0].sums, base.statistics[0].sums)
    assert "n_records" not in json.dumps(base.metadata)


def test_counts_are_noisy_not_exact(digits):
    rel = mmgen.release(digits, features=mmgen.features.create("rff", n_features=64), epsilon=1.0, delta=1e-5)
    exact = torch.bincount(digits.y_train, minlength=10).double()
    got = rel.class_counts()
    assert not torch.equal(got.round(), exact)  # noise std ≈ 12 per class: equality has probability ~1e-20
    assert (got - exact).abs().max() < 8 * rel.statistics[0].noise_std / rel.statistics[0].count_weight


def test_seeded_noise_is_marked_unfit_for_publication(digits):
    rel = mmgen.release(digits, features=mmgen.features.create("rff", n_features=32), epsilon=1, delta=1e-5, noise_seed=3)
    assert rel.for_publication is False
    assert "seeded" in rel.metadata["privacy"]["noise_source"]
